// Serves examples/web.html and pushhub.js over http, so that the page can
// load the library (browsers do not import ES modules from file:// pages).
// Only these two files of the repository, and only on loopback by default.
//
//   node examples/serve.mjs [port] [address]    (make web)

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SERVED = {
  "/examples/web.html": "text/html; charset=utf-8",
  "/clients/js/pushhub.js": "text/javascript; charset=utf-8",
};
const port = Number(process.argv[2] ?? 8080);
const address = process.argv[3] ?? "127.0.0.1";

const server = createServer(async (req, res) => {
  const path = new URL(req.url, "http://x").pathname;
  if (path === "/") {
    res.writeHead(302, { location: "/examples/web.html" }).end();
    return;
  }
  const type = SERVED[path];
  if (!type) {
    res.writeHead(404).end("not found\n");
    return;
  }
  try {
    const body = await readFile(join(root, path));
    res.writeHead(200, { "content-type": type, "cache-control": "no-store" }).end(body);
  } catch {
    res.writeHead(404).end("not found\n");
  }
});
server.on("error", (e) => {
  console.error(`cannot listen on ${address}:${port}: ${e.message}`);
  process.exit(1);
});
server.listen(port, address, () => console.log(`http://${address}:${server.address().port}/examples/web.html (Ctrl-C to stop)`));
