"""The real-model scorecard's pure parts: which endpoint (never the key), which scenarios, and
the meter that reads each call's usage and errors (fed a langchain ``LLMResult`` directly)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from evals.real_model import Meter, RealModel, choose
from evals.scenarios import Expected, Scenario
from keel.errors import BadRequest, ConfigError
from keel.settings import Settings


def _settings(**kwargs: object) -> Settings:
    return Settings(home=Path("/tmp/keel-unit"), _env_file=None, **kwargs)  # type: ignore[call-arg]


def test_the_model_is_named_with_its_host_and_never_its_key_or_credentials() -> None:
    secret = "sk-unit-secret"
    local = RealModel.from_settings(
        _settings(openai_base_url="http://user:hunter2@10.1.2.3:8000/v1", openai_api_key=secret),
        " qwen2.5 ",
    )
    assert local.describe() == {"kind": "real", "name": "qwen2.5", "base_url_host": "10.1.2.3",
                                "fallback": None, "timeout_s": 30.0, "max_retries": 2}  # fmt: skip
    assert secret not in str(local.describe()) and "hunter2" not in str(local.describe())
    hosted = RealModel.from_settings(
        _settings(openai_api_key=secret, planner_fallback_model="gpt-4o", model_timeout_s=9),
        "gpt-4o-mini",
    )
    assert hosted.base_url_host == "api.openai.com" and hosted.fallback == "gpt-4o"
    assert hosted.timeout_s == 9


def test_no_endpoint_a_bad_url_or_no_name_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"OPENAI_API_KEY.*OPENAI_BASE_URL"):
        RealModel.from_settings(_settings(), "gpt-4o-mini")
    with pytest.raises(ConfigError, match="not an http"):
        RealModel.from_settings(_settings(openai_base_url="localhost:11434"), "llama3")
    with pytest.raises(BadRequest, match="needs a model name"):
        RealModel.from_settings(_settings(openai_api_key="k"), "  ")


def _scenario(name: str) -> Scenario:
    return Scenario(name=name, request="Close ticket T-77", expect=Expected())


def test_scenarios_are_chosen_by_name_then_limited() -> None:
    loaded = [_scenario(n) for n in ("a", "b", "c")]
    assert [s.name for s in choose(loaded, [], None)] == ["a", "b", "c"]
    assert [s.name for s in choose(loaded, ["c", "a"], None)] == ["a", "c"]
    assert [s.name for s in choose(loaded, [], 2)] == ["a", "b"]
    with pytest.raises(BadRequest, match="no scenario named z; known: a, b, c"):
        choose(loaded, ["z"], None)
    with pytest.raises(BadRequest, match="--limit must be at least 1"):
        choose(loaded, [], 0)


def _error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return cls("refused", response=httpx.Response(status, request=request), body=None)


def test_the_meter_counts_usage_and_tells_a_refusal_from_a_slow_answer() -> None:
    meter = Meter()
    reply = AIMessage("ok", usage_metadata={"input_tokens": 120, "output_tokens": 30,
                                            "total_tokens": 150})  # fmt: skip
    meter.on_llm_end(LLMResult(generations=[[ChatGeneration(message=reply)]]), run_id=uuid.uuid4())
    meter.on_llm_end(
        LLMResult(generations=[[ChatGeneration(message=AIMessage("no usage"))]]),
        run_id=uuid.uuid4(),
    )
    assert (meter.calls, meter.with_usage, meter.tokens) == (2, 1, 150)
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    meter.on_llm_error(openai.APITimeoutError(request=request), run_id=uuid.uuid4())
    assert meter.refused is None  # too slow once: this run's failure, not the setting's
    meter.on_llm_error(_error(openai.AuthenticationError, 401), run_id=uuid.uuid4())
    assert meter.refused == "AuthenticationError: refused"
    assert meter.errors == {"APITimeoutError": 1, "AuthenticationError": 1} and meter.calls == 4
    unreachable = Meter()
    unreachable.on_llm_error(openai.APIConnectionError(request=request), run_id=uuid.uuid4())
    assert unreachable.refused is not None and unreachable.refused.startswith("cannot connect")


def test_the_middleware_baseline_gets_the_configured_fallback_and_no_masking() -> None:
    from langchain.agents.middleware import (
        ModelFallbackMiddleware,
        ModelRetryMiddleware,
        PIIMiddleware,
        ToolCallLimitMiddleware,
    )
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from evals.real_model import for_real_model

    scripted, configured = FakeListChatModel(responses=["a"]), FakeListChatModel(responses=["b"])
    careful = [
        ModelRetryMiddleware(max_retries=2),
        ModelFallbackMiddleware(scripted),
        ToolCallLimitMiddleware(run_limit=8),
        PIIMiddleware("email", strategy="mask", apply_to_tool_results=True),
    ]
    alone = for_real_model(careful, None)
    assert [type(m) for m in alone] == [ModelRetryMiddleware, ToolCallLimitMiddleware]
    fitted = for_real_model(careful, configured)
    assert [type(m) for m in fitted] == [
        ModelRetryMiddleware, ModelFallbackMiddleware, ToolCallLimitMiddleware]  # fmt: skip
    assert fitted[1].models == [configured]
