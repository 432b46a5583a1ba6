// The front service of the benchmark chain: node:http. GET /chain does WORK_ITERATIONS rounds of
// SHA-256 over 1 KiB (CPU work, no sleep), then GETs BACK_URL (keep-alive) and answers with the
// digest and the back service's body. GET /hello answers "hello\n".
// Usage: node front.js [PORT]  (or env PORT). Prints "LISTENING <port>".
// CALIBRATE_US=<µs>: print "ITERATIONS <n>" (n rounds take about that long here) and exit.
'use strict';
const http = require('node:http');
const { createHash } = require('node:crypto');

const block = Buffer.alloc(1024, 7);

/** n rounds of SHA-256, each over 1 KiB and the previous digest. */
function work(n) {
  let digest = Buffer.alloc(32);
  for (let i = 0; i < n; i++) digest = createHash('sha256').update(block).update(digest).digest();
  return digest.toString('hex');
}

/** Rounds that take about us microseconds: the fastest of several timed batches (after warm-up). */
function calibrate(us) {
  work(20000);
  let best = Infinity;
  for (let i = 0; i < 7; i++) {
    const t0 = process.hrtime.bigint();
    work(5000);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1000 / 5000);
  }
  return Math.max(1, Math.round(us / best));
}

if (process.env.CALIBRATE_US) {
  console.log(`ITERATIONS ${calibrate(Number(process.env.CALIBRATE_US))}`);
  process.exit(0);
}

const iterations = Number(process.env.WORK_ITERATIONS ?? 100);
const back = process.env.BACK_URL ?? '';
const agent = new http.Agent({ keepAlive: true });
const hello = Buffer.from('hello\n');

function send(res, status, body) {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.url === '/hello') return send(res, 200, hello);
  if (req.url !== '/chain') return send(res, 404, Buffer.from('not found\n'));
  const digest = work(iterations);
  http
    .get(`${back}/work`, { agent }, (up) => {
      const chunks = [];
      up.on('data', (c) => chunks.push(c));
      up.on('end', () => send(res, up.statusCode ?? 502, Buffer.from(`${digest}\n${Buffer.concat(chunks)}`)));
    })
    .on('error', (err) => send(res, 502, Buffer.from(`back failed: ${err.message}\n`)));
});

process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  agent.destroy();
  setTimeout(() => process.exit(0), 2000).unref();
});
server.listen(Number(process.argv[2] ?? process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`LISTENING ${server.address().port}`);
});
