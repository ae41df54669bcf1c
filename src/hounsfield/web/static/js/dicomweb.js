// DICOMweb client for the viewer: QIDO-RS searches, WADO-RS metadata, thumbnails, and the viewer's
// frame-values resource (modality values as little-endian Int16/Float32 for windowing in the browser).

export const ROOT = "/dicom-web";

export function value(ds, tag, index = 0) {
  const el = ds && ds[tag];
  if (!el || !el.Value || el.Value.length <= index) return undefined;
  const v = el.Value[index];
  return v && typeof v === "object" && "Alphabetic" in v ? v.Alphabetic : v;
}

export function values(ds, tag) {
  const el = ds && ds[tag];
  return el && el.Value ? el.Value.map((v) => (v && typeof v === "object" && "Alphabetic" in v ? v.Alphabetic : v)) : [];
}

async function json(url, init) {
  const r = await fetch(url, { headers: { Accept: "application/dicom+json" }, ...init });
  if (r.status === 204) return [];
  if (!r.ok) throw await failure(r);
  return r.json();
}

// What the server says about a stored file may start with the file's name ("<name>.dcm: no pixel data"), and
// a message may quote an absolute path: users are told what went wrong, never where or under which name the
// server keeps its files.
export function withoutPaths(text) {
  return String(text)
    .replace(/(^|[\s'"(=])\/[^\s\/'"()]+\/[^\s'"()]*/g, "$1…")
    .replace(/(^|[\s'"(])[^\s'"()]+\.dcm\b:?\s*/g, "$1")
    .trim();
}

export async function errorText(r) {
  let text = r.statusText;
  try {
    const body = await r.clone().json();
    if (body.detail) text = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch { /* not JSON: the status text */ }
  return withoutPaths(text) || `HTTP ${r.status}`;
}

async function failure(r) { // an Error whose message is fit to show: the status and the server's reason
  const detail = await errorText(r);
  return Object.assign(new Error(`${r.status} ${detail}`), { status: r.status, detail });
}

export function searchStudies(params) {
  const qs = new URLSearchParams(params);
  qs.append("includefield", "StudyDescription");
  return json(`${ROOT}/studies?${qs}`);
}

export function searchSeries(study) {
  return json(`${ROOT}/studies/${study}/series?includefield=BodyPartExamined`);
}

export function seriesMetadata(study, series) {
  return json(`${ROOT}/studies/${study}/series/${series}/metadata`);
}

export function thumbnailUrl(study, series) {
  return `${ROOT}/studies/${study}/series/${series}/thumbnail?viewport=96,96`;
}

// One frame's modality values: {rows, columns, samples, data (Int16Array|Float32Array), min, max}
export async function frameValues(study, series, sop, frame = 0) {
  const r = await fetch(`/ui/api/values/${study}/${series}/${sop}?frame=${frame}`);
  if (!r.ok) throw await failure(r);
  const buf = await r.arrayBuffer();
  const h = (k) => r.headers.get(k);
  const dtype = h("X-Dtype");
  return {
    rows: +h("X-Rows"),
    columns: +h("X-Columns"),
    samples: +h("X-Samples"),
    min: +h("X-Min"),
    max: +h("X-Max"),
    data: dtype === "int16" ? new Int16Array(buf) : new Float32Array(buf),
  };
}

export async function presets() {
  const r = await fetch("/ui/api/presets");
  return r.ok ? r.json() : {};
}

// The elements of one instance, every tag named from the data dictionary:
// {elements: [{tag, keyword, name, vr, value, depth, item}], truncated}
export async function instanceTags(study, series, sop) {
  const r = await fetch(`/ui/api/tags/${study}/${series}/${sop}`);
  if (!r.ok) throw await failure(r);
  return r.json();
}
