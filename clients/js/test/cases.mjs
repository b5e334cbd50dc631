// The protocol cases pushhub.js must pass, written once and run twice: in
// Node (node/protocol.test.mjs) and in headless Chromium
// (browser/browser.test.mjs). Each case starts its own real hub.
//
// A case drives a client through a driver: `driver.client(url, options,
// getToken)` makes a Pushhub where the driver runs it (here, or in a page)
// and returns a handle whose `call(method, ...args)` calls the client,
// `subscribe(ch)` subscribes with a handler that records "channel" events,
// and `events()` returns everything the client emitted, in order, as
// {event, args}. Options and arguments must be plain JSON.

import assert from "node:assert/strict";
import { createConnection } from "node:net";
import { startHub, mintToken, newSecret, until } from "./hub.mjs";
import { startProxy } from "./proxy.mjs";

const FAST = { minDelay: 50, maxDelay: 200 };

/** Resolves with the first event matching `pred` (index `from` on). */
export async function waitEvent(c, pred, what, ms = 5000) {
  return until(async () => (await c.events()).find(pred), ms, what);
}

function of(events, name) {
  return events.filter((e) => e.event === name);
}

function states(events) {
  return of(events, "state").map((e) => e.args[0]);
}

function connectedCount(c) {
  return async () => states(await c.events()).filter((s) => s === "connected").length;
}

async function waitConnected(c, n = 1, ms = 5000) {
  const count = connectedCount(c);
  await until(async () => (await count()) >= n, ms, `connection #${n}`);
}

function messages(events) {
  return of(events, "message").map((e) => e.args[0]);
}

function channelMessages(events, ch) {
  return of(events, "channel")
    .filter((e) => e.args[1].ch === ch)
    .map((e) => e.args[0]);
}

/** A backend that listens for clients' messages on the text port. */
function listen(hub) {
  const i = hub.text.lastIndexOf(":");
  const socket = createConnection({ host: hub.text.slice(0, i), port: Number(hub.text.slice(i + 1)) });
  socket.setEncoding("utf8");
  const lines = [];
  let buffer = "";
  socket.on("data", (chunk) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      lines.push(JSON.parse(buffer.slice(0, nl)));
      buffer = buffer.slice(nl + 1);
    }
  });
  socket.write('{"cmd":"listen","events":["message"]}\n');
  return { lines, close: () => socket.destroy() };
}

async function withHub(options, body) {
  const hub = await startHub(options);
  try {
    await body(hub);
  } finally {
    await hub.stop();
    hub.cleanup();
  }
}

export const cases = [
  {
    name: "connects as a uid, gets pushes, the original form and broadcasts, acks pushes",
    async run(driver) {
      await withHub({ args: ["--allow-plain-uid"] }, async (hub) => {
        const c = await driver.client(hub.url, { uid: "alice", ...FAST });
        await c.call("connect");
        await waitConnected(c);
        const connected = of(await c.events(), "state").find((e) => e.args[0] === "connected");
        assert.equal(connected.args[1].uid, "alice");
        assert.match(connected.args[1].conn, /^\d+$/);

        assert.deepEqual(await hub.command({ cmd: "push", uid: "alice", data: "hello" }), { ok: true, delivered: 1 });
        assert.equal(await hub.command({ uid: "alice", percent: "88%" }), "ok");
        await hub.command({ cmd: "broadcast", data: { notice: "maintenance" } });
        await until(async () => messages(await c.events()).length === 3, 5000, "three messages");
        const got = of(await c.events(), "message");
        assert.equal(got[0].args[0], "hello");
        assert.match(got[0].args[1].pos, /^[0-9a-f]+:1$/);
        assert.deepEqual(got[1].args[0], { uid: "alice", percent: "88%" });
        assert.deepEqual(got[2].args[0], { notice: "maintenance" });
        assert.equal(got[2].args[1].all, true);

        // Automatic acks: a backend waiting for one learns the push arrived.
        const reply = await hub.command({ cmd: "push", uid: "alice", data: "shipped", ack_timeout: "3s" });
        assert.deepEqual(reply, { ok: true, delivered: 1, acked: true });
        await c.call("close");
        assert.equal(states(await c.events()).at(-1), "closed");
      });
    },
  },
  {
    name: "channels: subscribe, publish both ways, unsubscribe, a refused grant",
    async run(driver) {
      const secret = newSecret();
      await withHub({ secret, args: ["--public-channel", "news"] }, async (hub) => {
        const token = mintToken("bob", secret, 3600, { channels: ["room:*"], publish: ["room:1"] });
        const c = await driver.client(hub.url, FAST, () => token);
        const sub = c.subscribe("room:1");
        await c.call("connect");
        assert.deepEqual([(await sub).ok, (await sub).ch], [true, "room:1"]);
        assert.match((await sub).pos, /^[0-9a-f]+:0$/);
        assert.equal((await c.subscribe("news")).ok, true);

        const refused = await c.subscribe("admin");
        assert.equal(refused.ok, false);
        assert.equal(refused.code, 403);
        await waitEvent(c, (e) => e.event === "error" && e.args[0].ch === "admin", "the 403 error event");

        assert.deepEqual(await hub.command({ cmd: "publish", ch: "room:1", data: { text: "hi" } }), { ok: true, delivered: 1 });
        const pubbed = await c.call("publish", "room:1", { text: "from bob" });
        assert.equal(pubbed.ok, true);
        assert.equal(pubbed.delivered, 1);
        const denied = await c.call("publish", "news", "nope");
        assert.equal(denied.ok, false);
        assert.equal(denied.code, 403);
        await until(async () => channelMessages(await c.events(), "room:1").length === 2, 5000, "two publications");
        assert.deepEqual(channelMessages(await c.events(), "room:1"), [{ text: "hi" }, { text: "from bob" }]);

        assert.equal((await c.call("unsubscribe", "room:1")).ok, true);
        assert.deepEqual(await hub.command({ cmd: "publish", ch: "room:1", data: "gone" }), { ok: true, delivered: 0 });
        await c.call("close");
      });
    },
  },
  {
    name: "a hub restart: reconnects, recovered false for every stream, then live",
    async run(driver) {
      await withHub({ args: ["--allow-plain-uid", "--public-channel", "news"] }, async (hub) => {
        const c = await driver.client(hub.url, { uid: "carol", ...FAST });
        await c.call("connect");
        await c.subscribe("news");
        await hub.command({ cmd: "push", uid: "carol", data: "before" });
        await until(async () => messages(await c.events()).length === 1, 5000, "the first push");

        await hub.restart();
        await waitConnected(c, 2);
        // The channel's answer follows the welcome.
        await until(async () => of(await c.events(), "recovered").length >= 3, 5000, "three recovered events");
        const recovered = of(await c.events(), "recovered").map((e) => e.args[0]);
        assert.deepEqual(
          recovered.map((r) => [r.stream, r.ch ?? null, r.recovered]).sort(),
          [["all", null, false], ["ch", "news", false], ["uid", null, false]],
        );
        // The subscription came back by itself.
        await until(async () => (await hub.command({ cmd: "members", ch: "news" })).connections === 1, 5000, "news resubscribed");
        await hub.command({ cmd: "push", uid: "carol", data: "after" });
        await hub.command({ cmd: "publish", ch: "news", data: "live" });
        await until(async () => messages(await c.events()).length === 2, 5000, "the push after the restart");
        await until(async () => channelMessages(await c.events(), "news").length === 1, 5000, "the publication");
        assert.deepEqual(messages(await c.events()), ["before", "after"]);
        await c.call("close");
      });
    },
  },
  {
    name: "a dropped connection: what was missed is recovered, in order, none twice",
    async run(driver) {
      await withHub({ args: ["--allow-plain-uid", "--public-channel", "news"] }, async (hub) => {
        const proxy = await startProxy(hub.ws);
        try {
          const c = await driver.client(proxy.url, { uid: "dave", ...FAST });
          await c.call("connect");
          await c.subscribe("news");
          await hub.command({ cmd: "push", uid: "dave", data: "m1" });
          await hub.command({ cmd: "publish", ch: "news", data: "n1" });
          await until(async () => channelMessages(await c.events(), "news").length === 1, 5000, "n1");

          proxy.refusing = true;
          proxy.dropAll();
          await waitEvent(c, (e) => e.event === "state" && e.args[0] === "disconnected", "the disconnect");
          await until(async () => (await hub.command({ cmd: "stats" })).connections === 0, 5000, "the hub to see it");
          for (const m of ["m2", "m3"]) await hub.command({ cmd: "push", uid: "dave", data: m });
          await hub.command({ cmd: "publish", ch: "news", data: "n2" });
          await hub.command({ cmd: "broadcast", data: "b1" });
          proxy.refusing = false;

          await waitConnected(c, 2);
          await until(async () => messages(await c.events()).length >= 4, 5000, "the recovered messages");
          await until(async () => channelMessages(await c.events(), "news").length >= 2, 5000, "n2");
          await hub.command({ cmd: "push", uid: "dave", data: "m4" });
          await until(async () => messages(await c.events()).length >= 5, 5000, "m4");
          assert.deepEqual(messages(await c.events()), ["m1", "m2", "m3", "b1", "m4"]);
          assert.deepEqual(channelMessages(await c.events(), "news"), ["n1", "n2"]);
          const recovered = of(await c.events(), "recovered").map((e) => e.args[0]);
          assert.ok(recovered.length === 3 && recovered.every((r) => r.recovered === true), JSON.stringify(recovered));
          await c.call("close");
        } finally {
          await proxy.close();
        }
      });
    },
  },
  {
    name: "tokens: fetched again once expired, and after a 4001; a refused fresh one is final",
    async run(driver) {
      const secret = newSecret();
      await withHub({ secret }, async (hub) => {
        const proxy = await startProxy(hub.ws);
        try {
          // An expiring token is replaced before the next connect.
          const issued = [];
          const c = await driver.client(proxy.url, { ...FAST, tokenMargin: 0 }, () => {
            issued.push(mintToken("erin", secret, 2));
            return issued.at(-1);
          });
          await c.call("connect");
          await waitConnected(c);
          const exp = JSON.parse(Buffer.from(issued[0].split(".")[1], "base64url")).exp;
          await until(() => Date.now() > exp * 1000 + 100, 5000, "the token to expire");
          proxy.dropAll();
          await waitConnected(c, 2);
          assert.equal(issued.length, 2);
          await c.call("close");

          // A stale token is refused (4001) and a fresh one fetched at once.
          let calls = 0;
          const d = await driver.client(proxy.url, FAST, () =>
            ++calls === 1 ? mintToken("frank", "another secret") : mintToken("frank", secret),
          );
          await d.call("connect");
          await waitConnected(d);
          assert.equal(calls, 2);
          const refused = of(await d.events(), "state").find((e) => e.args[1].code === 4001);
          assert.match(refused.args[1].reason, /bad token signature/);
          await d.call("close");

          // A fresh token refused too: the backend will not vouch for it.
          let tries = 0;
          const e = await driver.client(proxy.url, FAST, () => (tries++, mintToken("gina", "another secret")));
          await e.call("connect");
          const closed = await waitEvent(e, (ev) => ev.event === "state" && ev.args[0] === "closed", "the final close");
          assert.equal(closed.args[1].code, 4001);
          assert.equal(closed.args[1].final, true);
          const accepted = proxy.accepted;
          await new Promise((r) => setTimeout(r, 4 * FAST.maxDelay));
          assert.equal(proxy.accepted, accepted, "no reconnect after a final close");
          assert.equal(tries, 2);
        } finally {
          await proxy.close();
        }
      });
    },
  },
  {
    name: "a kick closes for good: no reconnect",
    async run(driver) {
      await withHub({ args: ["--allow-plain-uid"] }, async (hub) => {
        const c = await driver.client(hub.url, { uid: "hal", ...FAST });
        await c.call("connect");
        await waitConnected(c);
        assert.deepEqual(await hub.command({ cmd: "kick", uid: "hal" }), { ok: true, kicked: 1 });
        const closed = await waitEvent(c, (e) => e.event === "state" && e.args[0] === "closed", "the close");
        assert.deepEqual([closed.args[1].code, closed.args[1].final], [4000, true]);
        await new Promise((r) => setTimeout(r, 4 * FAST.maxDelay));
        assert.equal((await hub.command({ cmd: "online", uid: "hal" })).online, false);
        assert.equal(await c.call("state"), "closed");
      });
    },
  },
  {
    name: "send reaches a listening backend; manual acks; a dead link found by ping",
    async run(driver) {
      await withHub({ args: ["--allow-plain-uid"] }, async (hub) => {
        const listener = listen(hub);
        const proxy = await startProxy(hub.ws);
        try {
          const c = await driver.client(proxy.url, {
            uid: "ivy",
            ...FAST,
            manualAck: true,
            pingInterval: 300,
            pongTimeout: 300,
          });
          await c.call("connect");
          await waitConnected(c);
          await until(() => listener.lines.length === 1, 5000, "the listen reply");
          assert.deepEqual(await c.call("send", { hello: 1 }), { ok: true });
          await until(() => listener.lines.length === 2, 5000, "the message event");
          assert.deepEqual(listener.lines[1].d, { hello: 1 });
          assert.equal(listener.lines[1].uid, "ivy");

          // Unacked, the backend's wait ends without one; acked, it learns.
          const unacked = await hub.command({ cmd: "push", uid: "ivy", data: "p1", ack_timeout: "300ms" });
          assert.equal(unacked.acked, false);
          const waiting = hub.command({ cmd: "push", uid: "ivy", data: "p2", ack_timeout: "5s" });
          const p2 = await waitEvent(c, (e) => e.event === "message" && e.args[0] === "p2", "p2");
          assert.equal(await c.call("ack", p2.args[1]), true);
          assert.equal((await waiting).acked, true);

          proxy.freezeAll();
          await waitEvent(c, (e) => e.event === "error" && /ping/.test(e.args[0].reason), "the ping timeout", 5000);
          await waitConnected(c, 2);
          await c.call("close");
        } finally {
          listener.close();
          await proxy.close();
        }
      });
    },
  },
];
