// The viewer page: study search (QIDO-RS), series thumbnails, the viewport, presets, cine, metadata,
// send / delete / upload through the REST API. No build step: plain ES modules.
import * as dw from "./dicomweb.js";
import { KEYWORDS, SOP_CLASSES } from "./tags.js";
import { Viewport } from "./viewport.js";

const $ = (sel) => document.querySelector(sel);
const T = { // DICOM tags used here
  name: "00100010", pid: "00100020", date: "00080020", mods: "00080061", desc: "00081030", acc: "00080050",
  study: "0020000D", series: "0020000E", sop: "00080018", modality: "00080060", seriesDesc: "0008103E",
  seriesNo: "00200011", count: "00201209", studyCount: "00201208", frames: "00280008", spacing: "00280030",
  imagerSpacing: "00181164", photometric: "00280004", center: "00281050", width: "00281051", instNo: "00200013",
  shared: "52009229", measures: "00289110", perFrame: "52009230", rescaleType: "00281054", sopClass: "00080016",
  rows: "00280010", columns: "00280011",
};
const PIXEL_TAGS = ["7FE00010", "7FE00008", "7FE00009"]; // Pixel Data, Float and Double Float Pixel Data

const state = {
  studies: [], study: null, series: null, stack: [], index: 0, cache: new Map(), presets: {},
  windowSet: false, cine: null,
  selection: 0, // bumped on every change of study or series: what arrives for an older one is dropped
  shown: null, // the stack item (one frame of one instance) the viewport shows, pixels and annotations alike
  dropped: 0, // responses dropped because they arrived for an instance no longer selected
};
window.hf = { state };

const viewport = new Viewport($("#viewport"), $("#view"), {
  onWindow: (c, w) => showWindow(c, w),
  onHover: (pos, v) => showHover(pos, v), // always about the image shown now (Viewport.hover)
  onMeasure: (m) => { $("#measure").textContent = m ? `${m.value.toFixed(2)} ${m.unit}` : "–"; },
  onZoom: (s) => { $("#zoom").textContent = `${(s * 100).toFixed(0)}%`; $("#ov-zoom").textContent = `Zoom ${(s * 100).toFixed(0)}%`; },
  onSlice: (step) => go(state.index + step),
});
window.hf.viewport = viewport;
window.hf.imageToClient = (x, y) => viewport.toClient(x, y);

// The status line: each message has an owner, so that clearing one kind ("image" when an image shows) never
// wipes another (a deletion's confirmation stays until the user moves on).
function message(text, { error = false, owner = "" } = {}) {
  const el = $("#message");
  el.textContent = text;
  el.classList.toggle("error", error);
  el.dataset.owner = text ? owner : "";
}

function clearMessage(owner) {
  if (owner === undefined || $("#message").dataset.owner === owner) message("");
}

// ------------------------------------------------------------------------------------------- study search
function dicomDate(input) { return input.value ? input.value.replaceAll("-", "") : ""; }

function formatDate(d) { return d && d.length === 8 ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d || ""; }

function wildcard(text) { return /[*?]/.test(text) ? text : `${text}*`; }

async function search() {
  const base = { limit: "500" };
  const from = dicomDate($("#search-from")), to = dicomDate($("#search-to"));
  if (from || to) base.StudyDate = `${from}-${to}`;
  const mod = $("#search-modality").value;
  if (mod) base.ModalitiesInStudy = mod;
  const acc = $("#search-accession").value.trim();
  if (acc) base.AccessionNumber = wildcard(acc);
  const patient = $("#search-patient").value.trim();
  const table = $("#studies");
  const run = (state.searchRun = (state.searchRun || 0) + 1);
  table.dataset.state = "searching";
  $("#study-count").textContent = "Searching…";
  try {
    let found;
    if (patient) { // name or ID: two QIDO searches, merged
      const [byName, byId] = await Promise.all([
        dw.searchStudies({ ...base, PatientName: wildcard(patient), fuzzymatching: "true" }),
        dw.searchStudies({ ...base, PatientID: wildcard(patient) }),
      ]);
      const seen = new Map();
      for (const s of [...byName, ...byId]) seen.set(dw.value(s, T.study), s);
      found = [...seen.values()];
    } else {
      found = await dw.searchStudies(base);
    }
    if (run !== state.searchRun) return; // a newer search is under way
    found.sort((a, b) => (dw.value(b, T.date) || "").localeCompare(dw.value(a, T.date) || ""));
    state.studies = found;
    renderStudies();
    clearMessage("search");
  } catch (err) {
    if (run !== state.searchRun) return;
    $("#study-count").textContent = "";
    message(`Search failed: ${err.message}`, { error: true, owner: "search" });
  } finally {
    if (run === state.searchRun) table.dataset.state = "ready";
  }
}

function renderStudies() {
  const body = $("#study-list");
  body.replaceChildren();
  for (const s of state.studies) {
    const tr = document.createElement("tr");
    tr.className = "study";
    tr.dataset.uid = dw.value(s, T.study);
    const cells = [
      `${dw.value(s, T.name) || "(no name)"} · ${dw.value(s, T.pid) || ""}`,
      formatDate(dw.value(s, T.date)),
      dw.values(s, T.mods).join("/"),
      dw.value(s, T.desc) || "",
      dw.value(s, T.studyCount) ?? "",
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      td.title = text;
      tr.append(td);
    }
    tr.addEventListener("click", () => openStudy(tr.dataset.uid));
    if (state.study && tr.dataset.uid === dw.value(state.study, T.study)) tr.classList.add("selected");
    body.append(tr);
  }
  $("#study-count").textContent = `${state.studies.length} ${state.studies.length === 1 ? "study" : "studies"}`;
}

// ------------------------------------------------------------------------------------------- study / series
async function openStudy(uid) {
  const study = state.studies.find((s) => dw.value(s, T.study) === uid);
  const selection = select();
  show({ state: "loading", text: "Loading…" });
  clearMessage();
  state.study = study;
  for (const tr of document.querySelectorAll("tr.study")) tr.classList.toggle("selected", tr.dataset.uid === uid);
  $("#study-panel").hidden = false;
  $("#study-title").textContent = `${dw.value(study, T.name) || ""} — ${formatDate(dw.value(study, T.date))} ${dw.value(study, T.desc) || ""}`;
  $("#send-status").textContent = "";
  const list = $("#series-list");
  list.replaceChildren();
  let series;
  try {
    series = await dw.searchSeries(uid);
  } catch (err) {
    if (!current(selection)) return;
    show({ state: "error", text: `Cannot list the series of this study: ${err.detail ?? err.message}` });
    message(`Cannot list series: ${err.message}`, { error: true, owner: "series" });
    return;
  }
  if (!current(selection)) return; // another study was opened meanwhile
  series.sort((a, b) => (+dw.value(a, T.seriesNo) || 0) - (+dw.value(b, T.seriesNo) || 0));
  for (const s of series) {
    const seriesUid = dw.value(s, T.series);
    const div = document.createElement("div");
    div.className = "series-thumb";
    div.dataset.uid = seriesUid;
    div.tabIndex = 0;
    const img = document.createElement("img");
    img.alt = "";
    img.loading = "lazy";
    img.src = dw.thumbnailUrl(uid, seriesUid);
    img.onerror = () => { img.replaceWith(Object.assign(document.createElement("div"), { textContent: dw.value(s, T.modality) || "?", style: "height:96px;display:flex;align-items:center" })); };
    const label = document.createElement("span");
    label.textContent = `${dw.value(s, T.modality) || ""} #${dw.value(s, T.seriesNo) ?? ""} ${dw.value(s, T.seriesDesc) || ""} (${dw.value(s, T.count) ?? "?"})`;
    div.append(img, label);
    div.addEventListener("click", () => openSeries(uid, seriesUid));
    div.addEventListener("keydown", (e) => { if (e.key === "Enter") openSeries(uid, seriesUid); });
    list.append(div);
  }
  if (series.length) openSeries(uid, dw.value(series[0], T.series));
  else show({ state: "empty", text: "This study has no series." });
}

function pixelSpacing(meta, frame) {
  const direct = dw.values(meta, T.spacing);
  if (direct.length === 2) return direct.map(Number);
  for (const seqTag of [T.perFrame, T.shared]) {
    const items = meta[seqTag]?.Value;
    const item = seqTag === T.perFrame ? items?.[frame] : items?.[0];
    const measures = item?.[T.measures]?.Value?.[0];
    const s = dw.values(measures, T.spacing);
    if (s.length === 2) return s.map(Number);
  }
  const imager = dw.values(meta, T.imagerSpacing);
  return imager.length === 2 ? imager.map(Number) : null;
}

// ------------------------------------------------------------------------------------------- the viewport
// A new study or series: everything the viewport showed goes at once, before anything is fetched, and every
// response still under way for the previous selection is dropped when it arrives (``current``).
function select(seriesUid = null) {
  stopCine();
  state.selection += 1;
  state.series = seriesUid;
  state.stack = [];
  state.cache = new Map();
  state.index = 0;
  state.windowSet = false;
  viewport.invert = false;
  const slider = $("#slice-slider");
  slider.max = 0;
  slider.value = 0;
  $("#viewport").dataset.series = seriesUid || "";
  clearMessage("image"); // about what was shown before
  clearMessage("series");
  return state.selection;
}

// True when the answer for ``selection`` (and, for an image, ``item``) is still what the user has selected.
function current(selection, item = undefined) {
  const ok = selection === state.selection && (item === undefined || state.stack[state.index] === item);
  if (!ok) state.dropped += 1;
  return ok;
}

function sopClassName(meta) {
  const uid = dw.value(meta, T.sopClass);
  return SOP_CLASSES[uid] || (uid ? `SOP class ${uid}` : dw.value(meta, T.modality) || "Object");
}

// An image has pixel data; the stored metadata leaves that element out, but keeps the Image Pixel module's
// Rows and Columns (PS3.3 C.7.6.3), which objects without an image (RT Structure Set, RT Plan, SR, ECG) lack.
function hasPixels(meta) {
  if (PIXEL_TAGS.some((tag) => meta[tag] && (meta[tag].BulkDataURI || meta[tag].InlineBinary))) return true;
  return +dw.value(meta, T.rows) > 0 && +dw.value(meta, T.columns) > 0;
}

function patientText(meta) {
  return `${dw.value(meta, T.name) || ""}\n${dw.value(meta, T.pid) || ""}\n${formatDate(dw.value(meta, T.date))}`;
}

function seriesText(item) {
  const meta = item.meta;
  const head = `${dw.value(meta, T.seriesDesc) || ""}\nSeries ${dw.value(meta, T.seriesNo) ?? ""}`;
  if (!state.stack.includes(item)) return `${head}  ${sopClassName(meta)}`; // an object without an image
  const n = state.stack.length;
  return `${head}  Im ${item.position + 1}/${n}` + (item.frame || +dw.value(meta, T.frames) > 1 ? `  Fr ${item.frame + 1}` : "");
}

// The one place that changes what the viewport shows. ``item`` is the instance (and frame) shown, or null;
// ``image`` its decoded frame, or null for none (a non-image object, an image that cannot be shown, nothing
// selected); ``text`` the placeholder shown instead of pixels. The canvas, the corner text (patient, study,
// series, instance, window, zoom), the value under the cursor, the measurement and the status bar all change
// here together, so pixels of one instance never appear with the annotations of another.
function show({ state: kind, item = null, image = null, text = "" }) {
  const vp = $("#viewport");
  if (state.shown !== item) viewport.clearMeasurement();
  state.shown = item;
  $("#measure").textContent = "–";
  if (image) {
    const meta = item.meta;
    if (!state.windowSet) {
      const c = dw.value(meta, T.center), w = dw.value(meta, T.width);
      if (c !== undefined && w !== undefined && +w >= 1) viewport.center = +c, viewport.width = +w;
      else viewport.center = (image.min + image.max) / 2 + 0.5, viewport.width = Math.max(1, image.max - image.min + 1);
      state.windowSet = true;
    }
    viewport.setImage(image, {
      spacing: pixelSpacing(meta, item.frame),
      monochrome1: (dw.value(meta, T.photometric) || "").trim() === "MONOCHROME1",
      modality: dw.value(meta, T.modality),
    });
    showWindow(viewport.center, viewport.width);
    viewport.cb.onZoom(viewport.scale());
    $("#slice").textContent = `${item.position + 1} / ${state.stack.length}`;
    vp.dataset.slice = String(item.position);
  } else {
    viewport.clear();
    for (const id of ["#wl", "#zoom", "#slice"]) $(id).textContent = "–";
    for (const id of ["#ov-window", "#ov-zoom"]) $(id).textContent = "";
    delete vp.dataset.slice;
  }
  $("#ov-patient").textContent = item ? patientText(item.meta) : "";
  $("#ov-series").textContent = item ? seriesText(item) : "";
  $("#placeholder").textContent = image ? "" : text;
  vp.dataset.sop = item ? item.sop : "";
  vp.dataset.frame = item ? String(item.frame) : "";
  vp.dataset.state = kind;
  if (!$("#meta-panel").hidden) renderMetadata();
}

async function openSeries(studyUid, seriesUid) {
  const selection = select(seriesUid);
  show({ state: "loading", text: "Loading…" });
  for (const el of document.querySelectorAll(".series-thumb")) el.classList.toggle("selected", el.dataset.uid === seriesUid);
  let metas;
  try {
    metas = await dw.seriesMetadata(studyUid, seriesUid);
  } catch (err) {
    if (!current(selection)) return;
    show({ state: "error", text: `Cannot read this series: ${err.detail ?? err.message}` });
    message(`Cannot read series metadata: ${err.message}`, { error: true, owner: "series" });
    return;
  }
  if (!current(selection)) return; // another series was opened meanwhile
  const stack = [];
  for (const m of metas.filter(hasPixels)) {
    const frames = Math.max(1, +dw.value(m, T.frames) || 1);
    for (let f = 0; f < frames; f++) {
      stack.push({ study: studyUid, series: seriesUid, sop: dw.value(m, T.sop), frame: f, meta: m, position: stack.length });
    }
  }
  if (!stack.length) { // RT Structure Set, RT Plan, SR, ECG…: say what it is, show no pixels
    const first = metas[0] || {};
    const item = { study: studyUid, series: seriesUid, sop: dw.value(first, T.sop) || "", frame: 0, meta: first, position: 0 };
    const more = metas.length > 1 ? ` (${metas.length} objects)` : "";
    show({ state: "placeholder", item, text: `${sopClassName(first)} — no image to display${more}` });
    clearMessage("image");
    return;
  }
  state.stack = stack;
  const slider = $("#slice-slider");
  slider.max = Math.max(0, stack.length - 1);
  slider.value = 0;
  await go(0);
  if (selection === state.selection) prefetch();
}

function key(item) { return `${item.sop}:${item.frame}`; }

function load(item) {
  const k = key(item);
  const cache = state.cache;
  if (!cache.has(k)) {
    const p = dw.frameValues(item.study, item.series, item.sop, item.frame).catch((err) => {
      cache.delete(k);
      throw err;
    });
    cache.set(k, p);
  }
  return cache.get(k);
}

async function prefetch() {
  const selection = state.selection;
  const stack = state.stack;
  const order = stack.map((_, i) => i).sort((a, b) => Math.abs(a - state.index) - Math.abs(b - state.index));
  let next = 0;
  const worker = async () => {
    while (next < order.length && state.selection === selection) {
      const item = stack[order[next++]];
      try { await load(item); } catch { /* shown when that slice is viewed */ }
    }
  };
  await Promise.all([worker(), worker(), worker()]);
}

async function go(index) {
  const n = state.stack.length;
  if (!n) return;
  index = Math.min(n - 1, Math.max(0, index));
  state.index = index;
  $("#slice-slider").value = index;
  const selection = state.selection;
  const item = state.stack[index];
  let image;
  try {
    image = await load(item);
  } catch (err) {
    if (!current(selection, item)) return;
    const why = `Cannot display image ${index + 1} / ${n}: ${err.detail ?? err.message}`;
    show({ state: "error", item, text: why });
    message(why, { error: true, owner: "image" });
    return;
  }
  if (!current(selection, item)) return; // the user moved on meanwhile: this frame is no longer wanted
  show({ state: "ready", item, image });
  clearMessage("image");
}

function showWindow(c, w) {
  const text = `W ${Math.round(w)} L ${Math.round(c)}`;
  $("#wl").textContent = text;
  $("#ov-window").textContent = text;
}

function formatValue(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.map((x) => (Number.isInteger(x) ? x : x.toFixed(1))).join(", ");
  const text = Number.isInteger(v) ? String(v) : v.toFixed(2);
  return viewport.info.modality === "CT" ? `${text} HU` : text;
}

function showHover(pos, v) {
  $("#pos").textContent = pos && v !== null ? `${pos[0]}, ${pos[1]}` : "–";
  $("#hu").textContent = pos ? formatValue(v) : "–";
}

// ------------------------------------------------------------------------------------------- presets, cine
async function loadPresets() {
  state.presets = await dw.presets();
  const select = $("#preset");
  for (const [name, [c, w]] of Object.entries(state.presets)) {
    const opt = document.createElement("option");
    opt.value = name;
    opt.textContent = `${name} (${w}/${c})`;
    select.append(opt);
  }
}

function applyPreset(name) {
  if (!viewport.image) return;
  if (name === "file") {
    const meta = state.shown?.meta;
    const c = dw.value(meta, T.center), w = dw.value(meta, T.width);
    if (c !== undefined && w !== undefined) viewport.setWindow(+c, +w);
    return;
  }
  const p = state.presets[name];
  if (p) viewport.setWindow(p[0], p[1]);
}

function startCine() {
  if (state.stack.length < 2) return;
  const fps = +$("#cine-fps").value || 10;
  state.cine = setInterval(() => go((state.index + 1) % state.stack.length), 1000 / fps);
  $("#cine").textContent = "■ Stop";
  $("#cine").classList.add("active");
}

function stopCine() {
  clearInterval(state.cine);
  state.cine = null;
  $("#cine").textContent = "▶ Cine";
  $("#cine").classList.remove("active");
}

function setTool(tool) {
  viewport.tool = tool;
  for (const b of document.querySelectorAll("[data-tool]")) b.classList.toggle("active", b.dataset.tool === tool);
}

// ------------------------------------------------------------------------------------------- metadata panel
function renderMetadata() {
  const meta = state.shown?.meta || {};
  const filter = $("#meta-filter").value.trim().toLowerCase();
  const body = $("#metadata tbody");
  body.replaceChildren();
  const rows = [];
  const walk = (ds, depth) => {
    for (const tag of Object.keys(ds).sort()) {
      const el = ds[tag];
      const name = KEYWORDS[tag] || "";
      const label = `${"  ".repeat(depth)}(${tag.slice(0, 4)},${tag.slice(4)}) ${name}`;
      let text;
      if (el.vr === "SQ") text = `${(el.Value || []).length} item(s)`;
      else if (el.BulkDataURI) text = "[bulk data]";
      else if (el.InlineBinary) text = "[binary]";
      else text = (el.Value || []).map((v) => (v && typeof v === "object" ? v.Alphabetic ?? JSON.stringify(v) : v)).join("\\");
      rows.push([label, el.vr, text]);
      if (el.vr === "SQ" && depth < 3) for (const item of el.Value || []) walk(item, depth + 1);
    }
  };
  walk(meta, 0);
  for (const [label, vr, text] of rows) {
    if (filter && !`${label} ${text}`.toLowerCase().includes(filter)) continue;
    const tr = document.createElement("tr");
    for (const t of [label, vr, String(text).slice(0, 300)]) {
      const td = document.createElement("td");
      td.textContent = t;
      tr.append(td);
    }
    body.append(tr);
  }
}

// ------------------------------------------------------------------------------------------- REST actions
async function loadPeers() {
  const select = $("#send-peer");
  select.replaceChildren();
  try {
    const r = await fetch("/api/peers");
    const peers = r.ok ? await r.json() : [];
    for (const p of peers) select.append(new Option(`${p.name} (${p.ae_title}@${p.host}:${p.port})`, p.name));
    if (!peers.length) select.append(new Option("no remote nodes", ""));
  } catch { select.append(new Option("no remote nodes", "")); }
}

async function sendStudy() {
  const peer = $("#send-peer").value;
  const uid = dw.value(state.study, T.study);
  const status = $("#send-status");
  if (!peer || !uid) { status.textContent = "Choose a remote node first."; return; }
  const r = await fetch(`/api/studies/${uid}/send`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ peer }) });
  if (!r.ok) { status.textContent = `Send failed: ${await dw.errorText(r)}`; return; }
  let job = await r.json();
  while (job.state === "running") {
    status.textContent = `Sending to ${job.peer}: ${job.done}/${job.total} (${job.failed} failed)`;
    await new Promise((ok) => setTimeout(ok, 400));
    job = await (await fetch(`/api/jobs/${job.id}`)).json();
  }
  status.textContent = `Send to ${job.peer} ${job.state}: ${job.sent}/${job.total} sent, ${job.failed} failed${job.error ? ` — ${job.error}` : ""}`;
}

async function deleteStudy() {
  const uid = dw.value(state.study, T.study);
  if (!uid || !confirm(`Delete study ${uid} and all its instances?`)) return;
  const r = await fetch(`/api/studies/${uid}`, { method: "DELETE" });
  if (!r.ok) { message(`Delete failed: ${await dw.errorText(r)}`, { error: true, owner: "delete" }); return; }
  if (state.study && dw.value(state.study, T.study) === uid) { // it is on screen: nothing of it may stay
    select();
    state.study = null;
    show({ state: "empty", text: "Study deleted." });
    $("#study-panel").hidden = true;
    $("#series-list").replaceChildren();
  }
  message(`Deleted study ${uid}`, { owner: "delete" });
  search(); // the list without it; the confirmation stays
}

async function upload(input) {
  const files = [...input.files];
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.webkitRelativePath || f.name);
  const status = $("#upload-status");
  status.textContent = `Uploading ${files.length} file(s)…`;
  const r = await fetch("/api/upload", { method: "POST", body: form });
  let report;
  try { report = await r.json(); } catch { report = null; }
  if (report && report.files) {
    const failed = report.files.filter((f) => f.outcome === "failed");
    status.textContent = `${report.stored} stored, ${report.failed} failed` + (failed.length ? ` (${failed[0].file}: ${failed[0].error})` : "");
    status.title = report.files.map((f) => `${f.file}: ${f.outcome}${f.error ? ` — ${f.error}` : ""}`).join("\n");
  } else {
    status.textContent = `Upload failed: HTTP ${r.status}`;
  }
  input.value = "";
  search();
}

// ------------------------------------------------------------------------------------------- wiring
function bind() {
  $("#search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("#search-clear").addEventListener("click", () => { $("#search").reset(); search(); });
  $("#slice-slider").addEventListener("input", (e) => go(+e.target.value));
  $("#preset").addEventListener("change", (e) => { applyPreset(e.target.value); });
  $("#invert").addEventListener("click", () => { viewport.invert = !viewport.invert; viewport.dirtyPixels = true; viewport.draw(); });
  $("#reset").addEventListener("click", () => { viewport.reset(); $("#measure").textContent = "–"; });
  $("#cine").addEventListener("click", () => (state.cine ? stopCine() : startCine()));
  $("#cine-fps").addEventListener("change", () => { if (state.cine) { stopCine(); startCine(); } });
  $("#toggle-meta").addEventListener("click", () => { $("#meta-panel").hidden = !$("#meta-panel").hidden; renderMetadata(); });
  $("#meta-filter").addEventListener("input", renderMetadata);
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("#send-button").addEventListener("click", sendStudy);
  $("#delete-button").addEventListener("click", deleteStudy);
  $("#upload-files").addEventListener("change", (e) => upload(e.target));
  $("#upload-folder").addEventListener("change", (e) => upload(e.target));
  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
    const presetNames = Object.keys(state.presets);
    const actions = {
      ArrowUp: () => go(state.index - 1), ArrowLeft: () => go(state.index - 1),
      ArrowDown: () => go(state.index + 1), ArrowRight: () => go(state.index + 1),
      PageUp: () => go(state.index - 10), PageDown: () => go(state.index + 10),
      Home: () => go(0), End: () => go(state.stack.length - 1),
      " ": () => (state.cine ? stopCine() : startCine()),
      w: () => setTool("window"), p: () => setTool("pan"), z: () => setTool("zoom"), m: () => setTool("measure"),
      r: () => $("#reset").click(), i: () => $("#invert").click(), t: () => $("#toggle-meta").click(),
      "?": () => $("#help").showModal(),
      "0": () => applyPreset("file"),
      Escape: () => { viewport.line = null; viewport.draw(); $("#measure").textContent = "–"; },
    };
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (/^[1-9]$/.test(k) && presetNames[+k - 1]) {
      $("#preset").value = presetNames[+k - 1];
      applyPreset(presetNames[+k - 1]);
      e.preventDefault();
    } else if (actions[k]) {
      actions[k]();
      e.preventDefault();
    }
  });
}

window.hf.search = search;
window.hf.openStudy = openStudy;
window.hf.go = go;
window.hf.openSeries = openSeries;
bind();
loadPresets();
loadPeers();
search();
