// Image references as the container runtime reads them: "nginx" is docker.io/library/nginx:latest,
// the first path component is a registry only if it looks like a host (a dot, a port, "localhost").

export interface ImageReference {
  /** The registry as credentials name it: "docker.io", "ghcr.io", "localhost:5000". */
  registry: string;
  /** The host[:port] the distribution API is served from ("registry-1.docker.io" for docker.io). */
  apiHost: string;
  /** "library/nginx". */
  repository: string;
  tag?: string;
  digest?: string;
  /** What to ask the manifests endpoint for: the digest if there is one, else the tag. */
  manifestReference: string;
  /** The normalized reference, e.g. "docker.io/library/nginx:latest". */
  canonical: string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

export class InvalidReferenceError extends Error {
  constructor(reference: string, problem: string) {
    super(`invalid image reference "${reference}": ${problem}`);
    this.name = 'InvalidReferenceError';
  }
}

export function parseImageReference(reference: string): ImageReference {
  const input = reference.trim();
  if (input === '') throw new InvalidReferenceError(reference, 'empty');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new InvalidReferenceError(reference, `bad digest "${digest}"`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new InvalidReferenceError(reference, `bad tag "${tag}"`);
  }

  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first !== first.toLowerCase()) {
      registry = first;
      path = rest.slice(slash + 1);
    }
  }
  if (DOCKER_HUB_ALIASES.has(registry)) {
    registry = DOCKER_HUB;
    if (!path.includes('/')) path = `library/${path}`;
  }
  if (path === '' || !path.split('/').every((c) => COMPONENT.test(c))) {
    throw new InvalidReferenceError(reference, `bad repository name "${path}"`);
  }
  if (!digest && !tag) tag = 'latest';
  const canonical = `${registry}/${path}${tag ? `:${tag}` : ''}${digest ? `@${digest}` : ''}`;
  return {
    registry,
    apiHost: registry === DOCKER_HUB ? DOCKER_HUB_API : registry,
    repository: path,
    tag,
    digest,
    manifestReference: digest ?? tag!,
    canonical,
  };
}
