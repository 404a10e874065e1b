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

/** A bind failure in words a user can act on; the code stays on the error. */
function bindError(err: NodeJS.ErrnoException, host: string, port: number): Error {
  const what: Record<string, string> = {
    EADDRINUSE: 'the port is already in use (another process, or another eventgate)',
    EACCES: 'permission denied (ports below 1024 need privileges)',
    EADDRNOTAVAIL: 'the host is not an address of this machine',
  };
  const reason = err.code && what[err.code] ? `${what[err.code]} (${err.code})` : err.message;
  return Object.assign(new Error(`cannot bind ${host}:${port}: ${reason}`), { code: err.code });
}
