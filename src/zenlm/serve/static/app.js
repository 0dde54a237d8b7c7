// The zenlm playground: a chat that streams answers from /v1/chat/completions (SSE).
// No framework, no CDN: it works offline, served by the package itself.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];  // {role, content} of the conversation so far
let modelId = null;
let controller = null;  // aborts the running request (Stop)

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "content";
  body.textContent = text;
  div.append(label, body);
  $("messages").append(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return body;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error ? data.error.message : r.statusText);
    modelId = data.data[0].id;
    $("model").textContent = modelId;
  } catch (e) {
    $("model").textContent = "no model: " + e.message;
  }
}

function params() {
  const body = {
    model: modelId,
    stream: true,
    stream_options: { include_usage: true },
    temperature: parseFloat($("temperature").value),
    top_p: parseFloat($("top_p").value),
    max_tokens: parseInt($("max_tokens").value, 10) || 256,
  };
  const seed = $("seed").value.trim();
  if (seed) body.seed = parseInt(seed, 10);
  const stop = $("stop-strings").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (stop.length) body.stop = stop;
  return body;
}

// Read server-sent events from a fetch body; call onData with each parsed `data:` JSON.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  if (!modelId) await loadModel();
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  out.parentElement.classList.add("streaming");
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(history);
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null, tokens = 0, answer = "";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ ...params(), messages }),
    });
    if (!r.ok) {
      const data = await r.json().catch(() => ({}));
      throw new Error(data.error ? data.error.message : r.statusText);
    }
    await readEvents(r, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta.content || "";
        if (delta && first === null) first = performance.now();
        answer += delta;
        out.textContent = answer;
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    });
    const total = (performance.now() - started) / 1000;
    $("stats").textContent = `${tokens} tokens in ${total.toFixed(2)} s` +
      (first !== null ? `, first after ${((first - started) / 1000).toFixed(2)} s` : "");
  } catch (e) {
    if (e.name !== "AbortError") {
      out.parentElement.classList.add("error");
      out.textContent = answer + (answer ? "\n" : "") + "Error: " + e.message;
    }
  } finally {
    history.push({ role: "assistant", content: answer });
    out.parentElement.classList.remove("streaming");
    out.parentElement.classList.add("done");
    setBusy(false);
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("status").textContent = busy ? "generating…" : "";
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || $("send").disabled) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history.length = 0; $("messages").replaceChildren(); });
for (const id of ["temperature", "top_p"]) {
  $(id).addEventListener("input", () => { $(id + "-value").textContent = $(id).value; });
}
$("api-key").addEventListener("change", loadModel);
loadModel();
