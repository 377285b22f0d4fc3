// Frontend extension of the deblur pack: a colour per method, so graphs mixing methods stay
// readable, and a loader that explains where the weights go when it finds none.
import { app } from "../../scripts/app.js";

const METHOD_COLOURS = {
  "deblur/HI-Diff": { color: "#2a4d69", bgcolor: "#1e3448" },
};
const NO_MODEL_PREFIX = "(no ";

app.registerExtension({
  name: "diffusion-deblur.appearance",
  nodeCreated(node) {
    const category = node.constructor?.category ?? node.category ?? "";
    const colours = Object.entries(METHOD_COLOURS).find(([prefix]) => category.startsWith(prefix));
    if (colours) Object.assign(node, colours[1]);
    const modelWidget = node.widgets?.find((w) => w.name === "model_name");
    if (category.startsWith("deblur/") && modelWidget && String(modelWidget.value).startsWith(NO_MODEL_PREFIX)) {
      node.title = `${node.title} — weights missing`;
      node.color = "#6b2a2a";
    }
  },
});
