// Fill and submit a DAG's trigger form in the Airflow UI, as a person would, in headless
// Chromium (Debian's /usr/bin/chromium; playwright-core never downloads a browser).
//
//   node trigger_form.mjs '{"baseUrl": "http://127.0.0.1:8080", "dagId": "graphile_worker_admin",
//     "action": "permanently_fail", "jobIds": [1, 2], "reason": "...", "dryRun": false,
//     "screenshot": "path/to/form.png"}'
//
// Prints one JSON line: {"dag_run_id": ..., "state": ..., "url": ...} (the run the UI created).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const options = JSON.parse(process.argv[2] ?? "{}");
const {
  baseUrl,
  dagId,
  action,
  jobIds,
  reason = null,
  dryRun = true,
  screenshot = null,
  executablePath = "/usr/bin/chromium",
  timeoutMs = 30000,
} = options;
if (!baseUrl || !dagId || !action || !Array.isArray(jobIds)) {
  console.error("usage: node trigger_form.mjs '{\"baseUrl\", \"dagId\", \"action\", \"jobIds\", ...}'");
  process.exit(2);
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "airflow-graphile-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  // Tall enough for the whole trigger form to fit in one screenshot.
  viewport: { width: 1280, height: 2200 },
});
context.setDefaultTimeout(timeoutMs);
const pageErrors = [];

try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => pageErrors.push(String(error)));

  // Home -> Dags list -> the DAG -> its Trigger form.
  await page.goto(baseUrl);
  await page.getByRole("link", { name: "Dags", exact: true }).click();
  await page.getByRole("link", { name: dagId, exact: true }).first().click();
  await page.waitForURL(`**/dags/${dagId}**`);
  await page.getByRole("heading", { name: dagId, level: 2, exact: true }).waitFor();
  await page.getByRole("button", { name: "Trigger Dag", exact: true }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByText("Run Parameters").waitFor();

  // Action: a react-select combobox.
  await dialog.locator("#element_action").click();
  await page.getByRole("option", { name: action, exact: true }).click();

  // Job ids: an array of integers gets a JSON editor (Monaco). insertText avoids its
  // auto-closing brackets.
  const editor = dialog.locator("#element_job_ids");
  await editor.locator(".view-lines").click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(JSON.stringify(jobIds));

  if (reason !== null) {
    await dialog.locator("#element_reason").fill(reason);
  }

  // Dry run: a switch, on by default.
  const dryRunSwitch = dialog.locator('[id="switch:element_dry_run"]');
  if ((await dryRunSwitch.getAttribute("data-state")) !== (dryRun ? "checked" : "unchecked")) {
    await dryRunSwitch.click();
  }
  const wanted = dryRun ? "checked" : "unchecked";
  await page.waitForFunction(
    ([selector, state]) => document.querySelector(selector)?.getAttribute("data-state") === state,
    ['[id="switch:element_dry_run"]', wanted],
  );

  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await dialog.screenshot({ path: screenshot });
  }

  const [response] = await Promise.all([
    page.waitForResponse(
      (candidate) =>
        candidate.request().method() === "POST" &&
        new URL(candidate.url()).pathname === `/api/v2/dags/${dagId}/dagRuns`,
    ),
    dialog.getByTestId("trigger-dag-submit").click(),
  ]);
  const body = await response.json();
  if (!response.ok()) {
    throw new Error(`the UI's trigger request failed: ${response.status()} ${JSON.stringify(body)}`);
  }
  console.log(
    JSON.stringify({ dag_run_id: body.dag_run_id, state: body.state, conf: body.conf, url: page.url() }),
  );
} catch (error) {
  console.error(String(error && error.stack ? error.stack : error));
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join("\n")}`);
  process.exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
