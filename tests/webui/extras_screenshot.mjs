// Screenshot of the "Deblur" step in a WebUI's Extras tab, run for real: drives the system's headless
// Chromium (playwright-core from tests/browser/node_modules) through the gradio UI, uploads a photo,
// enables the step, presses Generate and waits for the result. Requests to other hosts are refused.
//
//   node extras_screenshot.mjs URL CHROMIUM PHOTO OUT.png
import { chromium } from "../browser/node_modules/playwright-core/index.mjs";

const [url, executablePath, photo, out] = process.argv.slice(2);
const origin = new URL(url).origin;
const browser = await chromium.launch({ executablePath, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=127.0.0.1;localhost"] });
const page = await browser.newPage({ viewport: { width: 1500, height: 1120 }, deviceScaleFactor: 1 });
await page.route("**/*", (route) => (route.request().url().startsWith(origin) || route.request().url().startsWith("data:")
  || route.request().url().startsWith("blob:") ? route.continue() : route.abort("blockedbyclient")));
const errors = [];
page.on("pageerror", (error) => errors.push(String(error)));

try {
await page.goto(url, { waitUntil: "load", timeout: 120000 });
await page.getByRole("tab", { name: "Extras" }).first().click({ timeout: 120000 });
await page.locator("#extras_image input[type=file]").first().setInputFiles(photo);
await page.locator("#extras_deblur").getByText("Deblur (diffusion)").first().click();
await page.locator("#extras_deblur_enable input[type=checkbox]").check();
// The Upscale step stays as it opens: its default upscaler "None" leaves the image as it is.
await page.locator("#extras_generate").click();
await page.locator("#extras_gallery img").first().waitFor({ timeout: Number(process.env.DEBLUR_SHOT_TIMEOUT_MS ?? 300000) });
await page.waitForTimeout(1500);
} catch (error) {  // what the page showed when it went wrong
  await page.screenshot({ path: out.replace(/\.png$/, "_failed.png") });
  console.log(JSON.stringify({ page_errors: errors }));
  throw error;
}
await page.screenshot({ path: out });
const info = await page.locator("#extras_gallery_container").locator("xpath=..").innerText().catch(() => "");
console.log(JSON.stringify({ screenshot: out, info: info.match(/Deblur method[^\n]*/)?.[0] ?? "", page_errors: errors }));
await browser.close();
