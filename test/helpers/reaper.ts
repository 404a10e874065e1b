// Child processes a test file starts (gateways, brokers, mock clusters) must not outlive it. A
// process 'exit' handler is not enough: when the test runner cancels a file (its per-file timeout)
// it sends SIGTERM, which ends the process without running 'exit' handlers, and the gateways it
// started would keep running for the rest of the suite. Their temporary directories go too, once
// the processes are killed: a cancelled file's servers and gateways left hundreds in /tmp per run.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const reapers = new Set<() => void>();
const dirs = new Set<string>();
let installed = false;

function reapAll(): void {
  for (const reap of reapers) {
    try {
      reap();
    } catch {
      /* already gone */
    }
  }
  reapers.clear();
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      /* a file a killed process still held: the directory stays, the exit goes on */
    }
  }
  dirs.clear();
}

/** Registers `kill` to run when this test process ends, however it ends; returns an unregister function. */
export function killOnExit(kill: () => void): () => void {
  install();
  reapers.add(kill);
  return () => reapers.delete(kill);
}

/**
 * A new directory under the system's temp directory (`<prefix>-XXXXXX`), removed when this test
 * process ends, however it ends, after the processes registered with killOnExit are killed.
 */
export function tempDir(prefix: string): string {
  install();
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  dirs.add(dir);
  return dir;
}

function install(): void {
  if (!installed) {
    installed = true;
    process.on('exit', reapAll);
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.once(signal, () => {
        reapAll();
        process.exit(128 + (signal === 'SIGHUP' ? 1 : signal === 'SIGINT' ? 2 : 15));
      });
    }
  }
}
