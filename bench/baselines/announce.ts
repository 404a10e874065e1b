/** The one line a baseline server prints when it listens; startBaseline() waits for it. */
export function announce(port: number): void {
  process.stdout.write(`${JSON.stringify({ msg: 'baseline ready', port })}\n`);
}
