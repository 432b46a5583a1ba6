import { X509Certificate } from 'node:crypto';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createCertificateAuthority, issueServingCertificate } from './certificates';

describe('certificates', () => {
  it('issues a serving certificate that a TLS client trusting the CA accepts', async () => {
    const ca = await createCertificateAuthority({ commonName: 'rbinder-test-ca' });
    const leaf = await issueServingCertificate(ca, { commonName: 'rbinder-webhook', dnsNames: ['localhost', 'rbinder-webhook.rbinder-system.svc'], ipAddresses: ['127.0.0.1'] });
    const caCert = new X509Certificate(ca.certificate);
    const cert = new X509Certificate(leaf.certificate);
    expect(caCert.ca).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.subjectAltName).toContain('DNS:rbinder-webhook.rbinder-system.svc');
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');

    const server = https.createServer({ cert: leaf.certificate, key: leaf.privateKey }, (_req, res) => res.end('ok'));
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const port = (server.address() as AddressInfo).port;
      const body = await new Promise<string>((resolve, reject) => {
        https.get({ host: '127.0.0.1', port, ca: ca.certificate, servername: 'localhost' }, (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve(text));
        }).on('error', reject);
      });
      expect(body).toBe('ok');
    } finally {
      server.close();
    }
  });
});
