import { describe, expect, it } from 'vitest';
import { parseImageReference } from './reference';

const DIGEST = `sha256:${'a'.repeat(64)}`;

describe('parseImageReference', () => {
  it.each([
    ['nginx', { registry: 'docker.io', apiHost: 'registry-1.docker.io', repository: 'library/nginx', tag: 'latest', canonical: 'docker.io/library/nginx:latest' }],
    ['nginx:1.27', { registry: 'docker.io', repository: 'library/nginx', tag: '1.27', manifestReference: '1.27' }],
    ['bitnami/redis', { registry: 'docker.io', repository: 'bitnami/redis', tag: 'latest' }],
    ['docker.io/nginx', { registry: 'docker.io', repository: 'library/nginx' }],
    ['index.docker.io/library/nginx', { registry: 'docker.io', repository: 'library/nginx' }],
    ['ghcr.io/org/app/sub:v1', { registry: 'ghcr.io', apiHost: 'ghcr.io', repository: 'org/app/sub', tag: 'v1' }],
    ['localhost/app', { registry: 'localhost', repository: 'app' }],
    ['localhost:5000/app:dev', { registry: 'localhost:5000', repository: 'app', tag: 'dev' }],
    ['127.0.0.1:5000/team/app', { registry: '127.0.0.1:5000', repository: 'team/app', tag: 'latest' }],
    [`quay.io/org/app@${DIGEST}`, { registry: 'quay.io', repository: 'org/app', tag: undefined, digest: DIGEST, manifestReference: DIGEST }],
    [`app:1.0@${DIGEST}`, { repository: 'library/app', tag: '1.0', digest: DIGEST, manifestReference: DIGEST }],
  ])('%s', (input, expected) => {
    expect(parseImageReference(input)).toMatchObject(expected);
  });

  it.each(['', 'team/UPPER:1', 'app:bad tag', 'app@sha256:short', 'ghcr.io/', 'a//b'])('rejects %j', (input) => {
    expect(() => parseImageReference(input)).toThrow(/invalid image reference/);
  });
});
