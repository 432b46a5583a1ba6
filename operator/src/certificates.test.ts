import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { caBundlePatch, trustedCas } from './certmanager';
import {
  applyCertificateStep,
  certificateSetFromSecretData,
  DAY_MS,
  defaultPolicy,
  planCertificates,
  secretDataFromCertificateSet,
  serviceDnsNames,
  splitPem,
  type CertificatePolicy,
  type CertificateSet,
} from './certificates';

const policy: CertificatePolicy = { ...defaultPolicy(serviceDnsNames('rbinder-webhook', 'rbinder-system'), ['127.0.0.1']), caLifetimeMs: 30 * DAY_MS, servingLifetimeMs: 9 * DAY_MS };
const T0 = new Date('2026-01-01T00:00:00Z');
const at = (days: number): Date => new Date(T0.getTime() + days * DAY_MS);

async function issue(set: CertificateSet, trusted: string[] | undefined, now: Date): Promise<{ set: CertificateSet; step: string }> {
  const plan = planCertificates(set, trusted, policy, now);
  return { set: await applyCertificateStep(set, plan.step, policy, now), step: plan.step.kind };
}

describe('certificate plan', () => {
  it('creates a CA and a serving certificate for every name the webhook is called by', async () => {
    const { set, step } = await issue({}, undefined, T0);
    expect(step).toBe('newCA');
    const cert = new X509Certificate(set.servingCert!);
    const ca = new X509Certificate(set.caCert!);
    expect(cert.checkIssued(ca)).toBe(true);
    for (const n of ['rbinder-webhook.rbinder-system.svc', 'rbinder-webhook.rbinder-system.svc.cluster.local']) expect(cert.subjectAltName).toContain(`DNS:${n}`);
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(splitPem(set.caBundle)).toEqual([set.caCert]);
    expect(planCertificates(set, [set.caCert!], policy, T0).step.kind).toBe('none');
  });

  it('renews the serving certificate at 2/3 of its lifetime and says when to look next', async () => {
    const { set } = await issue({}, undefined, T0);
    // Looks again a day later at the latest, and at the renewal time (2/3 of 9 days) when sooner.
    expect(planCertificates(set, [set.caCert!], policy, at(1)).nextCheck).toEqual(at(2));
    const plan = planCertificates(set, [set.caCert!], policy, at(5.5));
    expect(plan.step.kind).toBe('none');
    expect(Math.abs(plan.nextCheck.getTime() - at(6).getTime())).toBeLessThan(2 * 60_000);
    const renewed = await issue(set, [set.caCert!], at(6.1));
    expect(renewed.step).toBe('newServing');
    expect(renewed.set.caCert).toBe(set.caCert);
    expect(renewed.set.servingCert).not.toBe(set.servingCert);
  });

  it('rotates the CA in two steps, trusting both CAs in between', async () => {
    let { set } = await issue({}, undefined, T0);
    const oldCa = set.caCert!;
    // Keep the serving certificate fresh up to the CA's renewal time (20 days).
    set = (await issue(set, [oldCa], at(18))).set;
    const oldServing = set.servingCert;
    const step1 = await issue(set, [oldCa], at(20.5));
    expect(step1.step).toBe('newCA');
    expect(step1.set.servingCert).toBe(oldServing); // still signed by the old CA, still trusted
    expect(splitPem(step1.set.caBundle)).toEqual([step1.set.caCert, oldCa]);
    // Until the webhook configuration trusts the new CA, the serving certificate stays.
    expect(planCertificates(step1.set, [oldCa], policy, at(20.5)).step.kind).toBe('none');
    const step2 = await issue(step1.set, splitPem(step1.set.caBundle), at(20.5));
    expect(step2.step).toBe('newServing');
    expect(new X509Certificate(step2.set.servingCert!).checkIssued(new X509Certificate(step2.set.caCert!))).toBe(true);
    // The old CA leaves the bundle once it expired.
    const later = await issue(step2.set, splitPem(step2.set.caBundle), at(31));
    expect(splitPem(later.set.caBundle)).not.toContain(oldCa);
  });

  it('re-issues when a name is missing or the certificate expired', async () => {
    const { set } = await issue({}, undefined, T0);
    const morePolicy = { ...policy, dnsNames: [...policy.dnsNames, 'extra.example'] };
    expect(planCertificates(set, [set.caCert!], morePolicy, T0).step.kind).toBe('newServing');
    expect(planCertificates(set, [set.caCert!], policy, at(10)).step).toMatchObject({ kind: 'newServing', reason: expect.stringContaining('not valid') });
    expect(planCertificates({ ...set, caKey: undefined }, [set.caCert!], policy, T0).step.kind).toBe('newCA');
  });

  it('round-trips through Secret data', async () => {
    const { set } = await issue({}, undefined, T0);
    expect(certificateSetFromSecretData(secretDataFromCertificateSet(set))).toEqual(set);
  });
});

describe('webhook configuration caBundle', () => {
  const config = (bundles: (string | undefined)[]) => ({
    webhooks: bundles.map((b, i) => ({ name: `w${i}.rbinder.io`, admissionReviewVersions: ['v1'], sideEffects: 'None', clientConfig: { caBundle: b } })),
  });
  const pemA = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';
  const pemB = '-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n';
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  it('trusts what every webhook of the configuration trusts', () => {
    expect(trustedCas(undefined)).toBeUndefined();
    expect(trustedCas(config([b64(pemA + pemB), b64(pemA)]))).toEqual([pemA]);
    expect(trustedCas(config([undefined]))).toEqual([]);
  });

  it('patches only the webhooks whose caBundle differs, each guarded by its name', () => {
    expect(caBundlePatch(config([b64(pemA), b64(pemB)]), pemA)).toEqual([
      { op: 'test', path: '/webhooks/1/name', value: 'w1.rbinder.io' },
      { op: 'add', path: '/webhooks/1/clientConfig/caBundle', value: b64(pemA) },
    ]);
  });
});
