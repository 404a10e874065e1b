import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/reaper.js';

const guard = fileURLToPath(new URL('../helpers/linger-guard.js', import.meta.url));
const runFiles = fileURLToPath(new URL('../../../scripts/run-files.js', import.meta.url));

/** Runs one test file as scripts/run-tests.js runs each: `node --import <guard> scripts/run-files.js FILE`. */
function runGuarded(source: string) {
  const dir = tempDir('eventgate-linger');
  const file = join(dir, 'x.test.mjs');
  writeFileSync(file, source);
  return spawnSync(process.execPath, ['--import', guard, runFiles, file], {
    encoding: 'utf8',
    // Without NODE_TEST_CONTEXT, which would make the inner runner report to this one.
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT')), EVENTGATE_TEST_LINGER_MS: '300' },
    timeout: 60_000,
  });
}

describe('the test runner linger guard', () => {
  it('fails a file whose process outlives its tests, naming the handles and child processes that hold it', () => {
    const r = runGuarded(`import { test } from 'node:test';
import { spawn } from 'node:child_process';
import net from 'node:net';
test('passes', () => {});
net.createServer().listen(0, '127.0.0.1');
spawn('cat', [], { stdio: ['pipe', 'ignore', 'ignore'] }); // ends when this process does (its stdin closes)
`);
    assert.notEqual(r.status, 0, r.stdout);
    assert.match(r.stderr + r.stdout, /linger-guard: .*x\.test\.mjs still running 0\.3 s after its tests; open: .*TCPServerWrap/);
    assert.match(r.stderr + r.stdout, /child processes: \["\d+ cat"\]/);
  });

  it('leaves a file that ends on its own alone', () => {
    const r = runGuarded(`import { test, after } from 'node:test';
import net from 'node:net';
const server = net.createServer().listen(0, '127.0.0.1');
test('passes', () => {});
after(() => server.close());
`);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stderr + r.stdout, /linger-guard/);
  });
});
