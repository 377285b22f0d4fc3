// Frontend extension of the deblur pack (ComfyUI frontend 1.27 and later, classic extension API):
// - a colour and a title badge per method (HI-Diff, DeblurDiff, ...), from the node's category;
// - a loader that finds no model explains which files go in which folder, with links;
// - DeblurCompare shows an interactive before/after viewer (drag the split, double-click for 1:1);
// - nodes that report BLUR_KERNELs draw them legibly (integer zoom, colour map, captions).
// Outputs arrive through onExecuted (a run) and onNodeOutputsUpdated (a finished run loaded from the
// queue, a workflow tab shown again, restored outputs), so the viewer and kernels come back too.
// Only our own node types are touched; nothing global is patched.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { applyLook, methodOf } from "./deblur/look.js";
import { UI_KEY as KERNELS_KEY, decodeEntry, drawKernels, preferredHeight } from "./deblur/kernels.js";
import { addCanvasWidget } from "./deblur/canvas_widget.js";
import { addCompareViewer } from "./deblur/compare.js";
import { modelState, panelContent, renderPanel } from "./deblur/weights.js";
import { deliverOutputs } from "./deblur/outputs.js";

const EXTENSION_NAME = "diffusion-deblur";
const COMPARE_KEY = "deblur_compare";
const PANEL_WIDGET = "deblur_missing_model";
// The panel keeps a fixed height and scrolls, so a loader without its model grows by a known amount
// (workflows leave that room below their loaders) instead of spreading over its neighbours.
const PANEL_HEIGHT = 118;
const STYLE_ID = "diffusion-deblur-style";

const STYLE = `
.deblur-missing-model { box-sizing: border-box; padding: 6px 8px; font: 12px/1.4 sans-serif; max-height: ${PANEL_HEIGHT}px;
  color: #f3dede; background: #4a2222; border: 1px solid #a04a4a; border-radius: 6px; overflow: auto; }
.deblur-missing-model ul { margin: 4px 0; padding-left: 16px; }
.deblur-missing-model code { color: #fff; background: rgba(0,0,0,.3); padding: 0 3px; border-radius: 3px; word-break: break-all; }
.deblur-missing-model a { color: #9cd0ff; }
`;

let weightsHelp = null;
function fetchWeightsHelp() {
  weightsHelp ??= api
    .fetchApi("/deblur/weights")
    .then((reply) => (reply.ok ? reply.json() : null))
    .catch(() => null);
  return weightsHelp;
}

function categoryOf(node) {
  return node.constructor?.nodeData?.category ?? node.constructor?.category ?? node.category ?? "";
}

function viewUrl(image) {
  const params = new URLSearchParams({ filename: image.filename, type: image.type ?? "output", subfolder: image.subfolder ?? "" });
  return api.apiURL(`/view?${params}${app.getRandParam?.() ?? ""}`);
}

// --- loaders without a model ----------------------------------------------------------------

async function updateMissingModelPanel(node) {
  const help = await fetchWeightsHelp();
  const loader = help?.loaders?.[node.comfyClass ?? node.type];
  if (!loader) return;
  const widget = node.widgets?.find((w) => w.name === loader.widget);
  if (!widget) return;
  const content = panelContent(help, node.comfyClass ?? node.type, modelState(widget.options?.values, widget.value));
  const panel = node.widgets.find((w) => w.name === PANEL_WIDGET);
  if (!content) {
    if (panel) {
      node.removeWidget?.(panel);
      if (String(widget.value).startsWith("(no ") && widget.options?.values?.length) widget.value = widget.options.values[0];
      node.setSize?.([node.size[0], node.computeSize()[1]]);
    }
    return;
  }
  const element = panel?.element ?? document.createElement("div");
  element.className = "deblur-missing-model";
  renderPanel(element, content, api.apiURL(help.readme));
  if (!panel) {
    const added = node.addDOMWidget(PANEL_WIDGET, "deblur-panel", element, {
      serialize: false,
      hideOnZoom: false, // a fitted view of a large workflow is zoomed out; the panel must still show
      getHeight: () => PANEL_HEIGHT,
      getMinHeight: () => PANEL_HEIGHT,
      getMaxHeight: () => PANEL_HEIGHT,
    });
    added.serialize = false;
  }
  node.setSize?.([node.size[0], Math.max(node.size[1], node.computeSize()[1])]);
  node.setDirtyCanvas?.(true, true);
}

// --- node outputs: kernels and before/after ---------------------------------------------------

function showKernels(node, entries, batch = entries.length) {
  let decoded;
  try {
    decoded = entries.map(decodeEntry);
  } catch (error) {
    console.warn(`${EXTENSION_NAME}: unreadable kernel preview`, error);
    return;
  }
  node.deblurKernels ??= { common: false };
  const state = node.deblurKernels;
  state.decoded = decoded;
  state.batch = batch;
  if (!state.holder) {
    state.holder = addCanvasWidget(node, "deblur_kernels", {
      height: () => preferredHeight(state.decoded),
      className: "deblur-kernels",
      draw: (ctx, width, height, { devicePixelsPerScreenPixel }) => {
        const fontSize = 11 * devicePixelsPerScreenPixel;
        drawKernels(ctx, state.decoded, 0, 0, width, height, { common: state.common, fontSize });
        ctx.font = `${fontSize}px sans-serif`;
        const notes = [state.common ? "one scale" : "each to its peak"];
        if (state.batch > state.decoded.length) notes.push(`first ${state.decoded.length} of ${state.batch}`);
        ctx.fillStyle = "#999";
        ctx.textAlign = "left";
        ctx.textBaseline = "top";
        ctx.fillText(notes.join(" · "), 4 * devicePixelsPerScreenPixel, 3 * devicePixelsPerScreenPixel);
      },
    });
    state.holder.canvas.title = "Click: each kernel at its own brightness / all on one scale";
    state.holder.canvas.addEventListener("click", () => {
      state.common = !state.common;
      state.holder.redraw();
    });
  }
  node.setSize?.([Math.max(node.size[0], 300), Math.max(node.size[1], node.computeSize()[1])]);
  state.holder.redraw();
}

function showCompare(node, entry) {
  node.deblurCompare ??= addCompareViewer(node);
  if (!node.deblurCompareSized) {
    node.deblurCompareSized = true;
    node.setSize?.([Math.max(node.size[0], 420), Math.max(node.size[1], node.computeSize()[1] + 160)]);
  }
  node.deblurCompare
    .show(viewUrl(entry.before), viewUrl(entry.after), { labels: entry.labels, caption: entry.caption })
    .catch((error) => console.warn(`${EXTENSION_NAME}: before/after images`, error));
}

function onOutput(node, output) {
  if (Array.isArray(output?.[KERNELS_KEY]) && output[KERNELS_KEY].length) {
    showKernels(node, output[KERNELS_KEY], output.deblur_kernels_batch?.[0]);
  }
  if (Array.isArray(output?.[COMPARE_KEY]) && output[COMPARE_KEY].length) showCompare(node, output[COMPARE_KEY][0]);
  node.setDirtyCanvas?.(true, true);
}

app.registerExtension({
  name: EXTENSION_NAME,

  async setup() {
    if (!document.getElementById(STYLE_ID)) {
      const style = document.createElement("style");
      style.id = STYLE_ID;
      style.textContent = STYLE;
      document.head.append(style);
    }
    await fetchWeightsHelp();
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!methodOf(nodeData?.category)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      onOutput(this, output);
      return result;
    };
  },

  // Newer frontends (and 1.27's queue "Load workflow") hand restored outputs here, not to onExecuted.
  onNodeOutputsUpdated(outputs) {
    deliverOutputs(app.rootGraph ?? app.graph, outputs, (node) => methodOf(categoryOf(node)), onOutput);
  },

  nodeCreated(node) {
    if (applyLook(node, categoryOf(node))) void updateMissingModelPanel(node);
  },

  loadedGraphNode(node) {
    if (methodOf(categoryOf(node))) void updateMissingModelPanel(node);
  },

  async refreshComboInNodes() {
    for (const node of app.graph?.nodes ?? []) {
      if (methodOf(categoryOf(node))) await updateMissingModelPanel(node);
    }
  },
});
