import type { Server } from 'node:net';

/**
 * Binds a server; rejects with the bind error (EADDRINUSE, EACCES) instead of emitting it, so a
 * reload or a first start can refuse cleanly. Shared by the listeners and the admin server.
 */
export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/** The bound host and port (the real one when configured with port 0), or undefined when not bound. */
export function boundAddress(server: Server): { host: string; port: number } | undefined {
  const a = server.address();
  return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
}
