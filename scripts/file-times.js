// The test files' wall times (test/file-times.json), by which scripts/run-tests.js starts the
// longest files first: started late, a long file runs on with fewer files beside it and the cores
// idle at the run's end (docs/testing.md "Time budget").
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const ABOUT =
  "Each test file's wall time (ms) in a whole run on 2 cores, five files at a time: scripts/run-tests.js starts the longest first, and files missing here before them. cpuMs: the CPU of the file's process tree in that run (user + system, with the children it reaped; shared RabbitMQ nodes not counted); tailMs: from its last test's end to its process's exit (its after hooks, and anything that kept it up). Refresh it from a quiet whole run: EVENTGATE_TEST_TIMES_OUT=$PWD/test/file-times.json npm test. estimate: true marks a time not measured as a whole file (the sum of its top-level blocks in a run's spec output, plus 0.5 s for its process).";

/** The table's files, keyed by their path under dist/test (`e2e/sse.test.js`). */
export function readFileTimes(path) {
  if (!existsSync(path)) return {};
  return JSON.parse(readFileSync(path, 'utf8')).files ?? {};
}

/**
 * The files to start, longest first by the table; files the table does not know come first, in
 * alphabetical order, since a new file is as likely to be long as short and one started last makes
 * the tail. `name(f)` is a file's key in the table.
 */
export function longestFirst(files, times, name) {
  const known = (f) => typeof times[name(f)]?.ms === 'number';
  const byName = (a, b) => (name(a) < name(b) ? -1 : name(a) > name(b) ? 1 : 0);
  const unknown = files.filter((f) => !known(f)).sort(byName);
  const timed = files.filter(known).sort((a, b) => times[name(b)].ms - times[name(a)].ms || byName(a, b));
  return [...unknown, ...timed];
}

/**
 * Writes the times a run measured into the table at `path`: those files' entries replaced (no
 * longer estimates), the others kept unless their file is gone (`exists(key)` false). `cost` holds
 * what each file's process reported beside (`cpuMs`, `tailMs`: test/helpers/file-meter.ts).
 */
export function writeFileTimes(path, measured, exists, cost = {}) {
  const files = Object.fromEntries(Object.entries(readFileTimes(path)).filter(([key]) => exists(key)));
  for (const [key, ms] of Object.entries(measured)) files[key] = { ms: Math.round(ms), ...cost[key] };
  const sorted = Object.fromEntries(Object.entries(files).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  writeFileSync(path, formatFileTimes(sorted));
}

/** The table as JSON with a line per file, so a refresh's diff shows each file's change. */
export function formatFileTimes(files) {
  const entry = (e) =>
    `{ ${Object.entries(e)
      .map(([k, v]) => `${JSON.stringify(k)}: ${JSON.stringify(v)}`)
      .join(', ')} }`;
  const lines = Object.entries(files).map(([key, e]) => `    ${JSON.stringify(key)}: ${entry(e)}`);
  return `{\n  "about": ${JSON.stringify(ABOUT)},\n  "files": {\n${lines.join(',\n')}\n  }\n}\n`;
}
