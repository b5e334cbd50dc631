// A reconnect storm: 2,000 clients of one hub, the hub restarted under them.
// With full-jitter backoff they come back spread over the first backoff
// window instead of in one wave; this measures how evenly.
//
// The figures (peak reconnects per 100 ms and the window's spread) are
// printed for the record; the assertions only hold the shape: no 100 ms
// bin takes more than a quarter of the clients, and the middle 90% of
// them spread over at least half the first window.

import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Pushhub } from "../../pushhub.js";
import { startHub, until } from "../hub.mjs";

const CLIENTS = 2000;
const MIN_DELAY = 1000;
const MAX_DELAY = 8000;
const BIN_MS = 100;

test(`a reconnect storm: ${CLIENTS} clients after a hub restart spread over the backoff window`, { timeout: 90000 }, async () => {
  const hub = await startHub({ args: ["--allow-plain-uid"] });
  const clients = [];
  const back = new Array(CLIENTS).fill(null);
  let restartedAt = null;
  try {
    for (let i = 0; i < CLIENTS; i++) {
      const c = new Pushhub(hub.url, { uid: `storm${i}`, minDelay: MIN_DELAY, maxDelay: MAX_DELAY, pingInterval: 0, WebSocket });
      c.on("state", (state) => {
        if (state === "connected" && restartedAt != null && back[i] == null) back[i] = Date.now() - restartedAt;
      });
      clients.push(c);
      c.connect();
      // A few at a time, so that the first connects do not overflow the
      // listen backlog (that would be a storm of its own, not this one).
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 20));
    }
    await until(() => clients.every((c) => c.state === "connected"), 30000, `all ${CLIENTS} connected`);
    assert.equal((await hub.command({ cmd: "stats" })).connections, CLIENTS);

    restartedAt = Date.now();
    await hub.restart();
    const downMs = Date.now() - restartedAt;
    await until(() => back.every((t) => t != null), 30000, `all ${CLIENTS} back`);
    assert.equal((await hub.command({ cmd: "stats" })).connections, CLIENTS);

    const times = back.slice().sort((a, b) => a - b);
    const bins = new Map();
    for (const t of times) bins.set(Math.floor(t / BIN_MS), (bins.get(Math.floor(t / BIN_MS)) ?? 0) + 1);
    const peak = Math.max(...bins.values());
    const at = (q) => times[Math.min(times.length - 1, Math.floor(q * times.length))];
    const spread = at(0.95) - at(0.05);
    console.log(
      `storm: ${CLIENTS} clients, hub down ${downMs} ms; back after ${times[0]}..${times.at(-1)} ms ` +
        `(p5 ${at(0.05)}, p50 ${at(0.5)}, p95 ${at(0.95)}); peak ${peak} per ${BIN_MS} ms ` +
        `(${peak * (1000 / BIN_MS)}/s, ${((100 * peak) / CLIENTS).toFixed(1)}% of the clients); ` +
        `mean ${((CLIENTS / (times.at(-1) - times[0] + 1)) * 1000).toFixed(0)}/s`,
    );
    assert.ok(peak <= CLIENTS / 4, `peak ${peak} per ${BIN_MS} ms: the clients came back in a wave`);
    assert.ok(spread >= MIN_DELAY / 2, `the middle 90% came back within ${spread} ms`);
  } finally {
    for (const c of clients) c.close();
    await hub.stop();
    hub.cleanup();
  }
});
