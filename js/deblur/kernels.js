// BLUR_KERNEL previews: decode the payload that nodes/kernel_ui.py sends (key "deblur_kernels") and
// draw it legibly: nearest-neighbour at an integer zoom (each kernel pixel a crisp square), a
// perceptual colour map with a gamma that keeps faint trails visible, a one-pixel gap between the
// kernels of a grid, and a caption. Everything but drawKernels is pure (Node's test runner loads it).

export const UI_KEY = "deblur_kernels";

// A magma-like colour map: black → purple → orange → pale yellow.
const STOPS = [
  [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99],
  [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164],
];
const GAP = [48, 48, 48];

export function colourOf(value) {
  const t = Math.min(Math.max(value, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(t), STOPS.length - 2);
  const f = t - i;
  return STOPS[i].map((c, j) => Math.round(c + (STOPS[i + 1][j] - c) * f));
}

function decodeBase64(text) {
  if (typeof atob === "function") return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return Uint8Array.from(Buffer.from(text, "base64"));
}

/** One entry of the payload → {size, grid, shown, cells: Float32Array per kernel (0..1 of its peak), peaks}. */
export function decodeEntry(entry) {
  const k = entry.size;
  const [sh, sw] = entry.shown;
  const bytes = decodeBase64(entry.data);
  if (bytes.length !== sh * sw * k * k) throw new Error(`kernel payload: ${bytes.length} bytes for ${sh}x${sw} kernels of ${k}x${k}`);
  const cells = [];
  for (let c = 0; c < sh * sw; c++) {
    cells.push(Float32Array.from(bytes.subarray(c * k * k, (c + 1) * k * k), (b) => b / 255));
  }
  return { size: k, grid: entry.grid, shown: [sh, sw], cells, peaks: entry.peaks, level: entry.level, info: entry.info ?? {} };
}

/**
 * The picture of a decoded entry at one pixel per kernel value: {width, height, data (RGBA)}.
 * common=false scales each kernel to its own peak; common=true to the largest peak of the grid.
 */
export function kernelPicture(decoded, { common = false, gamma = 0.5 } = {}) {
  const { size: k, shown: [sh, sw], cells, peaks } = decoded;
  const width = sw * k + (sw - 1);
  const height = sh * k + (sh - 1);
  const data = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < width * height; p++) data.set([...GAP, 255], p * 4);
  const top = Math.max(...peaks);
  for (let row = 0; row < sh; row++) {
    for (let col = 0; col < sw; col++) {
      const cell = cells[row * sw + col];
      const scale = common ? peaks[row * sw + col] / top : 1;
      for (let y = 0; y < k; y++) {
        for (let x = 0; x < k; x++) {
          const rgb = colourOf(Math.pow(cell[y * k + x] * scale, gamma));
          const px = (row * (k + 1) + y) * width + col * (k + 1) + x;
          data.set([...rgb, 255], px * 4);
        }
      }
    }
  }
  return { width, height, data };
}

/** The largest integer zoom that fits a picture into a box (at least 1). */
export function integerZoom(pictureWidth, pictureHeight, boxWidth, boxHeight) {
  return Math.max(1, Math.floor(Math.min(boxWidth / pictureWidth, boxHeight / pictureHeight)));
}

/** The height (screen pixels) that shows the tallest picture at a legible integer zoom. */
export function preferredHeight(decodedEntries, { target = 240, captionHeight = 17, lowest = 120, highest = 320 } = {}) {
  const tallest = Math.max(...decodedEntries.map(({ size: k, shown: [sh] }) => sh * k + sh - 1));
  const zoom = Math.max(1, Math.floor(target / tallest));
  return Math.min(Math.max(tallest * zoom + 2 * captionHeight + 12, lowest), highest);
}

export function caption(decoded) {
  const { size: k, grid: [gh, gw], shown: [sh, sw], info, level } = decoded;
  const parts = [`${k}×${k}`];
  if (gh * gw > 1) parts.push(sh * sw < gh * gw ? `map ${gh}×${gw} (${sh}×${sw} shown)` : `grid ${gh}×${gw}`);
  if (info.kind) parts.push(String(info.kind).replace(/_/g, " "));
  if (typeof info.length_px === "number") parts.push(`${info.length_px.toFixed(1)} px`);
  if (level !== null && level !== undefined) parts.push(`level ${level}`);
  return parts.join(" · ");
}

/** Draw the decoded entries side by side into (x, y, width, height) of a 2D context. */
export function drawKernels(ctx, decodedEntries, x, y, width, height, options = {}) {
  ctx.save();
  ctx.fillStyle = "#111";
  ctx.fillRect(x, y, width, height);
  const n = decodedEntries.length;
  const fontSize = options.fontSize ?? 11;
  const captionHeight = Math.round(fontSize * 1.5);
  const slot = width / Math.max(n, 1);
  decodedEntries.forEach((decoded, i) => {
    const picture = kernelPicture(decoded, options);
    const zoom = integerZoom(picture.width, picture.height, slot - 8, height - 2 * captionHeight - 8);
    const drawWidth = picture.width * zoom;
    const drawHeight = picture.height * zoom;
    const left = Math.round(x + i * slot + (slot - drawWidth) / 2);
    const top = Math.round(y + captionHeight + 4 + (height - 2 * captionHeight - 8 - drawHeight) / 2);
    const scratch = document.createElement("canvas");
    scratch.width = picture.width;
    scratch.height = picture.height;
    scratch.getContext("2d").putImageData(new ImageData(picture.data, picture.width, picture.height), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(scratch, left, top, drawWidth, drawHeight);
    ctx.fillStyle = "#ddd";
    ctx.font = `${fontSize}px sans-serif`;
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.fillText(caption(decoded), x + i * slot + slot / 2, y + height - 2, slot - 4);
  });
  ctx.restore();
}
