import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { tempDir } from '../helpers/reaper.js';

const scripts = fileURLToPath(new URL('../../../scripts/', import.meta.url));
const root = fileURLToPath(new URL('../', import.meta.url));
const { longestFirst } = await import(pathToFileURL(join(scripts, 'file-times.js')).href);
const { treeCpuMs } = await import('../helpers/file-meter.js');

/** Test files that each append their name to `log` as they start, so a run shows its order. */
function files(dir: string, names: string[], log: string): string[] {
  return names.map((name) => {
    const file = join(dir, `${name}.test.mjs`);
    writeFileSync(file, `import { appendFileSync } from 'node:fs';\nimport { test } from 'node:test';\nappendFileSync(${JSON.stringify(log)}, '${name}\\n');\ntest('${name} runs', () => {});\n`);
    return file;
  });
}

describe('the CPU a test file reports', () => {
  it("reads its own and its reaped children's user and system times, past a command name with spaces and parentheses", () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    const stat = '4242 (node a) b) S 1 4242 4242 0 -1 4194304 100 0 0 0 30 7 150 13 20 0 11 0 99';
    assert.equal(treeCpuMs(stat), 2000);
  });
});

describe('the order the test runner starts files in', () => {
  it('puts files the table does not know first, alphabetically, then the others longest first', () => {
    const times = { 'e2e/short.test.js': { ms: 1_000 }, 'e2e/long.test.js': { ms: 80_000, estimate: true }, 'unit/mid.test.js': { ms: 20_000 } };
    const order = longestFirst(['e2e/long.test.js', 'e2e/new-b.test.js', 'e2e/short.test.js', 'unit/mid.test.js', 'e2e/new-a.test.js'], times, (f: string) => f);
    assert.deepEqual(order, ['e2e/new-a.test.js', 'e2e/new-b.test.js', 'e2e/long.test.js', 'unit/mid.test.js', 'e2e/short.test.js']);
  });

  it('runs the files in the order given (node --test sorted them), ends with the summary line, and writes their times into the table', () => {
    const dir = tempDir('eventgate-test-order');
    const log = join(dir, 'started');
    const table = join(dir, 'file-times.json');
    const given = files(dir, ['c', 'a', 'b'], log);
    // An entry of a file still there stays; one whose file is gone goes.
    writeFileSync(table, JSON.stringify({ files: { 'unit/test-order.test.js': { ms: 5 }, 'e2e/gone.test.js': { ms: 7 } } }));
    // With the CPU meter's `--import`, as run-tests.js starts it: each file's process inherits it.
    const r = spawnSync(process.execPath, ['--import', join(root, 'helpers', 'file-meter.js'), join(scripts, 'run-files.js'), ...given], {
      encoding: 'utf8',
      // Without NODE_TEST_CONTEXT, which would make the inner runner report to this one.
      env: {
        ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT')),
        EVENTGATE_TEST_CONCURRENCY: '1',
        EVENTGATE_TEST_TIMES_OUT: table,
      },
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.equal(readFileSync(log, 'utf8'), 'c\na\nb\n');
    assert.match(r.stdout.trimEnd().split('\n').at(-1)!, /^ℹ duration_ms [0-9.]+$/);
    const written = JSON.parse(readFileSync(table, 'utf8')).files;
    const keys = given.map((f) => relative(root, f));
    assert.deepEqual(Object.keys(written).sort(), [...keys, 'unit/test-order.test.js'].sort());
    for (const key of keys) {
      assert.deepEqual(Object.keys(written[key]), ['ms', 'cpuMs', 'tailMs'], `${key}: a measured time, CPU and tail, no estimate`);
      // A Node process's start alone takes tens of milliseconds of CPU; these files have no hooks.
      assert.ok(written[key].cpuMs > 0, `${key}: ${written[key].cpuMs} ms of CPU`);
      assert.ok(written[key].tailMs >= 0 && written[key].tailMs < written[key].ms, `${key}: a tail of ${written[key].tailMs} ms`);
    }
    assert.deepEqual(written['unit/test-order.test.js'], { ms: 5 });
  });
});
