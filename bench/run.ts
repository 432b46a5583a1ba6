// rbinder's benchmark harness: throughput, latency, startup, memory and scaling of programs run
// untraced, under rbinder (every --mode), with OpenTelemetry auto-instrumentation, under strace
// and under a bare seccomp+ptrace loop, each traced run against untraced runs of the same round.
//
//   npm run bench [-- --quick] [--scenarios hello-pinned,hello-unpinned,hello-go-pinned,chain,startup,scaling-connections,scaling-threads]
//     [--variants rbinder-ptrace,otel,...] [--scaling-variants ...] [--rounds N] [--duration S] [--warmup S]
//     [--startup-reps N] [--out DIR] [--docs | --no-docs] [--render-only]
//
// Writes DIR/results.json, DIR/chart.svg, DIR/summary.md (DIR: bench/results, or bench/results/quick
// with --quick) and, for a full run, the generated part of docs/benchmarks.md. --render-only
// measures nothing and re-renders those from DIR/results.json. See docs/benchmarks.md.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../e2e/support/process';
import { startCountingReceiver } from './lib/receiver';
import { ensureApt, ensureBarePtrace, ensureJavaAgent, ensureOtelNode, JAVA_AGENT, log, OTEL_NODE_PACKAGES, versionOf } from './lib/tools';
import type { BenchResults } from './lib/types';
import { bareVariant, otelVariant, rbinderModes, rbinderVariant, RBINDER, straceVariant, untraced, type Variant, type VariantTools } from './lib/variants';
import { chartSvg } from './report/svg';
import { DOC_END, DOC_START, summaryMarkdown } from './report/markdown';
import {
  chainScenario,
  helloScenario,
  memoryRows,
  scalingConnections,
  scalingThreads,
  startupScenario,
  type BenchContext,
  type Settings,
} from './scenarios';

export const SCENARIOS = ['hello-pinned', 'hello-unpinned', 'hello-go-pinned', 'chain', 'startup', 'scaling-connections', 'scaling-threads'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export interface BenchOptions {
  quick: boolean;
  scenarios: ScenarioName[];
  /** Traced variant ids to run (default: all); untraced always runs. */
  variants?: string[];
  /** Traced variants of the scaling scenarios (default: the rbinder modes). */
  scalingVariants?: string[];
  outDir: string;
  /** Rewrite the generated part of docs/benchmarks.md. */
  updateDocs: boolean;
  /** Measure nothing: re-render chart, tables (and docs) from outDir/results.json. */
  renderOnly?: boolean;
  settings?: Partial<Settings>;
}

export function defaultSettings(quick: boolean): Settings {
  return quick
    ? { rounds: 1, durationS: 1, warmupS: 1, startupReps: 2, scalingRounds: 1, scalingConnections: [1, 1000], scalingThreads: [1, 64], chainWorkUs: 500, chainWarmupS: 3, idleAfterMs: 500 }
    : { rounds: 3, durationS: 4, warmupS: 1, startupReps: 5, scalingRounds: 2, scalingConnections: [1, 10, 100, 1000], scalingThreads: [1, 4, 16, 64], chainWorkUs: 500, chainWarmupS: 5, idleAfterMs: 1000 };
}

const wanted = (o: BenchOptions, id: string): boolean => !o.variants || o.variants.includes(id);

/** Installs what the chosen variants need and builds the variant list; missing things become skips. */
async function prepareVariants(o: BenchOptions, results: BenchResults): Promise<Variant[]> {
  const tools: VariantTools = { otelMissing: {} };
  await ensureApt('wrk', 'wrk');
  const modes = rbinderModes();
  const variants: Variant[] = modes.map((mode) => rbinderVariant(mode));
  // The default export priority is idle: the same mode with it normal shows what that buys and costs.
  if (modes.includes('fast')) {
    variants.push(rbinderVariant('fast', { exportPriority: 'normal' }));
    // No span sampled: what the traps, the engine and request metrics cost without spans.
    variants.push(rbinderVariant('fast', { sampler: 'always_off' }));
    // Decomposition aids, only when asked for by --variants: nothing made or exported; nothing
    // injected (no upcall); spans serialized by the SDK instead of the engine.
    if (o.variants?.includes('rbinder-fast-noexport')) variants.push(rbinderVariant('fast', { exporterNone: true }));
    if (o.variants?.includes('rbinder-fast-nopropagation')) variants.push(rbinderVariant('fast', { noPropagation: true }));
    if (o.variants?.includes('rbinder-fast-sdkencoding')) variants.push(rbinderVariant('fast', { sdkEncoding: true }));
    if (o.variants?.includes('rbinder-fast-enginecontext')) variants.push(rbinderVariant('fast', { engineContext: true }));
    if (o.variants?.includes('rbinder-fast-trapsonly')) variants.push(rbinderVariant('fast', { trapsOnly: true }));
    // Another export batch size or schedule delay: rbinder-fast-batchN, rbinder-fast-delayMS
    // (e.g. rbinder-fast-batch512, rbinder-fast-delay1000).
    for (const id of o.variants ?? []) {
      const batch = /^rbinder-fast-batch(\d+)$/.exec(id);
      if (batch) variants.push(rbinderVariant('fast', { exportBatch: Number(batch[1]) }));
      const delay = /^rbinder-fast-delay(\d+)$/.exec(id);
      if (delay) variants.push(rbinderVariant('fast', { exportDelay: Number(delay[1]) }));
    }
  }
  const langs = new Set<string>();
  for (const s of o.scenarios) {
    if (s === 'hello-pinned' || s === 'hello-unpinned' || s === 'scaling-connections') langs.add('node');
    if (s === 'scaling-threads') langs.add('java');
    if (s === 'hello-go-pinned') langs.add('go');
    if (s === 'chain' || s === 'startup') langs.add('node').add('java');
  }
  if (wanted(o, 'otel')) {
    if (langs.has('node')) {
      try {
        tools.otelNodeRegister = await ensureOtelNode();
      } catch (err) {
        (tools.otelMissing as Record<string, string>).node = `npm install failed: ${(err as Error).message.split('\n')[0]}`;
      }
    }
    if (langs.has('java')) {
      try {
        tools.otelJavaAgent = await ensureJavaAgent();
      } catch (err) {
        (tools.otelMissing as Record<string, string>).java = `Java agent ${JAVA_AGENT.version} not fetched: ${(err as Error).message.split('\n')[0]}`;
      }
    }
    variants.push(otelVariant(tools));
  }
  if (wanted(o, 'strace')) {
    try {
      variants.push(straceVariant(await ensureApt('strace', 'strace')));
    } catch (err) {
      results.skipped.push({ scenario: 'all', variant: 'strace', reason: (err as Error).message });
    }
  }
  if (wanted(o, 'bare-entry') || wanted(o, 'bare-entry-exit')) {
    const bare = await ensureBarePtrace();
    variants.push(bareVariant(bare, 'entry'), bareVariant(bare, 'entry-exit'));
  }
  results.machine.tools = {
    ...results.machine.tools,
    ...(tools.otelNodeRegister ? { 'otel-node': Object.entries(OTEL_NODE_PACKAGES).map(([k, v]) => `${k}@${v}`).join(' ') } : {}),
    ...(tools.otelJavaAgent ? { 'otel-java-agent': `${JAVA_AGENT.artifact} ${JAVA_AGENT.version}` } : {}),
  };
  return variants.filter((v) => wanted(o, v.id));
}

/** lscpu without the flags and vulnerability lines, one "key: value" per line. */
function lscpu(): string {
  const out = spawnSync('lscpu', [], { encoding: 'utf8' }).stdout ?? '';
  return out
    .split('\n')
    .filter((l) => l.trim() && !/^(Flags|Vulnerability)/.test(l))
    .map((l) => l.replace(/:\s+/, ': ').trim())
    .join('\n');
}

function machine(): BenchResults['machine'] {
  const cpus = os.cpus();
  return {
    nproc: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    kernel: os.release(),
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    lscpu: lscpu(),
    loadAverageStart: os.loadavg(),
    loadAverageEnd: [],
    tools: {
      node: process.version,
      java: versionOf('java', ['-version']),
      wrk: versionOf('wrk', ['-v']),
      strace: versionOf('strace', ['-V']),
      gcc: versionOf('gcc', ['--version']),
      rbinder: versionOf(RBINDER, ['--version']),
      // Others rebuild the tracer while benchmarks run: which sources and addon build were measured.
      'repo-head': versionOf('git', ['-C', repoRoot, 'rev-parse', '--short', 'HEAD']),
      'native-addon-built': addonTime(),
    },
  };
}

function addonTime(): string {
  const addon = join(repoRoot, 'native', 'build', 'Release', 'rbinder_native.node');
  return existsSync(addon) ? statSync(addon).mtime.toISOString() : 'missing';
}

function checkBuilt(): void {
  const missing = [
    join(repoRoot, 'dist', 'tracer', 'rbinder.js'),
    join(repoRoot, 'native', 'build', 'Release', 'rbinder_native.node'),
    join(repoRoot, 'native', 'build', 'Release', 'rbinder-launch'),
  ].filter(
    (f) => !existsSync(f),
  );
  if (missing.length) throw new Error(`rbinder is not built (missing ${missing.join(', ')}): run npm run build first`);
}

/** JSON with numbers to 3 decimals and every innermost object or array on one line: small, diffable. */
export function compactJson(value: unknown): string {
  const text = JSON.stringify(value, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1000) / 1000 : v), 1);
  return `${text.replace(/[{[][^{}[\]]*[}\]]/g, (leaf) => leaf.replace(/\n\s*/g, ' '))}\n`;
}

function write(o: BenchOptions, r: BenchResults): void {
  mkdirSync(o.outDir, { recursive: true });
  writeFileSync(join(o.outDir, 'results.json'), compactJson(r));
  writeFileSync(join(o.outDir, 'chart.svg'), chartSvg(r));
  writeFileSync(join(o.outDir, 'summary.md'), summaryMarkdown(r));
}

function updateDocs(r: BenchResults): void {
  const doc = join(repoRoot, 'docs', 'benchmarks.md');
  const text = existsSync(doc) ? readFileSync(doc, 'utf8') : '';
  const a = text.indexOf(DOC_START);
  const b = text.indexOf(DOC_END);
  if (a < 0 || b < a) {
    log(`docs/benchmarks.md has no results markers; not updated`);
    return;
  }
  writeFileSync(doc, `${text.slice(0, a + DOC_START.length)}\n${summaryMarkdown(r)}${text.slice(b)}`);
}

export async function runBenchmarks(o: BenchOptions): Promise<BenchResults> {
  if (o.renderOnly) {
    const r = JSON.parse(readFileSync(join(o.outDir, 'results.json'), 'utf8')) as BenchResults;
    write(o, r);
    if (o.updateDocs) updateDocs(r);
    return r;
  }
  checkBuilt();
  const settings = { ...defaultSettings(o.quick), ...o.settings };
  const results: BenchResults = {
    schema: 1,
    quick: o.quick,
    startedAt: new Date().toISOString(),
    finishedAt: '',
    machine: machine(),
    settings: { rounds: settings.rounds, durationS: settings.durationS, warmupS: settings.warmupS, startupReps: settings.startupReps },
    variants: [],
    scenarios: {},
    skipped: [],
  };
  const variants = await prepareVariants(o, results);
  results.variants = [untraced, ...variants].map((v) => ({ id: v.id, label: v.label, description: v.description }));
  const receiver = await startCountingReceiver();
  const ctx: BenchContext = { receiver, variants, settings, skipped: results.skipped };
  const scalingVariants = variants.filter((v) => (o.scalingVariants ? o.scalingVariants.includes(v.id) : /^rbinder-[a-z]+$/.test(v.id)));
  const s = results.scenarios;
  try {
    for (const name of o.scenarios) {
      log(`scenario ${name}`);
      if (name === 'hello-pinned') s.helloPinned = await helloScenario(ctx, true);
      if (name === 'hello-unpinned') s.helloUnpinned = await helloScenario(ctx, false);
      if (name === 'hello-go-pinned') s.helloGoPinned = await helloScenario(ctx, true, true);
      if (name === 'chain') {
        const c = await chainScenario(ctx);
        s.chain = c.scenario;
        results.chainWork = { targetUsPerService: settings.chainWorkUs, iterations: c.iterations };
      }
      if (name === 'startup') s.startup = await startupScenario(ctx);
      if (name === 'scaling-connections') s.scalingConnections = await scalingConnections(ctx, scalingVariants);
      if (name === 'scaling-threads') s.scalingThreads = await scalingThreads(ctx, scalingVariants);
      const mem = [
        ...(s.helloUnpinned ? [{ name: 'hello', runs: s.helloUnpinned.runs }] : []),
        ...(s.chain ? [{ name: 'chain', runs: s.chain.runs }] : []),
      ];
      if (mem.length) s.memory = memoryRows(mem);
      results.machine.loadAverageEnd = os.loadavg();
      results.finishedAt = new Date().toISOString();
      write(o, results); // after every scenario: an interrupted run keeps what it measured
    }
  } finally {
    await receiver.stop();
  }
  if (o.updateDocs) updateDocs(results);
  return results;
}

function parseArgs(argv: string[]): BenchOptions {
  const quick = argv.includes('--quick');
  const value = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const list = (flag: string): string[] | undefined => value(flag)?.split(',').map((x) => x.trim()).filter(Boolean);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n');
    process.exit(0);
  }
  const scenarios = (list('--scenarios') ?? [...SCENARIOS]) as ScenarioName[];
  for (const sc of scenarios) if (!SCENARIOS.includes(sc)) throw new Error(`unknown scenario ${sc} (known: ${SCENARIOS.join(', ')})`);
  const settings: Partial<Settings> = {};
  const n = (flag: string): number | undefined => (value(flag) === undefined ? undefined : Number(value(flag)));
  if (n('--rounds') !== undefined) settings.rounds = n('--rounds');
  if (n('--duration') !== undefined) settings.durationS = n('--duration');
  if (n('--warmup') !== undefined) settings.warmupS = n('--warmup');
  if (n('--startup-reps') !== undefined) settings.startupReps = n('--startup-reps');
  return {
    quick,
    scenarios,
    variants: list('--variants'),
    scalingVariants: list('--scaling-variants'),
    outDir: value('--out') ?? join(repoRoot, 'bench', 'results', ...(quick ? ['quick'] : [])),
    updateDocs: argv.includes('--docs') || (!quick && !argv.includes('--no-docs')),
    renderOnly: argv.includes('--render-only'),
    settings,
  };
}

if (typeof require !== 'undefined' && require.main === module) {
  process.on('SIGINT', () => process.exit(130)); // runs the exit hook that kills every child group
  process.on('SIGTERM', () => process.exit(143));
  const started = Date.now();
  runBenchmarks(parseArgs(process.argv.slice(2))).then(
    (r) => {
      process.stdout.write(summaryMarkdown(r));
      log(`done in ${((Date.now() - started) / 60000).toFixed(1)} min`);
      process.exit(0);
    },
    (err: unknown) => {
      log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exit(1);
    },
  );
}

