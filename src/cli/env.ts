import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { describeFsError, type Env } from '../config/source.js';

/**
 * The environment `${VAR}` values come from: the process environment, plus variables read from
 * `--vars-file` files for the ones it does not set (a CI job validates a config with a file of
 * stand-ins instead of the deployment's secrets). Later files fill in after earlier ones.
 */
export function loadEnv(files: readonly string[]): { env: Env } | { error: string } {
  const fromFiles: Record<string, string> = {};
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      return { error: `cannot read --vars-file '${file}': ${describeFsError(err)}` };
    }
    for (const [k, v] of Object.entries(parseEnv(text))) if (v !== undefined && !(k in fromFiles)) fromFiles[k] = v;
  }
  return { env: { ...fromFiles, ...process.env } };
}
