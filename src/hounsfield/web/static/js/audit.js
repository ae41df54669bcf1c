// The audit trail page: the events of GET /api/audit, newest first, filtered and paged. Admins only when logins
// are on (the server refuses others). Everything from the server is put in the page as text, never as HTML.
"use strict";

const PAGE = 100;
const $ = (sel) => document.querySelector(sel);
let offset = 0;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function options(select, values) {
  for (const value of values) {
    const option = document.createElement("option");
    option.value = option.textContent = value;
    select.append(option);
  }
}

function query() {
  const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
  const fields = { action: "#filter-action", outcome: "#filter-outcome", user: "#filter-user",
    ae_title: "#filter-ae", patient_id: "#filter-patient", study_instance_uid: "#filter-study",
    since: "#filter-since", until: "#filter-until" };
  for (const [name, sel] of Object.entries(fields)) {
    const value = $(sel).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function row(event) {
  const tr = document.createElement("tr");
  const patient = [event.patient_id, event.patient_name].filter(Boolean).join(" ");
  tr.append(cell(event.at.slice(0, 19).replace("T", " "), "when"), cell(event.action),
    cell(event.outcome, `outcome-${event.outcome}`), cell(event.user || event.ae_title), cell(event.address),
    cell(patient), cell(event.study_instance_uid, "uid"), cell(event.detail, "detail"));
  return tr;
}

async function load() {
  const status = $("#audit-status");
  status.textContent = "Loading…";
  const response = await fetch("/api/audit?" + query(), { headers: { Accept: "application/json" } });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    status.textContent = `Cannot read the audit trail: ${typeof data.detail === "string" ? data.detail : response.statusText}`;
    status.className = "error";
    return;
  }
  status.className = "muted";
  $("#audit-rows").replaceChildren(...data.events.map(row));
  const last = offset + data.events.length;
  status.textContent = data.total ? `${data.total} event${data.total === 1 ? "" : "s"}` : "No events match.";
  $("#page-info").textContent = data.total ? `${offset + 1}–${last} of ${data.total}` : "";
  $("#page-prev").disabled = offset === 0;
  $("#page-next").disabled = last >= data.total;
}

async function vocabulary() {
  const response = await fetch("/api/audit/actions", { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const known = await response.json();
  options($("#filter-action"), known.actions);
  options($("#filter-outcome"), known.outcomes);
}

vocabulary();
$("#audit-filters").addEventListener("submit", (e) => { e.preventDefault(); offset = 0; load(); });
$("#filter-clear").addEventListener("click", () => { $("#audit-filters").reset(); offset = 0; load(); });
$("#page-prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("#page-next").addEventListener("click", () => { offset += PAGE; load(); });
load();
