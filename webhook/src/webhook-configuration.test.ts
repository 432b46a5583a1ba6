import { describe, expect, it } from 'vitest';
import { buildMutatingWebhookConfiguration } from './webhook-configuration';

describe('buildMutatingWebhookConfiguration', () => {
  it('sends pod CREATEs from every namespace but kube-system and the controller\'s to the service', () => {
    const config = buildMutatingWebhookConfiguration({
      failurePolicy: 'Ignore',
      controllerNamespace: 'rbinder-system',
      excludedNamespaces: ['infra', 'kube-system'],
      caBundle: '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n',
      service: { name: 'rbinder-webhook', namespace: 'rbinder-system' },
    });
    expect(config).toEqual({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: 'rbinder-webhook' },
      webhooks: [
        {
          name: 'pods.rbinder.io',
          admissionReviewVersions: ['v1'],
          clientConfig: {
            service: { name: 'rbinder-webhook', namespace: 'rbinder-system', path: '/mutate--v1-pod', port: 443 },
            caBundle: Buffer.from('-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n').toString('base64'),
          },
          rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'], scope: 'Namespaced' }],
          namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'rbinder-system', 'infra'] }] },
          failurePolicy: 'Ignore',
          matchPolicy: 'Equivalent',
          sideEffects: 'None',
          timeoutSeconds: 5,
          reinvocationPolicy: 'Never',
        },
      ],
    });
  });

  it('takes the failure policy, timeout, reinvocation policy and a URL', () => {
    const webhook = buildMutatingWebhookConfiguration({
      failurePolicy: 'Fail',
      controllerNamespace: 'ops',
      timeoutSeconds: 3,
      reinvocationPolicy: 'IfNeeded',
      url: 'https://10.0.0.5:9443/',
    }).webhooks![0]!;
    expect(webhook).toMatchObject({ failurePolicy: 'Fail', timeoutSeconds: 3, reinvocationPolicy: 'IfNeeded', clientConfig: { url: 'https://10.0.0.5:9443/mutate--v1-pod' } });
    expect(webhook.clientConfig.caBundle).toBeUndefined();
  });

  it('refuses impossible settings', () => {
    expect(() => buildMutatingWebhookConfiguration({ failurePolicy: 'Ignore', controllerNamespace: 'x', timeoutSeconds: 31, url: 'https://x' })).toThrow(/1 to 30/);
    expect(() => buildMutatingWebhookConfiguration({ failurePolicy: 'Ignore', controllerNamespace: 'x' })).toThrow(/exactly one of service and url/);
  });
});
