import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

/**
 * V8 code caches the build writes (the config validator's, the bundled dependencies'), read so
 * that their memory can be given back as soon as V8 has compiled from them: a Buffer would stay
 * resident until a GC collected it, which an idle gateway may never run.
 */

// ES2024's resizable ArrayBuffer (in Node 20), not in the ES2023 lib the project compiles against.
type ResizableArrayBuffer = ArrayBuffer & { resize(byteLength: number): void };
type ResizableArrayBufferConstructor = new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;

/** The code cache in `file`, in a resizable ArrayBuffer; undefined when there is none. */
export function readCodeCache(file: string): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const bytes = new Uint8Array(new (ArrayBuffer as unknown as ResizableArrayBufferConstructor)(size, { maxByteLength: size }), 0, size);
    let read = 0;
    while (read < size) {
      const n = readSync(fd, bytes, read, size - read, read);
      if (n === 0) break;
      read += n;
    }
    return bytes.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/** V8 has compiled from the cache and keeps nothing of it: shrinking the buffer returns its pages at once. */
export function releaseCodeCache(cache: Uint8Array | undefined): void {
  (cache?.buffer as ResizableArrayBuffer | undefined)?.resize(0);
}
