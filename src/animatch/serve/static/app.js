// The animatch page: three tabs over the JSON API (see /docs). No framework; all text goes in via textContent.
"use strict";

const $ = (id) => document.getElementById(id);
let LIMITS = { max_upload_bytes: Infinity };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function setStatus(id, message, isError = false) {
  const node = $(id);
  node.textContent = message;
  node.classList.toggle("error", isError);
}

async function api(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: use the status line below */ }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function checkSizes(files) {
  const total = files.reduce((sum, f) => sum + f.size, 0);
  if (total > LIMITS.max_upload_bytes) {
    const mib = (LIMITS.max_upload_bytes / 1048576).toFixed(1);
    throw new Error(`upload too large: ${(total / 1048576).toFixed(1)} MiB, the server accepts at most ${mib} MiB`);
  }
}

function previews(target, files) {
  target.replaceChildren(...files.map((f) => el("img", { src: URL.createObjectURL(f), alt: f.name, title: f.name })));
}

const fmt = (x, digits = 3) => (x == null ? "–" : Number(x).toFixed(digits));

// ------------------------------------------------------------------------------------------------ tabs
function showTab(button) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab === button;
    tab.setAttribute("aria-selected", String(on));
    $(tab.dataset.panel).hidden = !on;
  }
}

// ---------------------------------------------------------------------------------------------- search
async function showDetail(id, card) {
  for (const c of document.querySelectorAll(".result.selected")) c.classList.remove("selected");
  if (card) card.classList.add("selected");
  try {
    const c = await api(`/api/character/${encodeURIComponent(id)}`);
    $("detail-image").src = c.image_url;
    $("detail-image").alt = c.character || "";
    $("detail-name").textContent = c.character || "(unnamed)";
    $("detail-title").textContent = c.title || "";
    $("detail-appearance").textContent = c.appearance || "(no appearance text)";
    $("detail").hidden = false;
  } catch (e) {
    setStatus("search-status", e.message, true);
  }
}

function resultCard(r) {
  const card = el("button", { class: "result", type: "button", "data-id": r.id },
    el("img", { src: r.image_url, alt: r.character || "", loading: "lazy" }),
    el("div", { class: "name", text: r.character || "(unnamed)" }),
    el("div", { class: "title", text: r.title || "" }),
    el("span", { class: "score", text: `score ${fmt(r.score)}` }));
  card.addEventListener("click", () => showDetail(r.id, card));
  return card;
}

async function searchText(event) {
  event.preventDefault();
  const q = $("search-query").value.trim();
  if (!q) return;
  setStatus("search-status", "searching…");
  $("described").replaceChildren();
  try {
    const body = await api(`/api/search?q=${encodeURIComponent(q)}&k=${$("search-k").value}`);
    $("gallery").replaceChildren(...body.results.map(resultCard));
    setStatus("search-status", `${body.results.length} characters whose images best match the description — click one to read its appearance text`);
  } catch (e) {
    setStatus("search-status", e.message, true);
  }
}

async function searchImage() {
  const file = $("search-image").files[0];
  if (!file) return;
  $("gallery").replaceChildren();
  setStatus("search-status", "reading the image…");
  try {
    checkSizes([file]);
    const form = new FormData();
    form.append("image", file);
    form.append("k", $("search-k").value);
    const body = await api("/api/search/image", { method: "POST", body: form });
    $("described").replaceChildren(...body.results.map((r) => el("div", { class: "item" },
      el("img", { src: r.image_url, alt: r.character || "" }),
      el("div", {},
        el("strong", { text: `${r.rank}. ${r.character || "(unnamed)"}` }),
        el("span", { class: "muted", text: r.title ? ` — ${r.title}` : "" }),
        el("span", { class: "score", text: ` score ${fmt(r.score)}` }),
        el("p", { class: "prose", text: r.appearance || "" })))));
    setStatus("search-status", `the ${body.results.length} descriptions closest to ${file.name}`);
  } catch (e) {
    setStatus("search-status", e.message, true);
  }
}

// ----------------------------------------------------------------------------------------------- match
const picked = new Map();

function showPicked() {
  $("match-picked").textContent = picked.size ? `picked: ${[...picked.values()].join(", ")}` : "";
}

let pickerRequest = 0;

async function loadPicker() {
  const mine = ++pickerRequest;
  try {
    const body = await api(`/api/characters?q=${encodeURIComponent($("match-filter").value)}&limit=50`);
    if (mine !== pickerRequest) return;  // typing went on: a later request owns the list
    $("match-picker").replaceChildren(...body.results.map((c) => {
      const label = c.title ? `${c.character} (${c.title})` : c.character;
      const box = el("input", { type: "checkbox", value: c.id });
      box.checked = picked.has(c.id);
      box.addEventListener("change", () => { box.checked ? picked.set(c.id, label) : picked.delete(c.id); showPicked(); });
      return el("label", {}, box, ` ${label}`);
    }), ...(body.total > body.results.length ? [el("div", { class: "muted", text: `…${body.total - body.results.length} more; filter to narrow` })] : []));
  } catch (e) {
    setStatus("match-status", e.message, true);
  }
}

async function runMatch() {
  const files = [...$("match-images").files];
  if (!files.length) return setStatus("match-status", "choose one or more images first", true);
  const button = $("match-run");
  button.disabled = true;
  setStatus("match-status", "matching…");
  try {
    checkSizes(files);
    const form = new FormData();
    for (const f of files) form.append("images", f);
    form.append("texts", $("match-texts").value);
    for (const id of picked.keys()) form.append("character_ids", id);
    form.append("top_k", String(Math.min(Number($("match-k").value) || 5,
      $("match-texts").value.split("\n").filter((t) => t.trim()).length + picked.size || 1)));
    const body = await api("/api/match", { method: "POST", body: form });
    const tables = body.images.map((row) => el("div", {},
      el("h3", { class: "imgname", text: row.image }),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["rank", "candidate", "cosine", "probability"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...row.matches.map((m) => el("tr", {},
          el("td", { class: "num", text: m.rank }), el("td", { text: m.label }),
          el("td", { class: "num", text: fmt(m.cosine) }), el("td", { class: "num", text: fmt(m.probability) })))))));
    $("match-results").replaceChildren(
      el("h2", { text: "Similarity heatmap" }),
      ...body.heatmaps.map((src, n) => el("img", { class: "heatmap", src, alt: `similarity heatmap ${n + 1}` })),
      el("h2", { text: "Ranked candidates per image" }), ...tables);
    setStatus("match-status", `${body.images.length} image(s) × ${body.candidates.length} candidate(s)`);
  } catch (e) {
    setStatus("match-status", e.message, true);
  } finally {
    button.disabled = false;
  }
}

// ----------------------------------------------------------------------------------------------- judge
function verdict(result) {
  if (result.status === "error") return el("span", { class: "verdict unparsed", text: `error: ${result.error}` });
  if (result.score == null) return el("span", { class: "verdict unparsed", text: "no score could be read" });
  return result.match ? el("span", { class: "verdict match", text: "match" })
    : el("span", { class: "verdict nomatch", text: "no match" });
}

function showJudgeResult(result) {
  $("judge-results").replaceChildren(el("div", { class: "card" },
    el("div", {}, el("span", { class: "bigscore", text: result.score == null ? "–" : `${result.score}/10` }), verdict(result)),
    el("h3", { text: "What the judge sees (stage 1)" }), el("p", { class: "prose", text: result.description || "" }),
    el("h3", { text: "Analysis (stage 2)" }), el("p", { class: "prose", text: result.analysis || result.raw || "" })));
}

function showCascadeResult(rows) {
  $("judge-results").replaceChildren(el("table", {},
    el("thead", {}, el("tr", {}, ...["rank", "character", "CLIP rank", "CLIP score", "judge score", "verdict", "analysis"]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((r) => el("tr", {},
      el("td", { class: "num", text: r.rank }), el("td", { text: r.title ? `${r.character} (${r.title})` : r.character }),
      el("td", { class: "num", text: r.clip_rank }), el("td", { class: "num", text: fmt(r.clip_score) }),
      el("td", { class: "num", text: r.judge.score == null ? "–" : r.judge.score }), el("td", {}, verdict(r.judge)),
      el("td", { class: "prose", text: r.judge.analysis || r.judge.raw || "" }))))));
}

function describeJob(job) {
  if (job.status === "queued") return `waiting in the judge queue (position ${job.position})…`;
  const steps = job.progress.total > 1 ? `, ${job.progress.done} of ${job.progress.total} judged` : "";
  return `the judge is generating (${job.elapsed_s.toFixed(1)} s${steps})…`;
}

async function runJudge() {
  const file = $("judge-image").files[0];
  if (!file) return setStatus("judge-status", "choose an image first", true);
  const cascade = document.querySelector("input[name=judge-mode]:checked").value === "cascade";
  const button = $("judge-run");
  button.disabled = true;
  $("judge-results").replaceChildren();
  setStatus("judge-status", "");
  try {
    checkSizes([file]);
    const form = new FormData();
    form.append("image", file);
    if (cascade) form.append("k", $("judge-k").value);
    else form.append("text", $("judge-text").value);
    let job = await api(cascade ? "/api/judge/cascade" : "/api/judge", { method: "POST", body: form });
    $("judge-progress").hidden = false;
    const bar = document.querySelector("#judge-progress progress");
    bar.removeAttribute("value");  // indeterminate until a cascade reports steps
    while (job.status === "queued" || job.status === "running") {
      $("judge-progress-text").textContent = describeJob(job);
      if (job.progress.total > 1 && job.status === "running") {
        bar.max = job.progress.total;
        bar.value = job.progress.done;
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
      job = await api(`/api/judge/${job.job_id}`);
    }
    if (job.status === "error") throw new Error(job.error);
    cascade ? showCascadeResult(job.result) : showJudgeResult(job.result);
    setStatus("judge-status", `judged in ${job.elapsed_s.toFixed(1)} s`);
  } catch (e) {
    setStatus("judge-status", e.message, true);
  } finally {
    $("judge-progress").hidden = true;
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------ init
async function init() {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => showTab(tab));
  $("search-form").addEventListener("submit", searchText);
  $("search-image").addEventListener("change", searchImage);
  $("match-images").addEventListener("change", () => previews($("match-previews"), [...$("match-images").files]));
  $("match-filter").addEventListener("input", loadPicker);
  $("match-run").addEventListener("click", runMatch);
  $("judge-image").addEventListener("change", () => previews($("judge-preview"), [...$("judge-image").files]));
  $("judge-run").addEventListener("click", runJudge);
  try {
    const info = await api("/api/info");
    LIMITS = info.limits;
    $("index-info").textContent = `${info.records} characters indexed · CLIP ${info.clip_model.split("/").pop()}` +
      (info.judge.available ? ` · judge ${info.judge.model.split("/").pop()}` : " · no judge model");
    $("judge-k").max = info.limits.cascade_k;
    if (!info.judge.available) {
      $("judge-missing").replaceChildren("No judge model is configured, so this tab cannot judge. Restart the server with ",
        el("code", { text: "animatch serve --index … --judge-model LLAVA" }),
        " (a hub id or a local checkpoint dir; optionally ", el("code", { text: "--adapter DIR" }), ").");
      $("judge-missing").hidden = false;
      $("judge-run").disabled = true;
    }
  } catch (e) {
    $("index-info").textContent = `cannot reach the server: ${e.message}`;
  }
  loadPicker();
}

init();
