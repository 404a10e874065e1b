import type { Server } from 'node:net';

/**
 * Binds a server; rejects with the bind error (EADDRINUSE, EACCES) instead of emitting it, so a
 * reload or a first start can refuse cleanly. Shared by the listeners and the admin server.
 */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const failed = (err: NodeJS.ErrnoException) => reject(bindError(err, host, port));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

/** The bound host and port (the real one when configured with port 0), or undefined when not bound. */
export function boundAddress(server: Server): { host: string; port: number } | undefined {
  const a = server.address();
  return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
}

/**
 * A socket that could not bind, in words a user can act on; the code stays on the error, and `key`
 * says which of the component's keys to fix, so the error points at its `port:` or `host:`.
 */
export class BindError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    readonly key: 'port' | 'host' | undefined,
  ) {
    super(message);
  }
}

const BIND_FAILURES: Record<string, { reason: string; key: 'port' | 'host' }> = {
  EADDRINUSE: { reason: 'the port is already in use (another process, or another eventgate)', key: 'port' },
  EACCES: { reason: 'permission denied (ports below 1024 need privileges)', key: 'port' },
  EADDRNOTAVAIL: { reason: 'the host is not an address of this machine', key: 'host' },
  // A host name that does not resolve.
  ENOTFOUND: { reason: 'no such host', key: 'host' },
  EAI_AGAIN: { reason: 'the host name could not be resolved now', key: 'host' },
};

function bindError(err: NodeJS.ErrnoException, host: string, port: number): BindError {
  const known = err.code ? BIND_FAILURES[err.code] : undefined;
  const reason = known ? `${known.reason} (${err.code})` : err.message;
  return new BindError(`cannot bind ${host}:${port}: ${reason}`, err.code, known?.key);
}
