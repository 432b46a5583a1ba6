// The tracer's JavaScript runs at a low rate (a batch of spans every 100 ms) with full GCs in
// between. V8's optimized code depends weakly on the maps (hidden classes) of the objects it was
// optimized for; when such a map dies at a GC, the code is thrown away and compiled again. Buffers
// and objects made through N-API, and objects made per call, had maps that died that way: on the
// chain benchmark the decoder and the serializer were recompiled after every full GC (several a
// second). This runs the export path under --trace-deopt with full GCs while no batch is alive,
// and checks that V8 threw nothing away for a dead map ("weak objects").
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../../e2e/support/process';

describe('optimized code of the export path', () => {
  it('survives full GCs between batches (no deoptimization for a dead map)', () => {
    const run = spawnSync(
      process.execPath,
      ['--expose-gc', '--trace-opt', '--trace-deopt', join(__dirname, 'programs', 'export-gc.js'), repoRoot],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/serialized \d+ bytes/);
    // The check means something only if the hot functions were optimized in the first place.
    for (const hot of ['decodeSpans', 'serializeRequest']) {
      expect(run.stdout).toMatch(new RegExp(`completed compiling \\S+ <JSFunction ${hot} .*TURBOFAN`));
    }
    const thrownAway = run.stdout.split('\n').filter((line) => line.includes('reason: weak objects'));
    expect(thrownAway).toEqual([]);
  });
});
