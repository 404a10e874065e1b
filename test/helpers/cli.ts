import { repoRoot } from './gateway.js';

/**
 * Runs a short CLI command (`validate`, `plan`, `test`, `export`, `schema`) in this process:
 * the same `main()` the CLI runs (src/cli/commands.ts), its arguments parsed the same way, with
 * its output collected instead of written. A CLI process costs ~0.2-0.4 s of CPU to start (more
 * with an AsyncAPI document); this costs the command's own work, after the first call's import of
 * the commands' modules (~0.3 s once per file). What only the process shows (the launcher, the
 * exit code reaching the shell, stdout flushed before exit) is checked by the files' `runCli` cases,
 * at least one per output form and exit code (docs/testing.md "Time budget").
 *
 * Relative paths in the arguments are read from `cwd`: the process's working directory is changed
 * for the call, so calls take turns (each is a few ms of work).
 */
export async function runCliInProcess(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const { main } = await import('../../src/cli/commands.js');
  const previous = turn;
  let done!: () => void;
  turn = new Promise<void>((resolve) => (done = resolve));
  await previous;
  const cwd = process.cwd();
  let stdout = '';
  let stderr = '';
  try {
    process.chdir(options.cwd ?? repoRoot);
    const code = await main(args, {
      stdout: (text) => void (stdout += text),
      stderr: (text) => void (stderr += text),
      env: { ...process.env, ...options.env },
    });
    return { code, stdout, stderr };
  } finally {
    process.chdir(cwd);
    done();
  }
}

let turn: Promise<void> = Promise.resolve();
