// pushhub.js in headless Chromium against a real hub: the shared protocol
// cases on the browser's own WebSocket, and what only a page has (the
// network going away and coming back).

import { test, before, after } from "node:test";
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
