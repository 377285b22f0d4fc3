// Node outputs that reach a node without onExecuted: a finished run loaded from the queue/history, a
// workflow tab switched back to, or outputs restored after a reload. Frontends call the extension hook
// onNodeOutputsUpdated(map) with { executionId: output }; an execution id is the node's id, or for a node
// inside a subgraph the ids of the subgraph nodes on the way down, joined by ":".

// The node an execution id names in `rootGraph`, or null.
export function nodeByExecutionId(rootGraph, executionId) {
  let graph = rootGraph;
  const ids = String(executionId).split(":");
  for (const [index, id] of ids.entries()) {
    const node = graph?.getNodeById?.(id) ?? graph?.getNodeById?.(Number(id));
    if (!node) return null;
    if (index === ids.length - 1) return node;
    graph = node.subgraph;
  }
  return null;
}

// Calls show(node, output) for each entry of `outputs` whose node exists and `accept(node)` allows.
export function deliverOutputs(rootGraph, outputs, accept, show) {
  let delivered = 0;
  for (const [executionId, output] of Object.entries(outputs ?? {})) {
    const node = nodeByExecutionId(rootGraph, executionId);
    if (node && output && accept(node)) {
      show(node, output);
      delivered += 1;
    }
  }
  return delivered;
}
