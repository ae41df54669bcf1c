// The viewer page: study search (QIDO-RS), series thumbnails, the viewport, presets, cine, metadata,
// send / delete / upload through the REST API. No build step: plain ES modules.
import * as dw from "./dicomweb.js";
import { SOP_CLASSES } from "./tags.js";
import { Viewport } from "./viewport.js";
import { RTPanel } from "./rt.js"; // issue 13

const $ = (sel) => document.querySelector(sel);
const T = { // DICOM tags used here
  name: "00100010", pid: "00100020", date: "00080020", mods: "00080061", desc: "00081030", acc: "00080050",
  study: "0020000D", series: "0020000E", sop: "00080018", modality: "00080060", seriesDesc: "0008103E",
  seriesNo: "00200011", count: "00201209", studyCount: "00201208", frames: "00280008", spacing: "00280030",
  imagerSpacing: "00181164", photometric: "00280004", center: "00281050", width: "00281051", instNo: "00200013",
  shared: "52009229", measures: "00289110", perFrame: "52009230", rescaleType: "00281054", sopClass: "00080016",
  rows: "00280010", columns: "00280011", birth: "00100030", seriesCount: "00201206",
  orientation: "00200037", position: "00200032", thickness: "00180050", location: "00201041",
  planeOrientation: "00209116", planePosition: "00209113",
};
// Study list columns: key, the value of a QIDO answer shown, how it sorts
const COLUMNS = {
  name: { get: (s) => dw.value(s, T.name) || "" },
  pid: { get: (s) => dw.value(s, T.pid) || "" },
  birth: { get: (s) => formatDate(dw.value(s, T.birth)) },
  acc: { get: (s) => dw.value(s, T.acc) || "" },
  date: { get: (s) => formatDate(dw.value(s, T.date)) },
  mods: { get: (s) => dw.values(s, T.mods).join("/") },
  desc: { get: (s) => dw.value(s, T.desc) || "" },
  series: { get: (s) => dw.value(s, T.seriesCount) ?? "", numeric: true },
  instances: { get: (s) => dw.value(s, T.studyCount) ?? "", numeric: true },
};
const PIXEL_TAGS = ["7FE00010", "7FE00008", "7FE00009"]; // Pixel Data, Float and Double Float Pixel Data
// QIDO-RS has no order parameter and answers in the archive's order, so a sort can only be right over the
// whole result: a search fetches up to this many studies once, sorts them here and pages them here.
const SEARCH_CAP = 1000;

const state = {
  studies: [], study: null, series: null, stack: [], index: 0, cache: new Map(), presets: {},
  windowSet: false, cine: null,
  selection: 0, // bumped on every change of study or series: what arrives for an older one is dropped
  shown: null, // the stack item (one frame of one instance) the viewport shows, pixels and annotations alike
  dropped: 0, // responses dropped because they arrived for an instance no longer selected
  sort: { key: "date", dir: -1 }, // the order of the whole result of the search (``found``)
  found: [], capped: false, // the search's studies, sorted; ``capped`` when more than SEARCH_CAP matched
  page: 0, pageSize: 50, more: false, // studies = found[page * pageSize ...]; ``more`` when a next page exists
  peers: [], echo: {}, // the remote nodes and their last known C-ECHO state
  defaultWindow: null, // what the shown image opened at: {center, width, source: "file"|"preset"|"data", name}
};
window.hf = { state };

const viewport = new Viewport($("#viewport"), $("#view"), {
  onWindow: (c, w) => showWindow(c, w),
  onHover: (pos, v) => showHover(pos, v), // always about the image shown now (Viewport.hover)
  onMeasure: (m) => { $("#measure").textContent = m ? `${m.value.toFixed(2)} ${m.unit}` : "–"; },
  onRoi: (r) => { $("#roi").textContent = r ? viewport.roiText(r).replace("\n", " · ") : "–"; },
  onZoom: (s) => { $("#zoom").textContent = `${(s * 100).toFixed(0)}%`; $("#ov-zoom").textContent = `Zoom ${(s * 100).toFixed(0)}%`; },
  onSlice: (step) => go(state.index + step),
});
window.hf.viewport = viewport;
window.hf.imageToClient = (x, y) => viewport.toClient(x, y);
const rt = new RTPanel(viewport); // issue 13: contours, dose, DVHs and plan of the series shown
window.hf.rt = rt;

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

// A new search fetches the whole result (up to SEARCH_CAP) and shows its first page; the pager's buttons move
// through the pages of that result without asking the server again.
async function search() {
  // one more than the cap: whether the cap cut the result (QIDO gives no total)
  const base = { limit: String(SEARCH_CAP + 1) };
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
    state.capped = found.length > SEARCH_CAP;
    state.found = found.slice(0, SEARCH_CAP);
    state.conflicts = new Map();
    sortStudies();
    showPage(0);
    clearMessage("search");
  } catch (err) {
    if (run !== state.searchRun) return;
    $("#study-count").textContent = "";
    message(`Search failed: ${err.message}`, { error: true, owner: "search" });
  } finally {
    if (run === state.searchRun) table.dataset.state = "ready";
  }
}

// One page of the search's sorted result on screen, its conflicts asked for.
function showPage(page) {
  const last = Math.max(0, Math.ceil(state.found.length / state.pageSize) - 1);
  state.page = Math.min(Math.max(0, page), last);
  const first = state.page * state.pageSize;
  state.studies = state.found.slice(first, first + state.pageSize);
  state.more = first + state.pageSize < state.found.length;
  renderStudies();
  flagConflicts(state.searchRun);
}

// Studies whose Patient ID has other demographics in other studies (a reused ID, a corrected name): the REST
// API says so per study (demographics_conflict, demographics_variants); QIDO-RS has no place for it. Asked for
// the page on screen; what is known stays for the search's other pages.
async function flagConflicts(run) {
  const uids = state.studies.map((s) => dw.value(s, T.study)).filter((uid) => uid && !state.conflicts.has(uid));
  if (!uids.length) return;
  let records;
  try {
    const query = new URLSearchParams({ StudyInstanceUID: uids.join("\\"), limit: String(uids.length) });
    const r = await fetch(`/api/studies?${query}`, { headers: { Accept: "application/json" } });
    if (!r.ok) return;
    records = await r.json();
  } catch { return; } // the list stays as it is, without flags
  if (run !== state.searchRun) return; // a newer search is under way
  // null: asked, no conflict (not asked again on the way back to this page)
  for (const r of records) state.conflicts.set(r.StudyInstanceUID, r.demographics_conflict ? r.demographics_variants : null);
  if (records.some((r) => r.demographics_conflict)) renderStudies();
}

function conflictText(variants) {
  const lines = variants.map((v) => `${v.PatientName || "(no name)"}, born ${v.PatientBirthDate || "?"}, ` +
    `sex ${v.PatientSex || "?"}: ${v.StudyInstanceUIDs.length} ${v.StudyInstanceUIDs.length === 1 ? "study" : "studies"}`);
  return `Other studies under this Patient ID give other demographics:\n${lines.join("\n")}`;
}

function sortStudies() {
  const { key, dir } = state.sort;
  const col = COLUMNS[key];
  const cmp = col.numeric ? (a, b) => (+col.get(a) || 0) - (+col.get(b) || 0)
    : (a, b) => String(col.get(a)).localeCompare(String(col.get(b)), undefined, { sensitivity: "base", numeric: true });
  state.found.sort((a, b) => dir * cmp(a, b) || dw.value(a, T.study).localeCompare(dw.value(b, T.study)));
  for (const th of document.querySelectorAll("#studies th[data-sort]")) {
    if (th.dataset.sort === key) th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
}

function sortBy(key) {
  state.sort = state.sort.key === key ? { key, dir: -state.sort.dir } : { key, dir: key === "date" ? -1 : 1 };
  sortStudies();
  showPage(0); // a new order starts at its first studies
}

function renderStudies() {
  const body = $("#study-list");
  body.replaceChildren();
  for (const s of state.studies) {
    const tr = document.createElement("tr");
    tr.className = "study";
    tr.dataset.uid = dw.value(s, T.study);
    for (const [key, col] of Object.entries(COLUMNS)) {
      const td = document.createElement("td");
      const text = String(col.get(s));
      td.textContent = key === "name" && !text ? "(no name)" : text;
      td.title = text;
      td.dataset.col = key;
      const variants = key === "name" && state.conflicts?.get(tr.dataset.uid);
      if (variants) { // patient safety: say so where the name is read
        const badge = document.createElement("span");
        badge.className = "conflict-badge";
        badge.textContent = "⚠";
        badge.setAttribute("aria-label", "differing demographics under this Patient ID");
        td.title = conflictText(variants);
        td.prepend(badge, " ");
        tr.dataset.conflict = "true";
      }
      if (col.numeric) td.className = "num";
      tr.append(td);
    }
    tr.addEventListener("click", () => openStudy(tr.dataset.uid));
    if (state.study && tr.dataset.uid === dw.value(state.study, T.study)) tr.classList.add("selected");
    body.append(tr);
  }
  const first = state.page * state.pageSize;
  const n = state.studies.length, total = state.found.length;
  $("#study-count").textContent = state.capped
    ? `The first ${total} studies the archive returned, sorted: narrow the search to see the others`
    : `${total} ${total === 1 ? "study" : "studies"}`;
  const pages = Math.max(1, Math.ceil(total / state.pageSize));
  $("#page-info").textContent = n ? `${first + 1}–${first + n} of ${total}${state.capped ? "+" : ""} · page ${state.page + 1} of ${pages}`
    : `page ${state.page + 1}`;
  $("#page-prev").disabled = state.page === 0;
  $("#page-next").disabled = !state.more;
}

// ------------------------------------------------------------------------------------------- study / series
async function openStudy(uid, study = state.studies.find((s) => dw.value(s, T.study) === uid)) {
  $("#layout").classList.remove("wide-list"); // the image is what the user wants now
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
  rt.reset(); // issue 13: the RT overlays belong to the series on screen
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
  const text = `${head}  Im ${item.position + 1}/${n}` + (item.frame || +dw.value(meta, T.frames) > 1 ? `  Fr ${item.frame + 1}` : "");
  const where = [];
  const loc = sliceLocation(meta, item.frame);
  if (loc !== null) where.push(`Loc ${loc.toFixed(2)} mm`);
  const thick = frameNumber(meta, item.frame, T.thickness, T.measures);
  if (thick !== null) where.push(`Thk ${thick.toFixed(2)} mm`);
  return where.length ? `${text}\n${where.join("  ")}` : text;
}

// An attribute of one frame: the instance's own, else in the per-frame or shared functional group ``group``
// (PS3.3 C.7.6.16: Plane Position, Plane Orientation, Pixel Measures).
function frameValues(meta, frame, tag, group) {
  const direct = dw.values(meta, tag);
  if (direct.length) return direct.map(Number);
  for (const seqTag of [T.perFrame, T.shared]) {
    const items = meta?.[seqTag]?.Value;
    const item = seqTag === T.perFrame ? items?.[frame] : items?.[0];
    const v = dw.values(item?.[group]?.Value?.[0], tag);
    if (v.length) return v.map(Number);
  }
  return [];
}

function frameNumber(meta, frame, tag, group) {
  const v = frameValues(meta, frame, tag, group);
  return v.length && Number.isFinite(v[0]) ? v[0] : null;
}

function orientation(meta, frame) {
  const o = frameValues(meta, frame, T.orientation, T.planeOrientation);
  return o.length === 6 && o.every(Number.isFinite) ? o : null;
}

// Where the slice is: Slice Location when the file has it, else the position along the normal of the plane
// (Image Position (Patient) · (row × column)).
function sliceLocation(meta, frame) {
  const loc = dw.values(meta, T.location);
  if (loc.length && Number.isFinite(+loc[0])) return +loc[0];
  const o = orientation(meta, frame), p = frameValues(meta, frame, T.position, T.planePosition);
  if (!o || p.length !== 3) return null;
  const n = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
  return p[0] * n[0] + p[1] * n[1] + p[2] * n[2];
}

// The patient direction a vector of the patient coordinate system points to (PS3.3 C.7.6.2.1.1: +x left,
// +y posterior, +z head), its main components first: "L", "LP", "FRA"...
export function directionLetters(v) {
  const letters = [["R", "L"], ["A", "P"], ["F", "H"]];
  return [0, 1, 2].filter((i) => Math.abs(v[i]) >= 0.25).sort((a, b) => Math.abs(v[b]) - Math.abs(v[a]))
    .map((i) => letters[i][v[i] > 0 ? 1 : 0]).join("");
}

function showOrientation(meta, frame) {
  const o = meta ? orientation(meta, frame) : null;
  const row = o ? o.slice(0, 3) : null, col = o ? o.slice(3) : null;
  const neg = (v) => v.map((x) => -x);
  $("#ov-orient-right").textContent = o ? directionLetters(row) : "";
  $("#ov-orient-left").textContent = o ? directionLetters(neg(row)) : "";
  $("#ov-orient-bottom").textContent = o ? directionLetters(col) : "";
  $("#ov-orient-top").textContent = o ? directionLetters(neg(col)) : "";
}

// The window an image opens at: the file's (its first Window Center / Width), else for a CT the default preset
// of the modality, else the full range of its values.
const MODALITY_PRESET = { CT: "soft-tissue" };

function fileWindow(meta) {
  const c = dw.value(meta, T.center), w = dw.value(meta, T.width);
  return c !== undefined && w !== undefined && +w >= 1 ? { center: +c, width: +w } : null;
}

function openingWindow(meta, image) {
  const file = fileWindow(meta);
  if (file) return { ...file, source: "file" };
  const name = MODALITY_PRESET[(dw.value(meta, T.modality) || "").trim()];
  if (name && state.presets[name] && image.samples === 1) {
    const [center, width] = state.presets[name];
    return { center, width, source: "preset", name };
  }
  return { center: (image.min + image.max) / 2 + 0.5, width: Math.max(1, image.max - image.min + 1), source: "data" };
}

// The one place that changes what the viewport shows. ``item`` is the instance (and frame) shown, or null;
// ``image`` its decoded frame, or null for none (a non-image object, an image that cannot be shown, nothing
// selected); ``text`` the placeholder shown instead of pixels. The canvas, the corner text (patient, study,
// series, instance, window, zoom), the value under the cursor, the measurement and the status bar all change
// here together, so pixels of one instance never appear with the annotations of another.
function show({ state: kind, item = null, image = null, text = "" }) {
  const vp = $("#viewport");
  const changed = state.shown !== item;
  if (changed) {
    viewport.clearMeasurement();
    $("#measure").textContent = "–";
    $("#roi").textContent = "–";
  }
  state.shown = item;
  if (image) {
    const meta = item.meta;
    if (!state.windowSet) {
      state.defaultWindow = openingWindow(meta, image);
      viewport.center = state.defaultWindow.center;
      viewport.width = state.defaultWindow.width;
      state.windowSet = true;
    }
    const modality = dw.value(meta, T.modality);
    viewport.setImage(image, {
      spacing: pixelSpacing(meta, item.frame),
      monochrome1: (dw.value(meta, T.photometric) || "").trim() === "MONOCHROME1",
      modality,
      unit: modality === "CT" && image.samples === 1 ? "HU" : "",
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
    syncPreset();
  }
  showOrientation(image ? item.meta : null, item ? item.frame : 0);
  $("#ov-patient").textContent = item ? patientText(item.meta) : "";
  $("#ov-series").textContent = item ? seriesText(item) : "";
  $("#placeholder").textContent = image ? "" : text;
  vp.dataset.sop = item ? item.sop : "";
  vp.dataset.frame = item ? String(item.frame) : "";
  vp.dataset.state = kind;
  rt.showSlice(image ? item : null); // issue 13: the RT overlays of this slice (or none)
  if (!$("#meta-panel").hidden && changed) loadTags();
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
  rt.openSeries(studyUid, seriesUid); // issue 13: its RT objects, if any (rt.reset() drops them on a change)
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
  syncPreset();
}

// The preset menu names the window shown: a preset's, the file's, or "Custom window" for any other.
function syncPreset() {
  const select = $("#preset");
  const meta = state.shown?.meta;
  const file = viewport.image && meta ? fileWindow(meta) : null;
  $("#preset-file").disabled = !file;
  $("#preset-file").textContent = file ? `File window (${Math.round(file.width)}/${Math.round(file.center)})` : "File window";
  let name = "";
  if (viewport.image) {
    const same = (c, w) => Math.abs(c - viewport.center) < 1e-6 && Math.abs(w - viewport.width) < 1e-6;
    if (file && same(file.center, file.width)) name = "file";
    else name = Object.keys(state.presets).find((k) => same(...state.presets[k])) || "";
  }
  select.value = name;
  select.dataset.window = name || "custom";
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
  $("#dose").textContent = pos && v !== null ? rt.doseText(pos) : "–"; // issue 13
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
  if (!viewport.image) { syncPreset(); return; }
  if (name === "file") {
    const file = fileWindow(state.shown?.meta);
    if (file) viewport.setWindow(file.center, file.width);
    else if (state.defaultWindow) viewport.setWindow(state.defaultWindow.center, state.defaultWindow.width);
  } else if (state.presets[name]) {
    viewport.setWindow(...state.presets[name]);
  }
  syncPreset();
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
// The elements of the instance shown, as the server reads them from its file: every tag named from pydicom's
// data dictionary, sequence items indented under their sequence. Only the answer for the instance still shown
// is rendered; the panel is emptied at once when the instance changes.
async function loadTags() {
  const item = state.shown;
  const body = $("#metadata tbody");
  body.replaceChildren();
  state.tags = null;
  const status = $("#meta-status");
  const table = $("#metadata");
  if (!item || !item.sop) { status.textContent = "No instance shown."; table.dataset.sop = ""; return; }
  status.textContent = "Loading tags…";
  table.dataset.sop = "";
  let answer;
  try {
    answer = await dw.instanceTags(item.study, item.series, item.sop);
  } catch (err) {
    if (state.shown !== item) return;
    status.textContent = `Cannot read the tags: ${err.detail ?? err.message}`;
    return;
  }
  if (state.shown !== item || $("#meta-panel").hidden) { state.dropped += state.shown !== item ? 1 : 0; return; }
  state.tags = answer;
  table.dataset.sop = item.sop;
  renderMetadata();
}

function renderMetadata() {
  const body = $("#metadata tbody");
  body.replaceChildren();
  const answer = state.tags;
  if (!answer) return;
  const filter = $("#meta-filter").value.trim().toLowerCase();
  let shown = 0;
  for (const row of answer.elements) {
    const tagText = row.tag ? `(${row.tag.slice(0, 4)},${row.tag.slice(4)})` : "";
    if (filter && !`${tagText} ${row.tag} ${row.keyword} ${row.name} ${row.value}`.toLowerCase().includes(filter)) continue;
    const tr = document.createElement("tr");
    tr.dataset.tag = row.tag || "";
    tr.dataset.depth = String(row.depth);
    if (row.item) tr.className = "item";
    const cells = [["tag", tagText], ["name", row.item ? `Item ${row.item}` : row.name], ["vr", row.vr || ""],
      ["value", String(row.value ?? "").slice(0, 300)]];
    for (const [cls, text] of cells) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = text;
      if (cls === "tag" || cls === "name") td.style.paddingLeft = `${4 + 14 * row.depth}px`;
      if (cls === "name" && row.keyword) td.title = row.keyword;
      tr.append(td);
    }
    body.append(tr);
    shown += 1;
  }
  $("#meta-status").textContent = `${shown} of ${answer.elements.length} elements` + (answer.truncated ? " (first ones only)" : "");
}

function toggleTags() {
  const panel = $("#meta-panel");
  panel.hidden = !panel.hidden;
  if (!panel.hidden) loadTags();
}

// ------------------------------------------------------------------------------------------- REST actions
// The Send menu: no node is chosen until the user chooses one; each says its last known state (the last C-ECHO
// of it from here: when, and whether it answered).
function echoText(e) {
  if (!e) return "not checked yet";
  const when = new Date(e.at).toLocaleTimeString();
  return e.ok ? `echo OK ${when}` : `echo failed ${when}`;
}

function renderPeers() {
  const select = $("#send-peer");
  const chosen = select.value;
  select.replaceChildren(new Option(state.peers.length ? "Choose a node…" : "no remote nodes", ""));
  for (const p of state.peers) {
    const e = state.echo[p.name];
    const opt = new Option(`${p.name} (${p.ae_title}@${p.host}:${p.port}) — ${echoText(e)}`, p.name);
    opt.dataset.echo = e ? (e.ok ? "ok" : "failed") : "unknown";
    select.append(opt);
  }
  select.value = state.peers.some((p) => p.name === chosen) ? chosen : "";
  peerChosen();
}

function peerChosen() {
  const name = $("#send-peer").value;
  $("#send-button").disabled = !name;
  $("#echo-button").disabled = !name;
  const e = state.echo[name];
  $("#send-peer").title = name ? `${name}: ${echoText(e)}${e && !e.ok && e.error ? ` — ${e.error}` : ""}` : "Remote node to send this study to";
}

async function loadPeers() {
  try {
    const r = await fetch("/ui/api/peers");
    const peers = r.ok ? await r.json() : [];
    state.peers = peers;
    state.echo = Object.fromEntries(peers.filter((p) => p.last_echo).map((p) => [p.name, p.last_echo]));
  } catch { state.peers = []; }
  renderPeers();
}

async function echoPeer() {
  const name = $("#send-peer").value;
  const status = $("#send-status");
  if (!name) { status.textContent = "Choose a remote node first."; return; }
  status.textContent = `Echo ${name}…`;
  status.dataset.state = "echoing";
  const r = await fetch(`/ui/api/peers/${encodeURIComponent(name)}/echo`, { method: "POST" });
  if (!r.ok) { status.textContent = `Echo failed: ${await dw.errorText(r)}`; status.dataset.state = "failed"; return; }
  const e = await r.json();
  state.echo[name] = e;
  renderPeers();
  status.textContent = e.ok ? `${name} answered the C-ECHO (${echoText(e)})` : `${name} did not answer: ${e.error || "status " + e.status}`;
  status.dataset.state = e.ok ? "ok" : "failed";
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
  $("#reset").addEventListener("click", () => viewport.reset());
  $("#cine").addEventListener("click", () => (state.cine ? stopCine() : startCine()));
  $("#cine-fps").addEventListener("change", () => { if (state.cine) { stopCine(); startCine(); } });
  $("#toggle-meta").addEventListener("click", toggleTags);
  $("#meta-filter").addEventListener("input", renderMetadata);
  $("#help-button").addEventListener("click", () => $("#help").showModal());
  for (const b of document.querySelectorAll("[data-tool]")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("#send-button").addEventListener("click", sendStudy);
  $("#echo-button").addEventListener("click", echoPeer);
  $("#send-peer").addEventListener("change", peerChosen);
  for (const th of document.querySelectorAll("#studies th[data-sort]")) th.addEventListener("click", () => sortBy(th.dataset.sort));
  $("#page-prev").addEventListener("click", () => showPage(state.page - 1));
  $("#page-next").addEventListener("click", () => showPage(state.page + 1));
  $("#page-size").addEventListener("change", (e) => { state.pageSize = +e.target.value; showPage(0); });
  $("#list-wide").addEventListener("click", () => $("#layout").classList.toggle("wide-list"));
  bindResizer();
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
      o: () => setTool("rect"), e: () => setTool("ellipse"),
      r: () => $("#reset").click(), i: () => $("#invert").click(), t: () => $("#toggle-meta").click(),
      "?": () => $("#help").showModal(),
      "0": () => applyPreset("file"),
      Escape: () => { viewport.clearMeasurement(); $("#measure").textContent = "–"; $("#roi").textContent = "–"; },
    };
    const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (/^[1-9]$/.test(k) && presetNames[+k - 1]) {
      applyPreset(presetNames[+k - 1]);
      e.preventDefault();
    } else if (actions[k]) {
      actions[k]();
      e.preventDefault();
    }
  });
}

// The study list's width: dragged at its edge (or with the arrow keys on the handle), kept for the next visit.
function bindResizer() {
  const handle = $("#browser-resizer");
  const setWidth = (px) => {
    const max = Math.max(260, window.innerWidth - 240);
    const w = Math.round(Math.min(max, Math.max(260, px)));
    document.documentElement.style.setProperty("--browser-width", `${w}px`);
    try { localStorage.setItem("hf.browserWidth", String(w)); } catch { /* private mode */ }
  };
  const saved = +(() => { try { return localStorage.getItem("hf.browserWidth"); } catch { return 0; } })();
  if (saved) setWidth(saved);
  handle.addEventListener("pointerdown", (e) => {
    handle.setPointerCapture(e.pointerId);
    handle.classList.add("dragging");
    const left = $("#browser").getBoundingClientRect().left;
    const move = (ev) => setWidth(ev.clientX - left);
    const up = () => {
      handle.classList.remove("dragging");
      handle.removeEventListener("pointermove", move);
      handle.removeEventListener("pointerup", up);
      handle.removeEventListener("pointercancel", up);
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", up);
    handle.addEventListener("pointercancel", up);
    e.preventDefault();
  });
  handle.addEventListener("keydown", (e) => {
    const w = $("#browser").getBoundingClientRect().width;
    if (e.key === "ArrowLeft") setWidth(w - 40);
    else if (e.key === "ArrowRight") setWidth(w + 40);
    else return;
    e.preventDefault();
  });
}

// /ui/?study=UID (the worklist's link to an item's study): open that study when the archive has it.
async function openFromUrl() {
  const uid = new URLSearchParams(location.search).get("study");
  if (!uid) return;
  let found = [];
  try { found = await dw.searchStudies({ StudyInstanceUID: uid, limit: "1" }); } catch { found = []; }
  if (!found.length) {
    message(`Study ${uid} is not in the archive (yet).`, { error: true, owner: "url" });
    return;
  }
  if (!state.studies.some((s) => dw.value(s, T.study) === uid)) { // on screen, on top of this page
    state.studies.unshift(found[0]);
    renderStudies();
  }
  openStudy(uid, found[0]);
}

window.hf.search = search;
window.hf.openStudy = openStudy;
window.hf.go = go;
window.hf.openSeries = openSeries;
window.hf.directionLetters = directionLetters;
bind();
loadPeers();
loadPresets().catch(() => {}).finally(async () => {
  await search();
  await openFromUrl();
});
