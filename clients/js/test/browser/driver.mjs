// The browser driver of the shared cases (../cases.mjs): each client is a
// Pushhub in a page of headless Chromium, on the browser's own WebSocket;
// the test reaches it through page.evaluate, and getToken calls back here.

import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const FILES = {
  "/": ["text/html", resolve(here, "page.html")],
  "/pushhub.js": ["text/javascript", resolve(here, "../../pushhub.js")],
};

export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Serves the page and pushhub.js on a free loopback port. */
export async function startServer() {
  const server = createServer((req, res) => {
    const file = FILES[new URL(req.url, "http://x").pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(readFileSync(file[1]));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}/`, close: () => new Promise((ok) => server.close(ok)) };
}

/** Headless Chromium with a throwaway profile and nothing that phones home. */
export async function startBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "pushhub-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-default-apps",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function browserDriver(context, pageUrl) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.ready === true);
  return {
    page,
    errors,
    async client(url, options, getToken) {
      const id = await page.evaluate(([u, o, t]) => window.makeClient(u, o, t), [url, options, !!getToken]);
      if (getToken) await page.exposeFunction(`getToken${id}`, getToken);
      return {
        call: (method, ...args) =>
          page.evaluate(
            ([i, m, a]) => (m === "state" ? window.clients[i].state : window.clients[i][m](...a)),
            [id, method, args],
          ),
        subscribe: (ch) =>
          page.evaluate(
            ([i, c]) => window.clients[i].subscribe(c, (data, meta) => window.events[i].push({ event: "channel", args: [data, meta] })),
            [id, ch],
          ),
        events: () => page.evaluate((i) => window.events[i], id),
      };
    },
    async closeAll() {
      await page.evaluate(() => window.clients.forEach((c) => c.close())).catch(() => {});
      await page.close();
    },
  };
}
