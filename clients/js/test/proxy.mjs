// A TCP relay between pushhub.js and the hub, so that a test can break the
// network under a client: drop every connection, refuse new ones, or freeze
// the open ones (bytes stop flowing but the sockets stay open, as on a dead
// link, while new connections go through).

import { createServer, createConnection } from "node:net";

export async function startProxy(target) {
  const i = target.lastIndexOf(":");
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  const pairs = new Set();
  const proxy = {
    refusing: false,
    accepted: 0,
    url: null,
    /** Closes every relayed connection at once, both sides. */
    dropAll() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    /** Stops the bytes of every open connection, leaving its sockets open. */
    freezeAll() {
      for (const pair of pairs) pair.frozen = true;
    },
    close() {
      proxy.dropAll();
      return new Promise((ok) => server.close(ok));
    },
  };
  const server = createServer((client) => {
    if (proxy.refusing) {
      client.destroy();
      return;
    }
    proxy.accepted++;
    const upstream = createConnection({ host, port });
    const pair = [client, upstream];
    pair.frozen = false;
    pairs.add(pair);
    const relay = (from, to) =>
      from.on("data", (chunk) => {
        if (!pair.frozen) to.write(chunk);
      });
    relay(client, upstream);
    relay(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  proxy.url = `ws://127.0.0.1:${server.address().port}/`;
  return proxy;
}
