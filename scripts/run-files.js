#!/usr/bin/env node
// Runs the test files given, four at a time, in the order given, with the spec reporter and its
// summary lines (CI reads them). `node --test FILES` sorts the files it is given and starts them
// in its own order; `run({ files })` keeps theirs (scripts/run-tests.js chooses it).
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

let failed = false;
// Bounds each test and each whole file (its process is a test of the run): set to end a hang, well
// above the longest file on a loaded machine (docs/testing.md).
const stream = run({ files: process.argv.slice(2), concurrency: 4, timeout: 300000 });
stream.on('test:fail', () => {
  failed = true;
});
stream.compose(new spec()).pipe(process.stdout);
stream.once('end', () => {
  process.exitCode = failed ? 1 : 0;
});
