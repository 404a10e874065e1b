import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, chownSync, existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { repoRoot } from './gateway.js';
import { freePort } from './ports.js';
import { killOnExit, tempDir } from './reaper.js';
import type { NatsAccount, NatsOperator, NatsUser } from './nats-jwt.js';

export { freePort };

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

const run = promisify(execFile);

/**
 * Whether the server answers a real client of its protocol: a TCP connect alone also succeeds
 * against whatever else took the port while the server booted (RabbitMQ takes 20 s and more under
 * load), and the tests then talked to that instead. Each probe gives up after a few seconds, so a
 * silent listener is polled again rather than waited for.
 */
type Probe = () => Promise<boolean>;

/** Polls `probe` until the server answers it, the process exits, or `timeoutMs` passes. */
async function answers(probe: Probe, child: ChildProcess, what: string, port: number, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it answered on ${port}:\n${log()}`);
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not answer a client on ${port} within ${timeoutMs} ms:\n${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** mosquitto_sub connects and has a subscription acknowledged (CONNACK, SUBACK), then exits (-E). */
const mqttProbe =
  (port: number, login: string[] = []): Probe =>
  async () => {
    await run('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv5', ...login, '-t', 'eventgate/ready', '-E', '-W', '5'], { timeout: 10000 });
    return true;
  };

/** A login in CONNECT: a user and password, or fields made from the server's nonce (a user JWT and the nonce signed). */
export type NatsLogin = { user?: string; pass?: string } | ((nonce: string) => Record<string, string>);

/** CONNECT's login fields for the INFO line the server sent. */
export function natsLoginFields(login: NatsLogin, infoLine: string): Record<string, string | undefined> {
  if (typeof login !== 'function') return login;
  const nonce = (JSON.parse(infoLine.slice('INFO '.length)) as { nonce?: string }).nonce;
  if (nonce === undefined) throw new Error('the NATS server sent no nonce to sign');
  return login(nonce);
}

/** The NATS text protocol: the server's INFO, then CONNECT and PING answered by PONG. */
const natsProbe =
  (port: number, login: NatsLogin = {}): Probe =>
  () =>
    new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      let text = '';
      let sent = false;
      const done = (ok: boolean) => {
        clearTimeout(timer);
        socket.destroy();
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), 5000);
      socket.on('error', () => done(false));
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
        const info = /^(INFO [^\r]*)\r\n/.exec(text);
        if (!sent && info) {
          sent = true;
          socket.write(`CONNECT ${JSON.stringify({ verbose: false, ...natsLoginFields(login, info[1]!) })}\r\nPING\r\n`);
        }
        if (sent && text.includes('PONG\r\n')) done(true);
      });
    });

/** pika opens a connection (the AMQP handshake, guest's login, the vhost) and a channel. */
const amqpProbe =
  (url: string): Probe =>
  async () => {
    await run('/usr/bin/python3', [join(repoRoot, 'test', 'peers', 'amqp_peer.py'), url, 'ping'], { timeout: 20000 });
    return true;
  };

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
    private readonly probe: Probe,
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
    await answers(this.probe, child, this.what, this.port, this.readyTimeoutMs, () => this.log());
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
 * Starts a server on ports picked free a moment before it binds them. Another process can take
 * one in between (RabbitMQ binds seconds after it starts: a fresh-clone CI run saw
 * `eaddrinuse` once), so a start that fails for a port in use is tried again on new ports.
 */
async function onFreshPorts<T>(start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      if (attempt >= 3 || !/eaddrinuse|address already in use/i.test((err as Error).message)) throw err;
    }
  }
}

/**
 * mosquitto with persistence (sessions and QoS 1/2 messages survive a restart, as on a real
 * deployment), anonymous access, listening on 127.0.0.1 only. `acl`: the lines of an ACL file for
 * anonymous clients (`topic readwrite open/#`); without it every client may do anything.
 */
export function startMosquitto(acl?: string[], extraLines: string[] = []): Promise<MessageServer> {
  return onFreshPorts(() => startMosquittoOnce(acl, undefined, extraLines));
}

/** A mosquitto that logs the connections it takes (startMosquittoLogged). */
export interface LoggedMosquitto extends MessageServer {
  /** How many times a client connected as `id` (with `prefix`, as any id that starts with it): the server's side of "kept its connection". */
  connects(id: string, options?: { prefix?: boolean }): number;
}

/** startMosquitto() with its log of connections in a file, read by `connects()`. */
export async function startMosquittoLogged(): Promise<LoggedMosquitto> {
  const logFile = join(tempDir('eventgate-mosquitto-log'), 'mosquitto.log');
  const server = await startMosquitto(undefined, [`log_dest file ${logFile}`, 'log_type notice']);
  const connects = (id: string, { prefix = false } = {}) =>
    readFileSync(logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('New client connected') && l.includes(` as ${id}${prefix ? '' : ' '}`)).length;
  return Object.assign(server, { connects });
}

/**
 * mosquitto as startMosquitto's, refusing packets over `maxPacketSize` bytes (`max_packet_size`:
 * told to MQTT 5 clients in the CONNACK; a client that sends a larger packet is disconnected) and,
 * when given, publish payloads over `messageSizeLimit` (`message_size_limit`: such a message is
 * dropped, a QoS 1 or 2 publish still completed, with an error reason code on MQTT 5 only).
 */
export function startMosquittoWithLimits(limits: { maxPacketSize?: number; messageSizeLimit?: number }): Promise<MessageServer> {
  return startMosquitto(undefined, [
    ...(limits.maxPacketSize === undefined ? [] : [`max_packet_size ${limits.maxPacketSize}`]),
    ...(limits.messageSizeLimit === undefined ? [] : [`message_size_limit ${limits.messageSizeLimit}`]),
  ]);
}

/** A server whose users (name → password) a test can change while it runs (`setUsers`: the server reloads them on SIGHUP). */
export interface ServerWithUsers extends MessageServer {
  setUsers(users: Record<string, string>): Promise<void>;
}

/** Hangs up `server` (mosquitto and nats-server read their users again) unless it is down. */
function hangUp(server: MessageServer): void {
  const pid = server.pid();
  if (pid !== undefined) process.kill(pid, 'SIGHUP');
}

/**
 * mosquitto as startMosquitto's, but with no anonymous access: only `users` (name → password)
 * log in, the first of them being the one the readiness probe uses. `clientIdPrefix`: only client
 * ids that start with it log in (`clientid_prefixes`; the server answers others "not authorised").
 */
export function startMosquittoWithUsers(users: Record<string, string>, options: { clientIdPrefix?: string } = {}): Promise<ServerWithUsers> {
  return onFreshPorts(async () => {
    const [probeUser, probePass] = Object.entries(users)[0]!;
    const passwords = { file: '' };
    const write = async (all: Record<string, string>) => {
      writeFileSync(passwords.file, '');
      for (const [name, password] of Object.entries(all)) await run('mosquitto_passwd', ['-b', passwords.file, name, password]);
    };
    const server = await startMosquittoOnce(undefined, async (dir) => {
      passwords.file = join(dir, 'passwords');
      await write(users);
      const prefix = options.clientIdPrefix;
      return {
        lines: ['allow_anonymous false', `password_file ${passwords.file}`, ...(prefix === undefined ? [] : [`clientid_prefixes ${prefix}`])],
        login: ['-u', probeUser, '-P', probePass, ...(prefix === undefined ? [] : ['-i', `${prefix}probe`])],
      };
    });
    return {
      ...server,
      async setUsers(all) {
        await write(all);
        hangUp(server);
      },
    };
  });
}

/**
 * mosquitto as startMosquitto's, its listener speaking TLS only with `cert` (a server certificate
 * for 127.0.0.1, its own CA: the readiness probe trusts it). `url` is then `mqtts://`. `mutual`:
 * clients must present a certificate `mutual.ca` signed (`require_certificate`); the probe presents
 * `mutual.client`.
 */
export function startMosquittoTls(cert: { certFile: string; keyFile: string }, mutual?: { ca: { certFile: string }; client: { certFile: string; keyFile: string } }): Promise<MessageServer> {
  return onFreshPorts(async () => {
    const server = await startMosquittoOnce(undefined, async () => ({
      lines: ['allow_anonymous true', `certfile ${cert.certFile}`, `keyfile ${cert.keyFile}`, ...(mutual ? [`cafile ${mutual.ca.certFile}`, 'require_certificate true'] : [])],
      login: ['--cafile', cert.certFile, ...(mutual ? ['--cert', mutual.client.certFile, '--key', mutual.client.keyFile] : [])],
    }));
    return { ...server, url: server.url.replace(/^mqtt:/, 'mqtts:') };
  });
}

async function startMosquittoOnce(acl?: string[], auth?: (dir: string) => Promise<{ lines: string[]; login: string[] }>, extraLines: string[] = []): Promise<MessageServer> {
  const dir = tempDir('eventgate-mosquitto');
  if (acl) writeFileSync(join(dir, 'acl'), `${acl.join('\n')}\n`);
  const login = auth ? await auth(dir) : undefined;
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} 127.0.0.1`,
      ...(login ? login.lines : ['allow_anonymous true']),
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
      ...extraLines,
      '',
    ].join('\n'),
  );
  const proc = new ServerProcess('mosquitto', 'mosquitto', ['-c', conf], process.env, port, mqttProbe(port, login?.login), 60000);
  await proc.start();
  return serverOf(proc, `mqtt://127.0.0.1:${port}`, port, dir);
}

/** nats-server with JetStream, its store in the temp directory (streams and consumers survive a restart). */
export function startNats(): Promise<MessageServer> {
  return onFreshPorts(() => startNatsOnce());
}

/**
 * nats-server as startNats's, but only `users` (name → password) may connect, the first of them
 * being the one the readiness probe uses. `setUsers` while the server is down takes effect at `up()`.
 * `denyPublish`: subjects no user may publish to (the server answers such a publish `-ERR
 * 'Permissions Violation ...'` and drops it). `maxConnections`: the server answers a connection
 * past that many `-ERR 'maximum connections exceeded'` and closes it. `nkeys`: public keys (`U...`)
 * of users who log in by NKey (signing the server's nonce with their seed).
 */
export function startNatsWithUsers(users: Record<string, string>, denyPublish: string[] = [], options: { maxConnections?: number; nkeys?: string[] } = {}): Promise<ServerWithUsers> {
  return onFreshPorts(async () => {
    const dir = tempDir('eventgate-nats');
    const conf = join(dir, 'nats.conf');
    const permissions = denyPublish.length > 0 ? `, permissions: { publish: { deny: ${JSON.stringify(denyPublish)} } }` : '';
    const limit = options.maxConnections === undefined ? '' : `max_connections: ${options.maxConnections}\n`;
    // JetStream in the file, not as flags: a reload (SIGHUP) of a file without it shuts JetStream down.
    const write = (all: Record<string, string>) =>
      writeFileSync(
        conf,
        `jetstream { store_dir: ${JSON.stringify(join(dir, 'jetstream'))} }\n${limit}authorization { users = [\n${Object.entries(all)
          .map(([user, password]) => `  { user: ${JSON.stringify(user)}, password: ${JSON.stringify(password)}${permissions} }\n`)
          .join('')}${(options.nkeys ?? []).map((nkey) => `  { nkey: ${JSON.stringify(nkey)}${permissions} }\n`).join('')}] }\n`,
      );
    write(users);
    const [user, pass] = Object.entries(users)[0]!;
    const server = await startNatsOnce(dir, conf, { user, pass });
    return {
      ...server,
      async setUsers(all) {
        write(all);
        hangUp(server);
      },
    };
  });
}

/**
 * nats-server in operator mode (decentralized JWT auth): it trusts `operator.operatorJwt` and
 * knows the accounts of `accounts` (public key → JWT; the operator's system account and its
 * gateway account always) from its memory resolver, so only users with a JWT one of them signed
 * log in. JetStream is on; the readiness probe logs in as `probe`.
 */
export function startNatsOperator(operator: NatsOperator, probe: NatsUser, accounts: NatsAccount[] = []): Promise<MessageServer> {
  return onFreshPorts(async () => {
    const dir = tempDir('eventgate-nats');
    const conf = join(dir, 'nats.conf');
    const preload = [operator.system, operator.account, ...accounts].map((a) => `  ${a.key.getPublicKey()}: ${a.jwt}\n`).join('');
    writeFileSync(
      conf,
      `operator: ${operator.operatorJwt}\nsystem_account: ${operator.system.key.getPublicKey()}\nresolver: MEMORY\nresolver_preload: {\n${preload}}\njetstream { store_dir: ${JSON.stringify(join(dir, 'jetstream'))} }\n`,
    );
    return startNatsOnce(dir, conf, probe.login);
  });
}

/**
 * nats-server as startNats's, offering TLS with `cert` (a server certificate for 127.0.0.1) and
 * taking plain clients too (`allow_non_tls`: the readiness probe speaks the text protocol). A
 * client that asks for TLS (`tls://`, or TLS options) gets it; with `clientCa`, only when it
 * presents a certificate that CA signed (`verify: true`, mutual TLS).
 */
export function startNatsTls(cert: { certFile: string; keyFile: string }, clientCa?: { certFile: string }): Promise<MessageServer> {
  return onFreshPorts(async () => {
    const dir = tempDir('eventgate-nats');
    const conf = join(dir, 'nats.conf');
    const mutual = clientCa ? `, ca_file: ${JSON.stringify(clientCa.certFile)}, verify: true` : '';
    writeFileSync(
      conf,
      `jetstream { store_dir: ${JSON.stringify(join(dir, 'jetstream'))} }\ntls { cert_file: ${JSON.stringify(cert.certFile)}, key_file: ${JSON.stringify(cert.keyFile)}${mutual} }\nallow_non_tls: true\n`,
    );
    const server = await startNatsOnce(dir, conf);
    return { ...server, url: server.url.replace(/^nats:/, 'tls:') };
  });
}

/** nats-server's MQTT listener, whose one user may subscribe to anything but the subjects `setDeny` names. */
export interface NatsMqttServer extends MessageServer {
  user: string;
  password: string;
  /** Rewrites the subjects the user may not subscribe to and has the server read its config again (SIGHUP). */
  setDeny(subjects: string[]): void;
}

/**
 * nats-server 2.9's MQTT support (MQTT 3.1.1 only, over JetStream): a server that refuses a
 * subscription in its SUBACK (return code 0x80), as mosquitto's ACL file does not (it grants it
 * and filters at delivery). One user, whose `permissions.subscribe` denies the NATS subjects of
 * `deny` (the MQTT filter `closed/#` is the subject `closed.>`). `url` is the MQTT listener's.
 */
export function startNatsMqtt(deny: string[]): Promise<NatsMqttServer> {
  return onFreshPorts(async () => {
    const dir = tempDir('eventgate-nats-mqtt');
    const conf = join(dir, 'nats.conf');
    const [user, password] = ['gateway', 'secret'];
    const mqttPort = await freePort();
    const write = (subjects: string[]) =>
      writeFileSync(
        conf,
        [
          // MQTT needs a server name and JetStream (its sessions and QoS 1 messages live in streams).
          `server_name: eventgate_${process.pid}_${mqttPort}`,
          `jetstream { store_dir: ${JSON.stringify(join(dir, 'jetstream'))} }`,
          `mqtt { listen: "127.0.0.1:${mqttPort}" }`,
          `authorization { users = [ { user: ${user}, password: ${password}, permissions: { publish: ">", subscribe: { allow: ">", deny: ${JSON.stringify(subjects)} } } } ] }`,
          '',
        ].join('\n'),
      );
    write(deny);
    const nats = await startNatsOnce(dir, conf, { user, pass: password });
    // The MQTT listener opens after the client port the probe saw: wait for it too (the process is watched by the probe above).
    await answers(mqttProbe(mqttPort, ['-V', 'mqttv311', '-u', user, '-P', password]), { exitCode: null, signalCode: null } as ChildProcess, 'nats-server (mqtt)', mqttPort, 30000, () => '');
    return {
      ...nats,
      url: `mqtt://127.0.0.1:${mqttPort}`,
      port: mqttPort,
      user,
      password,
      setDeny(subjects) {
        write(subjects);
        hangUp(nats);
      },
    };
  });
}

/** nats-server as startNats's, but without JetStream (its default): nothing answers the JetStream API. */
export function startNatsWithoutJetStream(): Promise<MessageServer> {
  return onFreshPorts(async () => {
    const dir = tempDir('eventgate-nats');
    const conf = join(dir, 'nats.conf');
    writeFileSync(conf, '# no jetstream block\n');
    return startNatsOnce(dir, conf);
  });
}

/** `conf`: a config file that enables JetStream itself (nats-server refuses its store directory twice). */
async function startNatsOnce(dir = tempDir('eventgate-nats'), conf?: string, login: NatsLogin = {}): Promise<MessageServer> {
  const port = await freePort();
  const args = [...(conf ? ['-c', conf] : ['-js', '-sd', join(dir, 'jetstream')]), '-a', '127.0.0.1', '-p', String(port)];
  const proc = new ServerProcess('nats-server', 'nats-server', args, process.env, port, natsProbe(port, login), 60000);
  await proc.start();
  return serverOf(proc, `nats://127.0.0.1:${port}`, port, dir);
}

/**
 * rabbitmq-server as its own node (unique name, its own epmd on a free port), its database, logs
 * and feature flags in a temp directory owned by the `rabbitmq` user when run as root (Debian's
 * Erlang cookie and directories belong to that user). Takes a few seconds to boot, more on a busy
 * machine: start one per test file and share it between the file's tests (queues of their own),
 * or take the run's shared one (`sharedRabbit`) when the file neither stops nor reconfigures it.
 * `advancedConfig`: an `advanced.config` (Erlang terms) for settings such as `consumer_timeout`.
 * `vhosts`: virtual hosts the node has from its start, guest allowed everything in each (as in
 * `/`), and `users` besides guest: loaded from a definitions file at boot, where each `rabbitmqctl
 * add_vhost`, `add_user` and `set_permissions` would start an Erlang VM of its own (~2 s of a core each).
 */
/** A RabbitMQ node the tests can also administer: `admin` does what `rabbitmqctl` commands do (e.g. set_permissions). */
export interface RabbitServer extends MessageServer {
  /** The `rabbitmqctl` commands the tests use, each the node's own function called through erl_call (rabbitAdmin). */
  admin: RabbitAdmin;
  /** A function called on the node (rabbitCall): what a `rabbitmqctl` command does, without its VM. */
  call(mfa: string): Promise<string>;
  /** The virtual host `url` names: `/` on a server of the file's own, one of the file's own on the shared one. */
  vhost: string;
  /** How erl_call reaches the node, for another process (the run's shared server, `sharedRabbit`). */
  node: RabbitNode;
  /** `amqps://` to the TLS listener, with guest's credentials (only with `RabbitOptions.tls`). */
  tlsUrl?: string;
}

/** A RabbitMQ node as erl_call reaches it: its name, the Erlang cookie's home, its epmd, the user it runs as. */
export interface RabbitNode {
  port: number;
  nodeName: string;
  home: string;
  epmdPort: number;
  /** The `rabbitmq` user's ids when the tests run as root (the node runs as that user). */
  runAs?: { uid: number; gid: number };
}

export interface RabbitOptions {
  advancedConfig?: string;
  /**
   * A TLS listener besides the plain one (the readiness probe's), at `RabbitServer.tlsUrl`:
   * `cert`, a server certificate for 127.0.0.1; `ca`, a CA whose client certificates it requires
   * (mutual TLS: `fail_if_no_peer_cert`).
   */
  tls?: { cert: { certFile: string; keyFile: string }; ca?: { certFile: string } };
  vhosts?: string[];
  users?: RabbitUser[];
}

/** A user besides guest, allowed everything in one virtual host (one of `vhosts`) and nowhere else. */
export interface RabbitUser {
  name: string;
  password: string;
  vhost: string;
}

export function startRabbit(options: RabbitOptions = {}): Promise<RabbitServer> {
  return onFreshPorts(() => startRabbitOnce(options));
}

/**
 * How long one erl_call may take: a few milliseconds on a quiet machine; the bound is for a node
 * that does not answer at all, so that the call fails naming its command rather than a file
 * running into the runner's 300 s file timeout, which says nothing of which wait it was.
 */
const RABBIT_CALL_TIMEOUT_MS = 90000;

/** erl_interface's erl_call, a C client of the Erlang distribution (Debian's erlang-base). */
function erlCallPath(): string {
  const lib = '/usr/lib/erlang/lib';
  const dir = existsSync(lib) ? readdirSync(lib).find((d) => d.startsWith('erl_interface-') && existsSync(join(lib, d, 'bin', 'erl_call'))) : undefined;
  if (!dir) throw new Error(`no erl_call under ${lib}/erl_interface-*/bin (Debian's erlang-base has it, which rabbitmq-server needs)`);
  return join(lib, dir, 'bin', 'erl_call');
}

/**
 * Calls a function on `node` through erl_call: `mfa` is its `-a` argument, `Module Function [Args]`
 * (`vm_memory_monitor set_vm_memory_high_watermark [0.4]`, which `rabbitmqctl
 * set_vm_memory_high_watermark 0.4` calls), the answer the result as Erlang terms. A C program:
 * no Erlang VM of its own to boot, where each `rabbitmqctl` run boots one (~0.6 s of a core, 30-55 s
 * of waiting seen on a loaded machine). A result that is an error tuple, or no answer, fails.
 */
export function rabbitCall(node: RabbitNode): (mfa: string) => Promise<string> {
  const env = { ...process.env, ERL_EPMD_PORT: String(node.epmdPort) };
  return async (mfa) => {
    const cookie = readFileSync(join(node.home, '.erlang.cookie'), 'utf8').trim();
    const started = Date.now();
    try {
      const { stdout } = await run(erlCallPath(), ['-n', node.nodeName, '-c', cookie, '-a', mfa], { env, timeout: RABBIT_CALL_TIMEOUT_MS, killSignal: 'SIGKILL' });
      if (/^\{(error|badrpc),/.test(stdout.trim())) throw Object.assign(new Error(stdout.trim()), { stderr: stdout.trim() });
      return stdout;
    } catch (err) {
      const failed = err as Error & { killed?: boolean; stderr?: string };
      throw new Error(`erl_call ${mfa} on ${node.nodeName} failed after ${Date.now() - started} ms: ${failed.killed ? 'no answer' : failed.stderr?.trim() || failed.message}`);
    }
  };
}

/** A client connection as `rabbitmqctl list_connections pid vhost client_properties` lists it. */
export interface RabbitConnection {
  /** The connection's process, as closeConnection takes it (`<0.812.0>`). */
  pid: string;
  /** Its virtual host; `none` while it has not opened one yet. */
  vhost: string;
  /** The `connection_name` of its client properties (the gateway's: `eventgate <broker>[ publish]`), if it gave one. */
  name?: string;
}

/**
 * What the `rabbitmqctl` commands the tests use do, each through the function on the node that the
 * command calls (read from RabbitMQ 3.10.8's CLI, the version the tests run: its commands' modules
 * in /usr/lib/rabbitmq/lib/rabbitmq_server-3.10.8/escript/rabbitmqctl), called by erl_call: a C
 * program, ~10 ms, where each `rabbitmqctl` boots an Erlang VM of its own (~0.6-2 s of a core,
 * 30-60 s of waiting seen on a loaded machine). The list commands stream their rows from each
 * cluster node (`emit_*_all`); on one node the same rows come from the `*_all` function. Each fails
 * naming its command and what the node answered (`{error,{no_such_user,<<"x">>}}`).
 */
export interface RabbitAdmin {
  /** list_connections pid vhost client_properties: every connection of the node (no vhost narrows it). */
  listConnections(): Promise<RabbitConnection[]>;
  /** close_connection PID EXPLANATION: the client gets 320 CONNECTION_FORCED with the explanation. */
  closeConnection(pid: string, explanation: string): Promise<void>;
  /** close_all_connections -p VHOST EXPLANATION: how many it closed. */
  closeAllConnections(vhost: string, explanation: string): Promise<number>;
  /** list_consumers -p VHOST queue_name consumer_tag. */
  listConsumers(vhost: string): Promise<{ queue: string; tag: string }[]>;
  /** list_queues -p VHOST name messages_unacknowledged. */
  listQueues(vhost: string): Promise<{ name: string; messagesUnacknowledged: number }[]>;
  /** set_permissions -p VHOST USER CONF WRITE READ (regular expressions). */
  setPermissions(vhost: string, user: string, configure: string, write: string, read: string): Promise<void>;
  /** set_user_limits USER '{"max-channels": 1}'. */
  setUserLimits(user: string, limits: Record<string, number>): Promise<void>;
  /** clear_user_limits USER LIMIT (`max-channels`, `max-connections` or `all`). */
  clearUserLimits(user: string, limit: string): Promise<void>;
  addUser(user: string, password: string): Promise<void>;
  changePassword(user: string, password: string): Promise<void>;
  addVhost(vhost: string): Promise<void>;
}

/** A string as an Erlang binary of its UTF-8 bytes (`<<104,105>>`): nothing in it to escape. */
function erlBinary(text: string): string {
  return `<<${[...Buffer.from(text, 'utf8')].join(',')}>>`;
}

/**
 * Evaluates `expr` (Erlang expressions) on the node through `erl_call -e` and gives its value as
 * JSON: `expr` makes it of maps, lists, binaries and numbers. The answer comes back base64 encoded,
 * because erl_call prints a binary's first 30 bytes only, and non-ASCII in a string as `\xffffffc3`.
 * A value `{error, _}` (or `{badrpc, _}`) or an exception fails, `what` and the reason in the message.
 */
function rabbitEval(node: RabbitNode): (what: string, expr: string) => Promise<unknown> {
  const env = { ...process.env, ERL_EPMD_PORT: String(node.epmdPort) };
  return async (what, expr) => {
    const cookie = readFileSync(join(node.home, '.erlang.cookie'), 'utf8').trim();
    const source = `EgAnswer = fun(EgA) -> binary_to_list(base64:encode(rabbit_json:encode(EgA))) end,
EgFailed = fun(EgWhy) -> EgAnswer(#{<<"error">> => iolist_to_binary(io_lib:format("~0tp", [EgWhy]))}) end,
try begin ${expr} end of
  {error, _} = EgError -> EgFailed(EgError);
  {badrpc, _} = EgError -> EgFailed(EgError);
  EgValue -> EgAnswer(#{<<"value">> => EgValue})
catch
  EgClass:EgReason -> EgFailed({EgClass, EgReason})
end.
`;
    const started = Date.now();
    const failure = (why: string) => new Error(`${what} on ${node.nodeName} failed after ${Date.now() - started} ms: ${why}`);
    let stdout = '';
    // erl_call's `failed to connect to node` (seen once in ~100 calls, two test runs beside each
    // other on a loaded machine) is before anything reached the node: tried again, twice.
    for (let attempt = 1; ; attempt++) {
      try {
        const pending = run(erlCallPath(), ['-n', node.nodeName, '-c', cookie, '-e'], { env, timeout: RABBIT_CALL_TIMEOUT_MS, killSignal: 'SIGKILL' });
        pending.child.stdin?.end(source);
        ({ stdout } = await pending);
        break;
      } catch (err) {
        const failed = err as Error & { killed?: boolean; stderr?: string };
        const why = failed.killed ? `no answer within ${RABBIT_CALL_TIMEOUT_MS} ms` : failed.stderr?.trim() || failed.message;
        if (attempt < 3 && /failed to connect to node/.test(why)) {
          await sleep(100 * attempt);
          continue;
        }
        throw failure(attempt > 1 ? `${why} (attempt ${attempt})` : why);
      }
    }
    // `{ok, "<base64>"}`; anything else is erl_call's own error (`{error, "...Incomplete form..."}`).
    const encoded = /^\{ok, "([A-Za-z0-9+/=]*)"\}\s*$/.exec(stdout)?.[1];
    if (encoded === undefined) throw failure(stdout.trim());
    const answer = JSON.parse(Buffer.from(encoded, 'base64').toString('utf8')) as { value?: unknown; error?: string };
    if (answer.error !== undefined) throw failure(answer.error);
    return answer.value;
  };
}

/** The `rabbitmqctl` commands the tests use, on `node` (RabbitAdmin). */
export function rabbitAdmin(node: RabbitNode): RabbitAdmin {
  const evaluate = rabbitEval(node);
  const b = erlBinary;
  // Who the node's audit events name as having made a change (the CLI names `rmq-cli`).
  const actor = b('eventgate-tests');
  const done = async (what: string, expr: string) => void (await evaluate(what, expr));
  return {
    listConnections: async () =>
      (await evaluate(
        'rabbitmqctl list_connections (rabbit_networking:connection_info_all/1)',
        `[#{<<"pid">> => list_to_binary(pid_to_list(proplists:get_value(pid, I))),
            <<"vhost">> => proplists:get_value(vhost, I),
            <<"name">> => case proplists:get_value(client_properties, I) of P when is_list(P) -> case lists:keyfind(<<"connection_name">>, 1, P) of {_, longstr, N} -> N; false -> null end; _ -> null end}
          || I <- rabbit_networking:connection_info_all([pid, vhost, client_properties])]`,
      )) as RabbitConnection[],
    closeConnection: (pid, explanation) =>
      done(`rabbitmqctl close_connection ${pid} (rabbit_networking:close_connection/2)`, `rabbit_networking:close_connection(list_to_pid(binary_to_list(${b(pid)})), ${b(explanation)})`),
    closeAllConnections: async (vhost, explanation) =>
      (await evaluate(
        `rabbitmqctl close_all_connections -p ${vhost} (rabbit_connection_tracking_handler:close_connections/3)`,
        `EgConns = rabbit_connection_tracking:list(${b(vhost)}), ok = rabbit_connection_tracking_handler:close_connections(EgConns, ${b(explanation)}, 0), length(EgConns)`,
      )) as number,
    listConsumers: async (vhost) =>
      (await evaluate(
        `rabbitmqctl list_consumers -p ${vhost} (rabbit_amqqueue:consumers_all/1)`,
        `lists:map(fun(C) -> {resource, _, queue, Q} = proplists:get_value(queue_name, C), #{<<"queue">> => Q, <<"tag">> => proplists:get_value(consumer_tag, C)} end,
                   rabbit_amqqueue:consumers_all(${b(vhost)}))`,
      )) as { queue: string; tag: string }[],
    listQueues: async (vhost) =>
      (await evaluate(
        `rabbitmqctl list_queues -p ${vhost} (rabbit_amqqueue:info_all/2)`,
        `lists:map(fun(I) -> {resource, _, queue, Q} = proplists:get_value(name, I), #{<<"name">> => Q, <<"messagesUnacknowledged">> => proplists:get_value(messages_unacknowledged, I)} end,
                   rabbit_amqqueue:info_all(${b(vhost)}, [name, messages_unacknowledged]))`,
      )) as { name: string; messagesUnacknowledged: number }[],
    setPermissions: (vhost, user, configure, write, read) =>
      done(
        `rabbitmqctl set_permissions -p ${vhost} ${user} ${configure} ${write} ${read} (rabbit_auth_backend_internal:set_permissions/6)`,
        `rabbit_auth_backend_internal:set_permissions(${b(user)}, ${b(vhost)}, ${b(configure)}, ${b(write)}, ${b(read)}, ${actor})`,
      ),
    setUserLimits: (user, limits) =>
      done(
        `rabbitmqctl set_user_limits ${user} ${JSON.stringify(limits)} (rabbit_auth_backend_internal:set_user_limits/3)`,
        `rabbit_auth_backend_internal:set_user_limits(${b(user)}, ${b(JSON.stringify(limits))}, ${actor})`,
      ),
    clearUserLimits: (user, limit) =>
      done(`rabbitmqctl clear_user_limits ${user} ${limit} (rabbit_auth_backend_internal:clear_user_limits/3)`, `rabbit_auth_backend_internal:clear_user_limits(${b(user)}, ${b(limit)}, ${actor})`),
    addUser: (user, password) => done(`rabbitmqctl add_user ${user} (rabbit_auth_backend_internal:add_user/3)`, `rabbit_auth_backend_internal:add_user(${b(user)}, ${b(password)}, ${actor})`),
    changePassword: (user, password) =>
      done(`rabbitmqctl change_password ${user} (rabbit_auth_backend_internal:change_password/3)`, `rabbit_auth_backend_internal:change_password(${b(user)}, ${b(password)}, ${actor})`),
    addVhost: (vhost) => done(`rabbitmqctl add_vhost ${vhost} (rabbit_vhost:add/2)`, `rabbit_vhost:add(${b(vhost)}, ${actor})`),
  };
}

/** RabbitMQ's SHA-256 password hash: base64 of a 4-byte salt and SHA-256(salt + password). */
function rabbitPasswordHash(password: string): string {
  const salt = randomBytes(4);
  return Buffer.concat([
    salt,
    createHash('sha256')
      .update(Buffer.concat([salt, Buffer.from(password)]))
      .digest(),
  ]).toString('base64');
}

/**
 * RabbitMQ's definitions (https://www.rabbitmq.com/definitions.html) for `vhosts` besides `/` and
 * `users`, with guest as a fresh node has it (a node that loads definitions at boot may not create it).
 */
function rabbitDefinitions(vhosts: string[], users: RabbitUser[]): string {
  const all = ['/', ...vhosts.filter((v) => v !== '/')];
  const allowed = (user: string, vhost: string) => ({ user, vhost, configure: '.*', write: '.*', read: '.*' });
  const user = (name: string, password: string, tags: string[]) => ({ name, password_hash: rabbitPasswordHash(password), hashing_algorithm: 'rabbit_password_hashing_sha256', tags, limits: {} });
  return JSON.stringify({
    users: [user('guest', 'guest', ['administrator']), ...users.map((u) => user(u.name, u.password, []))],
    vhosts: all.map((name) => ({ name })),
    permissions: [...all.map((vhost) => allowed('guest', vhost)), ...users.map((u) => allowed(u.name, u.vhost))],
  });
}

async function startRabbitOnce(options: RabbitOptions): Promise<RabbitServer> {
  const dir = tempDir('eventgate-rabbitmq');
  if (options.advancedConfig) writeFileSync(join(dir, 'advanced.config'), options.advancedConfig);
  const conf: string[] = [];
  if (options.vhosts?.length || options.users?.length) {
    writeFileSync(join(dir, 'definitions.json'), rabbitDefinitions(options.vhosts ?? [], options.users ?? []));
    conf.push(`load_definitions = ${join(dir, 'definitions.json')}`);
  }
  const ports = new Set<number>();
  while (ports.size < (options.tls ? 4 : 3)) ports.add(await freePort());
  const [port, distPort, epmdPort, tlsPort] = [...ports] as [number, number, number, number | undefined];
  if (options.tls) {
    // Copies in the node's directory: run as root, the node is the rabbitmq user, who may not read the tests' temp files.
    const copy = (file: string, as: string) => (writeFileSync(join(dir, as), readFileSync(file)), join(dir, as));
    const { cert, ca } = options.tls;
    conf.push(`listeners.ssl.default = 127.0.0.1:${tlsPort}`, `ssl_options.certfile = ${copy(cert.certFile, 'tls-cert.pem')}`, `ssl_options.keyfile = ${copy(cert.keyFile, 'tls-key.pem')}`);
    if (ca) conf.push(`ssl_options.cacertfile = ${copy(ca.certFile, 'tls-ca.pem')}`, 'ssl_options.verify = verify_peer', 'ssl_options.fail_if_no_peer_cert = true');
  }
  if (conf.length > 0) writeFileSync(join(dir, 'rabbitmq.conf'), `${conf.join('\n')}\n`);
  const name = `eventgate-${process.pid}-${port}`;
  const asRoot = process.getuid?.() === 0;
  const cookie = join(dir, '.erlang.cookie');
  writeFileSync(cookie, `eventgate${process.pid}${port}${Date.now()}`);
  chmodSync(cookie, 0o400);
  let runAs: RabbitNode['runAs'];
  if (asRoot) {
    const id = (flag: string) => Number(spawnSync('id', [flag, 'rabbitmq'], { encoding: 'utf8' }).stdout.trim());
    runAs = { uid: id('-u'), gid: id('-g') };
    chownSync(dir, runAs.uid, runAs.gid);
    chownSync(cookie, runAs.uid, runAs.gid);
    for (const file of ['tls-cert.pem', 'tls-key.pem', 'tls-ca.pem']) if (existsSync(join(dir, file))) chownSync(join(dir, file), runAs.uid, runAs.gid);
  }
  const node: RabbitNode = { port, nodeName: `${name}@localhost`, home: dir, epmdPort, runAs };
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: node.nodeName,
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
  const [command, args] = runAs ? ['setpriv', ['--reuid', String(runAs.uid), '--regid', String(runAs.gid), '--init-groups', script]] : [script, []];
  // Boots in ~5 s on an idle machine; much longer when eight test runs share two cores.
  const url = `amqp://guest:guest@127.0.0.1:${port}`;
  const proc = new ServerProcess('rabbitmq-server', command, args, env, port, amqpProbe(url), 120000, join(dir, 'log', `${name}@localhost.log`));
  const killEpmd = () => void spawnSync('epmd', ['-kill'], { env: { ...process.env, ERL_EPMD_PORT: String(epmdPort) } });
  try {
    await proc.start();
  } catch (err) {
    // The node's epmd outlives a node that did not boot.
    await proc.stop();
    killEpmd();
    throw err;
  }
  process.once('exit', killEpmd);
  return {
    ...serverOf(proc, url, port, dir, killEpmd),
    admin: rabbitAdmin(node),
    call: rabbitCall(node),
    vhost: '/',
    node,
    ...(tlsPort ? { tlsUrl: `amqps://guest:guest@127.0.0.1:${tlsPort}` } : {}),
  };
}
