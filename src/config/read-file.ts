import { closeSync, constants, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
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
 *
 * One descriptor from the check to the read, and never more than the bound read: a file that
 * grows (or is swapped for another) after the check, and a pipe of any length, are held to it.
 */
export function readConfigFile(file: string, options: { pipe?: boolean; maxBytes?: number } = {}): Buffer {
  const maxBytes = options.maxBytes ?? MAX_CONFIG_FILE_BYTES;
  // The path is looked at first so that a device is never opened (opening one can act: a tape
  // rewinds, a terminal becomes the controlling one).
  checkKind(file, statSync(file), options.pipe);
  // Without `pipe`, non-blocking: a path swapped for a named pipe since the stat opens at once,
  // to be refused below, instead of waiting for a writer that never comes.
  const fd = openSync(file, options.pipe ? constants.O_RDONLY : constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    checkKind(file, st, options.pipe);
    if (st.isFile() && st.size > maxBytes) throw tooLarge(file, String(st.size), maxBytes);
    return readAtMost(fd, file, maxBytes);
  } finally {
    closeSync(fd);
  }
}

/** Throws for what is not to be read. A directory is left to the read, whose EISDIR says so as for any other read. */
function checkKind(file: string, st: Stats, pipe: boolean | undefined): void {
  if (st.isFile() || st.isDirectory() || (st.isFIFO() && pipe)) return;
  throw new Error(`'${basename(file)}' is not a regular file (${specialKind(st)}: reading it could block or never end)`);
}

/** The bytes to the end, refusing at the first byte past `maxBytes` (a pipe's length is known only by reading it). */
function readAtMost(fd: number, file: string, maxBytes: number): Buffer {
  const chunks: Buffer[] = [];
  let total = 0;
  for (;;) {
    const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1 - total));
    const n = readSync(fd, chunk, 0, chunk.length, null);
    if (n === 0) return Buffer.concat(chunks, total);
    chunks.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    total += n;
    if (total > maxBytes) throw tooLarge(file, `more than ${maxBytes}`, maxBytes);
  }
}

function tooLarge(file: string, size: string, maxBytes: number): Error {
  return new Error(`'${basename(file)}' has ${size} bytes; at most ${maxBytes} are accepted`);
}

function specialKind(st: Stats): string {
  if (st.isFIFO()) return 'a named pipe';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a file';
}
