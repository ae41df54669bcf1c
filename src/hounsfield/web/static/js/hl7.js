// The HL7 message log page: the messages of GET /api/hl7/messages, newest first, filtered and paged; a row's
// message as received with its acknowledgment, and Replay (POST /api/hl7/messages/{id}/replay). Admins only when
// logins are on (the server refuses others). Everything from the server is put in the page as text, never as HTML.
"use strict";

const PAGE = 50;
const $ = (sel) => document.querySelector(sel);
let offset = 0;
let shown = null;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

const ackClass = (code) => (code === "AA" ? "ok" : "error");

function query() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  const fields = { ack_code: "#filter-ack", message_type: "#filter-type", patient_id: "#filter-patient",
    control_id: "#filter-control" };
  for (const [name, sel] of Object.entries(fields)) {
    const value = $(sel).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function row(message) {
  const tr = document.createElement("tr");
  const from = message.replay_of ? `${message.address} (replay of ${message.replay_of})` : message.address;
  tr.append(cell(message.id), cell(message.received_at.slice(0, 19).replace("T", " ")), cell(from),
    cell(message.message_type), cell(message.control_id), cell(message.ack_code, ackClass(message.ack_code)),
    cell(message.outcome));
  tr.tabIndex = 0;
  tr.addEventListener("click", () => detail(message.id));
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter") detail(message.id); });
  return tr;
}

async function answer(response) {
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data;
  throw new Error(typeof data.detail === "string" ? data.detail : response.statusText);
}

async function load() {
  const status = $("#hl7-status");
  status.textContent = "Loading…";
  status.className = "muted";
  try {
    const data = await answer(await fetch("/api/hl7/messages?" + query(), { headers: { Accept: "application/json" } }));
    $("#hl7-rows").replaceChildren(...data.messages.map(row));
    const last = offset + data.messages.length;
    status.textContent = data.total ? `${data.total} message${data.total === 1 ? "" : "s"}` : "No messages match.";
    $("#page-info").textContent = data.total ? `${offset + 1}–${last} of ${data.total}` : "";
    $("#page-prev").disabled = offset === 0;
    $("#page-next").disabled = last >= data.total;
  } catch (error) {
    status.textContent = `Cannot read the HL7 message log: ${error.message}`;
    status.className = "error";
  }
}

function show(message) {
  shown = message.id;
  const replay = message.replay_of ? `, replay of message ${message.replay_of}` : "";
  $("#detail-title").textContent = `Message ${message.id}: ${message.message_type || "(no header)"} ` +
    `${message.control_id} from ${message.address}${replay}`;
  const items = message.item_ids.length ? ` (items ${message.item_ids.join(", ")})` : "";
  $("#detail-outcome").textContent = `${message.ack_code}: ${message.outcome}${items}`;
  $("#detail-outcome").className = ackClass(message.ack_code);
  $("#detail-raw").textContent = message.raw;
  $("#detail-ack").textContent = message.ack;
  $("#hl7-detail").hidden = false;
}

async function detail(id) {
  try {
    show(await answer(await fetch(`/api/hl7/messages/${id}`, { headers: { Accept: "application/json" } })));
    $("#detail-replay-status").textContent = "";
  } catch (error) {
    $("#hl7-status").textContent = `Cannot read message ${id}: ${error.message}`;
    $("#hl7-status").className = "error";
  }
}

async function replay() {
  if (shown == null) return;
  const status = $("#detail-replay-status");
  status.textContent = "Replaying…";
  try {
    const again = await answer(await fetch(`/api/hl7/messages/${shown}/replay`,
      { method: "POST", headers: { Accept: "application/json" } }));
    show(again);
    status.textContent = `Replayed as message ${again.id}.`;
    load();
  } catch (error) {
    status.textContent = `Cannot replay: ${error.message}`;
  }
}

$("#hl7-filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
$("#filter-clear").addEventListener("click", () => { $("#hl7-filters").reset(); offset = 0; load(); });
$("#page-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("#page-next").addEventListener("click", () => { offset += PAGE; load(); });
$("#detail-replay").addEventListener("click", replay);
load();
