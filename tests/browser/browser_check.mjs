// Drives ComfyUI's web UI in the system's headless Chromium (playwright-core, no browser download):
// checks the pack's extension registered, loads every bundled workflow through the Templates API,
// looks for missing node types and console errors, runs workflows with the Run button, exercises
// the before/after viewer, the kernel preview and the missing-model panel, and saves screenshots.
//
//   node browser_check.mjs config.json     (written by test_browser.py; results go to config.result)
//
// Every request that is not to the local ComfyUI is refused inside the browser, and Chromium gets a
// dead proxy for anything else, so nothing leaves the machine.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const origin = new URL(config.url).origin;
const result = { extension: null, templates: {}, runs: [], panel: null,
  console_errors: [], page_errors: [], failed_responses: [], blocked_requests: [], host_noise: [], screenshots: [], failures: [], frontend_version: null };
const fail = (message) => result.failures.push(message);
const shot = async (page, name, clip) => {
  const path = join(config.screenshots, `${name}.png`);
  await page.screenshot({ path, clip });
  result.screenshots.push(path);
};

const NEUTRAL = { x: 700, y: 900 }; // an empty spot of the canvas: no tooltip in the screenshots
const SETTINGS = { "Comfy.TutorialCompleted": true, "Comfy.Canvas.NavigationMode": "custom",
  "Comfy.Minimap.Visible": false, "Comfy.Graph.CanvasInfo": false };
mkdirSync(config.screenshots, { recursive: true });
// A returning user: no templates dialog on first load; no minimap or canvas statistics in the
// screenshots. Navigation mode "custom": with the default
// ("legacy") frontend 1.27.10 throws at every start-up (the setting's onChange sets two settings that
// are not registered yet: "Cannot read properties of undefined (reading 'id')"), an error of the host
// that would hide ours.
for (const [id, value] of Object.entries({ ...SETTINGS, ...(config.settings ?? {}) })) {
  await fetch(`${config.url}/api/settings/${id}`, { method: "POST", body: JSON.stringify(value) });
}

const userDataDir = mkdtempSync(join(tmpdir(), "deblur-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: config.chromium,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost;[::1]"],
  viewport: { width: config.width ?? 1600, height: config.height ?? 1000 },
  deviceScaleFactor: 1,
});
await context.route("**/*", (route) => {
  const url = route.request().url();
  if (url.startsWith(origin) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
  result.blocked_requests.push(url);
  return route.abort("blockedbyclient");
});

const page = context.pages()[0] ?? (await context.newPage());
// The frontend's index.html links a stylesheet at the web root (user.css) that ComfyUI does not serve:
// every ComfyUI 0.3.64 page logs that 404, with or without any custom node.
const HOST_NOISE = [`${origin}/user.css`];
// A frontend newer than the host (--front-end-root) asks for APIs that ComfyUI 0.3.64 does not have.
const NEWER_FRONTEND_APIS = ["/api/jobs", "/api/global_subgraphs"].map((path) => `${origin}${path}`);
const NEWER_FRONTEND_NOISE = /^\[Jobs API\]|JobsApiError/;
page.on("console", (message) => {
  if (message.type() !== "error") return;
  const text = message.text();
  const source = message.location()?.url ?? "";
  const jobs = NEWER_FRONTEND_APIS.some((api) => source.startsWith(api)) && /status of 404/.test(text);
  if ((HOST_NOISE.includes(source) && /status of 404/.test(text)) || jobs || NEWER_FRONTEND_NOISE.test(text)) {
    result.host_noise.push(`${text} (${source})`);
    return;
  }
  // A request we refused above (always to another host) is logged as a failed resource.
  const refused = /net::ERR_BLOCKED_BY_CLIENT/.test(text);
  (refused ? result.blocked_requests : result.console_errors).push(refused ? `console: ${text}` : text);
});
page.on("pageerror", (error) => result.page_errors.push(String(error?.stack ?? error)));
page.on("response", (response) => {
  if (response.status() >= 400) result.failed_responses.push(`${response.status()} ${response.request().method()} ${response.url()}`);
});

try {
  await page.goto(config.url, { waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => {
    const app = window.comfyAPI?.app?.app;
    return app?.graph && app?.canvas && app.vueAppReady !== false && document.querySelector("canvas");
  }, null, { timeout: 120_000 });
  await page.waitForTimeout(1500);
  result.frontend_version = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);

  // 1. our extension registered
  result.extension = await page.evaluate((name) => {
    const app = window.comfyAPI.app.app;
    return app.extensions.some((extension) => extension.name === name);
  }, config.extension);
  if (!result.extension) fail(`extension ${config.extension} is not registered`);

  // capture what each load reports as missing
  await page.evaluate(() => {
    window.__deblurMissing = [];
    window.comfyAPI.app.app.registerExtension({
      name: "deblur-browser-test.capture",
      afterConfigureGraph(missing) {
        window.__deblurMissing.push(...(missing ?? []).map((m) => (typeof m === "string" ? m : m.type)));
      },
    });
  });

  // 2. every bundled workflow through the Templates API (what the Templates menu calls)
  const listed = await page.evaluate(async (pack) => {
    const { api } = window.comfyAPI.api;
    return (await api.getWorkflowTemplates())[pack] ?? [];
  }, config.pack);
  for (const name of config.workflows) {
    if (!listed.includes(name)) {
      fail(`workflow ${name} is not in the Templates list (${listed.join(", ")})`);
      continue;
    }
    const report = await page.evaluate(async ({ pack, name }) => {
      const { app } = window.comfyAPI.app;
      const { api } = window.comfyAPI.api;
      window.__deblurMissing = [];
      const json = await (await fetch(api.apiURL(`/workflow_templates/${pack}/${name}.json`))).json();
      await app.loadGraphData(json, true, true, name);
      await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 300)));
      const nodes = app.graph.nodes;
      const ours = nodes.filter((n) => String(n.constructor?.nodeData?.category ?? "").startsWith("deblur/"));
      return {
        nodes: nodes.length,
        missing: [...window.__deblurMissing],
        unregistered: nodes.filter((n) => !n.constructor?.nodeData).map((n) => n.type),
        styled: ours.filter((n) => n.color && n.badges?.some((b) => b.deblurBadge)).length,
        ours: ours.length,
        errors: nodes.filter((n) => n.has_errors).map((n) => n.type),
      };
    }, { pack: config.pack, name });
    result.templates[name] = report;
    if (report.missing.length || report.unregistered.length) fail(`${name}: missing node types ${[...report.missing, ...report.unregistered]}`);
    if (report.styled !== report.ours) fail(`${name}: ${report.ours - report.styled} of our nodes lack the method colour/badge`);
    await page.mouse.move(NEUTRAL.x, NEUTRAL.y);
    await shot(page, `workflow_${name}`);
    if (config.thumbnails) {
      // the nodes alone (no menus), for the Templates card: tools/make_template_thumbnails.py
      await page.waitForTimeout(600);
      const { nodes } = await page.evaluate(measureLayout, { loaders: {} });
      const left = Math.min(...nodes.map((n) => n.x)), top = Math.min(...nodes.map((n) => n.y));
      const right = Math.max(...nodes.map((n) => n.x + n.w)), bottom = Math.max(...nodes.map((n) => n.y + n.h));
      const view = page.viewportSize();
      const box = padded({ x: left, y: top, width: right - left, height: bottom - top }, 16);
      box.width = Math.min(box.width, view.width - box.x);
      box.height = Math.min(box.height, view.height - box.y);
      mkdirSync(config.thumbnails, { recursive: true });
      await page.screenshot({ path: join(config.thumbnails, `${name}.png`), clip: box });
    }
  }

  // 2b. every workflow opens clean: no node covers another, every title visible (fitted, nothing
  // under the menus), a missing-model panel inside its node; with the models there and without.
  if (config.layout) {
    result.layout = {};
    for (const name of config.workflows) {
      if (listed.includes(name)) result.layout[name] = await checkLayout(page, name, config.layout);
    }
  }

  // 3.-5. run workflows from the UI (load, press Run, wait for the server), then use what they show:
  // the before/after viewer (drag the split, double-click for 1:1) and kernel previews.
  result.runs = [];
  for (const run of config.runs) {
    result.runs.push(await runWorkflow(page, run));
  }

  // 5b. a finished run loaded again after a page reload (what the queue's "Load workflow" does): its
  // outputs reach the nodes through onNodeOutputsUpdated, not onExecuted; the viewer and kernels return,
  // in classic and Nodes 2.0 mode.
  if (config.reload) {
    result.reloaded = [];
    const configured = config.settings?.["Comfy.VueNodes.Enabled"] ?? false;
    for (const [mode, vue] of [["vue", true], ["classic", false]]) { // the page ends in classic mode
      await fetch(`${config.url}/api/settings/Comfy.VueNodes.Enabled`, { method: "POST", body: JSON.stringify(vue) });
      result.reloaded.push(await reloadFinishedRun(page, config.reload, mode));
    }
    if (configured) {
      await fetch(`${config.url}/api/settings/Comfy.VueNodes.Enabled`, { method: "POST", body: JSON.stringify(configured) });
      await page.reload({ waitUntil: "domcontentloaded" });
    }
  }

  // 6. a loader asked for a model that is not there explains where it goes
  if (config.missing_model) {
    const { workflow, node_type, widget_index, value } = config.missing_model;
    await page.evaluate(async ({ pack, workflow, nodeType, widgetIndex, value }) => {
      const { app } = window.comfyAPI.app;
      const { api } = window.comfyAPI.api;
      const json = await (await fetch(api.apiURL(`/workflow_templates/${pack}/${workflow}.json`))).json();
      json.nodes.find((n) => n.type === nodeType).widgets_values[widgetIndex] = value;
      await app.loadGraphData(json, true, true, `${workflow} (missing model)`, { showMissingModelsDialog: false });
    }, { pack: config.pack, workflow, nodeType: node_type, widgetIndex: widget_index, value });
    const panel = page.locator(".deblur-missing-model").first();
    await panel.waitFor({ state: "visible", timeout: 10_000 }).catch(() => {});
    if (await panel.count()) {
      result.panel = { text: await panel.innerText(), links: await panel.locator("a").evaluateAll((as) => as.map((a) => a.href)) };
      const box = await page.evaluate((nodeType) => {
        const app = window.comfyAPI.app.app;
        const node = app.graph.nodes.find((n) => n.type === nodeType);
        app.canvas.bringToFront?.(node);
        app.canvas.setDirty(true, true);
        const [x, y] = app.canvas.ds.convertOffsetToCanvas([node.pos[0], node.pos[1] - 60]);
        const rect = app.canvas.canvas.getBoundingClientRect();
        return { x: rect.left + x, y: rect.top + y, width: node.size[0] * app.canvas.ds.scale, height: (node.size[1] + 70) * app.canvas.ds.scale };
      }, node_type);
      await page.mouse.move(NEUTRAL.x, NEUTRAL.y);
      await page.waitForTimeout(300);
      await shot(page, "missing_weights", padded(box, 12));
      if (!result.panel.text.includes(value)) fail("the missing-model panel does not name the missing model");
      if (!result.panel.links.some((href) => href.includes("/deblur/readme#weights"))) fail("the missing-model panel does not link to the README");
    } else fail("no missing-model panel on a loader whose model is absent");
  }
} catch (error) {
  fail(`browser check stopped: ${error?.stack ?? error}`);
  await page.screenshot({ path: join(config.screenshots, "failure.png") }).catch(() => {});
} finally {
  if (result.console_errors.length) fail(`console errors: ${result.console_errors.join(" | ")}`);
  if (result.page_errors.length) fail(`page errors: ${result.page_errors.join(" | ")}`);
  writeFileSync(config.result, JSON.stringify(result, null, 2));
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}

async function runWorkflow(page, { workflow, expect_viewer: expectViewer, expect_kernels: expectKernels }) {
  const report = { workflow, viewer: null, kernels: null };
  await page.evaluate(async ({ pack, name }) => {
    const { app } = window.comfyAPI.app;
    const { api } = window.comfyAPI.api;
    const json = await (await fetch(api.apiURL(`/workflow_templates/${pack}/${name}.json`))).json();
    await app.loadGraphData(json, true, true, name);
    window.__deblurRun = { done: false, error: null, executed: [] };
    if (!window.__deblurListening) {
      window.__deblurListening = true;
      api.addEventListener("executed", ({ detail }) => window.__deblurRun.executed.push(String(detail.display_node ?? detail.node)));
      api.addEventListener("execution_success", () => { window.__deblurRun.done = true; });
      api.addEventListener("execution_error", ({ detail }) => {
        window.__deblurRun.done = true;
        window.__deblurRun.error = `${detail.node_type}: ${detail.exception_message}`;
      });
    }
  }, { pack: config.pack, name: workflow });
  const started = Date.now();
  const runButton = page.locator('[data-testid="queue-button"]').first();
  report.via_button = (await runButton.count()) > 0;
  if (report.via_button) await runButton.click();
  else await page.evaluate(() => window.comfyAPI.app.app.queuePrompt(0, 1));
  await page.waitForFunction(() => window.__deblurRun.done, null, { timeout: config.run_timeout_ms ?? 600_000 });
  Object.assign(report, { seconds: (Date.now() - started) / 1000 }, await page.evaluate(() => window.__deblurRun));
  if (report.error) fail(`running ${workflow}: ${report.error}`);
  await page.waitForTimeout(1500);
  await page.mouse.move(NEUTRAL.x, NEUTRAL.y);
  await shot(page, `ran_${workflow}`);

  await focusNode(page, "deblurCompare");
  const viewerBox = await page.locator(".deblur-compare canvas").first().boundingBox().catch(() => null);
  if (viewerBox) {
    const y = viewerBox.y + viewerBox.height / 2;
    await page.mouse.move(viewerBox.x + viewerBox.width * 0.5, y);
    await page.mouse.down();
    await page.mouse.move(viewerBox.x + viewerBox.width * 0.3, y, { steps: 5 });
    await page.mouse.up();
    const state = await page.evaluate(() => {
      const node = window.comfyAPI.app.app.graph.nodes.find((n) => n.deblurCompare);
      const view = node.deblurCompare.view;
      return { id: node.id, size: view.size, labels: view.labels, split_after_drag: view.split };
    });
    await shot(page, `compare_${workflow}`, padded(viewerBox, 8));
    await page.mouse.dblclick(viewerBox.x + viewerBox.width * 0.6, viewerBox.y + viewerBox.height * 0.45);
    await page.waitForTimeout(200);
    state.zoom = await page.evaluate(() => window.comfyAPI.app.app.graph.nodes.find((n) => n.deblurCompare).deblurCompare.view.zoom);
    await shot(page, `compare_${workflow}_zoom`, padded(viewerBox, 8));
    await page.mouse.dblclick(viewerBox.x + viewerBox.width * 0.6, viewerBox.y + viewerBox.height * 0.45);
    report.viewer = state;
    if (!state.size) fail(`${workflow}: the before/after viewer shows no images after the run`);
    if (!(Math.abs(state.split_after_drag - 0.3) < 0.05)) fail(`${workflow}: dragging the split line left it at ${state.split_after_drag}`);
    if (!state.zoom) fail(`${workflow}: double-click did not zoom the viewer to 1:1`);
  } else if (expectViewer) fail(`${workflow}: no before/after viewer on the page after the run`);

  await focusNode(page, "deblurKernels");
  const kernelBoxes = await page.locator(".deblur-kernels canvas").evaluateAll((canvases) => canvases.map((c) => {
    const r = c.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  }));
  if (kernelBoxes.length) {
    report.kernels = await page.evaluate(() => window.comfyAPI.app.app.graph.nodes.filter((n) => n.deblurKernels?.decoded)
      .map((n) => ({ type: n.type, kernels: n.deblurKernels.decoded.map((d) => ({ size: d.size, grid: d.grid, shown: d.shown })) })));
    for (const [i, box] of kernelBoxes.entries()) await shot(page, `kernels_${workflow}${i ? `_${i}` : ""}`, padded(box, 8));
  } else if (expectKernels) fail(`${workflow}: no kernel preview on the page after the run`);
  return report;
}

async function reloadFinishedRun(page, { workflow, viewer_type: viewerType, kernel_type: kernelType }, mode) {
  await page.reload({ waitUntil: "domcontentloaded" });
  await page.waitForFunction(() => {
    const app = window.comfyAPI?.app?.app;
    return app?.graph && app?.canvas && app.vueAppReady !== false && document.querySelector("canvas");
  }, null, { timeout: 120_000 });
  await page.waitForTimeout(1500);
  const report = await page.evaluate(async ({ name, viewerType, kernelType }) => {
    const { app } = window.comfyAPI.app;
    const { api } = window.comfyAPI.api;
    const history = await (await api.fetchApi("/history?max_items=20")).json();
    const runs = Object.values(history).filter((entry) => entry.prompt?.[3]?.extra_pnginfo?.workflow
      && entry.prompt[3].extra_pnginfo.workflow.nodes.some((n) => n.type === viewerType));
    const run = runs.at(-1);
    if (!run) return { error: `no finished ${name} run in the history` };
    await app.loadGraphData(run.prompt[3].extra_pnginfo.workflow, true, true, `${name} (reloaded)`);
    const state = () => {
      const viewer = app.graph.nodes.find((n) => n.type === viewerType);
      const kernels = app.graph.nodes.find((n) => n.type === kernelType);
      return { viewer: viewer?.deblurCompare?.view?.size ?? null, kernels: kernels?.deblurKernels?.decoded?.length ?? 0 };
    };
    const before = state();
    app.nodeOutputs = run.outputs; // as the frontends restore a loaded run's outputs
    await new Promise((resolve) => setTimeout(resolve, 1500));
    return { before, after: state() };
  }, { name: workflow, viewerType, kernelType });
  report.mode = mode;
  if (report.error) fail(`${mode}, reloaded ${workflow}: ${report.error}`);
  else {
    if (report.before.viewer || report.before.kernels) fail(`${mode}, reloaded ${workflow}: outputs shown before they were restored`);
    if (!report.after.viewer) fail(`${mode}, reloaded ${workflow}: the before/after viewer shows no images`);
    if (!report.after.kernels) fail(`${mode}, reloaded ${workflow}: no kernels drawn`);
  }
  if (mode === "classic" && !report.error) {
    const visible = await page.locator(".deblur-compare canvas").first().isVisible().catch(() => false);
    report.viewer_visible = visible;
    if (!visible) fail(`${mode}, reloaded ${workflow}: the viewer is not on the page`);
  }
  await page.mouse.move(NEUTRAL.x, NEUTRAL.y);
  await shot(page, `reloaded_${workflow}_${mode}`);
  return report;
}

/** Load a workflow as the Templates menu does, with its models present and then with every loader
 * pointing at a model that is not there; measure both. */
async function checkLayout(page, name, { loaders, missing_value: missingValue, label, expect_panels: expectPanels }) {
  const report = {};
  for (const variant of ["present", "missing"]) {
    await page.evaluate(async ({ pack, name, variant, loaders, missingValue }) => {
      const { app } = window.comfyAPI.app;
      const { api } = window.comfyAPI.api;
      const json = await (await fetch(api.apiURL(`/workflow_templates/${pack}/${name}.json`))).json();
      await app.loadGraphData(json, true, true, name);
      if (variant === "missing") {
        const absent = app.graph.nodes.filter((n) => loaders[n.type]);
        for (const node of absent) node.widgets.find((w) => w.name === loaders[node.type]).value = missingValue;
        if (absent.length) await app.loadGraphData(app.graph.serialize(), true, true, `${name} (missing models)`);
      }
    }, { pack: config.pack, name, variant, loaders, missingValue });
    await page.mouse.move(NEUTRAL.x, NEUTRAL.y);
    await page.waitForTimeout(1200); // DOM widgets, Vue nodes and the panels' second layout pass settle
    const measured = await page.evaluate(measureLayout, { loaders });
    if (variant === "missing" && measured.loaders === 0) continue;
    report[variant] = measured;
    const where = `${name} (${label}, models ${variant})`;
    for (const [a, b] of measured.overlaps) fail(`${where}: node ${a} overlaps node ${b}`);
    for (const node of measured.nodes.filter((n) => !n.titleVisible)) fail(`${where}: the title of ${node.label} is not visible on opening (${node.covered})`);
    for (const panel of measured.panels.filter((p) => !p.inside)) fail(`${where}: the missing-model panel sticks out of ${panel.node}`);
    if (variant === "missing" && expectPanels && measured.panels.length < measured.loaders) fail(`${where}: ${measured.loaders - measured.panels.length} loader(s) show no missing-model panel`);
    await shot(page, `layout_${label}_${name}_${variant}`);
  }
  return report;
}

/** In the page: every node's box on screen (Vue nodes: their element; classic: the canvas bounds),
 * the pairs that intersect, whether each title can be seen, and where each missing-model panel is. */
function measureLayout({ loaders }) {
  const app = window.comfyAPI.app.app;
  const canvasRect = app.canvas.canvas.getBoundingClientRect();
  const ds = app.canvas.ds;
  const nodes = app.graph.nodes.map((node) => {
    const element = document.querySelector(`.lg-node[data-node-id="${node.id}"]`);
    let box;
    if (element) {
      const r = element.getBoundingClientRect();
      box = { x: r.left, y: r.top, w: r.width, h: r.height };
    } else {
      const [x, y, w, h] = node.getBounding();
      const [sx, sy] = ds.convertOffsetToCanvas([x, y]);
      box = { x: canvasRect.left + sx, y: canvasRect.top + sy, w: w * ds.scale, h: h * ds.scale };
    }
    const px = box.x + Math.min(box.w / 2, 60), py = box.y + 5;
    const hit = document.elementFromPoint(px, py);
    const titleVisible = Boolean(hit) && (hit === app.canvas.canvas || Boolean(element?.contains(hit)));
    const covered = hit ? `${hit.tagName.toLowerCase()}.${String(hit.className?.baseVal ?? hit.className).split(" ")[0]}` : "off screen";
    return { id: node.id, type: node.type, label: `${node.id} ${node.title ?? node.type}`, ...box, titleVisible, covered, element };
  });
  const overlaps = [];
  for (let i = 0; i < nodes.length; i++) {
    for (let j = i + 1; j < nodes.length; j++) {
      const a = nodes[i], b = nodes[j];
      const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
      const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
      if (w > 1 && h > 1) overlaps.push([a.label, b.label]);
    }
  }
  const panels = [...document.querySelectorAll(".deblur-missing-model")].filter((el) => el.offsetParent !== null).map((el) => {
    const owner = app.graph.nodes.find((n) => n.widgets?.some((w) => w.element === el)) ?? null;
    const node = nodes.find((n) => (owner ? n.id === owner.id : n.element?.contains(el)));
    const r = el.getBoundingClientRect();
    const inside = Boolean(node) && r.left >= node.x - 2 && r.top >= node.y - 2 && r.right <= node.x + node.w + 2 && r.bottom <= node.y + node.h + 2;
    return { node: node?.label ?? "no node", inside, box: { x: r.left, y: r.top, w: r.width, h: r.height } };
  });
  return { nodes: nodes.map(({ element, ...rest }) => rest), overlaps, panels,
    loaders: app.graph.nodes.filter((n) => loaders[n.type]).length, scale: ds.scale, offset: [...ds.offset] };
}

/** Show the first node carrying `property` (set by the extension) at 100 % in the middle of the canvas. */
async function focusNode(page, property) {
  const found = await page.evaluate((property) => {
    const app = window.comfyAPI.app.app;
    const node = app.graph.nodes.find((n) => n[property]);
    if (!node) return false;
    app.canvas.ds.scale = 1;
    if (app.canvas.centerOnNode) app.canvas.centerOnNode(node);
    app.canvas.setDirty(true, true);
    return true;
  }, property);
  if (found) await page.waitForTimeout(400);
}

function padded(box, pad) {
  return { x: Math.max(0, box.x - pad), y: Math.max(0, box.y - pad), width: box.width + 2 * pad, height: box.height + 2 * pad };
}
