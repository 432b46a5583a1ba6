// Images assembled in memory and pushed over the OCI distribution API, so the tests need no
// docker, buildah or skopeo: a one-file layer tarball, an image config with Entrypoint/Cmd, a
// manifest, and image indexes over several of them.

import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { gzipSync } from 'node:zlib';

export const MEDIA_TYPES = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
} as const;

export interface ImageSpec {
  /** null or undefined: not set in the config. */
  entrypoint?: string[] | null;
  cmd?: string[] | null;
  os?: string;
  architecture?: string;
  variant?: string;
  /** Files of the single layer (path → content); a small default file otherwise. */
  files?: Record<string, string>;
  /** Docker v2 media types instead of OCI. */
  docker?: boolean;
}

export interface Blob {
  digest: string;
  mediaType: string;
  body: Buffer;
}

export interface AssembledImage {
  /** Blobs to upload: the layer and the config. */
  blobs: Blob[];
  manifest: Blob;
}

export function sha256Digest(body: Buffer): string {
  return `sha256:${createHash('sha256').update(body).digest('hex')}`;
}

/** A POSIX ustar archive of regular files (enough for a layer). */
export function tarball(files: Record<string, string>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = Buffer.from(content);
    const header = Buffer.alloc(512);
    header.write(name.replace(/^\/+/, ''), 0, 100, 'utf8');
    header.write('0000644\0', 100, 'ascii');
    header.write('0000000\0', 108, 'ascii');
    header.write('0000000\0', 116, 'ascii');
    header.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
    header.write(`${'0'.padStart(11, '0')}\0`, 136, 'ascii');
    header.write('        ', 148, 'ascii'); // checksum counts as spaces while summing
    header.write('0', 156, 'ascii');
    header.write('ustar\0', 257, 'ascii');
    header.write('00', 263, 'ascii');
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export function assembleImage(spec: ImageSpec): AssembledImage {
  const tar = tarball(spec.files ?? { 'etc/rbinder-test': `${spec.architecture ?? 'amd64'}\n` });
  const layer = gzipSync(tar);
  const layerBlob: Blob = { digest: sha256Digest(layer), mediaType: spec.docker ? MEDIA_TYPES.dockerLayer : MEDIA_TYPES.ociLayer, body: layer };
  const config: Record<string, unknown> = {};
  if (spec.entrypoint !== undefined && spec.entrypoint !== null) config.Entrypoint = spec.entrypoint;
  else if (spec.entrypoint === null) config.Entrypoint = null;
  if (spec.cmd !== undefined && spec.cmd !== null) config.Cmd = spec.cmd;
  else if (spec.cmd === null) config.Cmd = null;
  const configBody = Buffer.from(
    JSON.stringify({
      architecture: spec.architecture ?? 'amd64',
      os: spec.os ?? 'linux',
      ...(spec.variant ? { variant: spec.variant } : {}),
      config,
      rootfs: { type: 'layers', diff_ids: [sha256Digest(tar)] },
      history: [{ created_by: 'rbinder e2e/registry' }],
    }),
  );
  const configBlob: Blob = { digest: sha256Digest(configBody), mediaType: spec.docker ? MEDIA_TYPES.dockerConfig : MEDIA_TYPES.ociConfig, body: configBody };
  const manifestType = spec.docker ? MEDIA_TYPES.dockerManifest : MEDIA_TYPES.ociManifest;
  const manifestBody = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: manifestType,
      config: { mediaType: configBlob.mediaType, digest: configBlob.digest, size: configBody.length },
      layers: [{ mediaType: layerBlob.mediaType, digest: layerBlob.digest, size: layer.length }],
    }),
  );
  return { blobs: [layerBlob, configBlob], manifest: { digest: sha256Digest(manifestBody), mediaType: manifestType, body: manifestBody } };
}

export interface IndexEntry {
  manifest: Blob;
  platform?: { os: string; architecture: string; variant?: string };
}

export function assembleIndex(entries: IndexEntry[], docker = false): Blob {
  const mediaType = docker ? MEDIA_TYPES.dockerList : MEDIA_TYPES.ociIndex;
  const body = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      manifests: entries.map((e) => ({
        mediaType: e.manifest.mediaType,
        digest: e.manifest.digest,
        size: e.manifest.body.length,
        ...(e.platform ? { platform: e.platform } : {}),
      })),
    }),
  );
  return { digest: sha256Digest(body), mediaType, body };
}

// ---------------------------------------------------------------------------------------------

export interface PushTarget {
  /** "http://127.0.0.1:5000" or "https://...". */
  url: string;
  /** PEM CA to trust (HTTPS registries with a test CA). */
  ca?: string;
  /** The Authorization header for pushing to a repository, if the registry wants one. */
  authorization?: (repository: string) => Promise<string | undefined>;
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP request with a bounded wait (test helper: the registry is local). */
export function request(url: string, init: { method?: string; headers?: Record<string, string>; body?: Buffer; ca?: string } = {}): Promise<Reply> {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request(u, { method: init.method ?? 'GET', headers: init.headers, ca: init.ca, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${init.method ?? 'GET'} ${url}: timed out`)));
    req.on('error', reject);
    req.end(init.body);
  });
}

async function authHeaders(target: PushTarget, repository: string): Promise<Record<string, string>> {
  const authorization = await target.authorization?.(repository);
  return authorization ? { Authorization: authorization } : {};
}

export async function pushBlob(target: PushTarget, repository: string, blob: Blob): Promise<void> {
  const headers = await authHeaders(target, repository);
  const start = await request(`${target.url}/v2/${repository}/blobs/uploads/`, { method: 'POST', headers, ca: target.ca });
  if (start.status !== 202) throw new Error(`start upload to ${repository}: ${start.status} ${start.body.toString()}`);
  const location = new URL(String(start.headers.location), target.url);
  location.searchParams.set('digest', blob.digest);
  const put = await request(location.toString(), {
    method: 'PUT',
    headers: { ...headers, 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.body.length) },
    body: blob.body,
    ca: target.ca,
  });
  if (put.status !== 201) throw new Error(`upload ${blob.digest} to ${repository}: ${put.status} ${put.body.toString()}`);
}

export async function pushManifest(target: PushTarget, repository: string, reference: string, manifest: Blob): Promise<void> {
  const headers = await authHeaders(target, repository);
  const put = await request(`${target.url}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    headers: { ...headers, 'Content-Type': manifest.mediaType },
    body: manifest.body,
    ca: target.ca,
  });
  if (put.status !== 201) throw new Error(`push manifest ${repository}:${reference}: ${put.status} ${put.body.toString()}`);
}

/** Pushes a single-platform image; returns its manifest digest. */
export async function pushImage(target: PushTarget, repository: string, tag: string, spec: ImageSpec): Promise<string> {
  const image = assembleImage(spec);
  for (const blob of image.blobs) await pushBlob(target, repository, blob);
  await pushManifest(target, repository, tag, image.manifest);
  return image.manifest.digest;
}

/**
 * Pushes one image per spec and an index over them (platforms from the specs; `attestation` adds
 * an "unknown/unknown" entry as buildx does). Returns the index digest.
 */
export async function pushMultiArch(
  target: PushTarget,
  repository: string,
  tag: string,
  specs: ImageSpec[],
  options: { docker?: boolean; attestation?: boolean } = {},
): Promise<string> {
  const entries: IndexEntry[] = [];
  for (const spec of specs) {
    const image = assembleImage({ ...spec, docker: options.docker });
    for (const blob of image.blobs) await pushBlob(target, repository, blob);
    await pushManifest(target, repository, image.manifest.digest, image.manifest);
    entries.push({ manifest: image.manifest, platform: { os: spec.os ?? 'linux', architecture: spec.architecture ?? 'amd64', ...(spec.variant ? { variant: spec.variant } : {}) } });
  }
  if (options.attestation) {
    const attestation = assembleImage({ entrypoint: null, cmd: null, architecture: 'unknown', os: 'unknown' });
    for (const blob of attestation.blobs) await pushBlob(target, repository, blob);
    await pushManifest(target, repository, attestation.manifest.digest, attestation.manifest);
    entries.push({ manifest: attestation.manifest, platform: { os: 'unknown', architecture: 'unknown' } });
  }
  const index = assembleIndex(entries, options.docker);
  await pushManifest(target, repository, tag, index);
  return index.digest;
}
