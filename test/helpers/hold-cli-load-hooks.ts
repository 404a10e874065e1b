import { existsSync, writeFileSync } from 'node:fs';
import { setTimeout as delay } from 'node:timers/promises';

type Resolved = { url: string };

/**
 * Module hook (registered by hold-cli-load.ts): when bin/eventgate.js imports the CLI's main
 * module, writes the file EVENTGATE_TEST_HELD names and waits until the file
 * EVENTGATE_TEST_RELEASE names exists. The process's main thread meanwhile runs as it would while
 * a slow disk or CPU loads the modules.
 */
export async function resolve(specifier: string, context: unknown, next: (specifier: string, context: unknown) => Promise<Resolved>): Promise<Resolved> {
  const resolved = await next(specifier, context);
  const held = process.env.EVENTGATE_TEST_HELD;
  const release = process.env.EVENTGATE_TEST_RELEASE;
  if (held && release && resolved.url.endsWith('/dist/src/cli/main.js')) {
    writeFileSync(held, '');
    while (!existsSync(release)) await delay(10);
  }
  return resolved;
}
