import { setFlagsFromString } from 'node:v8';

/**
 * V8 grows the young generation (new space) while the gateway starts: loading modules and
 * compiling the config allocate a lot that survives, and the new space doubles up to 2 × 16 MB.
 * It then stays committed, so an idle gateway carried ~12 MB of RSS it only needed for a second
 * (docs/performance.md). `run` therefore starts with the new space held at its initial size and
 * lets it grow as usual once the gateway is ready, so load sizes it as before. Nothing changes
 * when the user chose young-generation flags of their own. Node warns that changing V8 flags
 * after start is not supported in general; this one is an integer V8 reads each time it decides
 * to grow the new space (checked with V8's heap statistics: it stays at 2 × 1 MB until ready,
 * then grows under load), and if a future V8 ignored it, start-up would simply use more memory.
 */
const DEFAULT_GROWTH_FACTOR = 2;

function userChose(): boolean {
  return [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => a.includes('semi-space') || a.includes('semi_space'));
}

let held = false;

/** Called first thing by bin/eventgate.js, before the gateway's modules load. */
export function holdYoungGeneration(argv: readonly string[]): void {
  if (argv[0] !== 'run' || userChose()) return;
  setFlagsFromString('--semi-space-growth-factor=1');
  held = true;
}

/** Once the gateway is ready (or failed to start): the young generation grows under load as V8 decides. */
export function releaseYoungGeneration(): void {
  if (!held) return;
  held = false;
  setFlagsFromString(`--semi-space-growth-factor=${DEFAULT_GROWTH_FACTOR}`);
}
