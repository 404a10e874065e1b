// Child processes a test file starts (gateways, brokers, mock clusters) must not outlive it. A
// process 'exit' handler is not enough: when the test runner cancels a file (its per-file timeout)
// it sends SIGTERM, which ends the process without running 'exit' handlers, and the gateways it
// started would keep running for the rest of the suite.
const reapers = new Set<() => void>();
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
}

/** Registers `kill` to run when this test process ends, however it ends; returns an unregister function. */
export function killOnExit(kill: () => void): () => void {
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
  reapers.add(kill);
  return () => reapers.delete(kill);
}
