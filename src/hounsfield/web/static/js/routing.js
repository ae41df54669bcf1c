// The routing page: the rules of GET /api/routing/rules (saved with PUT, removed with DELETE, admins only) and the
// deliveries of GET /api/routing/jobs with the count in each state, a failed one retried with POST …/retry.
// Everything from the server is put in the page as text, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const JSON_HEADERS = { Accept: "application/json", "Content-Type": "application/json" };

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

async function answer(response) {
  const data = await response.json().catch(() => ({}));
  if (response.ok) return data;
  const detail = typeof data.detail === "string" ? data.detail
    : Array.isArray(data.detail) ? data.detail.map((e) => `${(e.loc || []).join(".")}: ${e.msg}`).join("; ")
      : response.statusText;
  throw new Error(detail);
}

function say(sel, text, error) {
  $(sel).textContent = text;
  $(sel).className = error ? "error" : "muted";
}

const conditions = (when) => Object.entries(when).map(([k, v]) => `${k} = ${v.join(" | ")}`).join(", ") || "always";

async function loadRules() {
  try {
    const rules = await answer(await fetch("/api/routing/rules", { headers: { Accept: "application/json" } }));
    $("#rule-rows").replaceChildren(...rules.map((rule) => {
      const tr = document.createElement("tr");
      const actions = document.createElement("td");
      if (!rule.configured) {
        const remove = button("Remove", () => removeRule(rule.name));
        remove.dataset.needs = "admin";
        actions.append(remove);
      } else {
        actions.textContent = "configuration file";
      }
      tr.append(cell(rule.name), cell(rule.on), cell(conditions(rule.when)), cell(rule.send_to.join(", ")),
        cell(rule.transfer_syntax || "as stored"), actions);
      return tr;
    }));
    if (!rules.length) say("#rule-status", "No routing rules.");
  } catch (err) {
    say("#rule-status", `Rules: ${err.message}`, true);
  }
}

async function removeRule(name) {
  try {
    await answer(await fetch(`/api/routing/rules/${encodeURIComponent(name)}`, { method: "DELETE",
      headers: { Accept: "application/json" } }));
    say("#rule-status", `Rule ${name} removed.`);
    loadRules();
  } catch (err) {
    say("#rule-status", err.message, true);
  }
}

function patterns(sel) {
  const value = $(sel).value.trim();
  return value ? value.split(",").map((v) => v.trim()).filter(Boolean) : null;
}

async function saveRule(event) {
  event.preventDefault();
  const name = $("#rule-name").value.trim();
  const when = {};
  for (const [key, sel] of [["modality", "#rule-modality"], ["calling_ae", "#rule-ae"],
    ["study_description", "#rule-description"]]) {
    const value = patterns(sel);
    if (value) when[key] = value;
  }
  const body = { on: $("#rule-on").value, send_to: patterns("#rule-send-to") || [], when };
  const syntax = $("#rule-syntax").value.trim();
  if (syntax) body.transfer_syntax = syntax;
  try {
    await answer(await fetch(`/api/routing/rules/${encodeURIComponent(name)}`, { method: "PUT",
      headers: JSON_HEADERS, body: JSON.stringify(body) }));
    say("#rule-status", `Rule ${name} saved.`);
    loadRules();
  } catch (err) {
    say("#rule-status", err.message, true);
  }
}

function jobRow(job) {
  const tr = document.createElement("tr");
  const what = job.scope === "instance" ? `instance ${job.sop_instance_uid}` : `study ${job.study_instance_uid}`;
  const next = job.next_attempt ? new Date(job.next_attempt).toLocaleTimeString() : "";  // ISO 8601, UTC
  const actions = document.createElement("td");
  if (job.state !== "done") actions.append(button("Retry now", () => retry(job.id)));
  tr.append(cell(job.id), cell(job.rule), cell(job.peer), cell(what),
    cell(job.state, job.state === "failed" ? "error" : job.state === "done" ? "ok" : ""), cell(job.attempts),
    cell(next), cell(job.last_error), actions);
  return tr;
}

async function loadJobs(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({ limit: "200" });
  if ($("#filter-state").value) params.set("state", $("#filter-state").value);
  try {
    const data = await answer(await fetch("/api/routing/jobs?" + params, { headers: { Accept: "application/json" } }));
    $("#job-rows").replaceChildren(...data.jobs.map(jobRow));
    $("#job-counts").textContent = Object.entries(data.counts).map(([k, v]) => `${k}: ${v}`).join(" · ");
    say("#job-status", data.jobs.length ? "" : "No deliveries.");
  } catch (err) {
    say("#job-status", `Deliveries: ${err.message}`, true);
  }
}

async function retry(id) {
  try {
    await answer(await fetch(`/api/routing/jobs/${id}/retry`, { method: "POST", headers: { Accept: "application/json" } }));
    say("#job-status", `Delivery ${id} will be tried again now.`);
    loadJobs();
  } catch (err) {
    say("#job-status", err.message, true);
  }
}

$("#rule-form").addEventListener("submit", saveRule);
$("#job-filters").addEventListener("submit", loadJobs);
loadRules();
loadJobs();
setInterval(loadJobs, 5000);
