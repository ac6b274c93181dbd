// sparkctl's dashboard. Plain JavaScript, no build step, no dependency: the daemon serves this
// file as it is (docs/design/dashboard.md says why).
//
// One rule above all: text that comes from the daemon (catalog descriptions, engines' log lines,
// error messages, model answers) only ever becomes `textContent`, never markup; the
// Content-Security-Policy forbids inline script as a second line of defence.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STATES_ON_THE_WAY = new Set(["queued", "starting"]);
  const MAX_LOG_LINES = 2000;

  let caller = null; // {auth, name, admin}
  let live = null; // EventSource of /ui/api/live
  let last = null; // the latest snapshot
  let clockSkew = 0; // server time minus ours, seconds
  let logSource = null;
  let chatAbort = null;
  let history = [];

  // ------------------------------------------------------------------------------ helpers
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c); // strings become text nodes
    return node;
  }

  function notice(message) {
    const n = $("notice");
    n.textContent = message || "";
    n.hidden = !message;
  }

  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)} ${units[i]}`;
  }

  function seconds(s) {
    if (s == null) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 90) return `${s}s`;
    if (s < 5400) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  const now = () => Date.now() / 1000 + clockSkew;

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.message === "string") return body.error.message;
    } catch (_) { /* not the envelope */ }
    return `HTTP ${response.status}`;
  }

  // ------------------------------------------------------------------------------ sign-in
  async function boot() {
    const r = await fetch("/ui/api/session", { credentials: "same-origin" });
    if (r.ok) return signedIn(await r.json());
    showLogin(r.status === 401 ? null : await errorOf(r));
  }

  function showLogin(message) {
    caller = null;
    stopLive();
    $("app").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
    $("summary").textContent = "";
    notice(message);
    $("login-key").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $("login-key").value.trim();
    const r = await fetch("/ui/api/session", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
    });
    $("login-key").value = "";
    if (!r.ok) return notice(await errorOf(r));
    notice(null);
    signedIn(await r.json());
  }

  async function signOut() {
    await fetch("/ui/api/session", { method: "DELETE", credentials: "same-origin" });
    showLogin(null);
  }

  function signedIn(who) {
    caller = who;
    $("login").hidden = true;
    $("app").hidden = false;
    $("who").hidden = who.auth === "none";
    $("who-name").textContent = who.name ? `${who.name}${who.admin ? " (admin)" : ""}` : "";
    document.body.classList.toggle("admin", !!who.admin);
    startLive();
  }

  // ------------------------------------------------------------------------------ live status
  function startLive() {
    stopLive();
    live = new EventSource("/ui/api/live");
    live.addEventListener("status", (e) => render(JSON.parse(e.data)));
    live.addEventListener("error", (e) => {
      if (e.data) { // the daemon ended it: the key was revoked
        stopLive();
        showLogin(JSON.parse(e.data).error.message);
      } else if (live && live.readyState === EventSource.CLOSED) {
        stopLive();
        boot(); // refused on reconnect: the session is gone, or the daemon is
      }
    });
  }

  function stopLive() {
    if (live) live.close();
    live = null;
  }

  function render(snap) {
    last = snap;
    clockSkew = snap.time - Date.now() / 1000;
    const ready = snap.models.filter((m) => m.state === "ready").length;
    $("summary").textContent =
      `${snap.models.length} models, ${ready} ready · ${snap.requests_per_s.toFixed(2)} req/s · ` +
      `${snap.tokens_per_s.toFixed(1)} tok/s · ${snap.queue_depth} queued` +
      (snap.degraded ? ` · degraded: ${snap.degraded}` : "");
    renderNodes(snap.nodes);
    renderModels(snap.models);
    $("disabled").textContent = snap.disabled.length
      ? "Disabled: " + snap.disabled.map((d) => `${d.id} (${d.disabled_reason})`).join("; ")
      : "";
    fillPicker($("log-model"), snap.models.filter((m) => !m.remote)); // journald is this node's
    fillPicker($("play-model"), snap.models);
  }

  function renderNodes(nodes) {
    const box = $("nodes");
    box.replaceChildren(...nodes.map((n) => {
      if (n.remote) { // another node of the cluster: what this node knows of it
        return el("div", { class: "node", "data-node": n.name },
          el("strong", { text: n.name }),
          el("div", { text: n.available ? "answers (its own page shows its memory)" : `does not answer: ${n.error || ""}` }));
      }
      const used = n.memory_used;
      const bar = el("progress", { max: String(n.memory_total || 1), value: String(used || 0) });
      bar.setAttribute("aria-label", `memory in use on ${n.name}`);
      return el("div", { class: "node", "data-node": n.name },
        el("strong", { text: n.name }),
        el("div", { text: `memory in use ${bytes(used)} of ${bytes(n.memory_total)} · ` +
          `budgeted to models ${Math.round((n.budget_in_use || 0) * 100)}%` }),
        bar);
    }));
  }

  // Rows are rebuilt only when what they show changed (countdowns move by themselves), and a
  // focused button keeps the focus across a rebuild: a keyboard user is not thrown out once a second.
  const shown = new Map(); // model id → signature of the row on screen

  function renderModels(models) {
    const body = $("models").tBodies[0];
    const focused = document.activeElement;
    const focusRow = focused && focused.closest ? focused.closest("tr[data-model]") : null;
    const focusKey = focusRow ? [focusRow.dataset.model, focused.className] : null;
    const signature = (m) => JSON.stringify([m, caller && caller.admin]);
    const ids = models.map((m) => m.id);
    const same = ids.length === shown.size && ids.every((id, i) => shown.has(id)) &&
      Array.from(body.querySelectorAll("tr[data-model]")).map((r) => r.dataset.model).join("\n") === ids.join("\n");
    if (same && models.every((m) => shown.get(m.id) === signature(m))) return tick();
    const rows = [];
    shown.clear();
    for (const m of models) {
      shown.set(m.id, signature(m));
      rows.push(modelRow(m));
      const why = m.state === "failed" || m.state === "backoff" ? m.last_error : null;
      if (why) {
        rows.push(el("tr", { class: "why", "data-why": m.id },
          el("td", { colspan: "10", text: why })));
      }
    }
    body.replaceChildren(...rows);
    if (focusKey) {
      const row = body.querySelector(`tr[data-model="${CSS.escape(focusKey[0])}"]`);
      const buttons = row ? Array.from(row.querySelectorAll("button")) : [];
      // the same button, or (it is disabled now: Start once started) the row's next usable one
      const again = buttons.find((b) => b.className === focusKey[1] && !b.disabled) || buttons.find((b) => !b.disabled);
      if (again) again.focus();
    }
    tick();
  }

  function modelRow(m) {
    if (m.remote) return remoteRow(m);
    const cell = (label, content, cls) => {
      const td = el("td", { "data-label": label, class: cls || "" });
      if (content instanceof Node) td.append(content); else td.textContent = content;
      return td;
    };
    const name = el("div", {}, el("strong", { text: m.id }));
    const desc = el("div", { class: "desc", text: m.description });
    const state = el("span", { class: "state", "data-state": m.state, text: m.state });
    const stateCell = el("td", { "data-label": "State" }, state);
    if (m.state === "backoff" && m.backoff_until) {
      stateCell.append(el("div", { class: "desc countdown", "data-until": String(m.backoff_until), "data-prefix": "retry in " }));
    }
    const load = el("td", { "data-label": "Load" });
    if (STATES_ON_THE_WAY.has(m.state) && m.load_time_s) {
      const bar = el("progress", { max: String(m.load_time_s), "data-since": String(m.since) });
      bar.setAttribute("aria-label", `loading ${m.id}`);
      const eta = m.eta_seconds != null ? `, eta ${seconds(m.eta_seconds)}` : "";
      load.append(bar, el("span", { class: "desc eta", text: ` loading${eta}` }));
    } else if (STATES_ON_THE_WAY.has(m.state) && m.eta_seconds != null) {
      // no start seen yet: the estimate rests on a guess from the size on disk, and says so
      const guess = m.eta_guess ? " (a guess)" : "";
      load.append(el("span", { class: "desc eta", text: `loading, eta ${seconds(m.eta_seconds)}${guess}` }));
    } else if (STATES_ON_THE_WAY.has(m.state)) {
      load.append(el("span", { class: "desc", text: "loading (no estimate yet)" }));
    } else {
      load.textContent = m.last_load_seconds != null ? `last ${m.last_load_seconds.toFixed(1)}s` : "–";
    }
    const idle = el("td", { "data-label": "Idle stop" });
    if (m.idle_stop_at) idle.append(el("span", { class: "countdown", "data-until": String(m.idle_stop_at) }));
    else idle.textContent = m.pinned ? "pinned" : "–";
    const actions = el("td", { class: "actions" });
    if (caller && caller.admin) {
      const down = m.state === "stopped" || m.state === "failed";
      actions.append(
        button("Start", () => act(m.id, "start"), "start", m.state === "ready" || STATES_ON_THE_WAY.has(m.state)),
        button("Stop", () => act(m.id, "stop"), "stop quiet", down),
        button("Stop now", () => act(m.id, "stop?now=1"), "stop-now danger", down),
      );
    }
    actions.append(button("Logs", () => showLogs(m.id), "logs quiet"));
    return el("tr", { class: "model", "data-model": m.id },
      el("td", {}, name, desc),
      stateCell,
      cell("Node", m.node),
      cell("Memory", m.memory_bytes != null ? bytes(m.memory_bytes) : `${Math.round(m.gpu_memory_utilization * 100)}% budget`),
      cell("In flight", String(m.in_flight), "in-flight"),
      cell("Queued", String(m.waiting), "queued"),
      cell("Rate", `${m.requests_per_s.toFixed(2)} req/s · ${m.tokens_per_s.toFixed(1)} tok/s`),
      idle, load, actions);
  }

  // Another node's model (#15): what that node lists; started, stopped and logged there.
  function remoteRow(m) {
    const cell = (label, text) => el("td", { "data-label": label, text });
    return el("tr", { class: "model remote", "data-model": m.id },
      el("td", {}, el("div", {}, el("strong", { text: m.id })), el("div", { class: "desc", text: m.description })),
      el("td", { "data-label": "State" }, el("span", { class: "state", "data-state": m.state, text: m.state })),
      cell("Node", m.node),
      cell("Memory", bytes(m.memory_bytes)),
      cell("In flight", "–"), cell("Queued", "–"), cell("Rate", "–"), cell("Idle stop", "–"),
      cell("Load", m.last_load_seconds != null ? `typical ${m.last_load_seconds.toFixed(1)}s` : "–"),
      el("td", { class: "actions desc", text: `on ${m.node}` }));
  }

  function button(label, onClick, cls, disabled) {
    const b = el("button", { type: "button", class: cls, text: label });
    b.disabled = !!disabled;
    b.addEventListener("click", onClick);
    return b;
  }

  // Countdowns and load progress move between snapshots.
  function tick() {
    for (const c of document.querySelectorAll(".countdown")) {
      c.textContent = (c.dataset.prefix || "") + seconds(Number(c.dataset.until) - now());
    }
    for (const p of document.querySelectorAll("#models progress[data-since]")) {
      p.value = Math.min(Number(p.max), now() - Number(p.dataset.since));
    }
  }

  async function act(model, what) {
    notice(null);
    const r = await fetch(`/api/v1/models/${encodeURIComponent(model)}/${what}`, {
      method: "POST", credentials: "same-origin",
    });
    if (!r.ok) notice(await errorOf(r));
  }

  function fillPicker(select, models) {
    const ids = models.map((m) => m.id);
    const have = Array.from(select.options).map((o) => o.value);
    if (ids.join("\n") === have.join("\n")) return;
    const chosen = select.value;
    select.replaceChildren(...ids.map((id) => el("option", { value: id, text: id })));
    if (ids.includes(chosen)) select.value = chosen;
  }

  // ------------------------------------------------------------------------------ views
  function showView(view) {
    for (const t of document.querySelectorAll(".tab")) t.setAttribute("aria-pressed", String(t.dataset.view === view));
    for (const v of ["models", "logs", "playground"]) $(`view-${v}`).hidden = v !== view;
    if (view === "logs") followLog($("log-model").value);
    else stopLog();
  }

  // ------------------------------------------------------------------------------ logs
  function showLogs(model) {
    if (!Array.from($("log-model").options).some((o) => o.value === model)) {
      $("log-model").append(el("option", { value: model, text: model }));
    }
    $("log-model").value = model;
    showView("logs");
  }

  function stopLog() {
    if (logSource) logSource.close();
    logSource = null;
  }

  function followLog(model) {
    stopLog();
    $("log").replaceChildren();
    if (!model) return;
    logSource = new EventSource(`/ui/api/logs/${encodeURIComponent(model)}`);
    logSource.addEventListener("line", (e) => appendLog(JSON.parse(e.data)));
    logSource.addEventListener("error", (e) => {
      if (e.data) { stopLog(); appendLog({ time: 0, priority: 3, source: "sparkctl", message: JSON.parse(e.data).error.message }); }
    });
  }

  function appendLog(line) {
    const log = $("log");
    const t = line.time ? new Date(line.time / 1000).toLocaleTimeString() : "";
    log.append(el("div", { class: `ln p${line.priority} ${line.source}` },
      el("span", { class: "t", text: t }), line.message));
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if ($("log-follow").checked) log.scrollTop = log.scrollHeight;
  }

  // ------------------------------------------------------------------------------ playground
  function addMessage(role, text) {
    const m = el("div", { class: `msg ${role}`, text });
    $("chat").append(m);
    return m;
  }

  async function send(event) {
    event.preventDefault();
    const text = $("play-input").value.trim();
    const model = $("play-model").value;
    if (!text || !model || chatAbort) return;
    $("play-input").value = "";
    history.push({ role: "user", content: text });
    addMessage("user", text);
    const out = addMessage("assistant", "");
    chatAbort = new AbortController();
    $("play-send").disabled = true;
    $("play-stop").disabled = false;
    $("play-status").textContent = `asking ${model} …`;
    try {
      const r = await fetch("/v1/chat/completions", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          model, messages: history, stream: true, stream_options: { include_usage: true },
          max_tokens: Number($("play-max").value) || undefined,
        }),
        signal: chatAbort.signal,
      });
      if (!r.ok) throw new Error(await errorOf(r));
      await readStream(r, (delta) => { out.textContent += delta; });
      $("play-status").textContent = "";
    } catch (e) {
      if (e.name === "AbortError") $("play-status").textContent = "stopped";
      else { out.classList.add("error"); out.textContent = out.textContent || e.message; $("play-status").textContent = e.message; }
    } finally {
      if (!out.classList.contains("error") && out.textContent) history.push({ role: "assistant", content: out.textContent });
      chatAbort = null;
      $("play-send").disabled = false;
      $("play-stop").disabled = true;
    }
  }

  // Server-sent events by hand: EventSource cannot POST. Comments (": sparkctl: waiting for …")
  // are the gateway's loading feedback during a cold start; they are shown as they come.
  async function readStream(response, onDelta) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/\r$/, "");
        buffer = buffer.slice(cut + 1);
        if (line.startsWith(":")) {
          const said = line.slice(1).trim();
          if (said.startsWith("sparkctl:")) $("play-status").textContent = said.slice(9).trim();
        } else if (line.startsWith("data:")) {
          const data = line.slice(5).trim();
          if (data === "[DONE]") return text;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && typeof delta.content === "string" && delta.content) {
            if (!text) $("play-status").textContent = "answering …";
            text += delta.content;
            onDelta(delta.content);
          }
        }
      }
    }
    return text;
  }

  // ------------------------------------------------------------------------------ wiring
  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => showView(t.dataset.view));
    $("log-model").addEventListener("change", () => followLog($("log-model").value));
    $("log-clear").addEventListener("click", () => $("log").replaceChildren());
    $("play-form").addEventListener("submit", send);
    $("play-stop").addEventListener("click", () => chatAbort && chatAbort.abort());
    $("play-reset").addEventListener("click", () => { history = []; $("chat").replaceChildren(); $("play-status").textContent = ""; });
    $("play-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("play-form").requestSubmit();
    });
    setInterval(tick, 1000);
    boot().catch((e) => notice(`The daemon cannot be reached: ${e.message}`));
  });
})();
