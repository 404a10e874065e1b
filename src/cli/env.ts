import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { describeFsError, type Env } from '../config/source.js';
import { hash } from '../core/canonical.js';

/** What loadEnv read: the environment, and each `--vars-file` by absolute path with the hash of what it held ('missing' when unreadable). */
export type LoadedEnv = ({ env: Env } | { error: string; file: string }) & { files: Map<string, string> };

/**
 * The environment `${VAR}` values come from: the process environment, plus variables read from
 * `--vars-file` files for the ones it does not set (a CI job validates a config with a file of
 * stand-ins instead of the deployment's secrets). Later files fill in after earlier ones. `run`
 * reads the files again at every reload and watches them, as it does the config's own files.
 */
export function loadEnv(files: readonly string[]): LoadedEnv {
  const fromFiles: Record<string, string> = {};
  const read = new Map<string, string>();
  for (const file of files) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      read.set(resolve(file), 'missing');
      return { error: `cannot read --vars-file '${file}': ${describeFsError(err)}`, file, files: read };
    }
    read.set(resolve(file), hash(bytes));
    for (const [k, v] of Object.entries(parseEnv(bytes.toString('utf8')))) if (v !== undefined && !(k in fromFiles)) fromFiles[k] = v;
  }
  return { env: { ...fromFiles, ...process.env }, files: read };
}
