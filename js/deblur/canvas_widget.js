// A canvas inside a node (a DOM widget), redrawn at the resolution it has on screen, so kernels and
// images stay crisp at any zoom of the graph. Not serialised: it holds no value of the workflow.

export function addCanvasWidget(node, name, { minHeight = 160, height = null, draw, className = "" }) {
  const element = document.createElement("div");
  element.className = `deblur-canvas-widget ${className}`.trim();
  Object.assign(element.style, { width: "100%", height: "100%", minHeight: "0", overflow: "hidden" });
  const canvas = document.createElement("canvas");
  Object.assign(canvas.style, { width: "100%", height: "100%", display: "block", touchAction: "none" });
  element.append(canvas);

  let drawnSize = "";
  const redraw = (force = false) => {
    const rect = canvas.getBoundingClientRect();
    if (rect.width < 1 || rect.height < 1) return;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(rect.width * ratio);
    const height = Math.round(rect.height * ratio);
    const size = `${width}x${height}`;
    if (!force && size === drawnSize) return;
    drawnSize = size;
    canvas.width = width;
    canvas.height = height;
    draw(canvas.getContext("2d"), width, height, { devicePixelsPerScreenPixel: ratio, rect });
  };

  const widget = node.addDOMWidget(name, "deblur-canvas", element, {
    serialize: false,
    hideOnZoom: false,
    // height(): a fixed preferred height (the widget then keeps it); otherwise it takes the room left.
    getMinHeight: () => (height ? height() : minHeight),
    getMaxHeight: height ? () => height() : undefined,
    onDraw: () => redraw(false),
  });
  widget.serialize = false;
  if (typeof ResizeObserver === "function") new ResizeObserver(() => redraw(false)).observe(canvas);
  return { widget, element, canvas, redraw: () => redraw(true) };
}

/** Pointer position in canvas pixels. */
export function canvasPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return [
    ((event.clientX - rect.left) * canvas.width) / Math.max(rect.width, 1),
    ((event.clientY - rect.top) * canvas.height) / Math.max(rect.height, 1),
  ];
}
