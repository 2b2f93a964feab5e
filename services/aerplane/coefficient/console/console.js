// The aerplane console (docs/console-design.md): the runs list at /, a run's live charts at /runs/<id>.
// Every call goes to this service's REST API with the token of the token field (Authorization header; the token is
// kept in sessionStorage, never in a cookie). The live stream is Server-Sent Events read with fetch, since
// EventSource cannot send a header.
"use strict";

const TOKEN_KEY = "aerplane.token";
const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fmt = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(digits));

class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
    this.status = status;
    this.detail = detail;
  }
}

async function api(path, init = {}) {
  const headers = { ...authHeaders(), ...(init.body ? { "Content-Type": "application/json" } : {}) };
  const resp = await fetch(path, { ...init, headers });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body && body.detail !== undefined ? body.detail : resp.statusText);
  return body;
}

function setupToken() {
  $("token").value = token();
  $("token-state").textContent = token() ? "set" : "none";
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    location.reload();
  });
}

// --- the runs page ----------------------------------------------------------------------------------------------

// Where the run is (finished: its last step is in; live: a report in the last minute; idle: neither), and
// whether people have overridden it (a pin, a freeze or a target, shown beside).
function runStates(run) {
  const age = run.reported_at == null ? Infinity : Date.now() / 1000 - run.reported_at;
  const states = [run.finished ? "finished" : age < 60 ? "live" : "idle"];
  if (run.alpha_pinned || run.frozen || run.target_overridden) states.push("overridden");
  return states;
}

async function refreshRuns() {
  try {
    const runs = await api("/v1/runs");
    const rows = runs.map((r) => {
      const badges = runStates(r).map((s) => `<span class="badge ${s}">${s}</span>`).join(" ");
      const step = r.has_step ? (r.total_steps ? `${r.step} / ${r.total_steps - 1}` : r.step) : "–"; // last / final
      return `<tr data-run="${r.run_id}"><td><a href="/runs/${encodeURIComponent(r.run_id)}">${r.run_id}</a></td>
        <td>${r.strategy}</td><td class="num">${step}</td>
        <td class="num">${fmt(r.last_entropy)}</td><td class="num">${fmt(r.target_entropy)}</td>
        <td class="num">${fmt(r.alpha, 3)}</td><td class="num">${fmt(r.mean_prompt_weight, 3)}</td>
        <td>${r.reported_at == null ? "–" : new Date(r.reported_at * 1000).toLocaleTimeString()}</td>
        <td class="state">${badges}</td></tr>`;
    });
    document.querySelector("#runs tbody").innerHTML = rows.join("");
    $("runs-updated").textContent = new Date().toLocaleTimeString();
    $("runs-error").textContent = "";
  } catch (err) {
    $("runs-error").textContent = String(err.message || err);
  }
}

// --- a run's page -----------------------------------------------------------------------------------------------

const CHARTS = {
  entropy: { id: "chart-entropy", title: "Entropy H with H*, H₀ and the ±20 % band", y: "H (nats/token)" },
  alpha: { id: "chart-alpha", title: "α and the controller's terms", y: "α (entropy coefficient)" },
  weight: { id: "chart-weight", title: "Mean prompt weight λ", y: "mean λ (weight)" },
  accuracy: { id: "chart-accuracy", title: "Accuracy, overall and per difficulty", y: "accuracy (fraction correct)" },
  length: { id: "chart-length", title: "Mean response length", y: "response length (tokens)" },
};

function layout(chart, lastStep) {
  return {
    title: { text: chart.title, font: { size: 14 } },
    margin: { l: 60, r: 20, t: 40, b: 45 },
    xaxis: { title: { text: "step" }, rangemode: "tozero", tick0: 0, dtick: Math.max(1, Math.ceil((lastStep + 1) / 10)) },
    yaxis: { title: { text: chart.y } },
    legend: { orientation: "h", y: -0.25 },
  };
}

function traces(rows, state) {
  const x = rows.map((r) => r.step);
  const col = (k) => rows.map((r) => r[k]);
  const target = col("target_entropy");
  const line = (name, y, extra = {}) => ({ x, y, name, type: "scatter", mode: "lines+markers", ...extra });
  const h0 = state && state.initial_entropy != null ? x.map(() => state.initial_entropy) : [];
  const entropy = [
    line("H*+20 %", target.map((t) => (t == null ? null : 1.2 * t)), { mode: "lines", line: { width: 0 }, showlegend: false }),
    line("±20 % band", target.map((t) => (t == null ? null : 0.8 * t)), {
      mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(80,140,255,0.15)",
    }),
    line("H*", target, { mode: "lines", line: { dash: "dash" } }),
    line("H₀", h0, { mode: "lines", line: { dash: "dot" } }),
    line("H", col("mean_entropy")),
  ];
  const alpha = [line("α", col("alpha"))];
  for (const term of ["p_term", "i_term", "d_term"]) {
    if (rows.some((r) => r[term] != null)) alpha.push(line(term, col(term), { mode: "lines" }));
  }
  const accuracy = [line("all prompts", col("mean_accuracy"))];
  const buckets = [...new Set(rows.flatMap((r) => Object.keys(r.accuracy_by_difficulty || {})))].sort();
  const bucketAcc = (r, b) => {
    const by = r.accuracy_by_difficulty;
    return by && Object.hasOwn(by, b) ? by[b] : null;
  };
  for (const b of buckets) {
    // Bucket names come from the learner's data: plotly would render tags in a trace name, so they go in as text.
    accuracy.push(line(plotlyText(b), rows.map((r) => bucketAcc(r, b)), { line: { dash: "dot" } }));
  }
  return {
    entropy,
    alpha,
    weight: [line("mean λ", col("mean_prompt_weight"))],
    accuracy,
    length: [line("response length", col("response_length"))],
  };
}

function plotlyText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function draw(rows, state) {
  const data = traces(rows, state);
  for (const [key, chart] of Object.entries(CHARTS)) {
    const lastStep = rows.length ? rows[rows.length - 1].step : 0;
    Plotly.react(chart.id, data[key], layout(chart, lastStep), { displayModeBar: false, responsive: true });
    $(chart.id).dataset.points = String(rows.filter((r) => r.mean_entropy != null).length);
  }
  $("run-updated").textContent = new Date().toLocaleTimeString();
}

// Server-Sent Events over fetch: yields {event, id, data} until the server ends the stream.
async function* sseEvents(url) {
  const resp = await fetch(url, { headers: authHeaders() });
  if (!resp.ok) throw new Error(`${resp.status}: ${(await resp.text()) || resp.statusText}`);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const ev = { event: "message", id: null, data: "" };
      for (const line of block.split("\n")) {
        const i = line.indexOf(":");
        if (i <= 0) continue; // a comment (": keep-alive") or a blank
        const [k, v] = [line.slice(0, i), line.slice(i + 1).trimStart()];
        if (k === "event") ev.event = v;
        else if (k === "id") ev.id = Number(v);
        else if (k === "data") ev.data += v;
      }
      if (ev.data) yield { ...ev, data: JSON.parse(ev.data) };
    }
  }
}

function summary(state) {
  const steps = state.total_steps ? ` / ${state.total_steps - 1}` : ""; // steps count from 0, as in metrics.jsonl
  const where = state.finished ? "finished" : state.has_step ? `step ${state.step}${steps}` : "no step yet";
  return `${state.strategy} · ${where} · α ${fmt(state.alpha, 3)} · H* ${fmt(state.target_entropy)}`;
}

async function followRun(runId, onChange) {
  $("run-id").textContent = runId;
  const rows = new Map();
  let state = null;
  let since = 0;
  for (;;) {
    try {
      for await (const ev of sseEvents(`/v1/runs/${encodeURIComponent(runId)}/stream?since=${since}`)) {
        if (ev.event === "state") {
          if (state && state.overrides && JSON.stringify(state.overrides) !== JSON.stringify(ev.data.overrides)) onChange();
          state = ev.data;
        }
        if (ev.event === "history") for (const r of ev.data) rows.set(r.step, r);
        if (ev.id !== null) since = ev.id;
        const sorted = [...rows.values()].sort((a, b) => a.step - b.step);
        $("run-summary").textContent = state ? summary(state) : "";
        draw(sorted, state);
        $("run-error").textContent = "";
      }
    } catch (err) {
      $("run-error").textContent = String(err.message || err);
      await sleep(2000);
    }
    await sleep(200); // the stream ended (it is bounded): continue from `since`
  }
}

// --- steering: the override form, the audit log, what the token may do --------------------------------------------

const FIELDS = ["alpha", "target_entropy", "params", "options", "strategy", "frozen", "release", "reason"];

function showError(field, message) {
  const slot = document.querySelector(`.field-error[data-for="${FIELDS.includes(field) || field === "token" ? field : "form"}"]`);
  slot.textContent = message;
}

function clearErrors() {
  for (const el of document.querySelectorAll(".field-error")) el.textContent = "";
}

// The API's own words next to the field they concern: a 422 names it in `loc`, a 409 starts with it
// ("alpha: must be within ..."), 401 and 403 concern the token.
function placeError(err) {
  if (err.status === 401 || err.status === 403) return showError("token", err.message);
  if (Array.isArray(err.detail)) {
    for (const d of err.detail) showError(String((d.loc || []).filter((x) => x !== "body")[0] || "form"), d.msg);
    return;
  }
  const text = String(err.detail);
  showError(text.split(":")[0].split(".")[0].trim(), text);
}

function overrideBody(form) {
  const body = {};
  for (const name of ["alpha", "target_entropy"]) if (form[name].value !== "") body[name] = Number(form[name].value);
  for (const name of ["params", "options"]) {
    if (form[name].value.trim() === "") continue;
    try {
      body[name] = JSON.parse(form[name].value);
    } catch (e) {
      throw new ApiError(0, [{ loc: ["body", name], msg: `not JSON: ${e.message}` }]);
    }
  }
  if (form.strategy.value) body.strategy = form.strategy.value;
  if (form.frozen.value) body.frozen = form.frozen.value === "true";
  if (form.release.checked) body.release = true;
  body.reason = form.reason.value.trim();
  if (!body.reason) throw new ApiError(0, [{ loc: ["body", "reason"], msg: "a reason is required" }]);
  return body;
}

async function strategyNames() {
  const doc = await api("/openapi.json");
  const resolve = (s) => (s && s.$ref ? doc.components.schemas[s.$ref.split("/").pop()] : s);
  const prop = resolve(doc.components.schemas.OverrideBody.properties.strategy);
  const choices = (prop.anyOf || [prop]).map(resolve).find((s) => s && s.enum);
  return choices ? choices.enum : [];
}

async function setupSteering(runId, refreshAudit) {
  const form = $("override");
  for (const name of await strategyNames().catch(() => [])) form.strategy.add(new Option(name, name));
  const me = await api("/console/whoami").catch((err) => {
    placeError(err);
    return { permissions: [] };
  });
  if (!me.permissions.includes("operate")) {
    $("override-submit").disabled = true;
    $("override-readonly").hidden = false;
    $("override-readonly").textContent = token()
      ? `This token (${me.actor}) may read but not change runs: overrides need an operator token.`
      : "Changing a run needs an operator token: enter one above.";
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    $("override-result").textContent = "";
    try {
      const body = overrideBody(form);
      const state = await api(`/v1/runs/${encodeURIComponent(runId)}/coefficients`, {
        method: "PATCH",
        body: JSON.stringify(body),
      });
      $("override-result").textContent = `applied: α ${fmt(state.alpha, 3)} (version ${state.version})`;
      form.reset();
      refreshAudit();
    } catch (err) {
      if (err instanceof ApiError) placeError(err);
      else showError("form", String(err));
    }
  });
}

function auditRefresher(runId) {
  return async () => {
    try {
      const entries = await api(`/v1/runs/${encodeURIComponent(runId)}/audit`);
      const what = (c) => Object.entries(c).map(([k, v]) => `${k}: ${JSON.stringify(v.old)} → ${JSON.stringify(v.new)}`);
      document.querySelector("#audit tbody").innerHTML = entries
        .reverse()
        .map((a) => {
          const cells = [new Date(a.ts * 1000).toLocaleString(), `${a.actor} (${a.transport})`, what(a.changes).join("; ") || a.action, a.reason];
          return `<tr>${cells.map((c) => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`;
        })
        .join("");
    } catch (err) {
      showError("form", String(err.message || err));
    }
  };
}

function escapeHtml(text) {
  const el = document.createElement("span");
  el.textContent = String(text);
  return el.innerHTML;
}

function main() {
  setupToken();
  const match = location.pathname.match(/^\/runs\/([^/]+)$/);
  if (match) {
    const runId = decodeURIComponent(match[1]);
    $("run-page").hidden = false;
    const refreshAudit = auditRefresher(runId);
    setupSteering(runId, refreshAudit);
    refreshAudit();
    followRun(runId, refreshAudit);
  } else {
    $("runs-page").hidden = false;
    refreshRuns();
    setInterval(refreshRuns, 5000);
  }
}

main();
