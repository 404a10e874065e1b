import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

/** Runs `npm run bench`'s compiled entry point; speed is never asserted here, only that the harness works. */
async function bench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [join(repoRoot, 'dist/bench/run.js'), ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

describe('npm run bench (smoke, --duration 1)', () => {
  it('runs the chosen scenarios against their baselines and reports them as a table and as JSON', async () => {
    const out = join(tempDir('eventgate-bench'), 'bench.json');
    const run = await bench(['--duration', '1', '--only', 'pipeline,http-memory', '--json', out]);
    assert.equal(run.code, 0, run.stderr);

    const report = JSON.parse(readFileSync(out, 'utf8'));
    for (const key of ['cpu', 'cores', 'memory_gb', 'os', 'node', 'loadavg_at_start', 'date']) assert.ok(key in report.machine, `machine.${key}`);
    assert.deepEqual(Object.keys(report.scenarios), ['pipeline', 'http-memory']);
    for (const [name, s] of Object.entries<any>(report.scenarios)) {
      assert.equal(typeof s.metric, 'string', name);
      assert.ok(isNumber(s.value), `${name}.value`);
      assert.equal(typeof s.baseline.name, 'string', name);
      assert.ok(isNumber(s.baseline.value), `${name}.baseline.value`);
      assert.ok(isNumber(s.ratio), `${name}.ratio`);
      assert.ok(s.p50_ms === null || isNumber(s.p50_ms), `${name}.p50_ms`);
      assert.ok(s.p99_ms === null || isNumber(s.p99_ms), `${name}.p99_ms`);
      assert.ok(['ratio', 'value', 'p99_ms', 'errors'].includes(s.target.field) && ['>=', '<='].includes(s.target.op) && isNumber(s.target.limit), `${name}.target`);
      assert.equal(typeof s.pass, 'boolean', name);
    }
    // The HTTP scenario measures real requests through the gateway, and reports latency for both sides.
    const http = report.scenarios['http-memory'];
    assert.equal(http.baseline.name, 'raw-http');
    assert.ok(isNumber(http.p99_ms) && isNumber(http.baseline.p99_ms));
    assert.equal(http.errors, 0);

    const lines = run.stdout.split('\n');
    assert.match(lines[0]!, /^\| scenario \| metric \| value \| baseline \|/);
    assert.ok(
      lines.some((l) => l.startsWith('| pipeline | µs/message |')),
      run.stdout,
    );
    assert.ok(
      lines.some((l) => l.startsWith('| http-memory | requests/s |') && l.includes('| raw-http |')),
      run.stdout,
    );
  });

  it('refuses an unknown scenario name and lists the known ones', async () => {
    const run = await bench(['--only', 'http-memroy']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /unknown scenario http-memroy/);
    assert.match(run.stderr, /http-memory/);
  });
});
