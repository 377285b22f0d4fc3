// Outputs delivered by the frontend's onNodeOutputsUpdated hook: execution ids to nodes (subgraphs too).
import { test } from "node:test";
import assert from "node:assert/strict";
import { deliverOutputs, nodeByExecutionId } from "../extensions/pack/deblur/outputs.js";

function graph(nodes) {
  const byId = Object.fromEntries(nodes.map((n) => [n.id, n]));
  return { getNodeById: (id) => byId[id] ?? null };
}

const inner = { id: 7, type: "DeblurCompare" };
const wrapper = { id: 3, type: "subgraph", subgraph: graph([inner]) };
const compare = { id: 5, type: "DeblurCompare" };
const other = { id: 9, type: "SaveImage" };
const root = graph([compare, wrapper, other]);

test("an execution id names a node, or one inside subgraphs", () => {
  assert.equal(nodeByExecutionId(root, "5"), compare);
  assert.equal(nodeByExecutionId(root, "3:7"), inner);
  assert.equal(nodeByExecutionId(root, "3:8"), null);
  assert.equal(nodeByExecutionId(root, "9:1"), null); // not a subgraph
  assert.equal(nodeByExecutionId(null, "5"), null);
});

test("each output reaches its node, only ours, and missing nodes are skipped", () => {
  const shown = [];
  const outputs = { 5: { deblur_compare: [1] }, "3:7": { deblur_compare: [2] }, 9: { images: [] }, 42: { x: 1 } };
  const count = deliverOutputs(root, outputs, (node) => node.type === "DeblurCompare", (node, output) => shown.push([node.id, output]));
  assert.equal(count, 2);
  assert.deepEqual(shown, [[5, { deblur_compare: [1] }], [7, { deblur_compare: [2] }]]);
  assert.equal(deliverOutputs(root, undefined, () => true, () => assert.fail()), 0);
});
