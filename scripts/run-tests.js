#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with Node's built-in runner, so CI reads
// its summary line. Extra arguments (e.g. a file filter) narrow the set: `npm test -- reload`.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { longestFirst, readFileTimes } from './file-times.js';

const root = new URL('../dist/test/', import.meta.url).pathname;
const filters = process.argv.slice(2);
// Five files at a time on CI's 2 cores: many files wait on servers (Kafka group joins above all),
// and with four the cores were 8 % idle; EVENTGATE_TEST_CONCURRENCY sets another number
// (docs/testing.md "Time budget").
const concurrency = process.env.EVENTGATE_TEST_CONCURRENCY ?? '5';
if (!/^[1-9][0-9]*$/.test(concurrency)) {
  console.error(`run-tests: EVENTGATE_TEST_CONCURRENCY must be a whole number of files, not '${concurrency}'`);
  process.exit(1);
}

function collect(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return collect(p);
    return name.endsWith('.test.js') ? [p] : [];
  });
}

// A filter matches the path under dist/test (`e2e/sse.test.js`), not the checkout's own path, so
// `sse` run in a checkout named /work/sse-perf does not select every file. The longest files start
// first (test/file-times.json, scripts/file-times.js).
const files = longestFirst(
  collect(root).filter((f) => filters.length === 0 || filters.some((x) => relative(root, f).includes(x))),
  readFileTimes(new URL('../test/file-times.json', import.meta.url).pathname),
  (f) => relative(root, f),
);
if (files.length === 0) {
  console.error('run-tests: no test files matched');
  process.exit(1);
}

// One RabbitMQ of each kind the files call for (test/helpers/shared-rabbit.ts, shared-rabbit-kinds.ts),
// booting while the first files run; each such file waits for its node and takes a vhost of its
// own. A node's process stops it when its stdin ends: below once the tests are over, or by the
// kernel if this one dies.
const { sharedRabbitKinds } = await import(new URL('../dist/test/helpers/shared-rabbit-kinds.js', import.meta.url));
const env = { ...process.env };
const rabbits = [];
let infoDir;
const texts = new Map(files.map((f) => [f, readFileSync(f, 'utf8')]));
// The kinds booted, named to every file (even none): a file that calls a kind's function where its
// text does not say so (`useRabbit(sharedRabbit)`) fails saying why, rather than booting a node alone.
const booted = [];
for (const [kind, { call, env: variable }] of Object.entries(sharedRabbitKinds)) {
  const sharing = files.filter((f) => texts.get(f).includes(`${call}(`));
  if (sharing.length === 0) continue;
  booted.push(kind);
  infoDir ??= mkdtempSync(join(tmpdir(), 'eventgate-shared-rabbit-'));
  env[variable] = join(infoDir, `${kind}.json`);
  // Its own process group: a Ctrl-C reaches the tests, and the node is stopped after them.
  const rabbit = spawn(process.execPath, [join(root, 'helpers', 'shared-rabbit-main.js'), kind, env[variable], ...sharing], {
    stdio: ['pipe', 'inherit', 'inherit'],
    detached: true,
  });
  rabbits.push(rabbit);
}
env.EVENTGATE_TEST_SHARED_RABBITS = booted.join(',');

// The files run in the order chosen above (run-files.js: `node --test` would sort them). Each file's
// process takes these options from it: --test-timeout bounds each test, set to end a hang, well
// above the longest file on a loaded machine (docs/testing.md); the linger guard ends a file whose
// process outlives its tests, saying what held it (test/helpers/linger-guard.ts).
const lingerGuard = new URL('../dist/test/helpers/linger-guard.js', import.meta.url).pathname;
// Records each file's CPU and tail when the run writes the files' times (test/helpers/file-meter.ts).
const fileMeter = new URL('../dist/test/helpers/file-meter.js', import.meta.url).pathname;
const runFiles = new URL('./run-files.js', import.meta.url).pathname;
const child = spawn(process.execPath, ['--test-timeout=300000', '--import', lingerGuard, '--import', fileMeter, runFiles, ...files], {
  env: { ...env, EVENTGATE_TEST_CONCURRENCY: concurrency },
  stdio: 'inherit',
});

let signalled;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    signalled ??= signal;
    child.kill(signal);
  });
}

const [code, signal] = await once(child, 'exit');
await Promise.all(
  rabbits.map(async (rabbit) => {
    if (rabbit.exitCode !== null || rabbit.signalCode !== null) return;
    const exited = once(rabbit, 'exit');
    rabbit.stdin.end();
    await exited;
  }),
);
if (infoDir) rmSync(infoDir, { recursive: true, force: true });
process.exit(signalled ? 128 + (signalled === 'SIGINT' ? 2 : 15) : (code ?? (signal ? 1 : 0)));
