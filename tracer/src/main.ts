// rbinder's entry point: parse the command line, start the engine on the program, export what it
// sees, and end exactly as the program ends.
import * as os from 'node:os';
import { commandForArch } from './arch-command';
import { exportsOtlpProtobufSpans, parseCommandLine, TracerConfig, UsageError } from './config';
import type { Telemetry } from './export/pipeline';
import { log, setLogLevel } from './log';
import { loadNative, SAMPLER_TYPES } from './native';
import { injectionSettings, propagatorMask } from './propagation';
import type { Batch } from './records';
import {
  envArray,
  exitStatus,
  inheritedFds,
  launchedProgram,
  programEnv,
  resolveExecutable,
  type LaunchedProgram,
} from './spawn';

/** Signals passed on to the program (DESIGN: the program runs as it would without rbinder). */
const FORWARDED_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'];
/** Signals a terminal sends to its whole foreground process group, the program included. */
const TERMINAL_SIGNALS = new Set<NodeJS.Signals>(['SIGINT', 'SIGQUIT', 'SIGWINCH']);

/**
 * console.* writes synchronously to the descriptors instead of through process.stdout/stderr:
 * those libuv streams switch a pipe to non-blocking mode, and the pipe is shared with the program,
 * which would then see EAGAIN on its own writes. (--exporter console prints through console.)
 */
function useSynchronousConsole(): void {
  const fs = require('node:fs') as typeof import('node:fs');
  const { Writable } = require('node:stream') as typeof import('node:stream');
  const syncTo = (fd: number) =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        try {
          fs.writeSync(fd, chunk);
          done();
        } catch (err) {
          done(err as Error);
        }
      },
    });
  globalThis.console = new (require('node:console').Console)({ stdout: syncTo(1), stderr: syncTo(2) });
}

function writeStderr(text: string): void {
  // Not process.stderr: a libuv stream would switch the shared descriptor to non-blocking mode.
  require('node:fs').writeSync(2, text.endsWith('\n') ? text : `${text}\n`);
}

export async function main(argv: string[]): Promise<number> {
  const launched = launchedProgram(process.env);
  // A launched program runs already: pass signals on before anything else takes time. (Until
  // here, while Node boots, a signal that ends rbinder reaches the program as its parent-death
  // signal, SIGTERM.)
  const forwarding = forwardSignals();
  if (launched) forwarding.to(launched.pid);
  useSynchronousConsole();
  let parsed: ReturnType<typeof parseCommandLine>;
  try {
    parsed = parseCommandLine(argv, process.env);
  } catch (err) {
    if (err instanceof UsageError) {
      if (launched) abandonLaunched(launched.pid);
      writeStderr(err.message);
      return err.exitCode;
    }
    throw err;
  }
  if (launched && !('command' in parsed)) abandonLaunched(launched.pid);
  if ('help' in parsed) {
    require('node:fs').writeSync(1, parsed.help);
    return 0;
  }
  if ('version' in parsed) {
    require('node:fs').writeSync(1, `${parsed.version}\n`);
    return 0;
  }
  return run(parsed, launched, forwarding);
}

/**
 * The launcher starts the program only for command lines this parser accepts (launcher/plan.h,
 * checked against it by tracer/test/launcher.test.ts); should they ever disagree, the program
 * must not run on untraced, waiting for upcall answers.
 */
function abandonLaunched(pid: number): void {
  writeStderr('rbinder: internal error: the launcher started the program for a command line rbinder rejects');
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

async function run(
  config: TracerConfig,
  launched: LaunchedProgram | undefined,
  forwarding: { to(pid: number): void },
): Promise<number> {
  setLogLevel(config.logLevel);
  for (const warning of config.warnings) log.warn(warning);
  if (config.commandByArch) {
    const chosen = commandForArch(config.env, config.command);
    if ('error' in chosen) {
      writeStderr(chosen.error);
      return 127;
    }
    config = { ...config, command: chosen.argv, env: chosen.env };
  }
  const [command, ...args] = config.command;
  const resolution = launched ? { file: command } : resolveExecutable(command, config.env);
  if (!('file' in resolution)) {
    writeStderr(resolution.message);
    return resolution.exitCode;
  }

  const native = loadNative();
  // The program starts before the OpenTelemetry SDK is loaded (~100 ms of module loading):
  // batches that arrive meanwhile wait in `early`.
  let telemetry: Telemetry | undefined;
  const early: Batch[] = [];
  const loadTelemetry = (): Telemetry => {
    if (!telemetry) {
      const { createTelemetry } = require('./export/pipeline') as typeof import('./export/pipeline');
      telemetry = createTelemetry(config, {
        engineStats: () => native.engineStats(),
        onExportBehind: (behind) => native.setExportBehind(behind),
      });
      for (const batch of early.splice(0)) telemetry.onBatch(batch);
    }
    return telemetry;
  };
  let finish: (status: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (finish = resolve));
  let ending = false;

  const onBatch = (batch: Batch): void => {
    if (telemetry) telemetry.onBatch(batch);
    else early.push(batch);
    if (!batch.exit || ending) return;
    ending = true;
    const exit = batch.exit;
    let status = exitStatus(exit.code, exit.signal);
    if (exit.spawnError) {
      writeStderr(`rbinder: cannot execute ${command}: ${exit.spawnError.message}`);
      status = exit.spawnError.errno === os.constants.errno.ENOENT ? 127 : 126;
    }
    log.debug({ stats: native.engineStats() }, 'engine counters at exit');
    if (exit.engineError) writeStderr(`rbinder: tracer failed, program stopped: ${exit.engineError}`);
    void loadTelemetry()
      .shutdown(config.flushTimeoutMillis)
      .then(() => finish(status));
  };

  const sampler = { type: SAMPLER_TYPES.indexOf(config.sampler.type), ratio: config.sampler.ratio };
  let pid: number;
  try {
    pid = native.startEngine(
      {
        file: resolution.file,
        argv: [command, ...args],
        env: envArray(programEnv(config.env)),
        sampler,
        fast: config.mode === 'fast',
        idleExport: config.exportPriority === 'idle',
        otlpSpans: exportsOtlpProtobufSpans(config),
        propagators: propagatorMask(config.propagators),
        ...injectionSettings(config.injectTo, config.propagators),
        inheritFds: launched ? [] : inheritedFds(config.env),
        launched,
      },
      onBatch,
    );
  } catch (err) {
    writeStderr(`rbinder: cannot trace ${command}: ${(err as Error).message}`);
    await loadTelemetry().shutdown(config.flushTimeoutMillis);
    return 126;
  }
  log.debug({ programPid: pid, command: config.command }, 'program started');
  if (!launched) forwarding.to(pid);
  loadTelemetry();
  return finished;
}

/** From now on rbinder's signals reach the program. Installed before the program starts (a program
 * that starts fast may be told to stop before rbinder knows its pid, and rbinder would die of the
 * signal, with the program and its spans): until `to(pid)`, signals wait. */
function forwardSignals(): { to(pid: number): void } {
  let target = 0;
  let waiting: NodeJS.Signals[] = [];
  let foreground: boolean | undefined;
  const send = (signal: NodeJS.Signals): void => {
    foreground ??= loadNative().isForegroundOfTerminal();
    if (foreground && TERMINAL_SIGNALS.has(signal)) return; // the terminal sent it to the program too
    try {
      process.kill(target, signal);
    } catch {
      // already gone: its exit is on its way
    }
  };
  for (const signal of FORWARDED_SIGNALS) {
    process.on(signal, () => (target ? send(signal) : waiting.push(signal)));
  }
  return {
    to(pid: number): void {
      target = pid;
      for (const signal of waiting) send(signal);
      waiting = [];
    },
  };
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (status) => process.exit(status),
    (err: unknown) => {
      writeStderr(`rbinder: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      process.exit(70);
    },
  );
}
