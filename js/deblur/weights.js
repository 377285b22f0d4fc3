// A loader that finds no model says which files go in which folder, with download and README links,
// instead of showing an empty list. The facts come from the server (/deblur/weights: the README's
// weights table and the model folders this ComfyUI searches); the panel goes away once the model is
// there and the node definitions are refreshed.

export const PLACEHOLDER_PREFIX = "(no ";

/** What the loader's model list says: {state: "ok" | "none" | "absent", value}. */
export function modelState(values, value) {
  const real = (values ?? []).filter((v) => !String(v).startsWith(PLACEHOLDER_PREFIX));
  if (real.length === 0) return { state: "none", value };
  if (value !== undefined && !real.includes(value) && !String(value).startsWith(PLACEHOLDER_PREFIX)) {
    return { state: "absent", value };
  }
  return { state: "ok", value };
}

function joinPath(folder, name) {
  const separator = folder.includes("\\") && !folder.includes("/") ? "\\" : "/";
  return folder.endsWith(separator) ? folder + name : folder + separator + name;
}

/** The panel's content for a loader type, from the server's help (null if it has none for it). */
export function panelContent(help, loaderType, { state, value }) {
  const loader = help?.loaders?.[loaderType];
  if (!loader || state === "ok") return null;
  const root = help.model_folders?.[0] ?? `ComfyUI/models/${help.folder_name ?? "deblur"}`;
  const title = state === "none" ? `No ${loader.method} model found` : `Model “${value}” not found`;
  const rows = loader.models.map((model) => ({
    name: model.name,
    folder: `${model.folder}/`,
    path: joinPath(joinPath(root, model.folder), ""),
    files: model.files,
    url: model.url,
  }));
  return { title, root, rows, alternative: loader.alternative ?? "", readme: help.readme, others: (help.model_folders ?? []).slice(1) };
}

/** Render panel content into an element (DOM only). */
export function renderPanel(element, content, readmeUrl) {
  element.replaceChildren();
  const add = (tag, text, parent = element) => {
    const child = document.createElement(tag);
    if (text !== undefined) child.textContent = text;
    parent.append(child);
    return child;
  };
  const link = (text, href, parent) => {
    const anchor = add("a", text, parent);
    anchor.href = href;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
    return anchor;
  };
  const head = add("div");
  add("strong", content.title, head);
  head.append(" · ");
  link("README → Weights", readmeUrl, head);  // first, so the compact (scrolling) panel always shows it
  const folder = add("div", "Model folder: ");
  add("code", content.root, folder);
  add("div", "Put one of these in it, then press R (refresh):");
  const list = add("ul");
  for (const row of content.rows) {
    const item = add("li", "", list);
    item.title = row.path;
    add("b", `${row.name}: `, item);
    add("code", row.folder, item);
    add("span", ` ← ${row.files.join(", ")} · `, item);
    link("download", row.url, item);
  }
  if (content.alternative) add("div", content.alternative);
  if (content.others.length) add("div", `Also searched: ${content.others.join(", ")}`);
}
