// The receptionist's worklist page: today's schedule per station, add / edit / cancel items, the MWL query log.
// Plain JS against the REST API at /api/worklist; no build step.
"use strict";

const API = "/api/worklist";
const $ = (sel, root = document) => root.querySelector(sel);
const form = $("#item-form");
let editing = null; // id of the item being edited, null for a new one

function isoDay(d) { return d.toISOString().slice(0, 10); }
function text(value) { return value == null ? "" : String(value); }
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  node.append(...children.map(c => (c instanceof Node ? c : document.createTextNode(text(c)))));
  return node;
}

async function call(method, path, body) {
  const response = await fetch(API + path, {
    method, headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { const error = new Error(data.detail || response.statusText); error.data = data; error.status = response.status; throw error; }
  return data;
}

async function loadSchedule() {
  const params = new URLSearchParams({ date: $("#day").value.replaceAll("-", ""), limit: "1000" });
  if ($("#station-filter").value.trim()) params.set("station", $("#station-filter").value.trim());
  if (!$("#show-closed").checked) { params.append("status", "SCHEDULED"); params.append("status", "IN PROGRESS"); }
  const page = await call("GET", "/items?" + params);
  const byStation = new Map();
  for (const item of page.items) {
    const station = item.fields.station_aet || "(no station)";
    if (!byStation.has(station)) byStation.set(station, []);
    byStation.get(station).push(item);
  }
  const section = $("#schedule");
  section.replaceChildren(el("p", {}, `${page.total} items on ${$("#day").value}`));
  // the IDs the Explain feature asks for, with whom they are
  $("#item-ids").replaceChildren(...page.items.map(item =>
    el("option", { value: String(item.id) }, `${item.id}: ${text(item.fields.patient_name)} ${text(item.fields.modality)} ${text(item.fields.start).slice(11)}`)));
  for (const [station, items] of [...byStation].sort()) {
    const body = el("tbody");
    for (const item of items) body.append(row(item));
    section.append(el("h3", {}, station), el("table", { class: "station", "data-station": station },
      el("thead", {}, el("tr", {}, ...["ID", "Time", "Patient ID", "Name", "Mod", "Procedure", "Accession", "Status", "Study", ""].map(h => el("th", {}, h)))),
      body));
  }
}

function row(item) {
  const f = item.fields;
  const open = item.status === "SCHEDULED" || item.status === "IN PROGRESS";
  const actions = el("td", { class: "actions" });
  if (open) {
    actions.append(el("button", { type: "button", class: "edit", onclick: () => openEditor(item) }, "Edit"),
      el("button", { type: "button", class: "cancel", onclick: () => cancelItem(item) }, "Cancel"));
  }
  return el("tr", { "data-id": item.id, "data-study": text(f.study_instance_uid) },
    el("td", { class: "item-id", title: "Item ID (what Explain asks for)" }, item.id),
    el("td", {}, text(f.start).slice(11)), el("td", {}, f.patient_id), el("td", {}, f.patient_name),
    el("td", {}, f.modality), el("td", {}, f.step_description || f.requested_procedure_description),
    el("td", {}, f.accession_number), el("td", { class: "status status-" + item.status.replace(" ", "-") }, item.status),
    el("td", {}, studyCell(item)), actions);
}

// The item's study in the viewer, by its Study Instance UID, once images of it are in the archive.
function studyCell(item) {
  const uid = text(item.fields.study_instance_uid);
  if (!uid) return "";
  if (!item.study_received) return el("span", { class: "muted", title: uid }, "not received");
  return el("a", { class: "study-link", href: `/ui/?study=${encodeURIComponent(uid)}`, title: `Open study ${uid} in the viewer` }, "View images");
}

function openEditor(item) {
  editing = item ? item.id : null;
  form.reset();
  clearErrors();
  $("#form-title").textContent = item ? `Edit item ${item.id}` : "New item";
  if (item) {
    for (const input of form.elements) {
      if (!input.name) continue;
      let value = text(item.fields[input.name]);
      if (input.name === "start") value = value.replace(" ", "T");
      input.value = value;
    }
  } else {
    form.elements.start.value = `${$("#day").value}T${new Date().toTimeString().slice(0, 5)}`;
  }
  $("#editor").showModal();
}

// What the form calls a field: its label's text, without the "*" of required fields and the hint in brackets; the
// server's messages name fields the same way.
function labelOf(input) {
  const label = input.labels && input.labels[0];
  return label ? label.firstChild.textContent.replace(/[*(].*$/s, "").trim() : input.name;
}

function clearErrors() {
  $("#form-error").textContent = "";
  for (const input of form.elements) input.classList && input.classList.remove("invalid");
}

function formBody() {
  const body = {};
  for (const input of form.elements) {
    if (!input.name) continue;
    const value = input.value.trim();
    if (value === "") { if (editing) body[input.name] = null; continue; }
    body[input.name] = input.name === "start" ? value.replace("T", " ") : value;
  }
  if (editing) for (const k of Object.keys(body)) if (body[k] === null) delete body[k];
  return body; // as typed: the server upper-cases what the standard wants in capitals ("ct" is CT), then validates
}

async function save(event) {
  event.preventDefault();
  clearErrors();
  if (!form.checkValidity()) { // client-side: required, lengths, patterns
    const bad = [...form.elements].filter(i => i.willValidate && !i.checkValidity());
    bad.forEach(i => i.classList.add("invalid"));
    $("#form-error").textContent = bad.map(i => `${labelOf(i)}: ${i.validationMessage}`).join("\n");
    return;
  }
  try {
    const saved = editing ? await call("PATCH", `/items/${editing}`, formBody()) : await call("POST", "/items", formBody());
    $("#editor").close();
    // e.g. an accession number another patient has: taken, but the desk should look (one per request, not per step)
    $("#notice").textContent = [...new Set([].concat(saved).flatMap(item => item.warnings || []))].join("\n");
    await loadSchedule();
  } catch (error) { // server-side: 422 names the fields
    const details = Array.isArray(error.data && error.data.detail) ? error.data.detail : [];
    $("#form-error").textContent = details.length ? details.map(serverError).join("\n") : error.message;
  }
}

// One 422 entry, the field marked and named by its label (the server's own messages start with it already).
function serverError(detail) {
  const name = detail.loc[detail.loc.length - 1];
  const input = form.elements[name];
  if (input) input.classList.add("invalid");
  const label = input ? labelOf(input) : name;
  return detail.msg.startsWith(label + ":") ? detail.msg : `${label}: ${detail.msg}`;
}

async function cancelItem(item) {
  if (!confirm(`Cancel ${item.fields.patient_name} (${item.fields.modality} at ${item.fields.start})?`)) return;
  await call("POST", `/items/${item.id}/cancel`);
  await loadSchedule();
}

async function loadQueries() {
  const page = await call("GET", "/queries?limit=20");
  const body = $("#queries tbody");
  body.replaceChildren(...page.queries.map(q => {
    const itemInput = el("input", { size: "6", placeholder: "item ID", list: "item-ids", inputmode: "numeric",
      "aria-label": `Item ID to explain query ${q.id} for` });
    const explain = el("button", { type: "button", onclick: () => explainQuery(q.id, itemInput.value) }, "Explain");
    return el("tr", { "data-query": q.id }, el("td", {}, q.id), el("td", {}, q.received_at.replace("T", " ").slice(0, 19)),
      el("td", {}, q.calling_ae), el("td", {}, q.summary), el("td", {}, q.answers),
      el("td", {}, "0x" + q.status.toString(16).toUpperCase().padStart(4, "0") + (q.error ? " " + q.error : "")),
      el("td", {}, itemInput, explain));
  }));
}

async function explainQuery(queryId, itemId) {
  const out = $("#explanation");
  try {
    const e = await call("GET", `/queries/${queryId}/explain/${encodeURIComponent(itemId)}`);
    out.textContent = e.keys.map(k => `${k.matched ? "match" : "MISS "} ${k.key}: ${k.reason}`).join("\n") +
      `\nquery ${queryId} ${e.returned ? "returns" : "does not return"} item ${itemId}`;
  } catch (error) { out.textContent = error.message; }
}

async function refresh() {
  try { await Promise.all([loadSchedule(), loadQueries()]); } catch (error) { $("#schedule").textContent = error.message; }
}

$("#day").value = isoDay(new Date(Date.now() - new Date().getTimezoneOffset() * 60000));
form.elements.patient_birth_date.max = $("#day").value; // no birth date after today (the server says so too)
$("#refresh").addEventListener("click", refresh);
$("#day").addEventListener("change", refresh);
$("#station-filter").addEventListener("change", refresh);
$("#show-closed").addEventListener("change", refresh);
$("#new-item").addEventListener("click", () => openEditor(null));
$("#form-cancel").addEventListener("click", () => $("#editor").close());
form.addEventListener("submit", save);
refresh();
