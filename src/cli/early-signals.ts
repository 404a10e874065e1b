/**
 * `eventgate run` answers SIGHUP, SIGINT and SIGTERM from its first moment (spec §1: SIGHUP
 * reloads, SIGINT/SIGTERM drain and exit 0). While the CLI's modules load — a few hundred ms on a
 * busy machine — their default action would end the process, SIGHUP's included. bin/eventgate.js
 * catches them first thing; run() takes over the ones that came meanwhile once its own handlers
 * are in place (src/cli/commands.ts). SIGUSR1 too: node's own answer to it opens the inspector
 * (code execution for any local process that connects), which run() never lets it do.
 */
const SIGNALS = ['SIGHUP', 'SIGINT', 'SIGTERM', 'SIGUSR1'] as const;

const caught: NodeJS.Signals[] = [];
const remember = (signal: NodeJS.Signals) => {
  caught.push(signal);
};
let catching = false;

/** Called first thing by bin/eventgate.js, before the CLI's modules load. */
export function catchEarlySignals(argv: readonly string[]): void {
  if (argv[0] !== 'run' || catching) return;
  for (const s of SIGNALS) process.on(s, remember);
  catching = true;
}

/** Stops catching; the signals received until now, in order, for run()'s handlers. */
export function takeEarlySignals(): NodeJS.Signals[] {
  if (!catching) return [];
  for (const s of SIGNALS) process.off(s, remember);
  catching = false;
  return caught.splice(0);
}
