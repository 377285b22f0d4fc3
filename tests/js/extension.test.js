// The entry module against stand-ins of the frontend's app and api modules (../../scripts/*.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const help = JSON.parse(readFileSync(new URL("./weights_help.json", import.meta.url)));
globalThis.__registered = [];
globalThis.__fetch = async (path) => ({ ok: path === "/deblur/weights", json: async () => help });
await import("../extensions/pack/deblur.js");
const extension = globalThis.__registered[0];

test("one extension is registered under the pack's name, with the hooks it needs", () => {
  assert.equal(globalThis.__registered.length, 1);
  assert.equal(extension.name, "diffusion-deblur");
  for (const hook of ["setup", "beforeRegisterNodeDef", "nodeCreated", "loadedGraphNode", "refreshComboInNodes", "onNodeOutputsUpdated"]) {
    assert.equal(typeof extension[hook], "function", hook);
  }
});

test("only our node types get an output hook, and it chains the previous one", async () => {
  const seen = [];
  class Ours { onExecuted(output) { seen.push(output); } }
  class Theirs {}
  await extension.beforeRegisterNodeDef(Ours, { category: "deblur/HI-Diff" });
  await extension.beforeRegisterNodeDef(Theirs, { category: "image" });
  assert.equal(Theirs.prototype.onExecuted, undefined);
  const node = new Ours();
  node.onExecuted({ text: ["x"] });
  assert.deepEqual(seen, [{ text: ["x"] }]);
});

test("a loader with its model gets the method's look and no panel", async () => {
  const widget = { name: "model_name", value: "HI_Diff_GoPro", options: { values: ["HI_Diff_GoPro"] } };
  const node = {
    comfyClass: "HIDiffLoader", badges: [], widgets: [widget], size: [300, 80],
    constructor: { nodeData: { category: "deblur/HI-Diff" } },
    addDOMWidget: () => assert.fail("no panel for a loader that has its model"),
  };
  extension.nodeCreated(node);
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(node.color, "#2a4d69");
  assert.equal(node.badges.length, 1);
});

test("restored outputs for nodes the graph does not have are ignored", () => {
  assert.doesNotThrow(() => extension.onNodeOutputsUpdated({ 12: { deblur_compare: [{}] } }));
  assert.doesNotThrow(() => extension.onNodeOutputsUpdated(undefined));
});
