// The before/after viewer of DeblurCompare: both images in the node, the blurry one left of a split
// line you drag, the restored one right of it; double-click zooms to 1:1 (one image pixel per screen
// pixel) around that point, drag then pans (drag on the line still moves it), double-click again fits.
import { addCanvasWidget, canvasPoint } from "./canvas_widget.js";

const HANDLE_GRAB = 12; // screen pixels around the split line that grab it while zoomed

/**
 * Where the image lies in a canvas of (width, height) pixels: {scale, x, y} with
 * canvas = image * scale + (x, y). Fit mode: the whole image, centred. 1:1 mode (zoom = image
 * point at the centre): scale = device pixels per screen pixel.
 */
export function viewOf(imageWidth, imageHeight, width, height, zoom, pixelsPerScreenPixel = 1) {
  if (!zoom) {
    const scale = Math.min(width / imageWidth, height / imageHeight);
    return { scale, x: (width - imageWidth * scale) / 2, y: (height - imageHeight * scale) / 2 };
  }
  const scale = pixelsPerScreenPixel;
  return { scale, x: width / 2 - zoom.x * scale, y: height / 2 - zoom.y * scale };
}

/** The image point under a canvas point, clamped to the image. */
export function imagePoint(view, imageWidth, imageHeight, px, py) {
  return {
    x: Math.min(Math.max((px - view.x) / view.scale, 0), imageWidth),
    y: Math.min(Math.max((py - view.y) / view.scale, 0), imageHeight),
  };
}

export function clampSplit(fraction) {
  return Math.min(Math.max(fraction, 0), 1);
}

/** The viewer's state and drawing, independent of where its pixels come from. */
export class CompareView {
  constructor() {
    this.before = null;
    this.after = null;
    this.labels = ["before", "after"];
    this.caption = "";
    this.split = 0.5;
    this.zoom = null;
    this.pixelsPerScreenPixel = 1;
  }

  get size() {
    const image = this.after ?? this.before;
    return image ? [image.naturalWidth || image.width, image.naturalHeight || image.height] : null;
  }

  view(width, height) {
    const [iw, ih] = this.size;
    return viewOf(iw, ih, width, height, this.zoom, this.pixelsPerScreenPixel);
  }

  toggleZoom(width, height, px, py) {
    if (this.zoom || !this.size) {
      this.zoom = null;
      return;
    }
    const [iw, ih] = this.size;
    this.zoom = imagePoint(this.view(width, height), iw, ih, px, py);
  }

  pan(dx, dy) {
    if (!this.zoom) return;
    const [iw, ih] = this.size;
    this.zoom = {
      x: Math.min(Math.max(this.zoom.x - dx / this.pixelsPerScreenPixel, 0), iw),
      y: Math.min(Math.max(this.zoom.y - dy / this.pixelsPerScreenPixel, 0), ih),
    };
  }

  draw(ctx, width, height) {
    ctx.fillStyle = "#111";
    ctx.fillRect(0, 0, width, height);
    const ratio = this.pixelsPerScreenPixel;
    ctx.font = `${Math.round(12 * ratio)}px sans-serif`;
    if (!this.size) {
      ctx.fillStyle = "#aaa";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("Run the workflow: the blurry and the restored image appear here", width / 2, height / 2, width - 8);
      return;
    }
    const [iw, ih] = this.size;
    const view = this.view(width, height);
    const rect = [view.x, view.y, iw * view.scale, ih * view.scale];
    ctx.imageSmoothingEnabled = view.scale < 1;
    const splitX = Math.round(this.split * width);
    if (this.after) ctx.drawImage(this.after, ...rect);
    if (this.before) {
      ctx.save();
      ctx.beginPath();
      ctx.rect(0, 0, splitX, height);
      ctx.clip();
      ctx.drawImage(this.before, ...rect);
      ctx.restore();
    }
    // split line and handle
    ctx.fillStyle = "rgba(255,255,255,0.9)";
    ctx.fillRect(splitX - Math.max(1, ratio / 2), 0, Math.max(2, ratio), height);
    ctx.beginPath();
    ctx.arc(splitX, height / 2, 9 * ratio, 0, 2 * Math.PI);
    ctx.fill();
    ctx.fillStyle = "#222";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText("◀▶", splitX, height / 2);
    // labels
    const pad = 4 * ratio;
    const label = (text, x, align) => {
      ctx.textAlign = align;
      ctx.textBaseline = "top";
      const w = ctx.measureText(text).width + 2 * pad;
      ctx.fillStyle = "rgba(0,0,0,0.6)";
      ctx.fillRect(align === "left" ? x : x - w, pad, w, 16 * ratio);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, align === "left" ? x + pad : x - pad, pad + 2 * ratio);
    };
    label(this.labels[0], pad, "left");
    label(this.labels[1], width - pad, "right");
    const hint = this.zoom ? "1:1 · drag to pan · double-click to fit" : "drag the line · double-click to zoom 1:1";
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillStyle = "rgba(0,0,0,0.6)";
    const text = this.caption ? `${this.caption} · ${hint}` : hint;
    const tw = Math.min(ctx.measureText(text).width + 2 * pad, width);
    ctx.fillRect((width - tw) / 2, height - 18 * ratio, tw, 18 * ratio);
    ctx.fillStyle = "#eee";
    ctx.fillText(text, width / 2, height - 3 * ratio, width - 2 * pad);
  }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error(`could not load ${url}`));
    image.src = url;
  });
}

/** Put a viewer into a node; returns {show(beforeUrl, afterUrl, options)}. */
export function addCompareViewer(node) {
  const view = new CompareView();
  const holder = addCanvasWidget(node, "deblur_compare", {
    minHeight: 220,
    className: "deblur-compare",
    draw(ctx, width, height, { devicePixelsPerScreenPixel }) {
      view.pixelsPerScreenPixel = devicePixelsPerScreenPixel;
      view.draw(ctx, width, height);
    },
  });
  const { canvas } = holder;
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    const [x, y] = canvasPoint(canvas, event);
    const nearLine = Math.abs(x - view.split * canvas.width) <= HANDLE_GRAB * view.pixelsPerScreenPixel;
    drag = { mode: view.zoom && !nearLine ? "pan" : "split", x, y };
    if (drag.mode === "split") view.split = clampSplit(x / canvas.width);
    canvas.setPointerCapture?.(event.pointerId);
    event.preventDefault();
    event.stopPropagation();
    holder.redraw();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const [x, y] = canvasPoint(canvas, event);
    if (drag.mode === "split") view.split = clampSplit(x / canvas.width);
    else view.pan(x - drag.x, y - drag.y);
    drag.x = x;
    drag.y = y;
    event.stopPropagation();
    holder.redraw();
  });
  const endDrag = (event) => {
    if (!drag) return;
    drag = null;
    canvas.releasePointerCapture?.(event.pointerId);
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);
  canvas.addEventListener("dblclick", (event) => {
    const [x, y] = canvasPoint(canvas, event);
    view.toggleZoom(canvas.width, canvas.height, x, y);
    event.preventDefault();
    event.stopPropagation();
    holder.redraw();
  });

  return {
    view,
    holder,
    async show(beforeUrl, afterUrl, { labels, caption } = {}) {
      const [before, after] = await Promise.all([loadImage(beforeUrl), loadImage(afterUrl)]);
      Object.assign(view, { before, after, zoom: null });
      if (labels) view.labels = labels;
      view.caption = caption ?? "";
      holder.redraw();
    },
  };
}
