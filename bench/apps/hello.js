// The benchmark's hello-world server: node:http, keep-alive, 6-byte body, nothing else.
// Usage: node hello.js [PORT]  (or env PORT; 0 = ephemeral). Prints "LISTENING <port>".
'use strict';
const http = require('node:http');

const body = Buffer.from('hello\n');
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
  res.end(body);
});

// On SIGTERM stop listening and let the process end by itself, so an in-process OpenTelemetry SDK
// can flush its spans (its own SIGTERM handler shuts it down); exit anyway after 2 s.
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
});
server.listen(Number(process.argv[2] ?? process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(`LISTENING ${server.address().port}`);
});
