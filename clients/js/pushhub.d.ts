// Types of pushhub.js, the client of pushhub's v1 protocol.

/** The constructor of a WHATWG WebSocket: the browser's, Node 22's, or the ws package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface PushhubOptions {
  /** Returns a token signed by the backend; called before the first connect, when the token held expires within tokenMargin, and once after a 4001. */
  getToken?: () => string | Promise<string>;
  /** A plain uid (the hub must run with --allow-plain-uid). Ignored when getToken is given. */
  uid?: string;
  /** The WebSocket implementation; default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** First backoff window in ms (default 1000): a retry waits random × min(maxDelay, minDelay × 2^attempt). */
  minDelay?: number;
  /** Largest backoff window in ms (default 30000). */
  maxDelay?: number;
  /** How long to wait for the welcome before giving the attempt up, ms (default 10000). */
  connectTimeout?: number;
  /** Silence after which a v1 ping is sent, ms (default 25000; 0 turns pings off). */
  pingInterval?: number;
  /** How long a ping may go unanswered before the socket is dropped, ms (default 10000). */
  pongTimeout?: number;
  /** A token that expires within this many ms is replaced before connecting (default 10000). */
  tokenMargin?: number;
  /** Pushes are acknowledged by the page with ack() instead of on arrival (default false). */
  manualAck?: boolean;
  /** Disconnect while the page is hidden, reconnect when it is visible again (default false). */
  pauseWhenHidden?: boolean;
  /** Disconnect while the browser is offline, reconnect at once when it is back (default true). */
  pauseWhenOffline?: boolean;
}

export type State = "connecting" | "connected" | "disconnected" | "closed";

export interface StateInfo {
  /** connecting: how many retries came before this attempt. */
  attempt?: number;
  /** connected: who the hub says this client is. */
  uid?: string | null;
  conn?: string | null;
  /** connected: the channels the token subscribed at auth. */
  subs?: string[];
  /** disconnected, closed: the close code (0 when no close frame came) and reason. */
  code?: number;
  reason?: string;
  /** disconnected: ms until the next attempt. */
  delay?: number;
  /** disconnected: waiting for the page to be visible or the network to come back. */
  paused?: boolean;
  /** closed: no reconnect until connect() is called. */
  final?: boolean;
}

export interface MessageMeta {
  /** The message's position "epoch:offset" in its stream (absent for unpositioned messages). */
  pos?: string;
  /** A broadcast. */
  all?: boolean;
  /** The channel, for a channel's message. */
  ch?: string;
  /** A binary frame (data is an ArrayBuffer). */
  binary?: boolean;
}

export interface PushhubError {
  /** The hub's error code (400, 403, 404, 429 …), or 0 for the client's own trouble. */
  code: number;
  reason: string;
  ch?: string;
  /** The request that failed, if any: "sub", "pub", "send", "unsub". */
  op?: string | null;
  cause?: unknown;
}

export interface Recovered {
  stream: "uid" | "all" | "ch";
  ch: string | null;
  /** true: what was missed was replayed; false: a gap the hub could not fill. */
  recovered: boolean;
}

export interface SubscribeResult {
  ok: boolean;
  ch?: string;
  pos?: string;
  recovered?: boolean;
  code?: number;
  reason?: string;
}

export interface RequestResult {
  ok: boolean;
  /** pub: how many connections the publication reached. */
  delivered?: number;
  code?: number;
  reason?: string;
  /** The connection dropped before the hub answered: it may or may not have acted. */
  unconfirmed?: boolean;
  [field: string]: unknown;
}

export interface PushhubEvents {
  state: (state: State, info: StateInfo) => void;
  message: (data: any, meta: MessageMeta) => void;
  error: (error: PushhubError) => void;
  recovered: (info: Recovered) => void;
  subscribed: (info: { ch: string; pos: string | null; byBackend: boolean }) => void;
  unsubscribed: (info: { ch: string; byBackend: boolean }) => void;
}

export class Pushhub {
  constructor(url: string, options?: PushhubOptions);
  readonly url: string;
  readonly state: State;
  /** The uid and connection id of the last welcome. */
  readonly uid: string | null;
  readonly conn: string | null;
  /** Adds a listener; returns a function that removes it. */
  on<E extends keyof PushhubEvents>(event: E, fn: PushhubEvents[E]): () => void;
  off<E extends keyof PushhubEvents>(event: E, fn: PushhubEvents[E]): void;
  connect(): void;
  close(): void;
  subscribe(ch: string, handler: (data: any, meta: MessageMeta) => void): Promise<SubscribeResult>;
  unsubscribe(ch: string): Promise<RequestResult>;
  send(data: unknown): Promise<RequestResult>;
  publish(ch: string, data: unknown): Promise<RequestResult>;
  /** Acknowledges a message by its meta or position; false when not connected. */
  ack(meta: MessageMeta | string): boolean;
}
