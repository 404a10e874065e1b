#!/usr/bin/env node
// Runs the test files given, EVENTGATE_TEST_CONCURRENCY at a time, in the order given, with the
// spec reporter and its summary lines (CI reads them). `node --test FILES` sorts the files it is
// given and starts them in its own order; node:test's `run({ files })` keeps theirs. Started by
// scripts/run-tests.js, which chooses the order, with the options each file's process inherits
// (`--test-timeout`, the linger guard's `--import`).
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { writeFileTimes } from './file-times.js';

const root = new URL('../dist/test/', import.meta.url).pathname;
const files = process.argv.slice(2);
const controller = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => controller.abort());

// A run that writes the files' times has each file's process write its CPU and tail here at exit
// (test/helpers/file-meter.ts, loaded by run-tests.js's `--import`); the files inherit the variable.
const timesOut = process.env.EVENTGATE_TEST_TIMES_OUT;
if (timesOut) process.env.EVENTGATE_TEST_CPU_DIR = mkdtempSync(join(tmpdir(), 'eventgate-test-cpu-'));

// Bounds each whole file (its process is a test of the run): set to end a hang, well above the
// longest file on a loaded machine (docs/testing.md).
const stream = run({ files, concurrency: Number(process.env.EVENTGATE_TEST_CONCURRENCY ?? 5), timeout: 300000, signal: controller.signal });
let failed = false;
const measured = {};
stream.on('test:fail', () => {
  failed = true;
});
// A file's own test completes when its process has exited: its wall time from its start.
stream.on('test:complete', (data) => {
  if (data.nesting === 0 && data.name === data.file && files.includes(data.file)) measured[relative(root, data.file)] = data.details.duration_ms;
});
stream.compose(spec).pipe(process.stdout);
stream.once('end', () => {
  if (timesOut) {
    const cpuDir = process.env.EVENTGATE_TEST_CPU_DIR;
    writeFileTimes(timesOut, measured, (key) => existsSync(join(root, key)), costOfFiles(cpuDir));
    rmSync(cpuDir, { recursive: true, force: true });
  }
  process.exitCode = failed || controller.signal.aborted ? 1 : 0;
});

/** What each file's process wrote of its cost (`cpuMs`, `tailMs`), keyed like the wall times. */
function costOfFiles(dir) {
  const cost = {};
  for (const name of readdirSync(dir)) {
    const { file, ...measures } = JSON.parse(readFileSync(join(dir, name), 'utf8'));
    if (files.includes(file)) cost[relative(root, file)] = measures;
  }
  return cost;
}
