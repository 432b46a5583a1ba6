// Cached builds of the Go and Java programs the tests run.
//
// Outputs live OUTSIDE the repo, in $RBINDER_CACHE or ~/.cache/rbinder/bin/, named by a hash of
// the sources and the toolchain version, so an unchanged program is built once per machine.
// Builds go to a temporary name and are renamed into place, so concurrent test workers (or
// processes) may race to build the same thing safely: the loser's rename just replaces (or, for
// a directory, yields to) an identical result.

import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Where built programs are kept: $RBINDER_CACHE, else ~/.cache/rbinder/bin. */
export function cacheDir(): string {
  return process.env.RBINDER_CACHE ?? join(homedir(), '.cache', 'rbinder', 'bin');
}

/** Builds in progress in this process, so parallel callers share one build. */
const pending = new Map<string, Promise<string>>();

function once(key: string, build: () => Promise<string>): Promise<string> {
  let p = pending.get(key);
  if (!p) {
    p = build();
    pending.set(key, p);
    p.catch(() => pending.delete(key)); // let a later call retry a failed build
  }
  return p;
}

/** Files under dir (recursively, skipping dot-directories and testdata) accepted by keep, sorted. */
async function sourceFiles(dir: string, keep: (name: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!entry.name.startsWith('.') && entry.name !== 'testdata') out.push(...(await sourceFiles(path, keep)));
    } else if (entry.isFile() && keep(entry.name)) {
      out.push(path);
    }
  }
  return out.sort();
}

/** A short hash of the build recipe (toolchain version, flags), the files' paths (relative to root) and contents. */
async function hashSources(root: string, files: string[], recipe: string): Promise<string> {
  const hash = createHash('sha256').update(recipe).update('\0');
  for (const file of files) {
    hash.update(relative(root, file)).update('\0').update(await readFile(file)).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

function tempName(final: string): string {
  return `${final}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

async function toolOutput(cmd: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await run(cmd, args);
  return `${stdout}${stderr}`.trim();
}

/**
 * Builds the Go main package in `dir` (which has its own go.mod) and returns the path of the
 * binary, `<cacheDir>/<name>-<hash>`. Reuses it when the sources (go.mod, go.sum, *.go), the Go
 * version and the build flags are unchanged.
 */
export function ensureGoBinary(dir: string, name: string, opts: { stripped?: boolean } = {}): Promise<string> {
  const srcDir = resolve(dir);
  return once(`go:${srcDir}:${name}`, async () => {
    const files = await sourceFiles(srcDir, (f) => f === 'go.mod' || f === 'go.sum' || f.endsWith('.go'));
    // stripped: no symbol table nor DWARF, as most Go binaries in container images are built.
    const buildArgs = ['build', ...(opts.stripped ? ['-ldflags=-s -w'] : []), '-o', '<out>', '.'];
    const recipe = `${await toolOutput('go', ['env', 'GOVERSION'])} ${buildArgs.join(' ')}`;
    const binary = join(cacheDir(), `${name}-${await hashSources(srcDir, files, recipe)}`);
    if (existsSync(binary)) return binary;

    await mkdir(cacheDir(), { recursive: true });
    const tmp = tempName(binary);
    try {
      await run('go', buildArgs.map((a) => (a === '<out>' ? tmp : a)), {
        cwd: srcDir,
        env: { ...process.env, GOFLAGS: `${process.env.GOFLAGS ?? ''} -mod=mod`.trim() },
        maxBuffer: 16 << 20,
      });
    } catch (err) {
      await rm(tmp, { force: true });
      throw new Error(`go build in ${srcDir} failed:\n${buildOutput(err)}`);
    }
    await rename(tmp, binary); // atomic; a concurrent identical build may have won, which is fine
    return binary;
  });
}

/**
 * Compiles every *.java file in `srcDir` (not recursive) with javac and returns the directory
 * of the classes, for `java -cp <dir> Main`. Reused while the sources and javac are unchanged.
 */
export function ensureJavaClasses(srcDir: string): Promise<string> {
  const dir = resolve(srcDir);
  return once(`java:${dir}`, async () => {
    const files = (await readdir(dir)).filter((f) => f.endsWith('.java')).sort().map((f) => join(dir, f));
    if (files.length === 0) throw new Error(`no .java files in ${dir}`);
    const javacArgs = ['-nowarn', '-XDignore.symbol.file'];
    const recipe = `${await toolOutput('javac', ['-version'])} ${javacArgs.join(' ')}`;
    const classes = join(cacheDir(), `java-${basename(dir)}-${await hashSources(dir, files, recipe)}`);
    if (existsSync(classes)) return classes;

    await mkdir(cacheDir(), { recursive: true });
    const tmp = tempName(classes);
    try {
      await run('javac', [...javacArgs, '-d', tmp, ...files], { maxBuffer: 16 << 20 });
      await rename(tmp, classes);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      // A concurrent build of the same sources got there first (rename onto a non-empty dir fails).
      if (existsSync(classes)) return classes;
      throw new Error(`javac in ${dir} failed:\n${buildOutput(err)}`);
    }
    return classes;
  });
}

function buildOutput(err: unknown): string {
  if (err && typeof err === 'object' && 'stderr' in err) {
    const e = err as { stdout?: string; stderr?: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}`;
  }
  return String(err);
}
