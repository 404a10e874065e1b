import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';

/** A port free on `host` right now (the OS picks it; never a fixed number). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = createServer();
  server.listen(0, host);
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, 'close');
  return port;
}

/**
 * Another process holding `host:port`, as a stray server would. Resolves once it listens;
 * `release()` ends it.
 */
export async function holdPort(host: string, port: number): Promise<{ process: ChildProcess; release(): Promise<void> }> {
  const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${port}, ${JSON.stringify(host)}, () => console.log('listening'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  if (!chunk.toString().includes('listening')) throw new Error(`could not hold ${host}:${port}`);
  return {
    process: child,
    async release() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill();
      await once(child, 'exit');
    },
  };
}
