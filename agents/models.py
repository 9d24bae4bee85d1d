"""Chat models per role, through ``langchain-openai``: OpenAI or any OpenAI-compatible server.

``langchain-openai`` (with ``openai`` and ``tiktoken``, about two seconds of a cold start) loads
when the first model is made, not with this module: the runbook planner's commands, and every
command that only reads or answers a thread, never need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from langchain_core.callbacks import BaseCallbackHandler

from keel.settings import Settings

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel


def chat_model_for(
    settings: Settings,
    model: str | None,
    *,
    callbacks: Sequence[BaseCallbackHandler] = (),
) -> BaseChatModel:
    """A ``ChatOpenAI`` with Keel's timeout and retry settings.

    The client's own retries cover 429, 5xx and connection errors; Keel's fallback model and the
    runbook planner cover what is left. ``callbacks`` see every call the model makes, wherever
    it is made from (the real-model scorecard counts calls and tokens with them).
    """
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model or "gpt-4o-mini",
        api_key=settings.openai_api_key or "not-needed-for-a-local-server",  # type: ignore[arg-type]
        base_url=settings.openai_base_url,
        timeout=settings.model_timeout_s,
        max_retries=settings.model_max_retries,
        temperature=0,
        callbacks=list(callbacks) or None,
    )
