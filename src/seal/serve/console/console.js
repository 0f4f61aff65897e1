// The seal console: every page is drawn here from the /v1 API. No build step, no libraries, nothing from a CDN.
"use strict";

const KEY = "seal-api-key";
const main = document.getElementById("main");
const POLL_MS = 500; // the live adaptation view asks for progress twice a second

// ---- small helpers ----------------------------------------------------------------------------------------------

// An element with attributes (on* ones as listeners) and children (strings become text: nothing is parsed as HTML).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, value);
  for (const child of children) el.append(child);
  return el;
}

const number = (value, digits = 3) =>
  value === null || value === undefined ? "–" : typeof value === "number" ? +value.toFixed(digits) + "" : String(value);
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\+00:00$/, " UTC") : "");
const statusWords = { committed: "committed", rolled_back: "rolled back", base: "base model", failed: "failed",
                      interrupted: "interrupted", queued: "queued", generating: "generating", training: "training",
                      checking: "checking" };
const badge = (status) => h("span", { class: `badge ${status}` }, statusWords[status] || status);

function message(text, kind = "error") {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

class ApiError extends Error {
  constructor(status, text) {
    super(text);
    this.status = status;
  }
}

// A request to the API with the key, if one was entered; an error response becomes an ApiError with the API's reason.
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = localStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let text = `${response.status} ${response.statusText}`;
    try {
      text = (await response.json()).error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new ApiError(response.status, text);
  }
  return response;
}
const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) =>
  (await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }))
    .json();

function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    message(`This needs the API key: enter it at the top of the page. (${error.message})`);
  } else {
    message(error.message || String(error));
  }
}

// A button whose action runs once at a time; errors are shown, not thrown.
function action(label, run, attrs = {}) {
  const button = h("button", { type: "button", ...attrs }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    message("");
    try {
      await run();
    } catch (error) {
      failed(error);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

// A line chart of the training loss, one point per step.
function lossChart(steps, width = 640, height = 170) {
  const losses = steps.filter(Number.isFinite); // a step whose loss was not finite is kept as null
  const pad = { left: 44, right: 10, top: 10, bottom: 24 };
  const chart = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                             "aria-label": `training loss over ${losses.length} steps` });
  if (!losses.length) {
    chart.append(svg("text", { x: pad.left, y: height / 2 }, "no training steps yet"));
    return chart;
  }
  const top = Math.max(...losses), bottom = Math.min(0, ...losses);
  const x = (i) => pad.left + (losses.length === 1 ? 0 : (i / (losses.length - 1)) * (width - pad.left - pad.right));
  const y = (v) => pad.top + (1 - (v - bottom) / (top - bottom || 1)) * (height - pad.top - pad.bottom);
  chart.append(
    svg("polyline", { points: losses.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }),
    svg("text", { x: 4, y: pad.top + 8 }, number(top, 2)),
    svg("text", { x: 4, y: height - pad.bottom }, number(bottom, 2)),
    svg("text", { x: pad.left, y: height - 6 }, "step 1"),
    svg("text", { x: width - pad.right - 60, y: height - 6 }, `step ${losses.length}`),
  );
  return chart;
}

// The few Markdown forms the benchmarks write: headings, tables, lists, code blocks, paragraphs, `code` and **bold**.
function markdown(text) {
  const root = h("div", { class: "markdown" });
  const inline = (line) => {
    const parts = [];
    const pattern = /(`[^`]+`|\*\*[^*]+\*\*)/g;
    let last = 0, match;
    while ((match = pattern.exec(line))) {
      parts.push(line.slice(last, match.index));
      const token = match[0];
      parts.push(token.startsWith("`") ? h("code", {}, token.slice(1, -1)) : h("strong", {}, token.slice(2, -2)));
      last = match.index + token.length;
    }
    parts.push(line.slice(last));
    return parts;
  };
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; ) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      for (i++; i < lines.length && !lines[i].startsWith("```"); i++) code.push(lines[i]);
      root.append(h("pre", {}, code.join("\n")));
      i++;
    } else if (/^#{1,6} /.test(line)) {
      const level = Math.min(line.indexOf(" ") + 1, 6);
      root.append(h(`h${level}`, {}, inline(line.slice(level))));
      i++;
    } else if (line.trim().startsWith("|")) {
      const rows = [];
      for (; i < lines.length && lines[i].trim().startsWith("|"); i++) rows.push(lines[i]);
      const cells = (row) => row.trim().replace(/^\||\|$/g, "").split("|").map((c) => c.trim());
      const body = rows.filter((row, n) => !(n === 1 && /^[\s|:-]+$/.test(row)));
      root.append(h("table", {},
        h("thead", {}, h("tr", {}, cells(body[0]).map((c) => h("th", {}, inline(c))))),
        h("tbody", {}, body.slice(1).map((row) => h("tr", {}, cells(row).map((c) => h("td", {}, inline(c))))))));
    } else if (/^\s*[-*] /.test(line)) {
      const items = [];
      for (; i < lines.length && /^\s*[-*] /.test(lines[i]); i++) items.push(lines[i].replace(/^\s*[-*] /, ""));
      root.append(h("ul", {}, items.map((item) => h("li", {}, inline(item)))));
    } else if (line.trim()) {
      const paragraph = [];
      for (; i < lines.length && lines[i].trim() && !/^(#|```|\s*\||\s*[-*] )/.test(lines[i]); i++) {
        paragraph.push(lines[i]);
      }
      root.append(h("p", {}, inline(paragraph.join(" "))));
    } else {
      i++;
    }
  }
  return root;
}

const encodePath = (path) => path.split("/").map(encodeURIComponent).join("/");

// Sections may be arrays of nodes, or null when they have nothing to show.
function render(...nodes) {
  main.replaceChildren(...nodes.flat(Infinity).filter((node) => node !== null && node !== undefined));
}

// ---- Versions: the lineage as a timeline --------------------------------------------------------------------------

async function versionsPage() {
  const [versions, jobs] = await Promise.all([getJson("/v1/versions"), getJson("/v1/adaptations")]);
  // Newest first; versions recorded in the same second keep their order (the base model is recorded with v1).
  const entries = versions.data.map((v, order) => ({ at: v.created_at, order, version: v }));
  for (const job of jobs.data) {
    if (job.status === "failed" || job.status === "interrupted") entries.push({ at: job.updated_at, order: -1, job });
  }
  entries.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : b.order - a.order));
  const current = versions.current;
  const list = h("ol", { class: "timeline" }, entries.map((entry) =>
    entry.version ? versionEntry(entry.version, current) : jobEntry(entry.job)));
  render(
    h("h1", {}, "Versions"),
    h("p", { class: "muted" }, `current ${current}, serving ${versions.serving}; ${versions.data.length} versions. `,
      "Learn a document on the ", h("a", { href: "/learn" }, "Learn"), " page."),
    entries.length ? list : h("p", {}, "Nothing learned yet: the base model answers."),
  );
}

function checkChips(report) {
  return h("span", { class: "chips" }, (report.checks || []).map((c) =>
    h("span", { class: c.passed ? "pass" : "fail", title: `${c.name}: ${number(c.value)} vs ${number(c.threshold)}` },
      `${c.passed ? "✓" : "✗"} ${c.name}`)));
}

function activateButton(version, current) {
  if (version.id === current || !["committed", "base"].includes(version.status)) return null;
  return action("Activate", async () => {
    const result = await postJson(`/v1/versions/${version.id}/activate`, {});
    message(`${result.current} is now current (was ${result.previous}).`, "info");
    await draw();
  }, { "data-activate": version.id });
}

function versionEntry(v, current) {
  const isCurrent = v.id === current;
  return h("li", { class: `state-${v.status}${isCurrent ? " is-current" : ""}`, "data-version": v.id },
    h("div", { class: "card" },
      h("div", { class: "row" },
        h("a", { href: `/versions/${v.id}` }, h("strong", {}, v.id)),
        badge(v.status),
        isCurrent ? h("span", { class: "badge current" }, "current") : null,
        h("span", { class: "grow muted" }, `${when(v.created_at)}${v.seconds ? ` · ${v.seconds} s` : ""}`),
        activateButton(v, current)),
      v.sources.length ? h("div", {}, "from ", v.sources.map((s) => s.source).join(", ")) : null,
      v.status === "base" ? null : h("div", { class: "row" },
        h("span", {}, `kept ${v.kept}, rejected ${v.rejected} self-edits`), checkChips(v.report)),
      v.reason ? h("div", { class: "fail" }, v.reason) : null));
}

function jobEntry(job) {
  return h("li", { class: "state-failed", "data-job": job.id },
    h("div", { class: "card" },
      h("div", { class: "row" }, h("strong", {}, "adaptation"), badge(job.status),
        h("span", { class: "grow muted" }, when(job.updated_at))),
      h("div", {}, "from ", job.documents.map((d) => d.name).join(", ")),
      h("div", { class: "fail" }, job.reason)));
}

// ---- A version --------------------------------------------------------------------------------------------------

async function versionPage(id) {
  const v = await getJson(`/v1/versions/${encodeURIComponent(id)}`);
  const stats = v.stats || {};
  render(
    h("h1", {}, `${v.id} `, badge(v.status), v.current ? h("span", { class: "badge current" }, " current") : null),
    h("div", { class: "row" },
      h("span", { class: "muted" }, `${when(v.created_at)} · parent `),
      v.parent ? h("a", { href: `/versions/${v.parent}` }, v.parent) : "–",
      h("span", { class: "muted" }, `· ${v.model}`),
      activateButton(v, v.current ? v.id : null)),
    v.reason ? h("p", { class: "fail" }, v.reason) : null,
    (stats.notes || []).map((note) => h("p", { class: "note" }, `note: ${note}`)),
    h("h2", {}, "Sources"),
    v.sources.length ? v.sources.map((s) => h("details", { class: "card" },
      h("summary", {}, h("strong", {}, s.title), ` ${s.source} `, h("span", { class: "muted" }, s.sha256.slice(0, 12))),
      s.text ? h("pre", {}, s.text) : h("p", { class: "muted" }, "The text was not recorded (learned before seal kept it)."),
    )) : h("p", { class: "muted" }, "None."),
    stats.steps !== undefined ? trainingSection(stats) : null,
    checksSection(v.report),
    probesSection(v.probes),
    selfEditsSection(v.self_edits),
  );
}

function trainingSection(stats) {
  return [h("h2", {}, "Training"),
    h("p", {}, `${stats.sequences} sequences (${stats.replayed || 0} replayed, ${stats.rehearsed_chat || 0} chat turns ` +
      `rehearsed), ${stats.steps} steps, loss ${number(stats.first_loss)} → ${number(stats.final_loss)}, ` +
      `${stats.seconds} s`),
    stats.losses ? lossChart(stats.losses) : h("p", { class: "muted" }, "No loss curve recorded for this version.")];
}

function checksSection(report) {
  if (!report || !report.checks || !report.checks.length) return null;
  return [h("h2", {}, "Checks"),
    h("table", { id: "checks" },
      h("thead", {}, h("tr", {}, ["check", "", "value", "threshold", "detail"].map((c) => h("th", {}, c)))),
      h("tbody", {}, report.checks.map((c) => h("tr", {},
        h("td", {}, c.name),
        h("td", { class: c.passed ? "pass" : "fail" }, c.passed ? "pass" : "FAIL"),
        h("td", { class: "num" }, number(c.value)),
        h("td", { class: "num" }, number(c.threshold)),
        h("td", {}, h("details", {}, h("summary", {}, "detail"), h("pre", {}, JSON.stringify(c.detail, null, 2)))))))),
  ];
}

function probesSection(probes) {
  if (!probes.length) return null;
  return [h("h2", {}, "Probes"),
    h("p", { class: "muted" }, "Held-out questions (or cloze sentences) about the document, asked before and after " +
      "the update; NLL is the expected answer's loss."),
    h("table", { id: "probes" },
      h("thead", {}, h("tr", {}, ["probe", "expected", "answer before", "answer after", "NLL before → after"]
        .map((c) => h("th", {}, c)))),
      h("tbody", {}, probes.map((p) => h("tr", {},
        h("td", {}, p.label), h("td", {}, p.answer.trim()),
        h("td", {}, p.reply_before || h("span", { class: "muted" }, "–")),
        h("td", {}, p.reply_after || h("span", { class: "muted" }, "–")),
        h("td", { class: "num" }, `${number(p.nll_before, 2)} → ${number(p.nll_after, 2)}`)))))];
}

function selfEditsSection(edits) {
  if (!edits.length) return null;
  const kinds = [...new Set(edits.map((e) => e.kind))].sort();
  const status = h("select", { "aria-label": "kept or rejected" },
    h("option", { value: "" }, "kept and rejected"), h("option", { value: "kept" }, "kept"),
    h("option", { value: "rejected" }, "rejected"));
  const kind = h("select", { "aria-label": "kind" }, h("option", { value: "" }, "every kind"),
    kinds.map((k) => h("option", { value: k }, k)));
  const search = h("input", { type: "text", placeholder: "words in the text or reason", "aria-label": "search" });
  const count = h("span", { class: "muted" });
  const body = h("tbody");
  const shown = () => {
    const words = search.value.toLowerCase();
    const rows = edits.filter((e) =>
      (!status.value || (status.value === "kept") === e.accepted) && (!kind.value || e.kind === kind.value) &&
      (!words || `${e.text} ${e.question} ${e.answer} ${e.reason}`.toLowerCase().includes(words)));
    count.textContent = `${rows.length} of ${edits.length} shown`;
    body.replaceChildren(...rows.map((e) => h("tr", { "data-kept": e.accepted ? "1" : "0" },
      h("td", { class: e.accepted ? "pass" : "fail" }, e.accepted ? "kept" : "rejected"),
      h("td", { class: "num" }, number(e.score, 2)),
      h("td", {}, e.kind),
      h("td", {}, e.question ? [h("div", {}, `Q: ${e.question}`), h("div", {}, `A: ${e.answer}`)] : h("div", {}, e.text)),
      h("td", { class: "muted" }, e.reason))));
  };
  for (const control of [status, kind]) control.addEventListener("change", shown);
  search.addEventListener("input", shown);
  shown();
  return [h("h2", {}, "Self-edits"),
    h("div", { class: "filters" }, status, kind, search, count),
    h("table", { id: "self-edits" },
      h("thead", {}, h("tr", {}, ["", "score", "kind", "text", "the evaluator's reason"].map((c) => h("th", {}, c)))),
      body)];
}

// ---- Ask across versions ------------------------------------------------------------------------------------------

async function askPage() {
  const versions = await getJson("/v1/versions");
  const answerable = versions.data.filter((v) => v.status === "committed" || v.status === "base");
  if (!answerable.some((v) => v.id === "v0")) answerable.unshift({ id: "v0", status: "base", sources: [] });
  const chosen = new Set([versions.current, answerable[0].id]);
  const question = h("input", { type: "text", id: "question", placeholder: "A question about what was learned",
                                size: 60 });
  const boxes = answerable.slice().reverse().map((v) => h("label", {},
    h("input", { type: "checkbox", value: v.id, checked: chosen.has(v.id) }),
    ` ${v.id}${v.id === versions.current ? " (current)" : ""} `,
    h("span", { class: "muted" }, v.sources.map((s) => s.source).join(", "))));
  const results = h("div", { id: "answers" });
  const ask = action("Ask", async () => {
    const picked = boxes.map((label) => label.querySelector("input")).filter((box) => box.checked).map((b) => b.value);
    results.replaceChildren(h("p", { class: "muted" }, "Asking…"));
    const reply = await postJson("/v1/answers", { question: question.value, versions: picked });
    results.replaceChildren(h("div", { class: "answers" }, reply.data.map((a, i) =>
      h("div", { class: `card${i && a.answer !== reply.data[i - 1].answer ? " changed" : ""}`, "data-answer": a.version },
        h("div", { class: "row" }, h("a", { href: `/versions/${a.version}` }, h("strong", {}, a.version)),
          h("span", { class: "muted" }, `${a.seconds} s`)),
        h("div", {}, a.answer)))));
  }, { class: "primary", id: "ask" });
  const blame = action("Which version changed it?", async () => {
    results.replaceChildren(h("p", { class: "muted" }, "Asking every version of the current lineage…"));
    const reply = await postJson("/v1/blame", { question: question.value });
    const changes = reply.data.filter((step) => step.changed).map((step) => step.version);
    results.replaceChildren(
      h("p", {}, changes.length ? `The answer changed at ${changes.join(", ")}.` : "No version changed the answer."),
      h("ol", { class: "timeline" }, reply.data.map((step) => h("li", { class: step.changed ? "state-committed" : "" },
        h("div", { class: `card${step.changed ? " changed" : ""}`, "data-blame": step.version },
          h("div", { class: "row" }, h("a", { href: `/versions/${step.version}` }, h("strong", {}, step.version)),
            step.changed ? h("span", { class: "badge generating" }, "changed") : null),
          h("div", {}, step.answer),
          step.sources.length ? h("div", { class: "muted" }, `learned from ${step.sources.join(", ")}`) : null,
          step.evidence.map((text) => h("pre", {}, text)))))));
  }, { id: "blame" });
  render(h("h1", {}, "Ask across versions"),
    h("p", { class: "muted" }, "Each chosen version answers closed-book, as `seal ask` does, side by side."),
    h("div", { class: "filters" }, question, ask, blame), h("div", { class: "filters" }, boxes), results);
}

// ---- Learn: upload, then watch the adaptation live ----------------------------------------------------------------

const STAGES = ["load", "screen", "generate", "score", "train", "check"];

async function learnPage() {
  const files = h("input", { type: "file", multiple: true, accept: ".md,.txt,.markdown,.rst", id: "files" });
  const name = h("input", { type: "text", value: "pasted.md", "aria-label": "name of the pasted document" });
  const text = h("textarea", { id: "text", placeholder: "…or paste the document's text here" });
  const watch = h("div", { id: "live" });
  const submit = action("Learn", async () => {
    const form = new FormData();
    for (const file of files.files) form.append("file", file, file.name);
    if (text.value.trim()) form.append("file", new Blob([text.value], { type: "text/markdown" }), name.value);
    const job = await (await api("/v1/adaptations", { method: "POST", body: form })).json();
    history.replaceState(null, "", `/learn?job=${job.id}`);
    follow(job.id, watch, () => listJobs(jobs));
  }, { class: "primary", id: "learn" });
  const jobs = h("div", { id: "jobs" });
  render(h("h1", {}, "Learn"),
    h("div", { class: "card" }, h("p", {}, "Documents to learn (Markdown or text): ", files),
      h("p", {}, "Name ", name), text, h("p", {}, submit)),
    watch, h("h2", {}, "Adaptations"), jobs);
  await listJobs(jobs);
  const asked = new URLSearchParams(location.search).get("job");
  if (asked) follow(asked, watch, () => listJobs(jobs));
}

async function listJobs(box) {
  const jobs = await getJson("/v1/adaptations");
  box.replaceChildren(jobs.data.length ? h("table", {},
    h("thead", {}, h("tr", {}, ["", "documents", "version", "updated", "reason"].map((c) => h("th", {}, c)))),
    h("tbody", {}, jobs.data.slice().reverse().map((job) => h("tr", {},
      h("td", {}, h("a", { href: `/learn?job=${job.id}` }, badge(job.status))),
      h("td", {}, job.documents.map((d) => d.name).join(", ")),
      h("td", {}, job.version ? h("a", { href: `/versions/${job.version}` }, job.version) : "–"),
      h("td", { class: "muted" }, when(job.updated_at)), h("td", {}, job.reason))))) :
    h("p", { class: "muted" }, "None yet."));
}

// Poll one adaptation until it is finished, redrawing its stages, steps and loss curve each time; then `done()`.
async function follow(jobId, box, done) {
  const finished = ["committed", "rolled_back", "failed", "interrupted"];
  let seen = null; // the last progress: still drawn once the job is finished (the server keeps only the running one)
  for (;;) {
    let job;
    try {
      job = await getJson(`/v1/adaptations/${encodeURIComponent(jobId)}`);
    } catch (error) {
      failed(error);
      return;
    }
    const over = finished.includes(job.status);
    const progress = (seen = job.progress || seen);
    const reached = new Set((progress ? progress.stages : []).map(([stage]) => stage));
    box.replaceChildren(h("div", { class: "card", "data-status": job.status },
      h("div", { class: "row" }, h("strong", {}, "Adaptation "), badge(job.status),
        h("span", { class: "grow muted" }, job.documents.map((d) => d.name).join(", ")),
        progress ? h("span", { class: "muted", id: "elapsed" }, `${progress.seconds} s`) : null),
      progress ? [
        h("ol", { class: "stages" }, STAGES.map((stage) => h("li", {
          class: stage === progress.stage && !over ? "now" : reached.has(stage) ? "done" : "" }, stage))),
        progress.total ? h("div", {}, h("progress", { max: progress.total, value: progress.done }),
          h("span", { class: "muted", id: "steps" }, `${progress.stage}: ${progress.done} of ${progress.total}` +
            (progress.losses.length ? `, loss ${number(progress.losses[progress.losses.length - 1])}` : ""))) : null,
        progress.losses.length ? lossChart(progress.losses) : null,
      ] : null,
      over ? h("p", { id: "outcome", class: job.status },
        job.status === "committed" ? "Committed and now served: " : `${statusWords[job.status]}: `,
        job.version ? h("a", { href: `/versions/${job.version}` }, job.version) : null,
        job.reason ? ` ${job.reason}` : "") : null));
    if (over) return done();
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// ---- Chat ---------------------------------------------------------------------------------------------------------

function chatPage() {
  const turns = [];
  const log = h("div", { class: "chat", id: "chat" });
  const input = h("textarea", { id: "say", placeholder: "Say something to the current version", rows: 3 });
  const served = h("span", { class: "muted" });
  const send = action("Send", async () => {
    const content = input.value.trim();
    if (!content) return;
    input.value = "";
    turns.push({ role: "user", content });
    log.append(h("div", { class: "turn user" }, content));
    const reply = h("div", { class: "turn assistant" });
    log.append(reply);
    const response = await api("/v1/chat/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages: turns, stream: true }) });  // no model: the key's own tenant
    served.textContent = `answered by ${response.headers.get("X-Seal-Version")}`;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "", text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const events = buffered.split("\n\n");
      buffered = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const delta = JSON.parse(data).choices[0]?.delta?.content;
        if (delta) reply.textContent = text += delta;
      }
    }
    turns.push({ role: "assistant", content: text });
  }, { class: "primary", id: "send" });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      send.click();
    }
  });
  render(h("h1", {}, "Chat"), h("p", {}, served), log, input, h("p", {}, send));
}

// ---- Benchmarks -----------------------------------------------------------------------------------------------------

async function runsPage() {
  if (!window.SEAL.runs) {
    render(h("h1", {}, "Benchmarks"), h("p", {}, "This server shows no runs: start it with `seal serve --runs DIR`."));
    return;
  }
  const runs = await getJson("/v1/runs");
  render(h("h1", {}, "Benchmarks"),
    runs.data.length ? h("table", { id: "runs" },
      h("thead", {}, h("tr", {}, ["run", "files", "modified"].map((c) => h("th", {}, c)))),
      h("tbody", {}, runs.data.map((run) => h("tr", {},
        h("td", {}, h("a", { href: `/benchmarks/${encodePath(run.name)}` }, run.name)),
        h("td", { class: "muted" }, run.files.join(", ")),
        h("td", { class: "muted" }, new Date(run.modified * 1000).toISOString().slice(0, 16).replace("T", " ")))))) :
      h("p", { class: "muted" }, "No run folders (with config.json or results.md) yet."));
}

async function runPage(name) {
  const runs = await getJson("/v1/runs");
  const run = runs.data.find((r) => r.name === name);
  const file = (f) => api(`/v1/runs/${encodePath(name)}/files/${encodeURIComponent(f)}`);
  const parts = [h("h1", {}, name)];
  if (run.files.includes("results.md")) parts.push(markdown(await (await file("results.md")).text()));
  for (const plot of run.files.filter((f) => f.endsWith(".png") || f.endsWith(".svg"))) {
    // Fetched with the key, then shown: an <img src> could not send it.
    const url = URL.createObjectURL(await (await file(plot)).blob());
    parts.push(h("h2", {}, plot), h("img", { class: "plot", src: url, alt: plot }));
  }
  for (const data of run.files.filter((f) => f.endsWith(".json"))) {
    parts.push(h("details", { class: "card" }, h("summary", {}, data),
      h("pre", {}, JSON.stringify(await (await file(data)).json(), null, 2))));
  }
  render(...parts);
}

// ---- the page ---------------------------------------------------------------------------------------------------------

function notFound() {
  render(h("h1", {}, "Not found"),
    h("p", {}, `Nothing is at ${location.pathname}. `, h("a", { href: "/" }, "See the versions.")));
}

const PAGES = [
  [/^\/$/, "versions", versionsPage], [/^\/versions\/([^/]+)$/, "versions", versionPage], [/^\/ask$/, "ask", askPage],
  [/^\/learn$/, "learn", learnPage], [/^\/chat$/, "chat", chatPage], [/^\/benchmarks$/, "benchmarks", runsPage],
  [/^\/benchmarks\/(.+)$/, "benchmarks", runPage],
];

async function draw() {
  const found = PAGES.find(([pattern]) => pattern.test(location.pathname));
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", Boolean(found) && link.dataset.nav === found[1]);
  }
  document.body.dataset.ready = "";
  try {
    if (window.SEAL.status === 404 || !found) notFound();
    else await found[2](...location.pathname.match(found[0]).slice(1).map(decodeURIComponent));
  } catch (error) {
    failed(error);
    if (main.textContent === "Loading…") render(h("p", { class: "muted" }, "This page could not be shown."));
  } finally {
    // The page is drawn: tests wait for this, and the timing script reads when it happened.
    document.body.dataset.drawnMs = Math.round(performance.now());
    document.body.dataset.ready = "1";
  }
}

function keyControls() {
  const form = document.getElementById("key-form"), input = document.getElementById("key");
  const forget = document.getElementById("forget-key");
  const shown = () => {
    const known = Boolean(localStorage.getItem(KEY));
    input.hidden = known;
    form.querySelector("button[type=submit]").hidden = known;
    forget.hidden = !known;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    localStorage.setItem(KEY, input.value.trim());
    input.value = "";
    shown();
    message("");
    draw();
  });
  forget.addEventListener("click", () => {
    localStorage.removeItem(KEY);
    shown();
  });
  shown();
}

keyControls();
draw();
