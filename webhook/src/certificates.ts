// A CA and the serving certificates it signs, as PEM: what the webhook's Secret holds and the
// MutatingWebhookConfiguration's caBundle names. ECDSA P-256 keys, SHA-256 signatures.

import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// @peculiar/x509 types its provider with the DOM's Crypto, which Node's webcrypto implements.
x509.cryptoProvider.set(webcrypto as never);

const ALGORITHM: webcrypto.EcKeyGenParams & webcrypto.EcKeyImportParams = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING: webcrypto.EcdsaParams = { name: 'ECDSA', hash: 'SHA-256' };
const DAY_MS = 86_400_000;

export interface PemCertificate {
  /** PEM certificate (for a serving certificate: the leaf only). */
  certificate: string;
  /** PEM PKCS#8 private key. */
  privateKey: string;
}

export interface CertificateAuthority extends PemCertificate {}

export interface CertificateOptions {
  commonName: string;
  /** Validity from now (minus a minute of clock skew), in days. */
  validDays?: number;
  /** Absolute validity, overriding validDays (tests of expiry). */
  notBefore?: Date;
  notAfter?: Date;
}

export interface ServingCertificateOptions extends CertificateOptions {
  dnsNames: string[];
  ipAddresses?: string[];
}

function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
}

async function privateKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function validity(options: CertificateOptions, defaultDays: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return {
    notBefore: options.notBefore ?? new Date(now - 60_000),
    notAfter: options.notAfter ?? new Date(now + (options.validDays ?? defaultDays) * DAY_MS),
  };
}

function serialNumber(): string {
  // Positive, 16 bytes of randomness.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = bytes[0]! & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

export async function createCertificateAuthority(options: CertificateOptions): Promise<CertificateAuthority> {
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${options.commonName}`,
    keys,
    signingAlgorithm: SIGNING,
    ...validity(options, 3650),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certificate: cert.toString('pem'), privateKey: await privateKeyPem(keys.privateKey) };
}

/** A TLS server certificate for the names, signed by the CA. */
export async function issueServingCertificate(ca: CertificateAuthority, options: ServingCertificateOptions): Promise<PemCertificate> {
  const caCert = new x509.X509Certificate(ca.certificate);
  const caKey = await webcrypto.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(ca.privateKey), ALGORITHM, false, ['sign']);
  const keys = await newKeys();
  const names: x509.JsonGeneralName[] = [
    ...options.dnsNames.map((value): x509.JsonGeneralName => ({ type: 'dns', value })),
    ...(options.ipAddresses ?? []).map((value): x509.JsonGeneralName => ({ type: 'ip', value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${options.commonName}`,
    issuer: caCert.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGNING,
    ...validity(options, 365),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { certificate: cert.toString('pem'), privateKey: await privateKeyPem(keys.privateKey) };
}
