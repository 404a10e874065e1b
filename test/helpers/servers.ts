import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killOnExit } from './reaper.js';

/**
 * Real message servers for the tests — Debian's mosquitto, rabbitmq-server and nats-server —
 * each on free ports in a temporary directory of its own, stopped when the test file ends. No
 * fixed port anywhere: the machine may already run one of them. `down()` stops the server the way
 * an outage would (its data directory is kept), `up()` starts it again on the same ports.
 */
export interface MessageServer {
  /** What a gateway config puts in `url`. */
  url: string;
  host: string;
  port: number;
  dir: string;
  down(): Promise<void>;
  up(): Promise<void>;
  stop(): Promise<void>;
  /** The server's process group (its start script's pid), while it runs: the benchmarks read its CPU time. */
  pid(): number | undefined;
}

/** A port nothing listens on right now (the OS's choice for port 0, released at once). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

/** Resolves once something accepts TCP connections on the port (polling; servers announce readiness in different ways). */
async function acceptsConnections(port: number, child: ChildProcess, what: string, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it listened:\n${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const children = new Set<ChildProcess>();
killOnExit(() => {
  for (const c of children)
    if (c.pid !== undefined)
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
});

/** A server process in its own process group, so stopping it stops whatever it started. */
class ServerProcess {
  private child: ChildProcess | undefined;
  private output = '';

  constructor(
    private readonly what: string,
    private readonly command: string,
    private readonly args: string[],
    private readonly env: NodeJS.ProcessEnv,
    private readonly port: number,
    private readonly readyTimeoutMs: number,
    private readonly logFile?: string,
  ) {}

  async start(): Promise<void> {
    const child = spawn(this.command, this.args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    children.add(child);
    child.stdout!.setEncoding('utf8').on('data', (c: string) => (this.output = (this.output + c).slice(-8000)));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.output = (this.output + c).slice(-8000)));
    child.once('exit', () => children.delete(child));
    await acceptsConnections(this.port, child, this.what, this.readyTimeoutMs, () => this.log());
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  log(): string {
    let file = '';
    if (this.logFile)
      try {
        file = readFileSync(this.logFile, 'utf8').slice(-4000);
      } catch {
        /* not written yet */
      }
    return `${this.output}\n${file}`;
  }

  /** SIGTERM (each of these servers shuts down cleanly on it, saving its state), SIGKILL after 15 s. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, 15000);
    await exited;
    clearTimeout(timer);
  }
}

function serverOf(proc: ServerProcess, url: string, port: number, dir: string, cleanup: () => void = () => undefined): MessageServer {
  return {
    url,
    host: '127.0.0.1',
    port,
    dir,
    pid: () => proc.pid,
    down: () => proc.stop(),
    up: () => proc.start(),
    async stop() {
      await proc.stop();
      cleanup();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * mosquitto with persistence (sessions and QoS 1/2 messages survive a restart, as on a real
 * deployment), anonymous access, listening on 127.0.0.1 only. `acl`: the lines of an ACL file for
 * anonymous clients (`topic readwrite open/#`); without it every client may do anything.
 */
export async function startMosquitto(acl?: string[]): Promise<MessageServer> {
  const dir = mkdtempSync(join(tmpdir(), 'eventgate-mosquitto-'));
  if (acl) writeFileSync(join(dir, 'acl'), `${acl.join('\n')}\n`);
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      // Run as root, mosquitto would switch to its own user, which cannot write this directory.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      'persistence true',
      `persistence_location ${dir}/`,
      // Queued messages for an offline persistent session: enough for the tests' bursts.
      'max_queued_messages 100000',
      'log_dest stdout',
      'log_type error',
      'log_type warning',
      ...(acl ? [`acl_file ${join(dir, 'acl')}`] : []),
      '',
    ].join('\n'),
  );
  const proc = new ServerProcess('mosquitto', 'mosquitto', ['-c', conf], process.env, port, 15000);
  await proc.start();
  return serverOf(proc, `mqtt://127.0.0.1:${port}`, port, dir);
}

/** nats-server with JetStream, its store in the temp directory (streams and consumers survive a restart). */
export async function startNats(): Promise<MessageServer> {
  const dir = mkdtempSync(join(tmpdir(), 'eventgate-nats-'));
  const port = await freePort();
  const proc = new ServerProcess('nats-server', 'nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', join(dir, 'jetstream')], process.env, port, 15000);
  await proc.start();
  return serverOf(proc, `nats://127.0.0.1:${port}`, port, dir);
}

/**
 * rabbitmq-server as its own node (unique name, its own epmd on a free port), its database, logs
 * and feature flags in a temp directory owned by the `rabbitmq` user when run as root (Debian's
 * Erlang cookie and directories belong to that user). Takes a few seconds to boot, more on a busy
 * machine: start one per test file and share it between the file's tests (queues of their own).
 * `advancedConfig`: an `advanced.config` (Erlang terms) for settings such as `consumer_timeout`.
 */
export async function startRabbit(options: { advancedConfig?: string } = {}): Promise<MessageServer> {
  const dir = mkdtempSync(join(tmpdir(), 'eventgate-rabbitmq-'));
  if (options.advancedConfig) writeFileSync(join(dir, 'advanced.config'), options.advancedConfig);
  const [port, distPort, epmdPort] = [await freePort(), await freePort(), await freePort()];
  const name = `eventgate-${process.pid}-${port}`;
  const asRoot = process.getuid?.() === 0;
  const cookie = join(dir, '.erlang.cookie');
  writeFileSync(cookie, `eventgate${process.pid}${port}${Date.now()}`);
  chmodSync(cookie, 0o400);
  let uid = -1;
  let gid = -1;
  if (asRoot) {
    const id = (flag: string) => Number(spawnSync('id', [flag, 'rabbitmq'], { encoding: 'utf8' }).stdout.trim());
    uid = id('-u');
    gid = id('-g');
    chownSync(dir, uid, gid);
    chownSync(cookie, uid, gid);
  }
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: `${name}@localhost`,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_FEATURE_FLAGS_FILE: join(dir, 'feature_flags'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_PID_FILE: join(dir, 'pid'),
  };
  // Debian's wrapper would `su` to rabbitmq and lose this environment: run the real script directly.
  const script = '/usr/lib/rabbitmq/bin/rabbitmq-server';
  const [command, args] = asRoot ? ['setpriv', ['--reuid', String(uid), '--regid', String(gid), '--init-groups', script]] : [script, []];
  // Boots in ~5 s on an idle machine; much longer when eight test runs share two cores.
  const proc = new ServerProcess('rabbitmq-server', command, args, env, port, 120000, join(dir, 'log', `${name}@localhost.log`));
  await proc.start();
  const killEpmd = () => void spawnSync('epmd', ['-kill'], { env: { ...process.env, ERL_EPMD_PORT: String(epmdPort) } });
  process.once('exit', killEpmd);
  return serverOf(proc, `amqp://guest:guest@127.0.0.1:${port}`, port, dir, killEpmd);
}
