// The look of the pack's nodes: one colour and one title badge per method, taken from the node's
// category (deblur/<method>/...), so a graph that mixes methods stays readable. Pure functions: no
// frontend import, so Node's test runner can load this module too.

export const CATEGORY_ROOT = "deblur";

// Title colour, body colour, badge colour. Methods not listed get a stable colour from PALETTE.
export const METHOD_STYLES = {
  "HI-Diff": { color: "#2a4d69", bgcolor: "#1e3448", badge: "#3f7cac" },
  DeblurDiff: { color: "#4b2f6b", bgcolor: "#33214a", badge: "#7d55b0" },
  FideDiff: { color: "#22574a", bgcolor: "#183d34", badge: "#2f8f76" },
  OSDD: { color: "#6b4a1f", bgcolor: "#4a3316", badge: "#b07a2f" },
  "blur lab": { color: "#3e4a3a", bgcolor: "#2b3328", badge: "#66805c" },
};
export const PALETTE = [
  { color: "#5c3a3a", bgcolor: "#3f2828", badge: "#a05a5a" },
  { color: "#3a5c3a", bgcolor: "#283f28", badge: "#5a9a5a" },
  { color: "#3a4f5c", bgcolor: "#28363f", badge: "#5a86a0" },
  { color: "#5c5a3a", bgcolor: "#3f3e28", badge: "#9a965a" },
];

/** "deblur/HI-Diff/advanced" → "HI-Diff"; null for nodes outside the pack. */
export function methodOf(category) {
  const parts = String(category ?? "").split("/");
  if (parts[0] !== CATEGORY_ROOT || parts.length < 2 || !parts[1]) return null;
  return parts[1];
}

export function styleFor(method) {
  if (METHOD_STYLES[method]) return METHOD_STYLES[method];
  let hash = 0;
  for (const char of String(method)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

/**
 * A title badge the canvas draws like its own (it calls getWidth and draw); plain fields too, for
 * renderers that only read text and colours.
 */
export function makeBadge(text, bgColor, fgColor = "#ffffff") {
  return {
    text,
    fgColor,
    bgColor,
    fontSize: 11,
    padding: 5,
    height: 18,
    cornerRadius: 4,
    xOffset: 0,
    yOffset: 0,
    deblurBadge: true,
    get visible() {
      return this.text.length > 0;
    },
    getWidth(ctx) {
      const font = ctx.font;
      ctx.font = `${this.fontSize}px sans-serif`;
      const width = ctx.measureText(this.text).width + 2 * this.padding;
      ctx.font = font;
      return width;
    },
    draw(ctx, x, y) {
      const { font, fillStyle, textBaseline, textAlign } = ctx;
      const width = this.getWidth(ctx);
      ctx.fillStyle = this.bgColor;
      ctx.beginPath();
      if (ctx.roundRect) ctx.roundRect(x, y, width, this.height, this.cornerRadius);
      else ctx.rect(x, y, width, this.height);
      ctx.fill();
      ctx.font = `${this.fontSize}px sans-serif`;
      ctx.fillStyle = this.fgColor;
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
      Object.assign(ctx, { font, fillStyle, textBaseline, textAlign });
    },
  };
}

/** Colour a node and give it its method badge (once). Returns the method, or null if not ours. */
export function applyLook(node, category) {
  const method = methodOf(category);
  if (!method) return null;
  const style = styleFor(method);
  node.color = style.color;
  node.bgcolor = style.bgcolor;
  if (Array.isArray(node.badges) && !node.badges.some((b) => typeof b === "function" && b.deblurBadge)) {
    const badge = makeBadge(method, style.badge);
    const provide = () => badge;
    provide.deblurBadge = true;
    node.badges.push(provide);
  }
  return method;
}
