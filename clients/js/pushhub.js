// pushhub.js: the client of pushhub's v1 protocol, for pages and for Node.
//
// A small state machine (connecting → connected → disconnected → connecting
// …, or closed for good) around one WebSocket at a time. It keeps where each
// stream stands (the uid's pushes, the broadcasts, each channel), so that a
// reconnect asks the hub for what was missed and every message reaches the
// page once, in order, or the page is told (`recovered`) that it cannot.
// Network trouble never throws: it shows as states and "error" events.
//
// No dependencies; an ES module for browsers and Node ≥ 20 (Node 22's global
// WebSocket, or any WHATWG-compatible one passed as `WebSocket`).

const PROTOCOL = "pushhub.v1";

// Close codes after which reconnecting cannot help: the backend kicked this
// client (4000), or the hub took what this client sent for a bug of its own
// (4004, 1002, 1003, 1007). 4001 is decided by what was sent (see #closed).
const FINAL_CODES = new Set([4000, 4004, 1002, 1003, 1007]);

const DEFAULTS = {
  minDelay: 1000,
  maxDelay: 30000,
  connectTimeout: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  tokenMargin: 10000,
  manualAck: false,
  pauseWhenHidden: false,
  pauseWhenOffline: true,
};

export class Pushhub {
  /**
   * @param {string} url ws:// or wss:// address of the hub
   * @param {object} [options] see pushhub.d.ts
   */
  constructor(url, options = {}) {
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError(
        "pushhub: no WebSocket implementation; pass one as options.WebSocket " +
          "(Node 20: run with --experimental-websocket, or use the ws package)",
      );
    }
    if (options.getToken != null && typeof options.getToken !== "function") {
      throw new TypeError("pushhub: getToken must be a function");
    }
    this.url = url;
    this.options = { ...DEFAULTS, ...options, WebSocket: WS };
    this.state = "disconnected";
    this.uid = null;
    this.conn = null;

    this._listeners = new Map();
    this._ws = null;
    this._attempt = 0;
    this._timers = { reconnect: null, connect: null, ping: null, pong: null, ack: null };
    this._token = null;
    // Set when a 4001 made us fetch a new token: a second 4001 is final.
    this._refetched = false;
    this._nextId = 1;
    this._pending = new Map();
    // Where each stream stands: {epoch, offset} of the last message seen.
    this._pos = { uid: null, all: null, chs: new Map() };
    // The channels the hub joined at auth (the token's subs): they are
    // recovered by the auth's since, not by a sub.
    this._authSubs = new Set();
    // Channels subscribed through subscribe(): ch → {handler, waiters, live}.
    this._subs = new Map();
    this._unacked = null;
    this._paused = { hidden: false, offline: false };
    this._lastReceived = 0;
    this._watch();
  }

  // ---- events ----------------------------------------------------------

  /** Adds a listener; returns a function that removes it. */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) this._call(fn, args);
  }

  // A page's handler that throws must not break the connection's bookkeeping:
  // the exception is reported where uncaught exceptions are, after this turn.
  _call(fn, args) {
    try {
      fn(...args);
    } catch (err) {
      if (typeof globalThis.reportError === "function") globalThis.reportError(err);
      else setTimeout(() => { throw err; });
    }
  }

  _setState(state, info = {}) {
    this.state = state;
    this._emit("state", state, info);
  }

  _error(error) {
    this._emit("error", error);
  }

  // ---- connecting ------------------------------------------------------

  /** Starts connecting (again, after close()); does nothing if already on. */
  connect() {
    if (this.state === "connecting" || this.state === "connected") return;
    if (this.state === "closed") this._attempt = 0;
    this._clearTimer("reconnect");
    if (this._isPaused()) {
      this._setState("disconnected", { paused: true });
      return;
    }
    this._open();
  }

  /** Closes for good: no reconnect until connect() is called again. */
  close() {
    this._clearTimer("reconnect");
    this._drop(1000, "closed by the client");
    this._failPending("closed by the client");
    if (this.state !== "closed") this._setState("closed", { code: 1000, reason: "closed by the client", final: true });
  }

  async _open() {
    const attempt = this._attempt;
    this._setState("connecting", { attempt });
    let credential;
    try {
      credential = await this._credential();
    } catch (err) {
      if (this.state !== "connecting" || this._attempt !== attempt) return;
      this._error({ code: 0, reason: "getToken failed: " + (err?.message ?? String(err)), cause: err });
      this._retry({ code: 0, reason: "no token" });
      return;
    }
    // close() or a pause came while getToken was running.
    if (this.state !== "connecting" || this._attempt !== attempt) return;
    let ws;
    try {
      ws = new this.options.WebSocket(this.url, PROTOCOL);
    } catch (err) {
      this._error({ code: 0, reason: "cannot open the WebSocket: " + (err?.message ?? String(err)), cause: err });
      this._retry({ code: 0, reason: "cannot open" });
      return;
    }
    this._ws = ws;
    ws.binaryType = "arraybuffer";
    this._timers.connect = setTimeout(() => {
      this._error({ code: 0, reason: "no welcome within connectTimeout" });
      this._lost({ code: 0, reason: "connect timeout" });
    }, this.options.connectTimeout);
    ws.onopen = () => {
      if (ws !== this._ws) return;
      if (ws.protocol && ws.protocol !== PROTOCOL) {
        this._error({ code: 0, reason: `the hub answered subprotocol "${ws.protocol}", not ${PROTOCOL}` });
      }
      const auth = { op: "auth", ...credential };
      const since = this._sinceForAuth();
      if (since) auth.since = since;
      // An anonymous client sends nothing: the hub welcomes it unasked.
      if (credential.token != null || credential.uid != null) this._write(auth);
    };
    ws.onmessage = (event) => {
      if (ws === this._ws) this._received(event.data);
    };
    ws.onerror = () => {
      // Once open, the close event that follows says more. A socket that
      // never opened is given up at once: some implementations (Node 20's)
      // may not follow a failed connect with a close event.
      if (ws === this._ws && ws.readyState !== 1) this._lost({ code: 1006, reason: "connection failed" });
    };
    ws.onclose = (event) => {
      if (ws === this._ws) this._closed(event.code, event.reason);
    };
  }

  // What proves who this client is: a token (fetched when none is held or
  // the one held expires soon), a plain uid, or nothing (anonymous).
  async _credential() {
    const { getToken, uid } = this.options;
    if (getToken) {
      if (this._token == null || this._expiresSoon(this._token)) {
        this._token = await getToken();
        if (typeof this._token !== "string" || this._token === "") {
          this._token = null;
          throw new Error("getToken returned no token");
        }
      }
      return { token: this._token };
    }
    if (uid != null) return { uid: String(uid) };
    return {};
  }

  _expiresSoon(token) {
    const exp = tokenExpiry(token);
    return exp != null && exp * 1000 - Date.now() <= this.options.tokenMargin;
  }

  _sinceForAuth() {
    const since = {};
    if (this._pos.uid) since.uid = formatPos(this._pos.uid);
    if (this._pos.all) since.all = formatPos(this._pos.all);
    const chs = {};
    for (const ch of this._authSubs) {
      const p = this._pos.chs.get(ch);
      if (p) chs[ch] = formatPos(p);
    }
    if (Object.keys(chs).length) since.chs = chs;
    return Object.keys(since).length ? since : null;
  }

  // ---- frames from the hub ---------------------------------------------

  _received(data) {
    this._lastReceived = Date.now();
    this._clearTimer("pong");
    if (typeof data !== "string") {
      // A backend's binary answer to this one connection (push with conn).
      this._emit("message", data, { binary: true });
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._error({ code: 0, reason: "the hub sent a frame that is not JSON" });
      return;
    }
    switch (frame?.op) {
      case "msg":
        this._message(frame);
        break;
      case "welcome":
        this._welcome(frame);
        break;
      case "subbed":
        this._subbed(frame);
        break;
      case "unsubbed":
        this._unsubbed(frame);
        break;
      case "error":
        this._errorFrame(frame);
        break;
      case "pong":
        break;
      case "pubbed":
      case "sent":
      case "acked":
        this._answer(frame.id, { ok: true, ...withoutOp(frame) });
        break;
      default:
        break; // a newer hub's op: ignored, as the hub ignores unknown fields
    }
  }

  _welcome(frame) {
    this._clearTimer("connect");
    this._attempt = 0;
    this._refetched = false;
    this.uid = frame.uid ?? null;
    this.conn = frame.conn ?? null;
    this._authSubs = new Set(frame.subs ?? []);
    const pos = frame.pos ?? {};
    const recovered = frame.recovered ?? {};
    this._take("uid", null, pos.uid, recovered.uid);
    this._take("all", null, pos.all, recovered.all);
    for (const ch of this._authSubs) {
      this._take("ch", ch, pos.chs?.[ch], recovered.chs?.[ch]);
    }
    // Channels joined at auth no longer there (a token without them) and not
    // asked for by subscribe() are forgotten.
    for (const ch of [...this._pos.chs.keys()]) {
      if (!this._authSubs.has(ch) && !this._subs.has(ch)) this._pos.chs.delete(ch);
    }
    this._setState("connected", { uid: this.uid, conn: this.conn, subs: [...this._authSubs] });
    this._startPing();
    for (const [ch, sub] of this._subs) {
      if (this._authSubs.has(ch)) this._settle(sub, { ok: true, ch });
      else this._sendSub(ch);
    }
  }

  // Takes a stream's position from an answer: unless the hub recovered it
  // (then the replayed messages follow and move it on), the client starts
  // where the hub says the stream stands.
  _take(stream, ch, wire, recovered) {
    if (recovered != null) this._emit("recovered", { stream, ch, recovered });
    if (recovered === true) return;
    const p = wire != null ? parsePos(wire) : null;
    if (stream === "ch") {
      if (p) this._pos.chs.set(ch, p);
      else this._pos.chs.delete(ch);
    } else {
      this._pos[stream] = p;
    }
  }

  _message(frame) {
    const meta = {};
    if (frame.pos != null) meta.pos = frame.pos;
    let stream;
    if (frame.ch != null) {
      meta.ch = frame.ch;
      stream = "ch";
    } else if (frame.all) {
      meta.all = true;
      stream = "all";
    } else {
      stream = "uid";
    }
    if (frame.pos != null && !this._advance(stream, frame.ch, parsePos(frame.pos))) return;
    const sub = frame.ch != null ? this._subs.get(frame.ch) : null;
    if (sub) this._call(sub.handler, [frame.d, meta]);
    else this._emit("message", frame.d, meta);
    if (stream === "uid" && frame.pos != null && !this.options.manualAck) this._queueAck(frame.pos);
  }

  // Moves a stream's position to a message's; false for a message already
  // seen (the hub never repeats one, but a message must not reach the page
  // twice should it ever come again).
  _advance(stream, ch, p) {
    if (!p) return true;
    const last = stream === "ch" ? this._pos.chs.get(ch) : this._pos[stream];
    if (last && last.epoch === p.epoch && p.offset <= last.offset) return false;
    if (stream === "ch") this._pos.chs.set(ch, p);
    else this._pos[stream] = p;
    return true;
  }

  _subbed(frame) {
    const ch = frame.ch;
    const sub = this._subs.get(ch);
    if (!sub) {
      // A backend subscribed this connection: its messages go to "message".
      this._take("ch", ch, frame.pos, frame.recovered);
      this._emit("subscribed", { ch, pos: frame.pos ?? null, byBackend: true });
      return;
    }
    this._take("ch", ch, frame.pos, frame.recovered);
    const result = { ok: true, ch };
    if (frame.pos != null) result.pos = frame.pos;
    if (frame.recovered != null) result.recovered = frame.recovered;
    this._settle(sub, result);
    this._emit("subscribed", { ch, pos: frame.pos ?? null, byBackend: frame.id == null });
  }

  _unsubbed(frame) {
    const ch = frame.ch;
    if (frame.id != null) {
      this._answer(frame.id, { ok: true, ch });
      return;
    }
    // A backend unsubscribed it: it is not restored after a reconnect.
    this._subs.delete(ch);
    this._pos.chs.delete(ch);
    this._authSubs.delete(ch);
    this._emit("unsubscribed", { ch, byBackend: true });
  }

  _errorFrame(frame) {
    const error = { code: frame.code, reason: frame.reason };
    if (frame.ch != null) error.ch = frame.ch;
    const pending = frame.id != null ? this._pending.get(frame.id) : null;
    if (pending?.sub) {
      // A refused subscription is not retried: the grant will not change
      // until the client gets another token.
      this._pending.delete(frame.id);
      const sub = this._subs.get(pending.sub);
      if (sub && sub.id === frame.id) {
        this._subs.delete(pending.sub);
        this._pos.chs.delete(pending.sub);
        this._settle(sub, { ok: false, ...error });
      }
    } else if (pending) {
      this._answer(frame.id, { ok: false, ...error });
    }
    this._error({ ...error, op: pending?.op ?? null });
  }

  _answer(id, result) {
    const pending = id != null ? this._pending.get(id) : null;
    if (!pending) return;
    this._pending.delete(id);
    pending.resolve(result);
  }

  // ---- subscriptions ---------------------------------------------------

  /**
   * Subscribes to a channel; its messages go to `handler(data, meta)`. The
   * subscription is restored after every reconnect, with what was missed.
   * Resolves (never rejects) with the hub's first answer.
   */
  subscribe(ch, handler) {
    if (typeof handler !== "function") throw new TypeError("pushhub: subscribe needs a handler");
    const existing = this._subs.get(ch);
    if (existing) {
      existing.handler = handler;
      return existing.result ?? new Promise((resolve) => existing.waiters.push(resolve));
    }
    const sub = { handler, waiters: [], result: null, id: null };
    this._subs.set(ch, sub);
    const answered = new Promise((resolve) => sub.waiters.push(resolve));
    if (this.state === "connected") {
      if (this._authSubs.has(ch)) this._settle(sub, { ok: true, ch });
      else this._sendSub(ch);
    }
    return answered;
  }

  /** Unsubscribes; resolves with the hub's answer (or at once if offline). */
  unsubscribe(ch) {
    const had = this._subs.delete(ch);
    this._pos.chs.delete(ch);
    if (this.state !== "connected") return Promise.resolve({ ok: had, ch });
    this._authSubs.delete(ch);
    return this._request({ op: "unsub", ch }, "unsub");
  }

  _sendSub(ch) {
    const sub = this._subs.get(ch);
    const id = this._nextId++;
    sub.id = id;
    const frame = { op: "sub", ch, id };
    const p = this._pos.chs.get(ch);
    if (p) frame.since = formatPos(p);
    this._pending.set(id, { op: "sub", sub: ch, resolve: () => {} });
    this._write(frame);
  }

  // The first answer settles subscribe()'s promise; later ones (after a
  // reconnect) only update the positions and raise "recovered".
  _settle(sub, result) {
    if (sub.id != null) this._pending.delete(sub.id);
    if (sub.result) return;
    sub.result = Promise.resolve(result);
    for (const resolve of sub.waiters) resolve(result);
    sub.waiters = [];
  }

  // ---- requests --------------------------------------------------------

  /** Sends `data` (any JSON value) to the backends that listen. */
  send(data) {
    return this._request({ op: "send", d: data }, "send");
  }

  /** Publishes `data` to a channel (the token's publish claim must allow it). */
  publish(ch, data) {
    return this._request({ op: "pub", ch, d: data }, "pub");
  }

  /**
   * Acknowledges a message: its meta (or position) from a "message" or
   * channel handler. Automatic for pushes unless manualAck is set.
   */
  ack(meta) {
    const pos = typeof meta === "string" ? meta : meta?.pos;
    if (pos == null || this.state !== "connected") return false;
    const frame = { op: "ack", pos };
    if (typeof meta === "object" && meta.ch != null) frame.ch = meta.ch;
    return this._write(frame);
  }

  // Pushes that arrive together (a recovery's replay) get one cumulative ack.
  _queueAck(pos) {
    this._unacked = pos;
    if (this._timers.ack) return;
    this._timers.ack = setTimeout(() => {
      this._timers.ack = null;
      const pos = this._unacked;
      this._unacked = null;
      if (pos != null && this.state === "connected") this._write({ op: "ack", pos });
    }, 0);
  }

  _request(frame, op) {
    if (this.state !== "connected") {
      return Promise.resolve({ ok: false, code: 0, reason: "not connected" });
    }
    const id = this._nextId++;
    return new Promise((resolve) => {
      this._pending.set(id, { op, resolve });
      this._write({ ...frame, id });
    });
  }

  // Answers that will never come: the hub may or may not have acted.
  _failPending(reason) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) p.resolve({ ok: false, code: 0, reason, unconfirmed: true });
  }

  _write(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---- liveness --------------------------------------------------------

  // Browsers hide the hub's WebSocket pings, so a page cannot tell a dead
  // network from a quiet hub: after pingInterval of silence it asks with a
  // v1 ping, and gives up on the socket if nothing comes within pongTimeout.
  _startPing() {
    this._clearTimer("ping");
    const { pingInterval, pongTimeout } = this.options;
    if (!(pingInterval > 0)) return;
    this._lastReceived = Date.now();
    this._timers.ping = setInterval(() => {
      if (this.state !== "connected" || this._timers.pong) return;
      if (Date.now() - this._lastReceived < pingInterval) return;
      this._write({ op: "ping" });
      this._timers.pong = setTimeout(() => {
        this._timers.pong = null;
        this._error({ code: 0, reason: "no answer to a ping within pongTimeout" });
        this._lost({ code: 0, reason: "ping timeout" });
      }, pongTimeout);
    }, Math.max(100, Math.min(pingInterval, 1000) / 2));
  }

  // ---- disconnects -----------------------------------------------------

  _closed(code, reason) {
    this._detach();
    this._failPending("connection lost before the hub answered");
    if (FINAL_CODES.has(code)) {
      this._final(code, reason);
      return;
    }
    if (code === 4001) {
      // A plain uid refused stays refused; a token is fetched afresh once,
      // and that one refused too means the backend will not vouch for us.
      if (!this.options.getToken || this._refetched) {
        this._final(code, reason);
        return;
      }
      this._refetched = true;
      this._token = null;
      this._setState("disconnected", { code, reason, delay: 0 });
      this._open();
      return;
    }
    this._retry({ code, reason });
  }

  // The socket is dead or hopeless: abandon it without waiting for a close
  // handshake that a broken network would never finish.
  _lost(info) {
    this._drop(4999, info.reason);
    this._failPending("connection lost before the hub answered");
    this._retry(info);
  }

  _final(code, reason) {
    this._clearTimer("reconnect");
    this._setState("closed", { code, reason, final: true });
  }

  _retry(info) {
    this._detach();
    if (this._isPaused()) {
      this._setState("disconnected", { ...info, paused: true });
      return;
    }
    const { minDelay, maxDelay } = this.options;
    // Full jitter: after a hub restart its clients spread over the window
    // instead of coming back in one wave.
    const cap = Math.min(maxDelay, minDelay * 2 ** Math.min(this._attempt, 30));
    const delay = Math.floor(Math.random() * cap);
    this._attempt++;
    this._setState("disconnected", { ...info, delay });
    this._clearTimer("reconnect");
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._open();
    }, delay);
  }

  _drop(code, reason) {
    const ws = this._ws;
    this._detach();
    if (ws && ws.readyState <= 1) {
      try {
        ws.close(code, reason.slice(0, 120));
      } catch {
        // A socket that cannot even be closed is already gone.
      }
    }
  }

  _detach() {
    const ws = this._ws;
    if (ws) ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    this._ws = null;
    this._clearTimer("connect");
    this._clearTimer("ping");
    this._clearTimer("pong");
    this._clearTimer("ack");
    this._unacked = null;
    for (const sub of this._subs.values()) sub.id = null;
  }

  _clearTimer(name) {
    const t = this._timers[name];
    if (t == null) return;
    clearTimeout(t);
    clearInterval(t);
    this._timers[name] = null;
  }

  // ---- page visibility and network -------------------------------------

  _watch() {
    const doc = globalThis.document;
    if (this.options.pauseWhenHidden && doc?.addEventListener) {
      this._paused.hidden = doc.visibilityState === "hidden";
      doc.addEventListener("visibilitychange", () => this._pause("hidden", doc.visibilityState === "hidden"));
    }
    const win = globalThis.window;
    if (this.options.pauseWhenOffline && win?.addEventListener && globalThis.navigator) {
      this._paused.offline = globalThis.navigator.onLine === false;
      win.addEventListener("offline", () => this._pause("offline", true));
      win.addEventListener("online", () => this._pause("offline", false));
    }
  }

  _isPaused() {
    return this._paused.hidden || this._paused.offline;
  }

  _pause(why, on) {
    const was = this._isPaused();
    this._paused[why] = on;
    const now = this._isPaused();
    if (this.state === "closed" || was === now) return;
    if (now) {
      this._clearTimer("reconnect");
      this._drop(1000, why === "hidden" ? "page hidden" : "offline");
      this._failPending("connection paused");
      this._setState("disconnected", { code: 1000, reason: why, paused: true });
    } else if (this.state === "disconnected") {
      // The network (or the page) is back: no reason to wait out a backoff.
      this._attempt = 0;
      this._clearTimer("reconnect");
      this._open();
    }
  }
}

// ---- positions and tokens ----------------------------------------------

/** "epoch:offset" → {epoch, offset}; null for what is not a position. */
function parsePos(wire) {
  if (typeof wire !== "string") return null;
  const i = wire.lastIndexOf(":");
  if (i <= 0) return null;
  const offset = Number(wire.slice(i + 1));
  if (!Number.isSafeInteger(offset)) return null;
  return { epoch: wire.slice(0, i), offset };
}

function formatPos(p) {
  return `${p.epoch}:${p.offset}`;
}

/** A JWT's exp (seconds), or null when it cannot be read. */
function tokenExpiry(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(b64)).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

function withoutOp(frame) {
  const { op, id, ...rest } = frame;
  void op;
  void id;
  return rest;
}
