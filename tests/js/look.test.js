import { test } from "node:test";
import assert from "node:assert/strict";
import { applyLook, makeBadge, methodOf, styleFor, METHOD_STYLES } from "../extensions/pack/deblur/look.js";

test("the method is the category's second part, only under deblur/", () => {
  assert.equal(methodOf("deblur/HI-Diff"), "HI-Diff");
  assert.equal(methodOf("deblur/DeblurDiff/advanced"), "DeblurDiff");
  assert.equal(methodOf("image/upscaling"), null);
  assert.equal(methodOf("deblur"), null);
  assert.equal(methodOf(undefined), null);
});

test("known methods have their style, unknown ones a stable one", () => {
  assert.equal(styleFor("HI-Diff"), METHOD_STYLES["HI-Diff"]);
  assert.deepEqual(styleFor("Future method"), styleFor("Future method"));
  assert.ok(styleFor("Future method").color.startsWith("#"));
});

test("applyLook colours our nodes and adds exactly one badge, leaves others alone", () => {
  const node = { badges: [] };
  assert.equal(applyLook(node, "deblur/HI-Diff"), "HI-Diff");
  applyLook(node, "deblur/HI-Diff");
  assert.equal(node.color, METHOD_STYLES["HI-Diff"].color);
  assert.equal(node.badges.length, 1);
  assert.equal(node.badges[0]().text, "HI-Diff");
  const other = { badges: [] };
  assert.equal(applyLook(other, "loaders"), null);
  assert.equal(other.color, undefined);
  assert.equal(other.badges.length, 0);
});

test("the badge measures and draws itself like the canvas's own badges", () => {
  const calls = [];
  const ctx = {
    font: "10px serif", fillStyle: "#000", textBaseline: "alphabetic", textAlign: "start",
    measureText: (text) => ({ width: text.length * 6 }),
    beginPath() {}, roundRect: (...a) => calls.push(["roundRect", ...a]), fill() {},
    fillText: (...a) => calls.push(["fillText", ...a]),
  };
  const badge = makeBadge("HI-Diff", "#123456");
  assert.equal(badge.getWidth(ctx), 7 * 6 + 2 * badge.padding);
  badge.draw(ctx, 10, 20);
  assert.deepEqual(calls[0].slice(0, 5), ["roundRect", 10, 20, badge.getWidth(ctx), badge.height]);
  assert.equal(calls[1][1], "HI-Diff");
  assert.equal(ctx.font, "10px serif", "the context's font is restored");
});
