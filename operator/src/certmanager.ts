// Runs the certificate plan (certificates.ts) against the cluster: the leader keeps the Secret and
// the MutatingWebhookConfiguration's caBundle current; every replica copies the Secret's serving
// certificate into --cert-dir, where the webhook server reloads it without a restart.

import type { V1MutatingWebhookConfiguration, V1Secret } from '@kubernetes/client-node';
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  applyCertificateStep,
  certificateSetFromSecretData,
  planCertificates,
  secretDataFromCertificateSet,
  splitPem,
  type CertificatePolicy,
  type CertificateSet,
} from './certificates';
import { ResilientInformer } from './informer';
import { errorText, isConflict, isNotFound, type Kube } from './kube';
import { LABEL_MANAGED_BY, MANAGED_BY } from './names';

export const CERT_FILE = 'tls.crt';
export const KEY_FILE = 'tls.key';
export const CA_FILE = 'ca.crt';

/** Watches the certificate Secret; writes its serving certificate into certDir when it changes. */
export class CertificateFiles {
  readonly informer: ResilientInformer<V1Secret>;
  private writing: Promise<void> = Promise.resolve();
  private lastWritten = '';

  constructor(
    private readonly kube: Kube,
    readonly secretName: string,
    private readonly certDir: string | undefined,
    private readonly logger: Logger,
    private readonly onSecretChange: () => void = () => undefined,
  ) {
    this.informer = new ResilientInformer('certificate-secret', kube.certSecret(secretName), logger, () => {
      this.writing = this.writing.then(() => this.writeFiles());
      this.onSecretChange();
    });
  }

  secret(): V1Secret | undefined {
    return this.informer.get(this.secretName, this.kube.options.namespace);
  }

  async start(): Promise<void> {
    await this.informer.start();
  }

  /** Resolves once pending file writes are done. */
  flushed(): Promise<void> {
    return this.writing;
  }

  private async writeFiles(): Promise<void> {
    if (!this.certDir) return;
    const set = certificateSetFromSecretData(this.secret()?.data);
    if (!set.servingCert || !set.servingKey) return;
    const key = `${set.servingCert}\0${set.servingKey}\0${set.caBundle ?? ''}`;
    if (key === this.lastWritten) return;
    try {
      await mkdir(this.certDir, { recursive: true, mode: 0o700 });
      const current = await Promise.all([CERT_FILE, KEY_FILE].map((f) => readFile(join(this.certDir!, f), 'utf8').catch(() => '')));
      if (current[0] !== set.servingCert || current[1] !== set.servingKey) {
        // Key first, certificate last: a webhook that reloads when tls.crt changes reads a matching pair.
        await atomicWrite(join(this.certDir, KEY_FILE), set.servingKey, 0o600);
        await atomicWrite(join(this.certDir, CA_FILE), set.caBundle ?? '', 0o644);
        await atomicWrite(join(this.certDir, CERT_FILE), set.servingCert, 0o644);
        this.logger.info({ certDir: this.certDir }, 'serving certificate written');
      }
      this.lastWritten = key;
    } catch (err) {
      this.logger.warn({ certDir: this.certDir, err: errorText(err) }, 'could not write the serving certificate (a mounted Secret is read-only: the kubelet updates it)');
      this.lastWritten = key;
    }
  }

  async stop(): Promise<void> {
    await this.informer.stop();
    await this.writing;
  }
}

function fingerprint(pem: string): string {
  try {
    return new X509Certificate(pem).fingerprint256;
  } catch {
    return pem;
  }
}

async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode });
  await rename(tmp, path);
}

/** The CAs every webhook of the configuration trusts (undefined when it does not exist). */
export function trustedCas(config: V1MutatingWebhookConfiguration | undefined): string[] | undefined {
  if (!config) return undefined;
  const perWebhook = (config.webhooks ?? []).map((w) => splitPem(w.clientConfig?.caBundle ? Buffer.from(w.clientConfig.caBundle, 'base64').toString('utf8') : ''));
  if (perWebhook.length === 0) return [];
  return perWebhook[0]!.filter((pem) => perWebhook.every((list) => list.includes(pem)));
}

/** RFC 6902 operations setting every webhook's caBundle (each guarded by a test of the webhook's name). */
export function caBundlePatch(config: V1MutatingWebhookConfiguration, caBundlePem: string): object[] {
  const encoded = Buffer.from(caBundlePem).toString('base64');
  const ops: object[] = [];
  (config.webhooks ?? []).forEach((w, i) => {
    if (w.clientConfig?.caBundle === encoded) return;
    ops.push({ op: 'test', path: `/webhooks/${i}/name`, value: w.name });
    ops.push({ op: 'add', path: `/webhooks/${i}/clientConfig/caBundle`, value: encoded });
  });
  return ops;
}

export interface CertificateManagerOptions {
  secretName: string;
  webhookConfigName: string;
  policy: CertificatePolicy;
  /**
   * How long a CA must have been in the webhook configuration before a serving certificate it
   * signed is used: every API server replica has to see the new caBundle first. Default 10 s.
   */
  trustGraceMs?: number;
}

/** The leader's part: creates and rotates the certificates, keeps the caBundle current. */
export class CertificateManager {
  readonly webhookConfig: ResilientInformer<V1MutatingWebhookConfiguration>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** When each CA (by fingerprint) was first seen trusted by the webhook configuration. */
  private readonly trustedSince = new Map<string, number>();
  /** Set by tests: the time the plan uses. */
  clock: () => Date = () => new Date();

  constructor(
    private readonly kube: Kube,
    private readonly files: CertificateFiles,
    private readonly options: CertificateManagerOptions,
    private readonly logger: Logger,
  ) {
    this.webhookConfig = new ResilientInformer('webhook-configuration', kube.webhookConfig(options.webhookConfigName), logger, () => this.trigger());
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.webhookConfig.start();
    await Promise.all([this.webhookConfig.synced, this.files.informer.synced]);
    this.trigger();
  }

  /** Runs a pass now, or right after the one running. */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((err: unknown) => {
        this.logger.error({ err: errorText(err) }, 'certificate pass failed; retrying in 10 s');
        this.schedule(new Date(Date.now() + 10_000));
      })
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.trigger();
        }
      });
  }

  /** Resolves when no pass is running. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private schedule(at: Date): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.min(Math.max(0, at.getTime() - Date.now()), 2 ** 31 - 1);
    this.timer = setTimeout(() => this.trigger(), delay);
    this.timer.unref?.();
  }

  private async pass(): Promise<void> {
    // Read, not from the cache: a pass right after a write must see it.
    let secret: V1Secret | undefined;
    try {
      secret = await this.kube.getSecret(this.options.secretName);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    let set: CertificateSet = certificateSetFromSecretData(secret?.data);
    const config = this.webhookConfig.get(this.options.webhookConfigName);
    const now = this.clock();
    const trusted = this.settledTrust(trustedCas(config), now);
    const plan = planCertificates(set, trusted.cas, this.options.policy, now);
    if (plan.step.kind !== 'none') {
      this.logger.info({ step: plan.step.kind, reason: plan.step.reason }, 'renewing webhook certificates');
      set = await applyCertificateStep(set, plan.step, this.options.policy, now);
      await this.writeSecret(secret, set);
    }
    if (config && set.caBundle) {
      const ops = caBundlePatch(config, set.caBundle);
      if (ops.length > 0) {
        await this.kube.patchWebhookConfig(this.options.webhookConfigName, ops);
        this.logger.info({ webhookConfiguration: this.options.webhookConfigName }, 'caBundle updated');
      }
    }
    // A further step (the second half of a CA rotation) runs when the informers see the writes,
    // or when a newly trusted CA has been trusted long enough.
    const next = plan.step.kind === 'none' ? plan.nextCheck : new Date(now.getTime() + 1_000);
    this.schedule(trusted.settlesAt && trusted.settlesAt < next ? trusted.settlesAt : next);
  }

  /** The trusted CAs that have been trusted for the grace period, and when the next one will be. */
  private settledTrust(cas: string[] | undefined, now: Date): { cas: string[] | undefined; settlesAt?: Date } {
    if (!cas) return { cas };
    const grace = this.options.trustGraceMs ?? 10_000;
    const t = now.getTime();
    const seen = new Set<string>();
    const settled: string[] = [];
    let settlesAt: number | undefined;
    for (const pem of cas) {
      const fp = fingerprint(pem);
      seen.add(fp);
      const since = this.trustedSince.get(fp) ?? t;
      this.trustedSince.set(fp, since);
      if (t - since >= grace) settled.push(pem);
      else settlesAt = Math.min(settlesAt ?? Infinity, since + grace);
    }
    for (const fp of [...this.trustedSince.keys()]) if (!seen.has(fp)) this.trustedSince.delete(fp);
    return { cas: settled, settlesAt: settlesAt === undefined ? undefined : new Date(settlesAt) };
  }

  private async writeSecret(current: V1Secret | undefined, set: CertificateSet): Promise<V1Secret> {
    const data = secretDataFromCertificateSet(set);
    const name = this.options.secretName;
    try {
      if (!current) {
        return await this.kube.createSecret({
          metadata: { name, namespace: this.kube.options.namespace, labels: { [LABEL_MANAGED_BY]: MANAGED_BY } },
          type: 'kubernetes.io/tls',
          data,
        });
      }
      return await this.kube.updateSecret({ ...current, data });
    } catch (err) {
      // Someone else (an earlier leader) wrote it in between: start over from what is there now.
      if (isConflict(err) || isNotFound(err)) {
        this.logger.info({ err: errorText(err) }, 'certificate Secret changed meanwhile; re-planning');
        this.again = true;
      }
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.idle();
    await this.webhookConfig.stop();
  }
}
