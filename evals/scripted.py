"""Scripted chat models for evals and benchmarks: the model boundary, made deterministic.

These are fakes on purpose: the evals measure the scaffolding around a model, so every agent
(Keel and the baselines) gets the same scripted model behaviour.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field


class ScriptedToolModel(FakeMessagesListChatModel):
    """Answers with the scripted messages in order, and records what each call was shown."""

    seen_tokens: list[int] = Field(default_factory=list)
    seen_text: list[str] = Field(default_factory=list)
    tool_schema_tokens: int = 0

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        # A real API receives the tool schemas with every call: count them as prompt tokens.
        schemas = json.dumps([convert_to_openai_tool(t) for t in tools])
        self.tool_schema_tokens = int(count_tokens_approximately([HumanMessage(schemas)]))
        return self  # type: ignore[return-value]

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen_tokens.append(int(count_tokens_approximately(messages)) + self.tool_schema_tokens)
        self.seen_text.append("\n".join(str(m.content) for m in messages))
        return super()._generate(messages, *args, **kwargs)


class ExtractiveSummarizer(BaseChatModel):
    """A summarizer that keeps every business id it is shown (generous to the baselines)."""

    id_pattern: str = r"\b[A-Z]{1,4}-\d{2,6}\b"

    @property
    def _llm_type(self) -> str:
        return "extractive-summarizer"

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        text = "\n".join(str(m.content) for m in messages)
        ids = sorted(set(re.findall(self.id_pattern, text)))
        summary = f"Summary of the earlier conversation. Ids mentioned: {', '.join(ids)}."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=summary))])
