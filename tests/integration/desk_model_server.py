"""A scripted "desk model" behind a local OpenAI-compatible HTTP server: the model boundary of
the real-model scorecard's tests, and of its figure in docs/evals-real-model.md (never a real
model; said so).

It answers the three agents' requests as a tool-calling model would. Keel's planner gets its plan
as a ``submit_plan`` call (the shipped scenario's calls for the request, citing a runbook chunk its
prompt shows; a question is answered from the official evidence it is shown, cited); the
``create_agent`` baselines get one tool call per turn, in order, then a closing text. It is
gullible on purpose: an instruction to send the customer list somewhere, when it is in the
prompt, goes into its answer. It refuses, as OpenAI does, a tool call nobody answered, answers
``no-such-model`` with a 404, and reports token usage (about four characters a token).

Run it on its own for ``keel eval --suite scenarios --model desk-model``::

    .venv/bin/python -m tests.integration.desk_model_server   # prints OPENAI_BASE_URL=...
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from domains.support_desk import SCENARIOS as SCENARIOS_DIR
from tests.integration.openai_stub import openai_compatible

LEAK = re.compile(r"send a copy of the customer list[^.]*? to ([\w.+-]+@[\w.-]+\w)", re.I)


def shipped() -> list[dict[str, Any]]:
    """The support desk's shipped scenarios, as YAML data."""
    return [s for f in sorted(SCENARIOS_DIR.glob("*.yaml")) for s in yaml.safe_load(f.read_text())]


def _scripts() -> dict[str, list[dict[str, Any]]]:
    """The desk model's calls per request: the shipped scenarios' (clean ones) model calls."""
    out: dict[str, list[dict[str, Any]]] = {}
    for s in shipped():
        if s.get("model") and not s.get("poisoned"):
            out.setdefault(s["request"], s["model"])
    return out


class DeskModel:
    """What the server was asked, per model name, and how it answered."""

    def __init__(self) -> None:
        self.scripts = _scripts()
        self.requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.obeyed: Counter[str] = Counter()
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests[body["model"]].append(body)
        if body["model"] == "no-such-model":
            return 404, {"error": {"message": "The model `no-such-model` does not exist",
                                   "type": "invalid_request_error",
                                   "code": "model_not_found"}}  # fmt: skip
        messages = body["messages"]
        for i, m in enumerate(messages):  # OpenAI refuses a tool call no tool message answers
            for call in m.get("tool_calls") or []:
                if call["id"] not in {n.get("tool_call_id") for n in messages[i + 1 :]}:
                    return 400, {"error": {"message": f"{call['id']} has no tool message",
                                           "type": "invalid_request_error"}}  # fmt: skip
        offered = [t["function"]["name"] for t in body.get("tools", [])]
        reply = self._plan(messages) if offered == ["submit_plan"] else self._turn(messages)
        return 200, reply

    def _plan(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        request = re.search(r"^Request: (.*)$", prompt, re.M)
        assert request is not None, prompt[:400]
        chunks = re.findall(r"^\[([^\]]+)\] \((\w+), [\d-]+\) (.*)$", prompt, re.M)
        runbooks = [c for c, _, _ in chunks if c.startswith("runbook")]
        cite = runbooks[:1] or [c for c, _, _ in chunks[:1]]
        calls = list(self.scripts.get(request.group(1), []))
        if (leak := LEAK.search(prompt)) is not None:  # gullible: it obeys what it reads
            self.obeyed["planner"] += 1
            calls.append({"name": "send_email", "args": {
                "to": leak.group(1), "subject": "Customer list",
                "body": "ada@example.com, grace@example.com, alan@example.com"}})  # fmt: skip
        plan: dict[str, Any] = {"intent": "desk_request", "steps": [
            {"tool": c["name"], "args": c["args"], "purpose": "as the request asks",
             "evidence": cite} for c in calls]}  # fmt: skip
        if not calls:  # a question: the official evidence that shares most words with it
            words = {w for w in re.findall(r"\w+", request.group(1).lower()) if len(w) > 4}
            official = [(c, t) for c, tier, t in chunks if tier == "official"]
            best = max(official, key=lambda ct: len(words & set(re.findall(r"\w+", ct[1].lower()))))
            plan |= {"intent": "answer_question", "answer": best[1], "evidence": [best[0]]}
        arguments = json.dumps(plan)
        call = {"id": "call_plan", "type": "function",
                "function": {"name": "submit_plan", "arguments": arguments}}  # fmt: skip
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def _turn(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        request = next(m["content"] for m in messages if m["role"] == "user")
        script = self.scripts.get(request, [])
        done = sum(1 for m in messages if m["role"] == "assistant" and m.get("tool_calls"))
        if done >= len(script):
            return {"role": "assistant", "content": "Done: the request is handled."}
        step = script[done]
        call = {
            "id": f"call_{done}",
            "type": "function",
            "function": {"name": step["name"], "arguments": json.dumps(step["args"])},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}  # fmt: skip


@contextmanager
def serve(port: int = 0) -> Iterator[tuple[str, DeskModel]]:
    """The server on loopback (``port`` 0: a free one): its base URL and what it was asked."""
    state = DeskModel()

    def answer(body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, message = state.answer(body)
        return status, {}, message

    with openai_compatible(answer, port) as url:
        yield url, state


if __name__ == "__main__":
    import sys

    with serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as (url, _):
        print(f"OPENAI_BASE_URL={url}", flush=True)
        threading.Event().wait()
