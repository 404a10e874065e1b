import { readFileSync, statSync } from 'node:fs';
import { basename } from 'node:path';

/**
 * The most bytes a file the gateway reads for its config may have: the config itself, an
 * included fragment, a `--vars-file`, and every file the config names (schemas, key sets, keys,
 * certificates). Ten times any real one; above it a YAML or JSON parse takes seconds and
 * gigabytes, on the thread that serves traffic when a reload reads it.
 */
export const MAX_CONFIG_FILE_BYTES = 16 * 1024 * 1024;

/**
 * Reads a file of the config whole, or throws saying why not. Reads are synchronous, on the
 * thread that serves traffic, so only a regular file is read: a named pipe nobody writes would
 * hold the process for good (a reload too: /healthz stops answering), and a device such as
 * /dev/zero never ends. `pipe: true` lets a named pipe through, for the config file named on the
 * command line (`-c <(envsubst < gateway.yaml)` is one): the user asked for that read.
 */
export function readConfigFile(file: string, options: { pipe?: boolean; maxBytes?: number } = {}): Buffer {
  const maxBytes = options.maxBytes ?? MAX_CONFIG_FILE_BYTES;
  const st = statSync(file);
  // A directory is left to the read, whose EISDIR says so as for any other read.
  if ((st.isFIFO() && options.pipe) || st.isDirectory()) return readFileSync(file);
  if (!st.isFile()) throw new Error(`'${basename(file)}' is not a regular file (${specialKind(st)}: reading it could block or never end)`);
  if (st.size > maxBytes) throw new Error(`'${basename(file)}' has ${st.size} bytes; at most ${maxBytes} are accepted`);
  return readFileSync(file);
}

function specialKind(st: ReturnType<typeof statSync> & object): string {
  if (st.isFIFO()) return 'a named pipe';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}
