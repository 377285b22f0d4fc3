import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { caption, colourOf, decodeEntry, integerZoom, kernelPicture, preferredHeight } from "../extensions/pack/deblur/kernels.js";

// Written by tests/test_frontend_js.py from nodes/kernel_ui.py: a horizontal line kernel (image 0) and
// a 3x3 grid whose cell (row 1, col 2) is a single bright point (image 1).
const payload = JSON.parse(readFileSync(new URL("./kernel_payload.json", import.meta.url)));

test("the payload decodes to the kernels the server sent", () => {
  const line = decodeEntry(payload.deblur_kernels[0]);
  const k = line.size;
  assert.deepEqual(line.shown, [1, 1]);
  const centreRow = Array.from(line.cells[0].slice(((k - 1) / 2) * k, ((k + 1) / 2) * k));
  assert.ok(centreRow.filter((v) => v > 0.9).length >= 5, "a bright horizontal line through the centre");
  assert.equal(line.cells[0][0], 0);
});

test("a grid keeps its layout: the point sits in cell (1, 2)", () => {
  const grid = decodeEntry(payload.deblur_kernels[1]);
  assert.deepEqual(grid.shown, [3, 3]);
  const k = grid.size;
  const picture = kernelPicture(grid, { common: true });
  assert.equal(picture.width, 3 * k + 2);
  const c = (k - 1) / 2;
  const at = (x, y) => Array.from(picture.data.slice((y * picture.width + x) * 4, (y * picture.width + x) * 4 + 3));
  assert.deepEqual(at(2 * (k + 1) + c, 1 * (k + 1) + c), colourOf(1));
  assert.deepEqual(at(k, 0), [48, 48, 48], "one-pixel gap between cells");
  // On a common scale the spread kernels are dimmer than the point; each on its own scale, not.
  const own = kernelPicture(grid, { common: false });
  const brightest = (p, cell) => Math.max(...Array.from({ length: k * k }, (_, i) => {
    const x = (cell % 3) * (k + 1) + (i % k), y = Math.floor(cell / 3) * (k + 1) + Math.floor(i / k);
    return p.data[(y * p.width + x) * 4 + 1];
  }));
  assert.ok(brightest(picture, 0) < brightest(own, 0));
});

test("zoom is an integer that fits, captions say what the kernel is", () => {
  assert.equal(integerZoom(31, 31, 300, 100), 3);
  assert.equal(integerZoom(200, 31, 100, 100), 1);
  const line = decodeEntry(payload.deblur_kernels[0]);
  assert.match(caption(line), /^\d+×\d+ · linear · 12\.0 px$/);
  assert.match(caption(decodeEntry(payload.deblur_kernels[1])), /grid 3×3/);
});

test("the widget asks for room to show kernels at a legible zoom, within bounds", () => {
  const single = decodeEntry(payload.deblur_kernels[0]); // 13 px
  const grid = decodeEntry(payload.deblur_kernels[1]); // 3 x 13 + 2 = 41 px
  assert.equal(preferredHeight([single]), 13 * 18 + 2 * 17 + 12);
  assert.equal(preferredHeight([single, grid]), 41 * 5 + 2 * 17 + 12, "the tallest picture decides");
  assert.equal(preferredHeight([grid], { target: 10000 }), 320, "never taller than the cap");
});
