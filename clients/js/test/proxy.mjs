// A TCP relay between pushhub.js and the hub, so that a test can break the
// network under a client: drop every connection, refuse new ones, or freeze
// them (bytes stop flowing but the sockets stay open, as on a dead link).

import { createServer, createConnection } from "node:net";

export async function startProxy(target) {
  const i = target.lastIndexOf(":");
  const host = target.slice(0, i);
  const port = Number(target.slice(i + 1));
  const pairs = new Set();
  const proxy = {
    refusing: false,
    frozen: false,
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
    pairs.add(pair);
    const relay = (from, to) =>
      from.on("data", (chunk) => {
        if (!proxy.frozen) to.write(chunk);
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
