// Loaded into every test file's process by scripts/run-tests.js (`--import`, through run-files.js). A file whose tests
// are over but whose process stays up (a child process, socket or timer left behind) used to run
// into the runner's 300 s file timeout and be cancelled with no word of what held it (seen once in
// e2e/mqtt, docs/spec-checklist.md 596). This ends such a file LINGER_MS after its tests, failed,
// with what was still open: the same verdict, minutes sooner, and the cause on stderr.
import { readdirSync, readFileSync } from 'node:fs';
import { after } from 'node:test';

/** Past the longest cleanup of a file's `after` hooks (a RabbitMQ node stops in ~5 s) on a loaded machine. */
const LINGER_MS = Number(process.env.EVENTGATE_TEST_LINGER_MS ?? 120_000);

/** Each live child process of this one: pid and command line, from /proc. */
function children(): string[] {
  try {
    return readdirSync(`/proc/${process.pid}/task`).flatMap((task) =>
      readFileSync(`/proc/${process.pid}/task/${task}/children`, 'utf8')
        .split(' ')
        .filter(Boolean)
        .map((pid) => {
          try {
            return `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()}`;
          } catch {
            return `${pid} (gone)`;
          }
        }),
    );
  } catch {
    return ['(no /proc here)'];
  }
}

// Only in a test file's process: scripts/run-files.js, which starts them, runs with the same
// `--import` (each file's process inherits its options) and has no tests of its own.
if (process.env.NODE_TEST_CONTEXT !== undefined) {
  after(() => {
    // Unref'd: it never keeps the process up itself, and fires only if something else does.
    setTimeout(() => {
      process.stderr.write(
        `linger-guard: ${process.argv[1]} still running ${LINGER_MS / 1000} s after its tests; open: ${JSON.stringify(process.getActiveResourcesInfo())}; child processes: ${JSON.stringify(children())}\n`,
      );
      process.exit(1);
    }, LINGER_MS).unref();
  });
}
