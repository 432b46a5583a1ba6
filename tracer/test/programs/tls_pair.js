// A TLS server and client in one process (certificate made with the openssl CLI): the client
// sends an HTTP request over TLS to 127.0.0.1; both print a sha256 of the plaintext, so a tracer
// that touched the encrypted bytes would break the connection or change a hash.
//   SERVER_SAW <sha256>\nCLIENT_SENT <sha256>
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rbinder-tls-'));
const key = path.join(dir, 'key.pem');
const cert = path.join(dir, 'cert.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], {
  stdio: 'ignore',
});
const request = Buffer.from('GET /secret HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

const server = tls.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (socket) => {
  const chunks = [];
  socket.on('data', (c) => {
    chunks.push(c);
    if (Buffer.concat(chunks).length >= request.length) {
      process.stdout.write(`SERVER_SAW ${sha(Buffer.concat(chunks))}\n`);
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  const client = tls.connect({ port: server.address().port, host: '127.0.0.1', ca: fs.readFileSync(cert), servername: 'localhost' }, () => {
    client.write(request);
  });
  client.on('data', () => {
    process.stdout.write(`CLIENT_SENT ${sha(request)}\n`);
    client.end();
    server.close();
  });
  client.on('error', (e) => {
    console.error('client', e.message);
    process.exit(1);
  });
});
