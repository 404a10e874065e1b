/** The one line a baseline server prints when it listens; startBaseline() waits for it. */
export function announce(port: number): void {
  // A clean exit on SIGTERM, so `node --cpu-prof` can write its profile of a baseline too.
  process.once('SIGTERM', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ msg: 'baseline ready', port })}\n`);
}
