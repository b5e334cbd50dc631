// pushhub.js in headless Chromium against a real hub: the shared protocol
// cases on the browser's own WebSocket, and what only a page has (the
// network going away and coming back).

import { test, before, after } from "node:test";
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import assert from "node:assert/strict";
import { cases, waitEvent } from "../cases.mjs";
import { startHub, until } from "../hub.mjs";
import { browserDriver, startBrowser, startServer } from "./driver.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function withPage(body) {
  const driver = await browserDriver(browser.context, server.url);
  try {
    await body(driver);
    assert.deepEqual(driver.errors.map(String), [], "nothing thrown at the page");
  } finally {
    await driver.closeAll();
  }
}

for (const c of cases) {
  test(`chromium: ${c.name}`, { timeout: 30000 }, () => withPage((driver) => c.run(driver)));
}

test("chromium: offline pauses reconnecting; back online it reconnects at once", { timeout: 30000 }, async () => {
  const hub = await startHub({ args: ["--allow-plain-uid"] });
  try {
    await withPage(async (driver) => {
      // A backoff long enough that only the online event explains a quick return.
      const c = await driver.client(hub.url, { uid: "olga", minDelay: 20000, maxDelay: 20000 });
      await c.call("connect");
      await waitEvent(c, (e) => e.event === "state" && e.args[0] === "connected", "connected");
      await browser.context.setOffline(true);
      const paused = await waitEvent(c, (e) => e.event === "state" && e.args[1]?.paused === true, "the pause");
      assert.equal(paused.args[0], "disconnected");
      await until(async () => (await hub.command({ cmd: "online", uid: "olga" })).online === false, 5000, "the hub to see it go");
      const wentOnline = Date.now();
      await browser.context.setOffline(false);
      await until(
        async () => (await c.events()).filter((e) => e.event === "state" && e.args[0] === "connected").length === 2,
        5000,
        "the reconnect",
      );
      assert.ok(Date.now() - wentOnline < 5000);
      assert.equal((await hub.command({ cmd: "online", uid: "olga" })).online, true);
    });
  } finally {
    await browser.context.setOffline(false);
    await hub.stop();
    hub.cleanup();
  }
});

const examples = resolve(dirname(fileURLToPath(import.meta.url)), "../../../../examples");

/** examples/web.html: connect as uid1 in `mode`, push, and see it logged. */
async function webPage(pageUrl, mode, expected) {
  const hub = await startHub({ args: ["--allow-plain-uid"] });
  const page = await browser.context.newPage();
  try {
    await page.goto(pageUrl);
    await page.waitForFunction(() => window.pageReady === true);
    assert.equal(await page.inputValue("#mode"), mode);
    await page.fill("#url", hub.url);
    await page.click("#connect");
    await until(async () => (await hub.command({ cmd: "online", uid: "uid1" })).online, 5000, "uid1 online");
    assert.equal(await hub.command({ uid: "uid1", percent: "88%" }), "ok");
    await page.waitForFunction((text) => document.getElementById("log").textContent.includes(text), expected, { timeout: 5000 });
  } finally {
    await page.close();
    await hub.stop();
    hub.cleanup();
  }
}

test("examples/web.html as a local file: the original's raw protocol", { timeout: 30000 }, () =>
  webPage(pathToFileURL(resolve(examples, "web.html")).href, "raw", 'message: {"uid":"uid1","percent":"88%"}'),
);

test("examples/web.html served by make web: on pushhub.js", { timeout: 30000 }, async () => {
  const serve = spawn(process.execPath, [resolve(examples, "serve.mjs"), "0"], { stdio: ["ignore", "pipe", "inherit"] });
  try {
    const pageUrl = await new Promise((ok, fail) => {
      serve.stdout.setEncoding("utf8");
      serve.stdout.on("data", (line) => ok(line.split(" ")[0]));
      serve.on("exit", (code) => fail(new Error(`serve.mjs exited with ${code}`)));
    });
    await webPage(pageUrl, "pushhub", 'message: {"uid":"uid1","percent":"88%"} {"pos":');
  } finally {
    serve.kill();
  }
});
