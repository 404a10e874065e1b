/**
 * The CLI's entry, imported by bin/eventgate.js once it has caught early signals and set the
 * start-up V8 flags: runs the commands (src/cli/commands.ts) from the bundle the build writes when
 * it is current, else from their modules (src/cli/app-bundle.ts says why).
 */
import { appBundle } from './app-bundle.js';

const { main } = appBundle() ?? (await import('./commands.js'));

main(process.argv.slice(2)).then(
  (code) => {
    // Flush stdout before exiting so the last lines are not lost; the code is set first, so
    // it holds even if the process ends on its own while the write is pending.
    process.exitCode = code;
    process.stdout.write('', () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`eventgate: ${(err as Error).message}\n`);
    process.exit(1);
  },
);
