import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { modelState, panelContent } from "../extensions/pack/deblur/weights.js";

// Written by tests/test_frontend_js.py: what /deblur/weights answers (nodes/weights_help.py).
const help = JSON.parse(readFileSync(new URL("./weights_help.json", import.meta.url)));

test("the model list's state: none, absent, ok", () => {
  assert.equal(modelState(["(no HI-Diff model found: see README, weights)"], "x").state, "none");
  assert.equal(modelState(["HI_Diff_GoPro"], "HI_Diff_RealBlur_J").state, "absent");
  assert.equal(modelState(["HI_Diff_GoPro"], "HI_Diff_GoPro").state, "ok");
});

test("the panel names the searched model folder, each release's sub-folder, its files and links", () => {
  const content = panelContent(help, "HIDiffLoader", { state: "none" });
  assert.equal(content.title, "No HI-Diff model found");
  assert.equal(content.root, "/srv/comfy/models/deblur");
  const gopro = content.rows.find((row) => row.name === "HI-Diff GoPro");
  assert.equal(gopro.folder, "HI_Diff_GoPro/");
  assert.equal(gopro.path, "/srv/comfy/models/deblur/HI_Diff_GoPro/");
  assert.deepEqual(gopro.files, ["net_g.pth", "net_le_dm.pth", "net_d.pth"]);
  assert.match(gopro.url, /^https:\/\//);
  assert.equal(content.readme, "/deblur/readme#weights");
  assert.deepEqual(content.others, ["/mnt/extra/deblur"]);
  assert.equal(panelContent(help, "HIDiffLoader", { state: "absent", value: "Mine" }).title, "Model “Mine” not found");
  assert.equal(panelContent(help, "HIDiffLoader", { state: "ok" }), null);
  assert.equal(panelContent(help, "SomethingElse", { state: "none" }), null);
});
