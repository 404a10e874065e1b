import { setFlagsFromString } from 'node:v8';

/**
 * V8 settings `eventgate run` holds while it starts and gives back once ready: start-up work
 * (loading modules, compiling the config) would otherwise leave memory committed that an idle
 * gateway never uses again (docs/performance.md, "What each change bought"). Node warns that
 * changing V8 flags after start is not supported in general; both flags are read each time V8
 * decides (checked with V8's heap statistics and `--trace-opt`), and if a future V8 ignored them,
 * start-up would simply use more memory. A flag the user set is left alone.
 *
 * - The young generation (new space) stays at its initial size: loading and compiling allocate a
 *   lot that survives, and the new space doubled up to 2 × 16 MB and stayed committed (~12 MB).
 *   Under load it grows as before.
 * - No optimising compiler (TurboFan) until ready, only the interpreter and the baseline compilers: functions
 *   hot for a moment during start-up (the YAML parser, the config validator) were optimised on
 *   V8's background threads, which left their compiler memory in those threads' malloc arenas and
 *   paged in TurboFan's code: ~11 MB of an idle gateway's RSS. Start-up is as fast without it;
 *   functions hot under load are optimised as before, as soon as the gateway is ready.
 */
const HELD = [
  { flags: ['--semi-space-growth-factor', '--min-semi-space-size', '--max-semi-space-size', '--semi-space-size'], hold: '--semi-space-growth-factor=1', release: '--semi-space-growth-factor=2' },
  // Not `--max-opt`: lowering it also turns `--turbofan` off, which raising it again does not undo.
  { flags: ['--turbofan', '--no-turbofan', '--opt', '--no-opt', '--max-opt', '--jitless', '--lite-mode'], hold: '--no-turbofan', release: '--turbofan' },
] as const;

let held: (typeof HELD)[number][] = [];

/** The V8 flags given on the command line or in NODE_OPTIONS, by name (`--max_opt=2` → `--max-opt`). */
function userFlags(): Set<string> {
  const args = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)];
  return new Set(args.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]!.replaceAll('_', '-')));
}

/**
 * The commands that load a config. The build writes the config validator's V8 code cache under the
 * held flags (src/config/precompiled-validator.ts), and V8 takes a code cache only under the flags
 * it was made with: holding them in the short commands too lets `validate`, `test`, `plan` and
 * `export` load the validator from it rather than compile ~700 KB of source on each call (~0.15 s
 * of CPU of each, ~25 %).
 */
const LOADS_A_CONFIG = new Set(['run', 'validate', 'test', 'plan', 'export']);

/** Called first thing by bin/eventgate.js, before the gateway's modules load. */
export function holdWhileStarting(argv: readonly string[]): void {
  if (!LOADS_A_CONFIG.has(argv[0] ?? '')) return;
  const chosen = userFlags();
  held = HELD.filter((h) => !h.flags.some((f) => chosen.has(f)));
  for (const h of held) setFlagsFromString(h.hold);
}

/** Once the gateway is ready (or failed to start), or `eventgate test` has its config: V8's own defaults again. */
export function releaseAfterStart(): void {
  for (const h of held) setFlagsFromString(h.release);
  held = [];
}
