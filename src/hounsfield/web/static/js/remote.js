// The Remote page (issue 14): pick a configured node (GET /api/remote/peers), echo it, search its studies by
// patient name / ID, date range, modality and accession (POST /api/peers/{name}/find), retrieve a study by
// C-MOVE or C-GET (POST /api/peers/{name}/retrieve) with a progress bar fed by GET /api/jobs/{id}, then open it
// in the viewer (/ui/?study=UID). Everything from the server or the node is put in the page as text, never HTML.
"use strict";

const POLL_MS = 300;
const $ = (sel) => document.querySelector(sel);
const JSON_HEADERS = { Accept: "application/json", "Content-Type": "application/json" };

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : Array.isArray(text) ? text.join(", ") : String(text);
  if (className) td.className = className;
  return td;
}

async function answer(response) {
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data;
  const detail = typeof data.detail === "string" ? data.detail
    : Array.isArray(data.detail) ? data.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ")
      : response.statusText;
  throw new Error(detail || `HTTP ${response.status}`);
}

const peer = () => $("#remote-peer").value;
const say = (sel, text, className = "muted") => { $(sel).textContent = text; $(sel).className = className; };

async function loadPeers() {
  try {
    const peers = await answer(await fetch("/api/remote/peers", { headers: { Accept: "application/json" } }));
    $("#remote-peer").replaceChildren(...peers.map((p) => {
      const option = document.createElement("option");
      option.value = p.name;
      option.textContent = `${p.name} (${p.ae_title} at ${p.host}:${p.port}${p.tls ? ", TLS" : ""})`;
      option.dataset.canRetrieve = String(p.can_retrieve);
      return option;
    }));
    say("#remote-status", peers.length ? "Pick a node and search." : "No remote nodes are configured.");
  } catch (error) {
    say("#remote-status", `Cannot list the remote nodes: ${error.message}`, "error");
  }
}

async function echo() {
  if (!peer()) return;
  say("#remote-echo-status", "Echoing…");
  try {
    await answer(await fetch(`/api/peers/${encodeURIComponent(peer())}/echo`, { method: "POST", headers: JSON_HEADERS }));
    say("#remote-echo-status", `${peer()} answers.`, "ok");
  } catch (error) {
    say("#remote-echo-status", error.message, "error");
  }
}

const day = (value) => value.replaceAll("-", "");

function query() {
  const q = {};
  const name = $("#q-name").value.trim();
  if (name) q.PatientName = /[*?]/.test(name) ? name : `${name}*`; // a prefix unless wildcards are given
  const id = $("#q-id").value.trim();
  if (id) q.PatientID = id;
  const from = day($("#q-date-from").value);
  const to = day($("#q-date-to").value);
  if (from || to) q.StudyDate = from === to ? from : `${from}-${to}`;
  const modality = $("#q-modality").value.trim().toUpperCase();
  if (modality) q.ModalitiesInStudy = modality;
  const accession = $("#q-accession").value.trim();
  if (accession) q.AccessionNumber = accession;
  return q;
}

async function search() {
  if (!peer()) return;
  say("#remote-status", `Searching ${peer()}…`);
  $("#remote-rows").replaceChildren();
  try {
    const found = await answer(await fetch(`/api/peers/${encodeURIComponent(peer())}/find`, {
      method: "POST", headers: JSON_HEADERS, body: JSON.stringify({ level: "study", query: query() }),
    }));
    $("#remote-rows").replaceChildren(...found.matches.map((m) => row(found.peer, m)));
    const more = found.truncated ? ` (the first ${found.matches.length} shown)` : "";
    say("#remote-status", found.count ? `${found.count} stud${found.count === 1 ? "y" : "ies"} on ${found.peer}${more}`
      : `No study on ${found.peer} matches.`);
  } catch (error) {
    say("#remote-status", `Search on ${peer()} failed: ${error.message}`, "error");
  }
}

function row(node, study) {
  const tr = document.createElement("tr");
  tr.className = "remote-study";
  tr.dataset.uid = study.StudyInstanceUID || "";
  const date = study.StudyDate ? study.StudyDate.replace(/^(\d{4})(\d{2})(\d{2})$/, "$1-$2-$3") : "";
  const td = cell("", "retrieve");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "retrieve-button";
  button.textContent = "Retrieve";
  button.dataset.needs = "store";
  button.hidden = $("#remote-method").closest("[data-needs]").hidden; // session.js hid what the role lacks
  const option = $("#remote-peer").selectedOptions[0];
  button.disabled = !study.StudyInstanceUID || (option && option.dataset.canRetrieve === "false");
  button.addEventListener("click", () => retrieve(node, study.StudyInstanceUID, td, button));
  td.append(button);
  tr.append(cell(study.PatientName), cell(study.PatientID), cell(date), cell(study.ModalitiesInStudy),
    cell(study.AccessionNumber), cell(study.StudyDescription), cell(study.NumberOfStudyRelatedSeries),
    cell(study.NumberOfStudyRelatedInstances), td);
  return tr;
}

async function retrieve(node, uid, td, button) {
  button.disabled = true;
  const bar = document.createElement("progress");
  bar.className = "retrieve-progress";
  bar.max = 100;
  bar.value = 0;
  const state = document.createElement("span");
  state.className = "job-state muted";
  state.textContent = "starting…";
  td.replaceChildren(bar, state);
  try {
    let job = await answer(await fetch(`/api/peers/${encodeURIComponent(node)}/retrieve`, {
      method: "POST", headers: JSON_HEADERS,
      body: JSON.stringify({ level: "study", study: uid, method: $("#remote-method").value }),
    }));
    while (job.state === "running") {
      bar.value = job.progress;
      state.textContent = job.total ? `${job.done}/${job.total}` : "waiting for the node…";
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      job = await answer(await fetch(`/api/jobs/${job.id}`, { headers: { Accept: "application/json" } }));
    }
    bar.value = 100;
    td.dataset.state = job.state;
    if (job.state === "failed") {
      state.textContent = `failed: ${job.error}`;
      state.className = "job-state error";
      button.disabled = false;
      td.append(button);
      return;
    }
    state.textContent = `${job.state}: ${job.local_instances} instance${job.local_instances === 1 ? "" : "s"} here` +
      (job.failed ? `, ${job.failed} failed` : "");
    state.className = `job-state ${job.state === "completed" ? "ok" : "error"}`;
    const open = document.createElement("a");
    open.className = "open-study";
    open.href = `/ui/?study=${encodeURIComponent(uid)}`;
    open.textContent = "Open";
    td.append(open);
  } catch (error) {
    state.textContent = `failed: ${error.message}`;
    state.className = "job-state error";
    td.dataset.state = "failed";
    button.disabled = false;
    td.append(button);
  }
}

$("#remote-search").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("#remote-clear").addEventListener("click", () => { $("#remote-search").reset(); $("#remote-rows").replaceChildren(); });
$("#remote-echo").addEventListener("click", echo);
loadPeers();
