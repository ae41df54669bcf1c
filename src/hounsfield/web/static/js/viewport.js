// The viewport: one frame of modality values drawn on a canvas, windowed in the browser
// (PS3.3 C.11.2.1.2.1 linear window), with zoom, pan, value under the cursor, distance measurements and
// rectangular / elliptical regions of interest (mean, SD, area of the modality values inside).

const TOOLS_THAT_DRAW = ["measure", "rect", "ellipse"];

export class Viewport {
  constructor(element, canvas, callbacks = {}) {
    this.el = element;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.cb = callbacks; // onWindow, onHover, onMeasure, onRoi, onZoom, onSlice(step), onTool
    this.image = null; // {rows, columns, samples, data, min, max}
    this.info = {}; // {spacing: [row, col] | null, monochrome1, unit}
    this.center = 40;
    this.width = 400;
    this.invert = false;
    this.zoom = 1;
    this.pan = [0, 0];
    this.tool = "window";
    // measurements and ROIs of the frame shown, in image coordinates: {kind: "line"|"rect"|"ellipse", a: [x, y],
    // b: [x, y], result}; ``pending`` is the one being drawn
    this.annotations = [];
    this.pending = null;
    this.pointers = new Map();
    this.pointer = null; // last client position of the mouse over the viewport
    this.overlay = null; // issue 13: the RT overlays (rt.js RTPanel): draw(ctx, viewport) over the image
    this.offscreen = document.createElement("canvas");
    this.dirtyPixels = true;
    new ResizeObserver(() => this.resize()).observe(element);
    this.bindEvents();
  }

  // ---------------------------------------------------------------- state
  setImage(image, info) { // the pixels of one frame; the caller changes the annotations with them
    this.image = image;
    this.info = info;
    if (this.offscreen.width !== image.columns || this.offscreen.height !== image.rows) {
      this.offscreen.width = image.columns;
      this.offscreen.height = image.rows;
      this.imageData = this.offscreen.getContext("2d").createImageData(image.columns, image.rows);
    }
    this.dirtyPixels = true;
    this.draw();
    this.hover();
  }

  clear() { // no pixels at all: a black canvas, no measurement, nothing under the cursor
    this.image = null;
    this.info = {};
    this.annotations = [];
    this.pending = null;
    this.drag = null;
    this.dirtyPixels = true;
    this.draw();
    this.hover();
  }

  clearMeasurement() { // measurements and ROIs belong to the frame they were drawn on
    this.annotations = [];
    this.pending = null;
    if (TOOLS_THAT_DRAW.includes(this.drag?.action)) this.drag = null;
    this.draw();
  }

  get line() { // the last distance measurement (the one being drawn first)
    if (this.pending?.kind === "line") return this.pending;
    return [...this.annotations].reverse().find((a) => a.kind === "line") || null;
  }

  set line(value) { // null: every measurement and ROI goes
    if (value === null) this.clearMeasurement();
  }

  measurements() { return this.annotations.filter((a) => a.kind === "line").map((a) => this.lineResult(a)); }

  rois() { return this.annotations.filter((a) => a.kind !== "line").map((a) => a.result); }

  hover() { // report the value under the cursor of the image shown now (or nothing)
    if (this.image && this.pointer) {
      const [x, y] = this.toImage(...this.pointer);
      this.cb.onHover?.([Math.floor(x), Math.floor(y)], this.valueAt(x, y));
    } else {
      this.cb.onHover?.(null, null);
    }
  }

  setWindow(center, width) {
    this.center = center;
    this.width = Math.max(1, width);
    this.dirtyPixels = true;
    this.draw();
    this.cb.onWindow?.(this.center, this.width);
  }

  reset() { // the view (zoom, pan); the measurements stay where they are on the image
    this.zoom = 1;
    this.pan = [0, 0];
    this.draw();
    this.cb.onZoom?.(this.scale());
  }

  // ---------------------------------------------------------------- geometry
  resize() {
    const r = this.el.getBoundingClientRect();
    this.canvas.width = Math.max(1, Math.round(r.width));
    this.canvas.height = Math.max(1, Math.round(r.height));
    this.draw();
  }

  fitScale() {
    if (!this.image) return 1;
    const aspect = this.pixelAspect();
    return Math.min(this.canvas.width / this.image.columns, this.canvas.height / (this.image.rows * aspect));
  }

  pixelAspect() { // displayed height of a pixel relative to its width (PixelSpacing row/column)
    const s = this.info.spacing;
    return s && s[0] > 0 && s[1] > 0 ? s[0] / s[1] : 1;
  }

  scale() { return this.fitScale() * this.zoom; }

  origin() { // canvas position of the image's top-left corner
    const s = this.scale();
    const w = this.image.columns * s;
    const h = this.image.rows * s * this.pixelAspect();
    return [(this.canvas.width - w) / 2 + this.pan[0], (this.canvas.height - h) / 2 + this.pan[1]];
  }

  canvasPoint(clientX, clientY) {
    const r = this.canvas.getBoundingClientRect();
    return [(clientX - r.left) * (this.canvas.width / r.width), (clientY - r.top) * (this.canvas.height / r.height)];
  }

  toImage(clientX, clientY) { // continuous image coordinates: (0, 0) is the top-left corner of pixel (0, 0)
    const [cx, cy] = this.canvasPoint(clientX, clientY);
    const [ox, oy] = this.origin();
    const s = this.scale();
    return [(cx - ox) / s, (cy - oy) / (s * this.pixelAspect())];
  }

  toClient(x, y) { // client coordinates of image point (x, y); pixel centres are at (i + 0.5, j + 0.5)
    const [ox, oy] = this.origin();
    const s = this.scale();
    const r = this.canvas.getBoundingClientRect();
    return [r.left + (ox + x * s) * (r.width / this.canvas.width),
            r.top + (oy + y * s * this.pixelAspect()) * (r.height / this.canvas.height)];
  }

  valueAt(x, y) {
    const img = this.image;
    const i = Math.floor(x), j = Math.floor(y);
    if (!img || i < 0 || j < 0 || i >= img.columns || j >= img.rows) return null;
    const k = (j * img.columns + i) * img.samples;
    return img.samples === 1 ? img.data[k] : Array.from(img.data.slice(k, k + img.samples));
  }

  // ---------------------------------------------------------------- drawing
  renderPixels() {
    const img = this.image;
    const out = this.imageData.data;
    const n = img.rows * img.columns;
    if (img.samples === 3) {
      const top = img.max > 255 ? img.max : 255;
      for (let p = 0; p < n; p++) {
        for (let c = 0; c < 3; c++) {
          let v = (img.data[p * 3 + c] / top) * 255;
          out[p * 4 + c] = this.invert ? 255 - v : v;
        }
        out[p * 4 + 3] = 255;
      }
    } else {
      // PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5) * (ymax - ymin) + ymin, clipped
      const c = this.center, w = this.width;
      const low = c - 0.5 - (w - 1) / 2, high = c - 0.5 + (w - 1) / 2;
      const flip = this.invert !== !!this.info.monochrome1;
      const map = (x) => {
        let y = x <= low ? 0 : x > high ? 255 : ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
        y = Math.round(y);
        return flip ? 255 - y : y;
      };
      const data = img.data;
      if (data instanceof Int16Array) { // a table over every Int16 value: windowing is one lookup per pixel
        const lut = new Uint8Array(65536);
        for (let v = -32768; v < 32768; v++) lut[v + 32768] = map(v);
        for (let p = 0; p < n; p++) {
          const g = lut[data[p] + 32768];
          const q = p * 4;
          out[q] = out[q + 1] = out[q + 2] = g;
          out[q + 3] = 255;
        }
      } else {
        for (let p = 0; p < n; p++) {
          const g = map(data[p]);
          const q = p * 4;
          out[q] = out[q + 1] = out[q + 2] = g;
          out[q + 3] = 255;
        }
      }
    }
    this.offscreen.getContext("2d").putImageData(this.imageData, 0, 0);
    this.dirtyPixels = false;
  }

  draw() {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    if (this.dirtyPixels) this.renderPixels();
    const s = this.scale();
    const [ox, oy] = this.origin();
    ctx.imageSmoothingEnabled = s < 1;
    ctx.drawImage(this.offscreen, ox, oy, this.image.columns * s, this.image.rows * s * this.pixelAspect());
    this.overlay?.draw(ctx, this); // issue 13: contours and dose, under the measurements
    for (const a of this.annotations) this.drawAnnotation(a, false);
    if (this.pending) this.drawAnnotation(this.pending, true);
  }

  drawAnnotation(a, active) {
    if (a.kind === "line") this.drawLine(a, active);
    else this.drawRoi(a, active);
  }

  canvasOf(pt) {
    const s = this.scale(), asp = this.pixelAspect();
    const [ox, oy] = this.origin();
    return [ox + pt[0] * s, oy + pt[1] * s * asp];
  }

  drawRoi(roi, active) {
    const ctx = this.ctx;
    const [x1, y1] = this.canvasOf(roi.a), [x2, y2] = this.canvasOf(roi.b);
    ctx.strokeStyle = active ? "#ffe98a" : "#7fe0a0";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    if (roi.kind === "rect") ctx.rect(Math.min(x1, x2), Math.min(y1, y2), Math.abs(x2 - x1), Math.abs(y2 - y1));
    else ctx.ellipse((x1 + x2) / 2, (y1 + y2) / 2, Math.abs(x2 - x1) / 2, Math.abs(y2 - y1) / 2, 0, 0, 2 * Math.PI);
    ctx.stroke();
    const r = roi.result || this.roiStats(roi);
    if (!r) return;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.font = "12px system-ui, sans-serif";
    const lines = this.roiText(r).split("\n");
    const tx = Math.max(x1, x2) + 6, ty = Math.min(y1, y2) + 12;
    lines.forEach((t, i) => ctx.fillText(t, tx, ty + i * 14));
  }

  roiText(r) {
    if (!r) return "";
    const u = r.unit ? ` ${r.unit}` : "";
    const area = r.areaUnit === "mm²" && r.area >= 100 ? `${(r.area / 100).toFixed(2)} cm²` : `${r.area.toFixed(1)} ${r.areaUnit}`;
    return r.n ? `mean ${r.mean.toFixed(1)}${u}  SD ${r.sd.toFixed(1)}\narea ${area}  (${r.n} px)` : `area ${area}  (no pixel)`;
  }

  // mean / SD (population) / min / max of the modality values whose pixel centres lie in the ROI, and its area
  roiStats(roi) {
    const img = this.image;
    if (!img) return null;
    const x0 = Math.min(roi.a[0], roi.b[0]), x1 = Math.max(roi.a[0], roi.b[0]);
    const y0 = Math.min(roi.a[1], roi.b[1]), y1 = Math.max(roi.a[1], roi.b[1]);
    const ex = (x0 + x1) / 2, ey = (y0 + y1) / 2, rx = (x1 - x0) / 2, ry = (y1 - y0) / 2;
    const s = this.info.spacing;
    const w = (x1 - x0) * (s ? s[1] : 1), h = (y1 - y0) * (s ? s[0] : 1);
    const area = roi.kind === "rect" ? w * h : Math.PI * (w / 2) * (h / 2);
    let n = 0, sum = 0, min = Infinity, max = -Infinity;
    const values = [];
    if (img.samples === 1) {
      for (let j = Math.max(0, Math.floor(y0)); j < Math.min(img.rows, Math.ceil(y1)); j++) {
        for (let i = Math.max(0, Math.floor(x0)); i < Math.min(img.columns, Math.ceil(x1)); i++) {
          const cx = i + 0.5, cy = j + 0.5;
          if (cx < x0 || cx > x1 || cy < y0 || cy > y1) continue;
          if (roi.kind === "ellipse" && ((cx - ex) / rx) ** 2 + ((cy - ey) / ry) ** 2 > 1) continue;
          const v = img.data[j * img.columns + i];
          values.push(v);
          sum += v;
          n += 1;
          if (v < min) min = v;
          if (v > max) max = v;
        }
      }
    }
    const mean = n ? sum / n : NaN;
    let sq = 0;
    for (const v of values) sq += (v - mean) ** 2;
    return { kind: roi.kind, n, mean, sd: n ? Math.sqrt(sq / n) : NaN, min: n ? min : NaN, max: n ? max : NaN,
             area, areaUnit: s ? "mm²" : "px²", unit: this.info.unit || "",
             box: [x0, y0, x1, y1], colour: img.samples !== 1 };
  }

  drawLine(line, active) {
    const ctx = this.ctx;
    const [x1, y1] = this.canvasOf(line.a), [x2, y2] = this.canvasOf(line.b);
    ctx.strokeStyle = active ? "#ffe98a" : "#ffd54a";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(x1, y1);
    ctx.lineTo(x2, y2);
    ctx.stroke();
    for (const [x, y] of [[x1, y1], [x2, y2]]) {
      ctx.beginPath();
      ctx.arc(x, y, 3, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.fillStyle = "#ffd54a";
    ctx.font = "13px system-ui, sans-serif";
    const m = this.lineResult(line);
    ctx.fillText(`${m.value.toFixed(2)} ${m.unit}`, x2 + 6, y2 - 6);
  }

  // ---------------------------------------------------------------- measurement
  lineResult(line) {
    const dx = line.b[0] - line.a[0], dy = line.b[1] - line.a[1];
    const s = this.info.spacing;
    if (s) return { value: Math.hypot(dx * s[1], dy * s[0]), unit: "mm" };
    return { value: Math.hypot(dx, dy), unit: "px" };
  }

  measure() { // the last distance measurement, or null
    const line = this.line;
    return line ? this.lineResult(line) : null;
  }

  measureText() {
    const m = this.measure();
    return m ? `${m.value.toFixed(2)} ${m.unit}` : "";
  }

  lastRoi() {
    if (this.pending && this.pending.kind !== "line") return this.roiStats(this.pending);
    const roi = [...this.annotations].reverse().find((a) => a.kind !== "line");
    return roi ? roi.result : null;
  }

  // ---------------------------------------------------------------- input
  bindEvents() {
    const el = this.el;
    el.addEventListener("contextmenu", (e) => e.preventDefault());
    el.addEventListener("wheel", (e) => {
      e.preventDefault();
      if (!this.image) return;
      if (e.ctrlKey || e.metaKey) {
        this.zoomAt(e.clientX, e.clientY, Math.exp(-e.deltaY * 0.002));
      } else {
        this.cb.onSlice?.(Math.sign(e.deltaY));
      }
    }, { passive: false });
    el.addEventListener("pointerdown", (e) => this.pointerDown(e));
    el.addEventListener("pointermove", (e) => this.pointerMove(e));
    el.addEventListener("pointerup", (e) => this.pointerUp(e));
    el.addEventListener("pointercancel", (e) => this.pointerUp(e));
    el.addEventListener("pointerleave", () => { this.pointer = null; this.hover(); });
  }

  actionFor(e) {
    if (e.pointerType === "touch" && this.pointers.size >= 2) return "pinch";
    if (e.button === 1 || (e.button === 0 && e.shiftKey)) return "pan";
    if (e.button === 2) return e.ctrlKey ? "zoom" : "window";
    return this.tool;
  }

  pointerDown(e) {
    if (!this.image) return;
    this.el.focus();
    this.el.setPointerCapture(e.pointerId);
    this.pointers.set(e.pointerId, [e.clientX, e.clientY]);
    const action = this.actionFor(e);
    this.drag = { action, x: e.clientX, y: e.clientY, center: this.center, width: this.width,
                  zoom: this.zoom, pan: [...this.pan], pinch: this.pinchState() };
    if (action === "measure") {
      const p = this.snap(this.toImage(e.clientX, e.clientY));
      this.pending = { kind: "line", a: p, b: p };
      this.draw();
    } else if (action === "rect" || action === "ellipse") {
      const p = this.snapCorner(this.toImage(e.clientX, e.clientY));
      this.pending = { kind: action, a: p, b: p };
      this.draw();
    }
    e.preventDefault();
  }

  snap([x, y]) { // measurements run between pixel centres
    return [Math.floor(x) + 0.5, Math.floor(y) + 0.5];
  }

  snapCorner([x, y]) { // ROIs run along pixel edges, inside the image
    const img = this.image;
    return [Math.min(img.columns, Math.max(0, Math.round(x))), Math.min(img.rows, Math.max(0, Math.round(y)))];
  }

  pinchState() {
    const pts = [...this.pointers.values()];
    if (pts.length < 2) return null;
    const [a, b] = pts;
    return { dist: Math.hypot(a[0] - b[0], a[1] - b[1]), mid: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] };
  }

  pointerMove(e) {
    if (this.pointers.has(e.pointerId)) this.pointers.set(e.pointerId, [e.clientX, e.clientY]);
    this.pointer = [e.clientX, e.clientY];
    this.hover();
    const d = this.drag;
    if (!d || !this.image) return;
    const dx = e.clientX - d.x, dy = e.clientY - d.y;
    switch (d.action) {
      case "window": {
        const step = Math.max((this.image.max - this.image.min) / 1024, 0.25);
        this.setWindow(d.center + dy * step, Math.max(1, d.width + dx * step * 2));
        break;
      }
      case "pan":
        this.pan = [d.pan[0] + dx, d.pan[1] + dy];
        this.draw();
        break;
      case "zoom":
        this.zoom = Math.min(40, Math.max(0.1, d.zoom * Math.exp(-dy * 0.01)));
        this.draw();
        this.cb.onZoom?.(this.scale());
        break;
      case "measure":
        if (!this.pending) break;
        this.pending.b = this.snap(this.toImage(e.clientX, e.clientY));
        this.draw();
        this.cb.onMeasure?.(this.measure());
        break;
      case "rect":
      case "ellipse":
        if (!this.pending) break;
        this.pending.b = this.snapCorner(this.toImage(e.clientX, e.clientY));
        this.draw();
        this.cb.onRoi?.(this.lastRoi());
        break;
      case "pinch": {
        const now = this.pinchState();
        if (now && d.pinch) {
          this.zoom = Math.min(40, Math.max(0.1, d.zoom * (now.dist / d.pinch.dist)));
          this.pan = [d.pan[0] + now.mid[0] - d.pinch.mid[0], d.pan[1] + now.mid[1] - d.pinch.mid[1]];
          this.draw();
          this.cb.onZoom?.(this.scale());
        }
        break;
      }
    }
  }

  pointerUp(e) {
    this.pointers.delete(e.pointerId);
    if (TOOLS_THAT_DRAW.includes(this.drag?.action)) this.finish();
    this.drag = null;
    if (this.pointers.size === 1) { // one finger left after a pinch: restart from there
      const [[id, [x, y]]] = [...this.pointers.entries()];
      this.drag = { action: "pan", x, y, pan: [...this.pan], zoom: this.zoom, id };
    }
  }

  // the annotation drawn ends: kept when it has a length (a line) or an area (a ROI); a click draws nothing and
  // leaves the earlier ones as they were
  finish() {
    const p = this.pending;
    this.pending = null;
    if (!p) return;
    const empty = p.kind === "line" ? p.a[0] === p.b[0] && p.a[1] === p.b[1] : p.a[0] === p.b[0] || p.a[1] === p.b[1];
    if (!empty) {
      p.result = p.kind === "line" ? this.lineResult(p) : this.roiStats(p);
      this.annotations.push(p);
    }
    this.draw();
    if (p.kind === "line") this.cb.onMeasure?.(this.measure());
    else this.cb.onRoi?.(this.lastRoi());
  }

  zoomAt(clientX, clientY, factor) {
    const [cx, cy] = this.canvasPoint(clientX, clientY);
    const before = this.toImage(clientX, clientY);
    this.zoom = Math.min(40, Math.max(0.1, this.zoom * factor));
    const [ox, oy] = this.origin();
    const s = this.scale();
    this.pan[0] += cx - (ox + before[0] * s);
    this.pan[1] += cy - (oy + before[1] * s * this.pixelAspect());
    this.draw();
    this.cb.onZoom?.(this.scale());
  }
}
