// pushhub.js in Node against a real hub: the shared protocol cases, on the
// runtime's own WebSocket and on one passed in (the ws package).

import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocketFromWs from "ws";
import { cases } from "../cases.mjs";
import { nodeDriver } from "./driver.mjs";
import { startHub } from "../hub.mjs";
import { Pushhub } from "../../pushhub.js";

const runtimes = [["ws package", WebSocketFromWs]];
if (typeof globalThis.WebSocket === "function") runtimes.unshift(["global WebSocket", undefined]);

for (const [runtime, WebSocket] of runtimes) {
  for (const c of cases) {
    test(`${runtime}: ${c.name}`, { timeout: 30000 }, async () => {
      const driver = nodeDriver(WebSocket);
      try {
        await c.run(driver);
      } finally {
        driver.closeAll();
      }
    });
  }
}

test("without a WebSocket implementation, the constructor says what to do", () => {
  const saved = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    assert.throws(() => new Pushhub("ws://127.0.0.1:1/"), /no WebSocket implementation/);
  } finally {
    if (saved) globalThis.WebSocket = saved;
  }
});

test("network trouble never throws: a refused address only changes state", { timeout: 10000 }, async () => {
  // A port nobody listens on: the hub, stopped.
  const hub = await startHub({ args: ["--allow-plain-uid"] });
  const url = hub.url;
  await hub.stop();
  hub.cleanup();
  const client = new Pushhub(url, { uid: "u", minDelay: 20, maxDelay: 40, WebSocket: WebSocketFromWs });
  const seen = [];
  client.on("state", (state, info) => seen.push([state, info.delay]));
  client.connect();
  await new Promise((r) => setTimeout(r, 300));
  client.close();
  const retries = seen.filter(([s]) => s === "disconnected");
  assert.ok(retries.length >= 3, JSON.stringify(seen));
  assert.ok(retries.every(([, delay]) => delay >= 0 && delay < 40));
  assert.equal(client.state, "closed");
});
