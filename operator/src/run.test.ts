import { Command } from 'commander';
import { describe, expect, it } from 'vitest';
import { certificateNames, operatorCliOptions, operatorOptionsFromCli, parseDuration } from './run';

describe('operator CLI options', () => {
  it('register with commander and turn into OperatorOptions', () => {
    const program = new Command();
    for (const o of operatorCliOptions) program.option(o.flags, o.description, o.default as string | boolean | undefined);
    program.parse(['--kubeconfig', '/k', '--namespace', 'sys', '--no-leader-elect', '--cert-dir', '/certs', '--cert-lifetime', '12h', '--disable-rollout-default', '--exclude-namespaces', 'a, b'], { from: 'user' });
    const options = operatorOptionsFromCli(program.opts());
    expect(options).toMatchObject({
      kubeconfig: '/k',
      namespace: 'sys',
      leaderElect: false,
      leaseName: 'rbinder-controller',
      webhookConfigName: 'rbinder-webhook',
      certDir: '/certs',
      certSecretName: 'rbinder-webhook-tls',
      manageCertificates: true,
      certLifetimeMs: 12 * 3_600_000,
      caLifetimeMs: 1825 * 86_400_000,
      automaticRollout: false,
      excludedNamespaces: ['a', 'b'],
      resyncMs: 300_000,
    });
  });

  it('defaults: leader election on, automatic rollout on', () => {
    const program = new Command();
    for (const o of operatorCliOptions) program.option(o.flags, o.description, o.default as string | boolean | undefined);
    program.parse([], { from: 'user' });
    expect(operatorOptionsFromCli(program.opts())).toMatchObject({ leaderElect: true, automaticRollout: true, manageCertificates: true });
  });

  it('parses durations', () => {
    expect(parseDuration('90d')).toBe(90 * 86_400_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    expect(parseDuration('500ms')).toBe(500);
    expect(() => parseDuration('ten minutes')).toThrow(/not a duration/);
  });
});

describe('certificateNames', () => {
  it('in cluster: the Service names only', () => {
    expect(certificateNames({ webhookServiceName: 'wh' }, 'sys', true)).toEqual({ dnsNames: ['wh.sys.svc', 'wh.sys.svc.cluster.local', 'wh.sys', 'wh'], ipAddresses: [] });
  });
  it('out of cluster: also localhost, 127.0.0.1 and the --webhook-url host', () => {
    expect(certificateNames({ webhookUrl: 'https://dev.example:8443/x' }, 'sys', false)).toEqual({
      dnsNames: ['rbinder-webhook.sys.svc', 'rbinder-webhook.sys.svc.cluster.local', 'rbinder-webhook.sys', 'rbinder-webhook', 'localhost', 'dev.example'],
      ipAddresses: ['127.0.0.1'],
    });
    expect(certificateNames({ webhookUrl: 'https://10.0.0.5:8443' }, 'sys', false).ipAddresses).toEqual(['127.0.0.1', '10.0.0.5']);
  });
});
