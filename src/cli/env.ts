import { resolve } from 'node:path';
import { parseEnv } from 'node:util';
import { readConfigFile } from '../config/read-file.js';
import { decodeUtf8, describeFsError, type Env } from '../config/source.js';
import { hash } from '../core/canonical.js';

/** What loadEnv read: the environment, and each `--vars-file` by absolute path with the hash of what it held ('missing' when unreadable). */
export type LoadedEnv = ({ env: Env } | VarsFileError) & { files: Map<string, string> };

/**
 * A vars file that could not be used. `error` is the whole sentence the CLI prints; `line`,
 * `column` and `message` are the diagnostic a reload reports, at the place in the file (a syntax
 * error on line 3 used to be reported at `vars.env:1:1`, followed by its own `vars.env:3:1`).
 */
export interface VarsFileError {
  error: string;
  file: string;
  line: number;
  column: number;
  message: string;
}

/**
 * The environment `${VAR}` values come from: the process environment, plus variables read from
 * `--vars-file` files for the ones it does not set (a CI job validates a config with a file of
 * stand-ins instead of the deployment's secrets). Later files fill in after earlier ones. `run`
 * reads the files again at every reload and watches them, as it does the config's own files.
 */
export function loadEnv(files: readonly string[], environment: NodeJS.ProcessEnv = process.env, options: { reload?: boolean } = {}): LoadedEnv {
  const fromFiles: Record<string, string> = {};
  const read = new Map<string, string>();
  for (const file of files) {
    let bytes: Buffer;
    try {
      // A named pipe (`--vars-file <(vault ...)`) only at start: a reload's read of one would wait for good.
      bytes = readConfigFile(file, { pipe: !options.reload });
    } catch (err) {
      read.set(resolve(file), 'missing');
      const message = `cannot read --vars-file '${file}': ${describeFsError(err)}`;
      return { error: message, file, line: 1, column: 1, message, files: read };
    }
    read.set(resolve(file), hash(bytes));
    const text = varsText(bytes);
    if (typeof text !== 'string') return { error: `--vars-file ${file}:${text.line}:${text.column}: ${text.message}`, file, line: text.line, column: text.column, message: text.message, files: read };
    for (const [k, v] of Object.entries(parseEnv(text))) if (v !== undefined && !(k in fromFiles)) fromFiles[k] = v;
  }
  return { env: { ...fromFiles, ...environment }, files: read };
}

/**
 * The text of a vars file, or its first problem. node's parseEnv takes anything and says nothing:
 * a byte order mark became part of the first name (`\ufeffPORT`, so PORT was "not set"), a line
 * without `=` swallowed the next line into its name (`PORT 8080` hid the variable after it), and
 * bytes that are not UTF-8 became U+FFFD in the value (a topic name changed without a word).
 */
function varsText(bytes: Buffer): string | { line: number; column: number; message: string } {
  // Nothing at all is what a reload reads of a file being written in place (truncated, not yet
  // written): taken as a file without variables, it switched every `${VAR:-default}` to its default.
  if (bytes.length === 0) return { line: 1, column: 1, message: 'the file is empty; give one with no variables yet a # comment line' };
  const decoded = decodeUtf8(bytes);
  if (typeof decoded !== 'string') return decoded;
  const text = decoded.charCodeAt(0) === 0xfeff ? decoded.slice(1) : decoded;
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    const m = /^\s*(?:export\s+)?[^\s=#]+\s*=\s*(["'`]?)/.exec(line);
    if (!m) {
      const column = line.search(/\S/) + 1;
      return { line: i + 1, column, message: 'expected NAME=value (or a # comment); a value with spaces is written NAME="a value"' };
    }
    const quote = m[1];
    // A quoted value may span lines up to its closing quote, as parseEnv reads it.
    if (quote && !line.slice(m[0].length).includes(quote)) while (i + 1 < lines.length && !lines[++i]!.includes(quote));
  }
  return text;
}
