// The webhook's certificates: a CA and a serving certificate it signs, kept in a Secret, trusted
// through the MutatingWebhookConfiguration's caBundle, renewed at 2/3 of their lifetime.
//
// CA rotation is done in two steps so the API server never meets a certificate it does not trust:
// (1) a new CA joins the bundle (old and new both trusted) while the old serving certificate stays;
// (2) once the webhook configuration's caBundle holds the new CA, the serving certificate is
// re-issued from it. The old CA leaves the bundle when it expires.

import { X509Certificate } from 'node:crypto';
import { createCertificateAuthority, issueServingCertificate } from '../../webhook/src/certificates';

/** Secret keys. tls.crt/tls.key also make it a valid kubernetes.io/tls Secret. */
export const SECRET_KEYS = {
  servingCert: 'tls.crt',
  servingKey: 'tls.key',
  caCert: 'ca.crt',
  caKey: 'ca.key',
  caBundle: 'ca-bundle.crt',
} as const;

/** What the Secret holds (PEM text). */
export interface CertificateSet {
  caCert?: string;
  caKey?: string;
  /** Every CA the webhook's clients should trust: the current one, and earlier ones until they expire. */
  caBundle?: string;
  servingCert?: string;
  servingKey?: string;
}

export interface CertificatePolicy {
  caLifetimeMs: number;
  servingLifetimeMs: number;
  /** Renew when this fraction of the lifetime has passed. */
  renewAt: number;
  /** SANs of the serving certificate. */
  dnsNames: string[];
  ipAddresses: string[];
  commonName: string;
}

export const DAY_MS = 86_400_000;

export function defaultPolicy(dnsNames: string[], ipAddresses: string[]): CertificatePolicy {
  return { caLifetimeMs: 5 * 365 * DAY_MS, servingLifetimeMs: 90 * DAY_MS, renewAt: 2 / 3, dnsNames, ipAddresses, commonName: dnsNames[0] ?? 'rbinder-webhook' };
}

/** The DNS names a webhook behind Service `name` in `namespace` is called by. */
export function serviceDnsNames(name: string, namespace: string): string[] {
  return [`${name}.${namespace}.svc`, `${name}.${namespace}.svc.cluster.local`, `${name}.${namespace}`, name];
}

/** PEM text ending in exactly one newline. */
export function normalizePem(pem: string): string {
  return `${pem.trim()}\n`;
}

export function splitPem(bundle: string | undefined): string[] {
  return (bundle ?? '').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? [];
}

interface Parsed {
  pem: string;
  cert: X509Certificate;
  notBefore: number;
  notAfter: number;
}

function parse(pem: string | undefined): Parsed | undefined {
  if (!pem) return undefined;
  try {
    const cert = new X509Certificate(pem);
    return { pem, cert, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
  } catch {
    return undefined;
  }
}

function renewalTime(c: Parsed, renewAt: number): number {
  return c.notBefore + (c.notAfter - c.notBefore) * renewAt;
}

function sansOf(cert: X509Certificate): { dns: Set<string>; ip: Set<string> } {
  const dns = new Set<string>();
  const ip = new Set<string>();
  for (const part of (cert.subjectAltName ?? '').split(', ')) {
    if (part.startsWith('DNS:')) dns.add(part.slice(4));
    else if (part.startsWith('IP Address:')) ip.add(part.slice(11));
  }
  return { dns, ip };
}

export type CertificateStep =
  | { kind: 'none' }
  | { kind: 'newCA'; keepServing: boolean; reason: string }
  | { kind: 'newServing'; reason: string };

export interface CertificatePlan {
  step: CertificateStep;
  /** When to look again (the earliest renewal or expiry ahead). */
  nextCheck: Date;
}

/**
 * What to do next, from the Secret's certificates, the CAs the webhook configuration trusts now
 * (undefined when it does not exist yet) and the time. One step at a time: the caller applies it,
 * updates the webhook configuration, and asks again.
 */
export function planCertificates(set: CertificateSet, trusted: string[] | undefined, policy: CertificatePolicy, now: Date): CertificatePlan {
  const t = now.getTime();
  const ca = parse(set.caCert);
  const serving = parse(set.servingCert);
  const later: number[] = [];
  const result = (step: CertificateStep): CertificatePlan => ({ step, nextCheck: new Date(Math.max(t + 1000, Math.min(...later, t + DAY_MS))) });

  if (!ca || !set.caKey || !ca.cert.ca || t >= ca.notAfter || t < ca.notBefore) {
    return result({ kind: 'newCA', keepServing: false, reason: ca ? 'the CA is not valid now' : 'no CA yet' });
  }
  const servingValid =
    serving !== undefined &&
    Boolean(set.servingKey) &&
    t >= serving.notBefore &&
    t < serving.notAfter &&
    splitPem(set.caBundle).some((p) => serving.cert.checkIssued(new X509Certificate(p)) && serving.cert.verify(new X509Certificate(p).publicKey));
  if (t >= renewalTime(ca, policy.renewAt)) {
    // Step 1 of a CA rotation; the serving certificate, if still good, stays until the new CA is trusted.
    return result({ kind: 'newCA', keepServing: servingValid, reason: 'the CA reached its renewal time' });
  }
  later.push(renewalTime(ca, policy.renewAt));

  const caTrusted = trusted === undefined || trusted.some((p) => parse(p)?.cert.fingerprint256 === ca.cert.fingerprint256);
  const fromCurrentCa = serving !== undefined && serving.cert.checkIssued(ca.cert) && serving.cert.verify(ca.cert.publicKey);
  if (!servingValid) return result({ kind: 'newServing', reason: serving ? 'the serving certificate is not valid now' : 'no serving certificate yet' });
  const sans = sansOf(serving.cert);
  if (!policy.dnsNames.every((n) => sans.dns.has(n)) || !policy.ipAddresses.every((ip) => sans.ip.has(ip))) {
    return result({ kind: 'newServing', reason: 'the serving certificate lacks a name the webhook is called by' });
  }
  if (!fromCurrentCa) {
    // Step 2 of a CA rotation: wait until the webhook configuration trusts the new CA.
    if (caTrusted) return result({ kind: 'newServing', reason: 'the new CA is trusted: re-issuing the serving certificate from it' });
  } else if (t >= renewalTime(serving, policy.renewAt)) {
    return result({ kind: 'newServing', reason: 'the serving certificate reached its renewal time' });
  } else {
    later.push(renewalTime(serving, policy.renewAt));
  }
  later.push(serving.notAfter);
  for (const p of splitPem(set.caBundle)) {
    const c = parse(p);
    if (c && c.notAfter > t) later.push(c.notAfter);
  }
  return result({ kind: 'none' });
}

/** The CAs of a bundle still valid at `now`, current CA first, without duplicates. */
export function bundleOf(current: string, previous: string | undefined, now: Date): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const pem of [current, ...splitPem(previous)]) {
    const c = parse(pem);
    if (!c || c.notAfter <= now.getTime() || seen.has(c.cert.fingerprint256)) continue;
    seen.add(c.cert.fingerprint256);
    out.push(normalizePem(pem));
  }
  return out.join('');
}

/** Certificates start a little in the past, for clocks behind ours: a minute, less for short lifetimes. */
function clockSkew(lifetimeMs: number): number {
  return Math.min(60_000, Math.round(lifetimeMs * 0.05));
}

/** Carries out a step; returns the new set. */
export async function applyCertificateStep(set: CertificateSet, step: CertificateStep, policy: CertificatePolicy, now: Date): Promise<CertificateSet> {
  const t = now.getTime();
  let next: CertificateSet = { ...set };
  if (step.kind === 'none') return next;
  if (step.kind === 'newCA') {
    const ca = await createCertificateAuthority({
      commonName: `${policy.commonName}-ca-${now.toISOString().slice(0, 19)}`,
      notBefore: new Date(t - clockSkew(policy.caLifetimeMs)),
      notAfter: new Date(t + policy.caLifetimeMs),
    });
    const caCert = normalizePem(ca.certificate);
    next = { ...next, caCert, caKey: normalizePem(ca.privateKey), caBundle: bundleOf(caCert, set.caBundle, now) };
    if (step.keepServing) return next;
  } else {
    next.caBundle = bundleOf(next.caCert!, next.caBundle, now);
  }
  const leaf = await issueServingCertificate(
    { certificate: next.caCert!, privateKey: next.caKey! },
    { commonName: policy.commonName, dnsNames: policy.dnsNames, ipAddresses: policy.ipAddresses, notBefore: new Date(t - clockSkew(policy.servingLifetimeMs)), notAfter: new Date(t + policy.servingLifetimeMs) },
  );
  return { ...next, servingCert: normalizePem(leaf.certificate), servingKey: normalizePem(leaf.privateKey) };
}

export function certificateSetFromSecretData(data: Record<string, string> | undefined): CertificateSet {
  const get = (k: string): string | undefined => (data?.[k] ? Buffer.from(data[k]!, 'base64').toString('utf8') : undefined);
  return {
    caCert: get(SECRET_KEYS.caCert),
    caKey: get(SECRET_KEYS.caKey),
    caBundle: get(SECRET_KEYS.caBundle),
    servingCert: get(SECRET_KEYS.servingCert),
    servingKey: get(SECRET_KEYS.servingKey),
  };
}

export function secretDataFromCertificateSet(set: CertificateSet): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (k: string, v: string | undefined): void => {
    out[k] = Buffer.from(v ?? '').toString('base64');
  };
  put(SECRET_KEYS.servingCert, set.servingCert);
  put(SECRET_KEYS.servingKey, set.servingKey);
  put(SECRET_KEYS.caCert, set.caCert);
  put(SECRET_KEYS.caKey, set.caKey);
  put(SECRET_KEYS.caBundle, set.caBundle);
  return out;
}
