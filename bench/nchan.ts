/**
 * nginx + Nchan as a fan-out baseline: the C pub/sub server the gateway's fan-out is measured
 * against. One worker process (so one core, like the gateway), websocket publisher and
 * subscribers on the same paths the gateway's fan-out config uses, started in a temp directory on
 * a free port. Debian's `nginx` and `libnginx-mod-nchan` (scripts/ensure-system-deps.sh).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Baseline } from './processes.js';

const NCHAN_MODULE = '/usr/lib/nginx/modules/ngx_nchan_module.so';

/** Whether this machine can run the baseline (the bench reports it as missing otherwise). */
export function nchanAvailable(): boolean {
  return existsSync(NCHAN_MODULE);
}

/** A frame Nchan sends a websocket publisher after each publish (channel info), not an error. */
export function isNchanPublishAnswer(text: string): boolean {
  return text.startsWith('queued messages:');
}

export async function startNchan(): Promise<Baseline> {
  if (!nchanAvailable()) throw new Error(`nginx-nchan baseline: ${NCHAN_MODULE} is missing (apt-get install nginx libnginx-mod-nchan)`);
  const dir = mkdtempSync(join(tmpdir(), 'eventgate-nchan-'));
  const port = await freePort();
  writeFileSync(
    join(dir, 'nginx.conf'),
    `load_module ${NCHAN_MODULE};
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 20000; }
worker_rlimit_nofile 40000;
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port};
    location = /publish { nchan_publisher websocket; nchan_channel_id ticks; }
    location = /fanout { nchan_subscriber websocket; nchan_channel_id ticks; }
  }
}
`,
  );
  const master = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  master.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(master, 'exit');
  const failed = exited.then(() => {
    throw new Error(`nginx-nchan baseline exited: ${stderr.trim() || readLog(dir)}`);
  });
  await Promise.race([waitListening(port), failed]);
  const worker = await Promise.race([workerPid(master.pid!), failed]);
  return {
    port,
    pid: worker,
    async stop() {
      if (master.exitCode === null && master.signalCode === null) master.kill('SIGQUIT');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'error.log'), 'utf8').trim();
  } catch {
    return 'no error log';
  }
}

/** The worker is the master's only child; its CPU time is what serves the clients. */
async function workerPid(master: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const children = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim();
    if (children) return Number(children.split(' ')[0]);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nginx-nchan baseline: no worker process');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitListening(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect(port, '127.0.0.1', () => {
        c.destroy();
        resolve(true);
      });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nginx-nchan baseline: nothing listens on ${port}`);
}
