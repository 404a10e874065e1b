import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

/**
 * A port free on `host` right now, for a config that must name its port. Picked at random below
 * the kernel's ephemeral range: the OS hands ports from that range to every outgoing connection
 * and every listen(0) of the other tests running at the same time, so a port picked there can be
 * taken again before the gateway binds it (seen under CI load). Never a fixed number.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const [low] = ephemeralRange();
  const floor = 10000;
  for (let tries = 0; tries < 50; tries++) {
    const port = floor + Math.floor(Math.random() * (low - floor));
    if (await canBind(host, port)) return port;
  }
  throw new Error(`no free port on ${host} below ${low} after 50 tries`);
}

/**
 * The first of `ports` free on `host` right now, for a case that only a port of a given list
 * shows (a port the Fetch standard blocks): a fixed number, so none free is an error that says so.
 */
export async function firstFreePort(ports: readonly number[], host = '127.0.0.1'): Promise<number> {
  for (const port of ports) if (await canBind(host, port)) return port;
  throw new Error(`none of ports ${ports.join(', ')} is free on ${host}`);
}

/**
 * Ports the Fetch standard blocks for browsers, which node's fetch refuses (`bad port`) and a
 * server may still listen on: a case that shows the gateway reaches such a port takes the first free.
 */
export const FETCH_BLOCKED_PORTS: readonly number[] = [10080, 6665, 6666, 6667, 6668, 6669, 6697, 6000, 6566];

/**
 * Listens `server` on the first of `ports` it can bind on `host`, and gives that port. Binding is
 * the check: another test may take a port between firstFreePort's probe and a listen.
 */
export async function listenOnFirstFree(server: Server, ports: readonly number[], host = '127.0.0.1'): Promise<number> {
  for (const port of ports) {
    const bound = await new Promise<boolean>((resolve, reject) => {
      const failed = (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(false) : reject(err));
      server.once('error', failed);
      server.listen(port, host, () => {
        server.off('error', failed);
        resolve(true);
      });
    });
    if (bound) return port;
  }
  throw new Error(`none of ports ${ports.join(', ')} is free on ${host}`);
}

/** The kernel's ephemeral port range (Linux), or the IANA default elsewhere. */
function ephemeralRange(): [number, number] {
  try {
    const [a, b] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (a && b && a > 10000) return [a, b];
  } catch {
    // not Linux: fall through
  }
  return [49152, 65535];
}

async function canBind(host: string, port: number): Promise<boolean> {
  const server = createServer();
  const bound = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, host, () => resolve(true));
  });
  if (bound) {
    server.close();
    await once(server, 'close');
  }
  return bound;
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
