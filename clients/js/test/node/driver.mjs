// The Node driver of the shared cases (../cases.mjs): the client runs in this
// process, on the WebSocket given (Node 22's global one by default).

import { Pushhub } from "../../pushhub.js";

const EVENTS = ["state", "message", "error", "recovered", "subscribed", "unsubscribed"];

export function nodeDriver(WebSocket) {
  const made = [];
  return {
    made,
    async client(url, options, getToken) {
      const hub = new Pushhub(url, { ...options, ...(getToken ? { getToken } : {}), ...(WebSocket ? { WebSocket } : {}) });
      made.push(hub);
      const events = [];
      for (const event of EVENTS) hub.on(event, (...args) => events.push({ event, args: structuredClone(args) }));
      return {
        hub,
        call: async (method, ...args) => (method === "state" ? hub.state : hub[method](...args)),
        subscribe: (ch) => hub.subscribe(ch, (data, meta) => events.push({ event: "channel", args: [data, meta] })),
        events: async () => events,
      };
    },
    closeAll() {
      for (const hub of made) hub.close();
    },
  };
}
