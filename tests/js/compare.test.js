import { test } from "node:test";
import assert from "node:assert/strict";
import { CompareView, clampSplit, imagePoint, viewOf } from "../extensions/pack/deblur/compare.js";

test("fit mode shows the whole image centred", () => {
  const view = viewOf(400, 300, 200, 200, null);
  assert.equal(view.scale, 0.5);
  assert.deepEqual([view.x, view.y], [0, 25]);
});

test("1:1 mode puts the chosen image point at the centre, one image pixel per screen pixel", () => {
  const view = viewOf(400, 300, 200, 100, { x: 120, y: 80 }, 2);
  assert.equal(view.scale, 2);
  assert.deepEqual(imagePoint(view, 400, 300, 100, 50), { x: 120, y: 80 });
  assert.deepEqual(imagePoint(view, 400, 300, -1e6, 1e6), { x: 0, y: 300 }, "clamped to the image");
});

test("double-click zooms on the point under the pointer, again fits; panning moves the view", () => {
  const view = new CompareView();
  view.after = { width: 400, height: 300 };
  view.toggleZoom(200, 200, 100, 100); // fit: scale 0.5, y offset 25 → image (200, 150)
  assert.deepEqual(view.zoom, { x: 200, y: 150 });
  view.pan(10, -4);
  assert.deepEqual(view.zoom, { x: 190, y: 154 });
  view.toggleZoom(200, 200, 0, 0);
  assert.equal(view.zoom, null);
  assert.equal(clampSplit(1.7), 1);
  assert.equal(clampSplit(-0.2), 0);
});
