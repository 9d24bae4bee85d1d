// A client of Keel as Agent Chat UI is one: the JavaScript LangGraph SDK, its key as X-Api-Key,
// its stream modes, its resume payloads, on_disconnect "cancel". Driven by
// tests/integration/js_client.py: one action per process, its parameters as JSON on stdin, what
// the client saw as JSON on stdout (an SDK error: {"error": ..., "status": ...}).
import { Client } from "@langchain/langgraph-sdk";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const params = JSON.parse(Buffer.concat(chunks).toString("utf8"));
// apiKey null: no key from the environment (LANGGRAPH_API_KEY, LANGSMITH_API_KEY).
const client = new Client({ apiUrl: params.url, apiKey: params.apiKey ?? null });

function text(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((p) => (typeof p === "string" ? p : p.text ?? "")).join("");
  return "";
}

async function stream() {
  const threadId = params.threadId ?? (await client.threads.create()).thread_id;
  const seen = { thread_id: threadId, kinds: [], nodes: [], streamed_ai: {}, values: null };
  let runId = null;
  for await (const chunk of client.runs.stream(threadId, params.assistantId ?? "keel", {
    input: params.input,
    command: params.command,
    // What useStream asks for: state values, the messages token by token, each node's update.
    streamMode: ["values", "messages-tuple", "updates"],
    streamSubgraphs: true,
    onDisconnect: "cancel",
    multitaskStrategy: "reject",
    onRunCreated: (run) => { runId = run.run_id; },
  })) {
    const kind = chunk.event.split("|")[0];
    if (!seen.kinds.includes(kind)) seen.kinds.push(kind);
    if (kind === "values") seen.values = chunk.data;
    else if (kind === "updates") seen.nodes.push(...Object.keys(chunk.data ?? {}));
    else if (kind === "messages") {
      const [message] = chunk.data;
      if (message?.type === "AIMessageChunk" || message?.type === "ai") {
        const id = message.id ?? "?";
        seen.streamed_ai[id] = (seen.streamed_ai[id] ?? "") + text(message.content);
      }
    } else if (kind === "error") seen.error = chunk.data;
  }
  seen.run_id = runId;
  const state = await client.threads.getState(threadId);
  const messages = state.values?.messages ?? [];
  seen.ai_messages = messages.filter((m) => m.type === "ai").map((m) => text(m.content));
  seen.interrupts = (state.tasks ?? []).flatMap((t) => (t.interrupts ?? []).map((i) => i.value));
  seen.status = state.values?.status ?? null;
  seen.next = state.next;
  return seen;
}

async function search() {
  const threads = await client.threads.search({ metadata: params.metadata, limit: params.limit ?? 20 });
  return { threads: threads.map((t) => ({ thread_id: t.thread_id, metadata: t.metadata, status: t.status })) };
}

const actions = { stream, search };
try {
  process.stdout.write(JSON.stringify(await actions[params.action]()));
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err?.message ?? err), status: err?.status ?? null }));
}
