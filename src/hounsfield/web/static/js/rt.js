// Radiotherapy in the viewer (issue 13): the RT objects of the series on screen (/api/rt/series), a panel with
// its ROIs (colour, name, volume, a toggle each), the dose controls (colour-wash with opacity and a scale in
// Gy, or isodose lines at chosen levels), the DVHs (Dmean / D95 / D2) and the plan summary; on the viewport the
// contours and the dose of the slice shown, and the dose under the cursor.
//
// Patient safety: everything here belongs to one series and one slice. ``reset`` (main.js select(), on every
// change of study or series) drops it all at once, and every answer is checked on arrival against the series
// (``token``) and the slice (``sop``) it was asked for: an answer for anything else is thrown away.
// Every computation is the server's (hounsfield.rt); this only draws.

const $ = (sel) => document.querySelector(sel);

// matplotlib's "jet" (its segment data), for the scale beside the wash the server colours with it
const JET = {
  r: [[0, 0], [0.35, 0], [0.66, 1], [0.89, 1], [1, 0.5]],
  g: [[0, 0], [0.125, 0], [0.375, 1], [0.64, 1], [0.91, 0], [1, 0]],
  b: [[0, 0.5], [0.11, 1], [0.34, 1], [0.65, 0], [1, 0]],
};

function segment(points, x) {
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1], [x1, y1] = points[i];
    if (x <= x1) return y0 + ((x - x0) / (x1 - x0 || 1)) * (y1 - y0);
  }
  return points[points.length - 1][1];
}

export function jet(f) {
  const x = Math.min(1, Math.max(0, f));
  return [JET.r, JET.g, JET.b].map((p) => Math.round(segment(p, x) * 255));
}

const rgb = (c) => `rgb(${c[0]}, ${c[1]}, ${c[2]})`;

async function getJSON(url) {
  const r = await fetch(url, { headers: { Accept: "application/json" } });
  if (!r.ok) {
    let detail = r.statusText;
    try { const body = await r.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch { /* not JSON */ }
    throw Object.assign(new Error(`${r.status} ${detail}`), { status: r.status });
  }
  return r.json();
}

export class RTPanel {
  constructor(viewport) {
    this.viewport = viewport;
    viewport.overlay = this;
    this.token = 0;
    this.bind();
    this.reset();
  }

  // ------------------------------------------------------------------------------------------- state
  reset() { // a new study or series: nothing of the previous one stays, on screen or in memory
    this.token += 1;
    this.series = null;
    this.structureSet = null; // {sop_instance_uid, label, ...}
    this.dose = null;
    this.plan = null;
    this.rois = []; // [{number, name, color, volume_cc, ...}]
    this.hidden = new Set(); // ROI Numbers toggled off
    this.dvhs = null;
    this.clearSlice();
    const panel = $("#rt-panel");
    panel.hidden = true;
    panel.dataset.state = "empty";
    panel.dataset.series = "";
    $("#rt-rois tbody").replaceChildren();
    $("#rt-dvh-table tbody").replaceChildren();
    $("#rt-plan").replaceChildren();
    $("#rt-status").textContent = "";
    $("#rt-dose-section").hidden = true;
    $("#rt-dvh-section").hidden = true;
    $("#rt-plan-section").hidden = true;
    $("#dose").textContent = "–";
    $("#dose-field").hidden = true;
  }

  clearSlice() { // what was drawn on the slice shown
    this.sop = null;
    this.contours = null;
    this.doseValues = null; // {rows, columns, data: Float32Array}
    this.wash = null; // an ImageBitmap of the colour-wash
    this.isodose = null; // an offscreen canvas of the isodose lines
    const vp = $("#viewport");
    if (vp) { vp.dataset.rtContours = ""; vp.dataset.rtDose = ""; vp.dataset.rtReady = ""; }
  }

  get active() { return !!(this.structureSet || this.dose); }

  mode() { return $("#rt-dose-mode").value; }

  opacity() { return +$("#rt-opacity").value / 100; }

  // ------------------------------------------------------------------------------------------- the series
  async openSeries(studyUid, seriesUid) {
    const token = this.token;
    let found;
    try {
      found = await getJSON(`/api/rt/series/${encodeURIComponent(seriesUid)}`);
    } catch {
      return; // no RT objects to show: the viewer works as before
    }
    if (token !== this.token) return;
    if (!found.structure_sets.length && !found.doses.length) return;
    this.series = seriesUid;
    this.structureSet = found.structure_sets[0] || null;
    this.dose = found.doses[0] || null;
    this.plan = found.plans[0] || null;
    const panel = $("#rt-panel");
    panel.hidden = false;
    panel.dataset.series = seriesUid;
    panel.dataset.state = "loading";
    const notes = [];
    if (found.structure_sets.length > 1) notes.push(`${found.structure_sets.length} structure sets: the first is shown`);
    if (found.doses.length > 1) notes.push(`${found.doses.length} doses: the first is shown`);
    notes.push(...found.problems);
    $("#rt-status").textContent = notes.join("\n");
    $("#rt-title").textContent = this.structureSet ? `Structure set ${this.structureSet.label || ""}` : "Radiotherapy";
    const jobs = [];
    if (this.structureSet) jobs.push(this.loadRois(token));
    if (this.dose) { $("#rt-dose-section").hidden = false; $("#dose-field").hidden = false; this.drawScale(); }
    if (this.plan) jobs.push(this.loadPlan(token));
    await Promise.all(jobs);
    if (token !== this.token) return;
    panel.dataset.state = "ready";
    const shown = this.viewport.el.dataset.sop;
    if (shown) this.showSlice({ sop: shown, series: seriesUid }, true);
    if (this.structureSet && this.dose) this.loadDvhs(token);
  }

  async loadRois(token) {
    let answer;
    try {
      answer = await getJSON(`/api/rt/structure-sets/${this.structureSet.sop_instance_uid}/rois`);
    } catch (err) {
      if (token === this.token) $("#rt-status").textContent += `\nROIs: ${err.message}`;
      return;
    }
    if (token !== this.token) return;
    this.rois = answer.rois;
    const body = $("#rt-rois tbody");
    body.replaceChildren();
    for (const roi of answer.rois) {
      const tr = document.createElement("tr");
      tr.dataset.roi = String(roi.number);
      const toggle = document.createElement("input");
      toggle.type = "checkbox";
      toggle.checked = true;
      toggle.title = `Show ${roi.name}`;
      toggle.addEventListener("change", () => this.toggle(roi.number, toggle.checked));
      const swatch = document.createElement("span");
      swatch.className = "rt-swatch";
      swatch.style.backgroundColor = rgb(roi.color); // CSSOM: allowed by the page's style-src
      const cells = [[toggle], [swatch], roi.name, roi.interpreted_type || "",
        roi.volume_cc === null ? "–" : `${roi.volume_cc.toFixed(2)} cm³`];
      const classes = ["toggle", "colour", "name", "type", "volume"];
      cells.forEach((content, i) => {
        const td = document.createElement("td");
        td.className = classes[i];
        if (Array.isArray(content)) td.append(...content); else td.textContent = content;
        tr.append(td);
      });
      body.append(tr);
    }
  }

  async loadPlan(token) {
    let p;
    try { p = await getJSON(`/api/rt/plans/${this.plan.sop_instance_uid}`); } catch { return; }
    if (token !== this.token) return;
    this.planSummary = p;
    const box = $("#rt-plan");
    box.replaceChildren();
    const line = (label, value) => {
      const div = document.createElement("div");
      const b = document.createElement("b");
      b.textContent = `${label} `;
      div.append(b, String(value));
      box.append(div);
    };
    line("Plan", `${p.label}${p.plan_name ? ` (${p.plan_name})` : ""}`);
    if (p.intent) line("Intent", p.intent);
    if (p.prescription_gy !== null) line("Prescription", `${p.prescription_gy} Gy`);
    if (p.fractions !== null) line("Fractions", p.fractions);
    if (p.total_meterset !== null) line("Total meterset", `${p.total_meterset.toFixed(1)} MU`);
    const table = document.createElement("table");
    table.className = "rt-beams";
    const head = document.createElement("tr");
    for (const h of ["Beam", "Type", "Energy", "Gantry", "Coll.", "Couch", "MU"]) {
      const th = document.createElement("th");
      th.textContent = h;
      head.append(th);
    }
    table.append(head);
    const n = (v, d = 0) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
    for (const b of p.beams) {
      const tr = document.createElement("tr");
      for (const v of [b.name || b.number, `${b.radiation_type} ${b.beam_type}`.trim(), n(b.nominal_energy),
        n(b.gantry_angle), n(b.collimator_angle), n(b.couch_angle), n(b.meterset, 1)]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      table.append(tr);
    }
    box.append(table);
    $("#rt-plan-section").hidden = false;
  }

  async loadDvhs(token) {
    const section = $("#rt-dvh-section");
    section.hidden = false;
    section.dataset.state = "loading";
    $("#rt-dvh-status").textContent = "Computing DVHs…";
    let answer;
    try {
      const q = new URLSearchParams({ structure_set: this.structureSet.sop_instance_uid, dose: this.dose.sop_instance_uid });
      answer = await getJSON(`/api/rt/dvh?${q}`);
    } catch (err) {
      if (token === this.token) { $("#rt-dvh-status").textContent = `DVH: ${err.message}`; section.dataset.state = "error"; }
      return;
    }
    if (token !== this.token) return;
    this.dvhs = answer;
    $("#rt-dvh-status").textContent = answer.errors.join("\n");
    section.dataset.state = "ready";
    this.renderDvhs();
  }

  toggle(number, on) {
    if (on) this.hidden.delete(number); else this.hidden.add(number);
    this.viewport.draw();
    this.renderDvhs();
  }

  // ------------------------------------------------------------------------------------------- DVH panel
  renderDvhs() {
    if (!this.dvhs) return;
    const shown = this.dvhs.dvhs.filter((d) => !this.hidden.has(d.number));
    const body = $("#rt-dvh-table tbody");
    body.replaceChildren();
    const f = (v) => (v === null || v === undefined ? "–" : v.toFixed(2));
    for (const d of shown) {
      const tr = document.createElement("tr");
      tr.dataset.roi = String(d.number);
      const swatch = document.createElement("span");
      swatch.className = "rt-swatch";
      swatch.style.backgroundColor = rgb(this.colourOf(d));
      const name = document.createElement("td");
      name.className = "name";
      name.append(swatch, " ", d.name);
      tr.append(name);
      for (const [cls, v] of [["dmean", d.mean_gy], ["d95", d.d95_gy], ["d2", d.d2_gy]]) {
        const td = document.createElement("td");
        td.className = `num ${cls}`;
        td.textContent = f(v);
        tr.append(td);
      }
      body.append(tr);
    }
    this.drawDvhCurves(shown);
  }

  colourOf(d) {
    const roi = this.rois.find((r) => r.number === d.number);
    return roi ? roi.color : d.color || [200, 200, 200];
  }

  drawDvhCurves(dvhs) {
    const canvas = $("#rt-dvh");
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, left = 30, bottom = 18;
    ctx.clearRect(0, 0, w, h);
    const top = Math.max(1e-6, ...dvhs.map((d) => d.max_gy || 0));
    ctx.strokeStyle = "#555";
    ctx.strokeRect(left, 2, w - left - 2, h - bottom - 2);
    ctx.fillStyle = "#aaa";
    ctx.font = "10px system-ui, sans-serif";
    ctx.fillText("100%", 0, 10);
    ctx.fillText("0", left - 10, h - bottom);
    ctx.fillText(`${top.toFixed(1)} Gy`, w - 46, h - 4);
    ctx.fillText("0", left, h - 4);
    for (const d of dvhs) {
      ctx.strokeStyle = rgb(this.colourOf(d));
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      d.dose_gy.forEach((g, i) => {
        const x = left + (g / top) * (w - left - 2), y = 2 + (1 - d.volume_pct[i] / 100) * (h - bottom - 2);
        if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      });
      ctx.stroke();
    }
  }

  drawScale() {
    const canvas = $("#rt-scale-bar");
    const ctx = canvas.getContext("2d");
    for (let x = 0; x < canvas.width; x++) {
      ctx.fillStyle = rgb(jet(x / (canvas.width - 1)));
      ctx.fillRect(x, 0, 1, canvas.height);
    }
  }

  // ------------------------------------------------------------------------------------------- the slice
  // ``item``: the stack item shown (null: no image). Fetches what goes on it, once per slice.
  showSlice(item, force = false) {
    if (!item || !this.active || item.series !== this.series) {
      if (this.sop) { this.clearSlice(); this.viewport.draw(); }
      return;
    }
    if (item.sop === this.sop && !force) return;
    this.clearSlice();
    this.sop = item.sop;
    this.viewport.draw();
    this.loadSlice(this.token, item.sop);
  }

  fresh(token, sop) { return token === this.token && sop === this.sop; }

  async loadSlice(token, sop) {
    const image = encodeURIComponent(sop);
    const jobs = [];
    if (this.structureSet) {
      jobs.push(getJSON(`/api/rt/structure-sets/${this.structureSet.sop_instance_uid}/contours?image=${image}`)
        .then((c) => { if (this.fresh(token, sop)) { this.contours = c; $("#viewport").dataset.rtContours = sop; } })
        .catch((err) => { if (this.fresh(token, sop)) $("#rt-status").textContent = `Contours: ${err.message}`; }));
    }
    if (this.dose) {
      jobs.push(this.loadDose(token, sop, image));
    }
    await Promise.all(jobs);
    if (!this.fresh(token, sop)) return;
    this.viewport.draw();
    this.viewport.hover();
    $("#viewport").dataset.rtReady = sop; // drawn: what the tests wait for
  }

  async loadDose(token, sop, image) {
    const base = `/api/rt/doses/${this.dose.sop_instance_uid}`;
    try {
      const r = await fetch(`${base}/slice?image=${image}&format=f32`);
      if (!r.ok) throw new Error(`${r.status}`);
      const buf = await r.arrayBuffer();
      if (!this.fresh(token, sop)) return;
      this.doseValues = { rows: +r.headers.get("X-Rows"), columns: +r.headers.get("X-Columns"),
                          data: new Float32Array(buf), max: +r.headers.get("X-Dose-Max"),
                          units: r.headers.get("X-Dose-Units") || "Gy" };
      $("#rt-scale-max").textContent = `${this.doseValues.max.toFixed(2)} ${this.doseValues.units}`;
      $("#rt-scale-min").textContent = `${(0.1 * this.doseValues.max).toFixed(2)} ${this.doseValues.units}`;
      await this.loadDoseOverlay(token, sop);
      if (this.fresh(token, sop)) $("#viewport").dataset.rtDose = sop;
    } catch (err) {
      if (this.fresh(token, sop)) $("#rt-status").textContent = `Dose: ${err.message}`;
    }
  }

  async loadDoseOverlay(token, sop) { // the wash or the isodose lines of the slice, per the dose controls
    const image = encodeURIComponent(sop);
    const base = `/api/rt/doses/${this.dose.sop_instance_uid}`;
    const mode = this.mode();
    if (mode === "wash") {
      const r = await fetch(`${base}/slice?image=${image}&format=png`);
      if (!r.ok) throw new Error(`${r.status}`);
      const bitmap = await createImageBitmap(await r.blob());
      if (this.fresh(token, sop) && this.mode() === "wash") { this.wash = bitmap; this.isodose = null; }
    } else if (mode === "isodose") {
      const levels = $("#rt-levels").value.trim() || "95,80,50,20";
      const answer = await getJSON(`${base}/isodose?image=${image}&levels=${encodeURIComponent(levels)}`);
      if (!this.fresh(token, sop) || this.mode() !== "isodose") return;
      const canvas = document.createElement("canvas");
      canvas.width = answer.columns;
      canvas.height = answer.rows;
      const ctx = canvas.getContext("2d");
      const data = ctx.createImageData(answer.columns, answer.rows);
      for (const level of [...answer.levels].reverse()) { // the highest level on top
        for (const [x, y] of level.pixels) {
          const q = (y * answer.columns + x) * 4;
          data.data.set([...level.color, 255], q);
        }
      }
      ctx.putImageData(data, 0, 0);
      this.isodose = canvas;
      this.wash = null;
      this.renderLegend(answer);
    } else {
      this.wash = null;
      this.isodose = null;
    }
  }

  renderLegend(answer) {
    const box = $("#rt-isodose-legend");
    box.replaceChildren();
    for (const level of answer.levels) {
      const div = document.createElement("div");
      const swatch = document.createElement("span");
      swatch.className = "rt-swatch";
      swatch.style.backgroundColor = rgb(level.color);
      div.append(swatch, ` ${level.label}`);
      box.append(div);
    }
    const ref = document.createElement("div");
    ref.className = "muted";
    ref.textContent = `100 % = ${answer.reference.gy.toFixed(2)} ${answer.units} (${answer.reference.source})`;
    box.append(ref);
  }

  async doseControlsChanged() {
    const mode = this.mode();
    $("#rt-wash-controls").hidden = mode !== "wash";
    $("#rt-isodose-controls").hidden = mode !== "isodose";
    if (!this.sop || !this.dose) { this.viewport.draw(); return; }
    const token = this.token, sop = this.sop;
    $("#viewport").dataset.rtDose = "";
    $("#viewport").dataset.rtReady = "";
    try { await this.loadDoseOverlay(token, sop); } catch (err) { $("#rt-status").textContent = `Dose: ${err.message}`; }
    if (!this.fresh(token, sop)) return;
    $("#viewport").dataset.rtDose = sop;
    this.viewport.draw();
    $("#viewport").dataset.rtReady = sop;
  }

  // ------------------------------------------------------------------------------------------- drawing
  // Called by Viewport.draw() over the image and under the measurements, for the slice the viewport shows.
  draw(ctx, vp) {
    if (!this.sop || vp.el.dataset.sop !== this.sop || !vp.image) return;
    const s = vp.scale(), asp = vp.pixelAspect();
    const [ox, oy] = vp.origin();
    const w = vp.image.columns * s, h = vp.image.rows * s * asp;
    const smoothing = ctx.imageSmoothingEnabled;
    ctx.imageSmoothingEnabled = false;
    if (this.wash && this.mode() === "wash") {
      ctx.globalAlpha = this.opacity();
      ctx.drawImage(this.wash, ox, oy, w, h);
      ctx.globalAlpha = 1;
    } else if (this.isodose && this.mode() === "isodose") {
      ctx.drawImage(this.isodose, ox, oy, w, h);
    }
    ctx.imageSmoothingEnabled = smoothing;
    if (!this.contours) return;
    ctx.lineWidth = 2;
    for (const roi of this.contours.rois) {
      if (this.hidden.has(roi.number)) continue;
      ctx.strokeStyle = rgb(roi.color);
      for (const c of roi.contours) {
        const pts = c.points.map(([x, y]) => [ox + (x + 0.5) * s, oy + (y + 0.5) * s * asp]);
        ctx.beginPath();
        if (c.type === "POINT" || pts.length === 1) {
          for (const [x, y] of pts) { ctx.moveTo(x - 4, y); ctx.lineTo(x + 4, y); ctx.moveTo(x, y - 4); ctx.lineTo(x, y + 4); }
        } else {
          pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
          if (c.closed) ctx.closePath();
        }
        ctx.stroke();
      }
    }
  }

  // The dose at image pixel ``pos`` ([column, row]) of the slice shown, as text; "–" outside the grid.
  doseText(pos) {
    const d = this.doseValues;
    if (!pos || !d || this.viewport.el.dataset.sop !== this.sop) return "–";
    const [i, j] = pos;
    if (i < 0 || j < 0 || i >= d.columns || j >= d.rows) return "–";
    const v = d.data[j * d.columns + i];
    return Number.isFinite(v) ? `${v.toFixed(3)} ${d.units}` : "–";
  }

  // ------------------------------------------------------------------------------------------- wiring
  bind() {
    $("#rt-dose-mode").addEventListener("change", () => this.doseControlsChanged());
    $("#rt-levels").addEventListener("change", () => this.doseControlsChanged());
    $("#rt-opacity").addEventListener("input", () => {
      $("#rt-opacity-value").textContent = `${$("#rt-opacity").value} %`;
      this.viewport.draw();
    });
  }
}
