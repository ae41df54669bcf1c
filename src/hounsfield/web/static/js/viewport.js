// The viewport: one frame of modality values drawn on a canvas, windowed in the browser
// (PS3.3 C.11.2.1.2.1 linear window), with zoom, pan, value under the cursor and distance measurement.

export class Viewport {
  constructor(element, canvas, callbacks = {}) {
    this.el = element;
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.cb = callbacks; // onWindow, onHover, onMeasure, onZoom, onSlice(step), onTool
    this.image = null; // {rows, columns, samples, data, min, max}
    this.info = {}; // {spacing: [row, col] | null, monochrome1, unit}
    this.center = 40;
    this.width = 400;
    this.invert = false;
    this.zoom = 1;
    this.pan = [0, 0];
    this.tool = "window";
    this.line = null; // measurement in image coordinates {a: [x, y], b: [x, y]}
    this.pointers = new Map();
    this.pointer = null; // last client position of the mouse over the viewport
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
    this.line = null;
    this.drag = null;
    this.dirtyPixels = true;
    this.draw();
    this.hover();
  }

  clearMeasurement() { // a measurement belongs to the frame it was drawn on
    this.line = null;
    if (this.drag?.action === "measure") this.drag = null;
    this.draw();
  }

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

  reset() {
    this.zoom = 1;
    this.pan = [0, 0];
    this.line = null;
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
    if (this.line) this.drawLine();
  }

  drawLine() {
    const ctx = this.ctx;
    const s = this.scale(), a = this.pixelAspect();
    const [ox, oy] = this.origin();
    const p = (pt) => [ox + pt[0] * s, oy + pt[1] * s * a];
    const [x1, y1] = p(this.line.a), [x2, y2] = p(this.line.b);
    ctx.strokeStyle = "#ffd54a";
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
    ctx.fillText(this.measureText(), x2 + 6, y2 - 6);
  }

  // ---------------------------------------------------------------- measurement
  measure() {
    if (!this.line) return null;
    const dx = this.line.b[0] - this.line.a[0], dy = this.line.b[1] - this.line.a[1];
    const s = this.info.spacing;
    if (s) return { value: Math.hypot(dx * s[1], dy * s[0]), unit: "mm" };
    return { value: Math.hypot(dx, dy), unit: "px" };
  }

  measureText() {
    const m = this.measure();
    return m ? `${m.value.toFixed(2)} ${m.unit}` : "";
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
      this.line = { a: p, b: p };
      this.draw();
    }
    e.preventDefault();
  }

  snap([x, y]) { // measurements run between pixel centres
    return [Math.floor(x) + 0.5, Math.floor(y) + 0.5];
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
        if (!this.line) break;
        this.line.b = this.snap(this.toImage(e.clientX, e.clientY));
        this.draw();
        this.cb.onMeasure?.(this.measure());
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
    if (this.drag?.action === "measure") this.cb.onMeasure?.(this.measure());
    this.drag = null;
    if (this.pointers.size === 1) { // one finger left after a pinch: restart from there
      const [[id, [x, y]]] = [...this.pointers.entries()];
      this.drag = { action: "pan", x, y, pan: [...this.pan], zoom: this.zoom, id };
    }
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
