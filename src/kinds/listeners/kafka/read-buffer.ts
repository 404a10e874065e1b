/**
 * A client connection that reads into one buffer of its own instead of a new one per read.
 * node:net allocates a fresh 64 KB ArrayBuffer for every socket read; on a proxy streaming
 * ~70 MB of produce requests per million records that memory is released only by garbage
 * collections, and V8 starts them for it ("external memory pressure"): with them, collections
 * were a third of the pass-through proxy's CPU (docs/performance.md, "Kafka proxy (issue #12,
 * wave 2, session 5)"). node:net offers such reads (`onread`) only to sockets it creates, not to
 * those a server accepts, so the accepted connection is handed to a new Socket created with
 * `onread`, as node:net itself creates accepted sockets (from their handle). That relies on
 * node:net's own fields (`_handle`, `_server`); when they are not as expected the accepted socket
 * is used as it is (undefined is returned), which is only slower.
 */
import { Socket } from 'node:net';

/** What node:net keeps on a socket (not public API). */
interface SocketInternals {
  _handle?: { useUserBuffer?: unknown; readStop?: unknown } | null;
  _server?: unknown;
  server?: unknown;
}

/** Bytes read at most at once (node:net's own read size). */
export const READ_BYTES = 64 * 1024;

/**
 * `accepted` (a plain TCP connection a server with `pauseOnConnect` accepted, not yet read from)
 * as a socket that reads into one buffer: `read` gets each read's bytes, a view of that buffer
 * valid only until it returns (it returns false to stop reading: resume() reads on). Undefined
 * when the connection cannot be handed over: then `accepted` is unchanged.
 */
export function readIntoBuffer(accepted: Socket, read: (bytes: Buffer) => boolean): Socket | undefined {
  const old = accepted as unknown as SocketInternals;
  const handle = old._handle;
  if (accepted.constructor !== Socket || !handle || typeof handle.useUserBuffer !== 'function' || !('_server' in old)) return undefined;
  const buffer = Buffer.allocUnsafeSlow(READ_BYTES);
  const socket = new Socket({
    handle,
    readable: true,
    writable: true,
    onread: { buffer, callback: (n: number, buf: Uint8Array) => read((buf as Buffer).subarray(0, n)) },
  } as ConstructorParameters<typeof Socket>[0]);
  // The server counts its connections through the socket that owns each: the new one closes it.
  const fresh = socket as unknown as SocketInternals;
  fresh._server = old._server;
  fresh.server = old.server;
  old._server = null;
  old._handle = null;
  return socket;
}
