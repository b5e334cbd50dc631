// The real hub for pushhub.js's tests: started on free loopback ports,
// driven through its text port, stopped by its pid. Shared by the Node and
// the browser tests.
//
// PUSHHUB_BIN names the binary (default: the repository's debug build).

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.PUSHHUB_BIN ?? resolve(here, "../../../target/debug/pushhub");

/** A fresh 32-byte secret, as the README makes one. */
export function newSecret() {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("base64");
}

/** An HS256 token as the hub's `pushhub token` mints it. */
export function mintToken(uid, secret, ttlSeconds = 3600, claims = {}) {
  const b64 = (buf) => Buffer.from(buf).toString("base64url");
  const header = b64('{"alg":"HS256","typ":"JWT"}');
  const body = b64(JSON.stringify({ sub: uid, exp: Math.floor(Date.now() / 1000) + ttlSeconds, ...claims }));
  const mac = createHmac("sha256", secret.trim()).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${mac}`;
}

/**
 * Starts a hub. `args` are extra flags; `secret` turns token mode on (through
 * a secret file, never a flag's value). The hub's addresses are kept, so
 * restart() brings it back on the same ports.
 */
export async function startHub({ args = [], secret } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "pushhub-js-"));
  const flags = [...args];
  if (secret != null) {
    writeFileSync(join(dir, "secret"), secret, { mode: 0o600 });
    flags.push("--secret-file", join(dir, "secret"));
  }
  const hub = {
    ws: null,
    text: null,
    url: null,
    pid: null,
    proc: null,
    log: "",
    lines: null,
    async stop(signal = "SIGTERM") {
      await stopProcess(hub, signal);
    },
    async restart() {
      await stopProcess(hub, "SIGTERM");
      await launch(hub, flags, hub.ws, hub.text);
    },
    async kill() {
      await stopProcess(hub, "SIGKILL");
    },
    /** One text-port request; resolves with its reply, parsed. */
    command(request) {
      return hub.lines.request(JSON.stringify(request));
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await launch(hub, flags, "127.0.0.1:0", "127.0.0.1:0");
  return hub;
}

function launch(hub, flags, ws, text) {
  const proc = spawn(BIN, ["--ws", ws, "--text", text, "--metrics", "off", ...flags], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  hub.proc = proc;
  hub.pid = proc.pid;
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`the hub did not start within 10 s:\n${hub.log}`)), 10000);
    proc.on("error", (e) => {
      clearTimeout(timer);
      fail(new Error(`cannot start ${BIN}: ${e.message} (build it with cargo build, or set PUSHHUB_BIN)`));
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`the hub exited with ${code} before it listened:\n${hub.log}`));
    });
    proc.stderr.setEncoding("utf8");
    // Only this process's own lines: after a restart, the old process's
    // "listening" line must not be taken for the new one's.
    let own = "";
    let listening = false;
    proc.stderr.on("data", (chunk) => {
      hub.log += chunk;
      if (listening) return;
      own += chunk;
      const m = own.match(/WebSocket on ws:\/\/(\S+), text port on ([^\s,]+)/);
      if (m) {
        listening = true;
        clearTimeout(timer);
        hub.ws = m[1];
        hub.text = m[2];
        hub.url = `ws://${m[1]}/`;
        hub.lines = new LineClient(m[2]);
        ok(hub);
      }
    });
  });
}

async function stopProcess(hub, signal) {
  const proc = hub.proc;
  hub.lines?.close();
  hub.lines = null;
  hub.url = null;
  if (!proc || proc.exitCode != null || proc.signalCode != null) return;
  const exited = new Promise((ok) => proc.once("exit", ok));
  proc.kill(signal);
  const timer = setTimeout(() => proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

/** One persistent text-port connection: requests pipelined, replies in order. */
class LineClient {
  constructor(addr) {
    const i = addr.lastIndexOf(":");
    this.socket = createConnection({ host: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
    this.socket.setEncoding("utf8");
    this.waiting = [];
    this.buffer = "";
    this.socket.on("data", (chunk) => {
      this.buffer += chunk;
      let nl;
      while ((nl = this.buffer.indexOf("\n")) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const next = this.waiting.shift();
        if (next) next.ok(line.startsWith("{") ? JSON.parse(line) : line);
      }
    });
    this.socket.on("error", (e) => this.failAll((this.dead = e)));
    this.socket.on("close", () => this.failAll((this.dead ??= new Error("the text port closed"))));
  }

  request(line) {
    return new Promise((ok, fail) => {
      if (this.dead) return fail(this.dead);
      this.waiting.push({ ok, fail });
      this.socket.write(line + "\n");
    });
  }

  failAll(e) {
    for (const w of this.waiting.splice(0)) w.fail(e);
  }

  close() {
    this.socket.destroy();
  }
}

/** Resolves when `predicate()` holds, checked every 10 ms; fails after `ms`. */
export async function until(predicate, ms = 5000, what = "a condition") {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
