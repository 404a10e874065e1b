// Loaded into every test file's process by scripts/run-tests.js (`--import`, through run-files.js)
// when a run records the files' times (EVENTGATE_TEST_TIMES_OUT). At exit the file's process writes
// into EVENTGATE_TEST_CPU_DIR what it cost beyond its wall time, and run-files.js puts it beside
// that time in test/file-times.json:
// - `cpuMs`: the CPU of its tree (its own and that of the children it reaped: gateways, CLI calls,
//   servers the file starts). The cores are nearly saturated in a whole run, so a file's CPU, not
//   only its wall time, decides what it costs the run (docs/testing.md "Time budget").
// - `tailMs`: from the end of its last top-level block to its exit: its top-level `after` hooks
//   (a `describe`'s own hooks run within the block) and whatever kept the process up past them (a
//   timer or child left running: a file's time that tests nothing, up to the linger guard's bound).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';

/** Linux's USER_HZ, the unit of /proc's CPU times: 100 on every architecture Node runs on. */
const TICKS_PER_SECOND = 100;

/** User + system CPU (ms) of this process and of its reaped children, from /proc/self/stat. */
export function treeCpuMs(stat: string): number {
  // Fields after the command's closing parenthesis (the command may hold spaces): utime, stime,
  // cutime and cstime are the 14th to 17th fields of the line, the 12th to 15th after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
  return Math.round((ticks * 1000) / TICKS_PER_SECOND);
}

const dir = process.env.EVENTGATE_TEST_CPU_DIR;
// Only in a test file's process (run-files.js has the same `--import` and no tests).
if (dir && process.env.NODE_TEST_CONTEXT !== undefined) {
  // Registered before the file's own hooks, so it runs first once the tests are over.
  let testsEnded: number | undefined;
  after(() => {
    testsEnded = performance.now();
  });
  process.on('exit', () => {
    try {
      const cpuMs = treeCpuMs(readFileSync('/proc/self/stat', 'utf8'));
      const tailMs = testsEnded === undefined ? undefined : Math.round(performance.now() - testsEnded);
      writeFileSync(join(dir, `${process.pid}.json`), JSON.stringify({ file: process.argv[1], cpuMs, tailMs }));
    } catch {
      // No /proc (not Linux) or the run's directory gone: the table keeps the wall time alone.
    }
  });
}
