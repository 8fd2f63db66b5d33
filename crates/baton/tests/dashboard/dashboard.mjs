// Drives Baton's dashboard in headless Chromium against a running `baton serve`.
//
//   node dashboard.mjs check     the end-to-end walk (crates/baton/tests/it/dashboard.rs runs it)
//   node dashboard.mjs measure   how long each page takes to show its data (BENCHMARKS.md)
//   node dashboard.mjs seed N    enqueues N jobs over three queues, 1,000 per request
//
// Settings come from the environment: BATON_URL (the server), BATON_TOKEN (its api_token),
// BATON_MASTER (a master that leads, for `check`), BATON_SCREENSHOTS (a directory for one
// screenshot per page), CHROMIUM (the browser, /usr/bin/chromium by default).
// Exits 0 when every step passed; otherwise prints the failed step and exits 1.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = required("BATON_URL");
const token = required("BATON_TOKEN");
const shots = process.env.BATON_SCREENSHOTS || "screenshots";
const WAIT = { timeout: 15000 };

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`dashboard: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

async function call(method, path, body) {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // This machine's network is closed: no background connections, no sandbox as root.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

/** Goes to a section through the navigation, as a person would, and waits for its data. */
async function visit(page, section, heading) {
  await page.getByRole("navigation").getByRole("link", { name: section, exact: true }).click();
  await page.getByRole("heading", { level: 1, name: heading }).waitFor(WAIT);
  await page.getByRole("status").filter({ hasText: "Updated" }).waitFor(WAIT);
}

async function check() {
  const master = required("BATON_MASTER");
  mkdirSync(shots, { recursive: true });
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const errors = [];
    page.on("pageerror", (error) => errors.push(error.message));

    // Log in: a wrong token is refused, the right one opens the overview.
    await page.goto(`${url}/`);
    await page.getByRole("heading", { name: "Log in" }).waitFor(WAIT);
    await shot(page, "login");
    await page.getByLabel("API token").fill("not-the-token-at-all");
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByText("That token was refused.").waitFor(WAIT);
    await page.getByLabel("API token").fill(token);
    await page.getByRole("button", { name: "Log in" }).click();
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor(WAIT);
    // Set once: still there at the end only if the page never reloaded.
    await page.evaluate(() => { window.stillTheSamePage = true; });

    // A job enqueued through the API appears on the jobs page without a reload.
    await visit(page, "Jobs", "Jobs");
    const { id } = await call("POST", "/api/v1/jobs", { queue: "dashboard", payload: { report: "weekly" } });
    const link = page.getByRole("link", { name: String(id), exact: true });
    await link.waitFor(WAIT);
    await shot(page, "jobs");

    // Cancel it from its page; its state changes in place.
    await link.click();
    await page.getByRole("heading", { level: 1, name: `Job ${id}` }).waitFor(WAIT);
    await page.getByText('"report": "weekly"').waitFor(WAIT);
    await page.getByRole("button", { name: "Cancel" }).click();
    await page.locator("dd .state", { hasText: "canceled" }).waitFor(WAIT);
    expect((await call("GET", `/api/v1/jobs/${id}`)).state === "canceled", "the job is canceled in the backend");
    await shot(page, "job");

    // Disable a master with a reason, then enable it.
    await visit(page, "Masters", "Masters");
    await page.getByRole("cell", { name: master, exact: true }).waitFor(WAIT);
    await page.getByLabel(`Reason to disable ${master}`).fill("maintenance window");
    await page.getByRole("button", { name: "Disable" }).click();
    await page.getByRole("button", { name: `Enable master ${master}` }).waitFor(WAIT);
    const disabled = (await call("GET", "/api/v1/masters")).find((m) => m.lockName === master);
    expect(disabled && disabled.disabled && disabled.disabledReason === "maintenance window",
      `the master is disabled with its reason: ${JSON.stringify(disabled)}`);
    await shot(page, "masters");
    await page.getByRole("button", { name: `Enable master ${master}` }).click();
    await page.getByLabel(`Reason to disable ${master}`).waitFor(WAIT);
    const enabled = (await call("GET", "/api/v1/masters")).find((m) => m.lockName === master);
    expect(enabled && !enabled.disabled, `the master is enabled again: ${JSON.stringify(enabled)}`);

    // Pause the queue.
    await visit(page, "Queues", "Queues");
    await page.getByRole("button", { name: "Pause queue dashboard" }).click();
    await page.getByRole("button", { name: "Resume queue dashboard" }).waitFor(WAIT);
    expect((await call("GET", "/api/v1/queues/paused")).includes("dashboard"), "the queue is paused in the backend");
    await shot(page, "queues");

    // A task run on the server's host, and the end of its log.
    await visit(page, "Locks", "Locks and tasks");
    await page.getByRole("region", { name: "Held locks" }).getByRole("cell", { name: "quarterly close", exact: true }).waitFor(WAIT);
    const line = page.getByRole("region", { name: "Waiting tasks" });
    await line.getByRole("cell", { name: "monthly report", exact: true }).waitFor(WAIT);
    await line.getByRole("cell", { name: "task-runner-2", exact: true }).waitFor(WAIT);
    await shot(page, "locks");
    await page.getByRole("region", { name: "Tasks" }).getByRole("link").first().click();
    await page.getByLabel("Task log").filter({ hasText: "hello from the task" }).waitFor(WAIT);
    await page.getByText("weekly report", { exact: true }).waitFor(WAIT);
    await shot(page, "task");

    // Every other page shows its data.
    for (const [section, heading] of [["Workers", "Workers"], ["Claims", "Claims"],
      ["Overview", "Overview"]]) {
      await visit(page, section, heading);
      await shot(page, section.toLowerCase());
    }
    expect(await page.evaluate(() => window.stillTheSamePage === true), "the page never reloaded");

    // Readable at a phone's width (nothing wider than the screen), and usable from the
    // keyboard: on a fresh page the first Tab stop is the skip link, then the navigation.
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 } });
    phone.on("pageerror", (error) => errors.push(error.message));
    await phone.addInitScript((t) => sessionStorage.setItem("baton-token", t), token);
    await phone.goto(`${url}/#/queues`);
    await phone.getByRole("status").filter({ hasText: "Updated" }).waitFor(WAIT);
    await phone.keyboard.press("Tab");
    expect(await phone.evaluate(() => document.activeElement.textContent) === "Skip to content",
      "the first Tab stop is the skip link");
    await phone.keyboard.press("Tab");
    expect(await phone.evaluate(() => document.activeElement.textContent) === "Overview",
      "the next Tab stop is the navigation");
    expect(await phone.evaluate(() => document.body.scrollWidth <= window.innerWidth),
      "the page fits a phone's width");
    await shot(phone, "queues-phone");
    expect(errors.length === 0, `the page raised errors: ${errors.join("; ")}`);
  } catch (error) {
    // What the page showed when the step failed, and what it said.
    const page = browser.contexts()[0]?.pages()[0];
    if (page) {
      await shot(page, "failure").catch(() => {});
      const status = await page.getByRole("status").textContent().catch(() => "?");
      error.message += ` (status line: ${status})`;
    }
    throw error;
  } finally {
    await browser.close();
  }
  console.log("dashboard: every step passed");
}

/** Prints, per page, the milliseconds from navigation to its data on screen (median of 5). */
async function measure() {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.addInitScript((t) => sessionStorage.setItem("baton-token", t), token);
    for (const [path, heading] of [["#/", "Overview"], ["#/queues", "Queues"], ["#/jobs", "Jobs"],
      ["#/jobs?state=failed", "Jobs"], ["#/workers", "Workers"], ["#/locks", "Locks and tasks"],
      ["#/masters", "Masters"], ["#/claims", "Claims"]]) {
      const runs = [];
      for (let i = 0; i < 5; i++) {
        await page.goto("about:blank");
        const started = Date.now();
        await page.goto(`${url}/${path}`);
        await page.getByRole("heading", { level: 1, name: heading }).waitFor(WAIT);
        await page.getByRole("status").filter({ hasText: "Updated" }).waitFor(WAIT);
        runs.push(Date.now() - started);
      }
      runs.sort((a, b) => a - b);
      console.log(JSON.stringify({ page: path, median_ms: runs[2], runs_ms: runs }));
    }
  } finally {
    await browser.close();
  }
}

/** Enqueues `count` jobs over three queues through the batch API. */
async function seed(count) {
  const queues = ["emails", "reports", "thumbnails"];
  const started = Date.now();
  for (let first = 0; first < count; first += 1000) {
    const jobs = [];
    for (let n = first; n < Math.min(count, first + 1000); n++) {
      jobs.push({ queue: queues[n % queues.length], payload: { n } });
    }
    await call("POST", "/api/v1/jobs/batch", { jobs });
  }
  console.log(`seeded ${count} jobs in ${(Date.now() - started) / 1000}s`);
}

const mode = process.argv[2];
try {
  if (mode === "check") await check();
  else if (mode === "measure") await measure();
  else if (mode === "seed" && Number(process.argv[3]) > 0) await seed(Number(process.argv[3]));
  else {
    console.error("usage: node dashboard.mjs check|measure|seed N");
    process.exit(2);
  }
} catch (error) {
  console.error(`dashboard: FAILED: ${error.stack || error}`);
  process.exit(1);
}
