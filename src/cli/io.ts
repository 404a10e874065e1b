/**
 * Where a command writes and whose environment it reads. The CLI passes the process's; a test
 * that checks many configs runs `main()` in its own process with its own (test/helpers/cli.ts),
 * instead of paying a Node start (~0.4 s of CPU) per config.
 */
export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** The environment `${VAR}` values, EVENTGATE_ADMIN_TOKEN and the like come from. */
  env: NodeJS.ProcessEnv;
}

export const processIo: CliIo = {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
  env: process.env,
};
