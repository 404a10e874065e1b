import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Transform } from 'node:stream';
import { after, before } from 'node:test';
import { promisify } from 'node:util';
import { eventually, repoRoot } from './gateway.js';
import { natsLoginFields, startNats, type MessageServer, type NatsLogin } from './servers.js';
import { killOnExit } from './reaper.js';

/**
 * Independent clients for the message servers: what the gateway writes is read by someone else's
 * code (mosquitto's own clients, Python's pika, the NATS text protocol by hand), and what they
 * write is what the gateway must read.
 */

const run = promisify(execFile);

// ---- MQTT: mosquitto_pub / mosquitto_sub --------------------------------------------------

export interface MqttReceived {
  topic: string;
  qos: number;
  payload: string;
  /** The payload as sent, byte for byte (mosquitto_sub's `%x`; its `%j` leaves a payload that is not UTF-8 empty). */
  bytes: Buffer;
  /** MQTT 5 user properties. */
  userProperties: Record<string, string>;
  /** The MQTT 5 Content Type property. */
  contentType: string | undefined;
  /** The MQTT 5 Message Expiry Interval, in seconds, as the server sent it (what was left of it). */
  messageExpiryInterval: number | undefined;
}

/**
 * Publishes with mosquitto_pub (MQTT 5), waiting for the broker's acknowledgement at QoS ≥ 1.
 * Bytes are given on its stdin (`-s`), so any payload goes as it is.
 */
export async function mosquittoPub(
  server: MessageServer,
  topic: string,
  payload: string | Buffer,
  options: { qos?: 0 | 1 | 2; userProperties?: Record<string, string | string[]>; contentType?: string; retain?: boolean; protocol?: 'mqttv5' | 'mqttv311'; messageExpirySeconds?: number } = {},
): Promise<void> {
  const message = typeof payload === 'string' ? ['-m', payload] : ['-s'];
  const args = ['-h', server.host, '-p', String(server.port), '-V', options.protocol ?? 'mqttv5', '-t', topic, ...message, '-q', String(options.qos ?? 1)];
  if (options.retain) args.push('-r');
  // A list: the property once per value (MQTT 5 allows a name to repeat).
  for (const [k, v] of Object.entries(options.userProperties ?? {})) for (const one of [v].flat()) args.push('-D', 'publish', 'user-property', k, one);
  if (options.contentType !== undefined) args.push('-D', 'publish', 'content-type', options.contentType);
  if (options.messageExpirySeconds !== undefined) args.push('-D', 'publish', 'message-expiry-interval', String(options.messageExpirySeconds));
  if (typeof payload === 'string') return void (await run('mosquitto_pub', args));
  const child = spawn('mosquitto_pub', args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  child.stdin!.end(payload);
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`mosquitto_pub -s exited with ${code}: ${err}`);
}

/**
 * A mosquitto_pub reading messages from its stdin (`-l`, one line each) on one connection, so a
 * test can publish a stream in parts (before, during and after a gateway restart). `end()` closes
 * stdin and resolves once mosquitto_pub has had every message acknowledged and exited.
 */
export class MosquittoPubStream {
  private err = '';
  private readonly closed: Promise<[number | null]>;
  private constructor(private readonly child: ChildProcess) {
    const forget = killOnExit(() => child.kill('SIGKILL'));
    child.once('exit', forget);
    child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.err += c));
    this.closed = once(child, 'close') as Promise<[number | null]>;
  }

  static start(server: MessageServer, topic: string, qos: 0 | 1 | 2): MosquittoPubStream {
    return new MosquittoPubStream(spawn('mosquitto_pub', ['-h', server.host, '-p', String(server.port), '-V', 'mqttv5', '-t', topic, '-q', String(qos), '-l'], { stdio: ['pipe', 'ignore', 'pipe'] }));
  }

  write(lines: string[]): void {
    this.child.stdin!.write(lines.map((l) => `${l}\n`).join(''));
  }

  async end(): Promise<void> {
    this.child.stdin!.end();
    const [code] = await this.closed;
    if (code !== 0) throw new Error(`mosquitto_pub -l exited with ${code}: ${this.err}`);
  }
}

/** A mosquitto_sub that has its subscription acknowledged (SUBACK) before this resolves. */
export class MosquittoSub {
  private readonly received: MqttReceived[] = [];
  private waiters: (() => void)[] = [];
  /** Killed with the test process however it ends: a cancelled file left its mosquitto_sub running. */
  private readonly forget: () => void;
  private constructor(private readonly child: ChildProcess) {
    this.forget = killOnExit(() => child.kill('SIGKILL'));
    child.once('exit', this.forget);
  }

  /** `session`: a persistent session of that client id (what the server queued for it while it was away arrives first). */
  static async start(server: MessageServer, topic: string, qos: 0 | 1 | 2 = 1, session?: string): Promise<MosquittoSub> {
    // stdbuf: mosquitto_sub block-buffers a pipe, and the SUBACK line must arrive at once.
    const child = spawn(
      'stdbuf',
      ['-oL', 'mosquitto_sub', '-h', server.host, '-p', String(server.port), '-V', 'mqttv5', '-t', topic, '-q', String(qos), '-d', '-F', '%j\t%x', ...(session ? ['-c', '-i', session] : [])],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const sub = new MosquittoSub(child);
    let subscribed!: () => void;
    const ready = new Promise<void>((r) => (subscribed = r));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('received SUBACK')) subscribed();
      if (!line.startsWith('{')) return;
      // `%j<TAB>%x`: the JSON escapes any tab of its own, so the last one starts the hex payload.
      const tab = line.lastIndexOf('\t');
      const j = JSON.parse(line.slice(0, tab)) as {
        topic: string;
        qos: number;
        payload: string;
        properties?: { 'user-properties'?: Record<string, string>; 'content-type'?: string; 'message-expiry-interval'?: number };
      };
      sub.received.push({
        topic: j.topic,
        qos: j.qos,
        payload: j.payload,
        bytes: Buffer.from(line.slice(tab + 1), 'hex'),
        userProperties: j.properties?.['user-properties'] ?? {},
        contentType: j.properties?.['content-type'],
        messageExpiryInterval: j.properties?.['message-expiry-interval'],
      });
      for (const w of sub.waiters.splice(0)) w();
    });
    const exited = once(child, 'exit').then(() => {
      throw new Error('mosquitto_sub exited before it subscribed');
    });
    await Promise.race([ready, exited]);
    return sub;
  }

  /** Resolves once `count` messages arrived in all (the first `count` of them). */
  async take(count: number, timeoutMs = 15000): Promise<MqttReceived[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.received.length < count) {
      if (Date.now() > deadline) throw new Error(`mosquitto_sub got ${this.received.length} of ${count} messages: ${JSON.stringify(this.received.slice(-3))}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return this.received.slice(0, count);
  }

  /** Waits until a message satisfies `pred`, and returns everything received so far. */
  async until(pred: (m: MqttReceived) => boolean, timeoutMs = 15000): Promise<readonly MqttReceived[]> {
    const deadline = Date.now() + timeoutMs;
    while (!this.received.some(pred)) {
      if (Date.now() > deadline) throw new Error(`mosquitto_sub: no such message among ${this.received.length}: ${JSON.stringify(this.received.slice(-3))}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return this.received;
  }

  get all(): readonly MqttReceived[] {
    return this.received;
  }

  /**
   * SIGTERM, then SIGKILL if it is still there a second later: mosquitto_sub that is reconnecting
   * (`-c`, its client id taken by another connection) takes SIGTERM as a disconnect and goes on
   * reconnecting, and a process left running holds the test file's process open (seen: e2e/mqtt
   * cancelled at the runner's file timeout, its tests all passed).
   */
  stop(): void {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill();
    const hard = setTimeout(() => this.child.kill('SIGKILL'), 1000);
    this.child.once('exit', () => clearTimeout(hard));
  }
}

/**
 * Splits an MQTT byte stream, fed chunk by chunk to what it returns, into whole packets (fixed
 * header, remaining length, body), each given to `each` as it completes.
 */
export function mqttPackets(each: (packet: Buffer) => void): (chunk: Buffer) => void {
  let buf = Buffer.alloc(0);
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      let len = 0;
      let p = 1;
      let complete = false;
      for (let mul = 1; p < buf.length && p <= 4; mul *= 128) {
        const b = buf[p++]!;
        len += (b & 0x7f) * mul;
        if (b < 0x80) {
          complete = true;
          break;
        }
      }
      if (!complete || buf.length < p + len) return;
      each(buf.subarray(0, p + len));
      buf = buf.subarray(p + len);
    }
  };
}

/**
 * For a TcpProxy between an MQTT client and server (`toClient` or `toServer`): passes the stream
 * on packet by packet, each through `each`, which passes it (`pass`) at once, later, or never.
 */
export function mqttPacketGate(each: (packet: Buffer, pass: (packet: Buffer) => void) => void): Transform {
  const gate = new Transform({
    transform(chunk: Buffer, _enc, done) {
      split(chunk);
      done();
    },
  });
  const pass = (packet: Buffer) => {
    if (!gate.destroyed) gate.push(packet);
  };
  const split = mqttPackets((packet) => each(packet, pass));
  return gate;
}

// ---- AMQP: Python's pika (test/peers/amqp_peer.py) ---------------------------------------

const PY = '/usr/bin/python3';
const AMQP_PEER = join(repoRoot, 'test', 'peers', 'amqp_peer.py');

export interface AmqpReceived {
  routingKey: string;
  exchange: string;
  redelivered: boolean;
  headers: Record<string, unknown>;
  /** Each header's type as pika read it (`str`, `bytes`, `int`, `bool`, `Decimal`, `datetime`, `dict`, `list`, ...). */
  headerTypes: Record<string, string>;
  /** The body as UTF-8 (bytes that are not become U+FFFD); `bytes` has it as sent. */
  body: string;
  bytes: Buffer;
  properties: {
    contentType: string | null;
    contentEncoding: string | null;
    deliveryMode: number | null;
    messageId: string | null;
    timestamp: number | null;
    correlationId: string | null;
    replyTo: string | null;
    type: string | null;
    appId: string | null;
    userId: string | null;
    priority: number | null;
    expiration: string | null;
  };
}

/**
 * The AMQP peer's processes (`amqp_peer.py serve`), kept for the test file's later calls: Python
 * and pika take ~0.1 s of CPU to load, ~300 times a run when each call started its own. A call
 * takes an idle process or starts one (calls may overlap: a consume waiting while another call
 * publishes), and each call still opens a connection of its own to the server. An idle process
 * keeps nothing alive: the file's process exits, its stdin ends and it ends too.
 */
class AmqpPeers {
  private readonly idle: AmqpPeerProcess[] = [];

  async call(request: { url: string; command: string; args: string[]; lines?: string[] }): Promise<string[]> {
    let peer = this.idle.pop();
    // One that ended while idle (killed with the server's process group, say) is dropped.
    while (peer && !peer.usable) peer = this.idle.pop();
    peer ??= new AmqpPeerProcess();
    const answer = await peer.ask(JSON.stringify(request));
    if (peer.usable) this.idle.push(peer);
    if (answer.error !== undefined) throw new Error(`pika ${request.command} failed: ${answer.error}`);
    return answer.lines;
  }
}

class AmqpPeerProcess {
  private readonly child: ChildProcess;
  private readonly answers: ((line: string | undefined) => void)[] = [];
  private stderr = '';
  usable = true;

  constructor() {
    this.child = spawn(PY, [AMQP_PEER, 'serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    killOnExit(() => this.child.kill());
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    createInterface({ input: this.child.stdout! }).on('line', (line) => this.answers.shift()?.(line));
    this.child.on('close', () => {
      this.usable = false;
      for (const answer of this.answers.splice(0)) answer(undefined);
    });
    this.idleNow();
  }

  async ask(request: string): Promise<{ lines: string[]; error?: string }> {
    if (!this.usable) throw new Error(`the AMQP peer ended: ${this.stderr}`);
    // Busy: its pipes keep the file's process running until the answer comes.
    for (const stream of [this.child.stdin, this.child.stdout, this.child.stderr] as unknown as { ref(): void }[]) stream.ref();
    this.child.ref();
    const line = await new Promise<string | undefined>((resolve) => {
      this.answers.push(resolve);
      this.child.stdin!.write(`${request}\n`);
    });
    this.idleNow();
    if (line === undefined) {
      this.usable = false;
      throw new Error(`the AMQP peer ended during a call: ${this.stderr}`);
    }
    return JSON.parse(line) as { lines: string[]; error?: string };
  }

  private idleNow(): void {
    for (const stream of [this.child.stdin, this.child.stdout, this.child.stderr] as unknown as { unref(): void }[]) stream.unref();
    this.child.unref();
  }
}

const amqpPeers = new AmqpPeers();

/** Publishes with publisher confirms (each message confirmed by RabbitMQ before this resolves). */
export async function pikaPublish(
  server: MessageServer,
  exchange: string,
  routingKey: string,
  /**
   * `headers` values are JSON, each type sent as its AMQP field type; `{$decimal: '3.14'}`, `{$timestamp: seconds}`,
   * `{$bytes: base64}`, `{$uint64: 'digits'}`, `{$int64: 'digits'}` (an 'l' field past 2^53) and `{$rawTimestamp: 'digits'}` (a 'T' field of any 64-bit value) (at any depth) as those types. `timestamp` in seconds; a string for one past 2^53.
   */
  messages: {
    body: string | Buffer;
    headers?: Record<string, unknown>;
    contentType?: string;
    contentEncoding?: string;
    timestamp?: number | string;
    /** AMQP properties besides those above. */
    properties?: { messageId?: string; correlationId?: string; replyTo?: string; type?: string; appId?: string; userId?: string; priority?: number; expiration?: string };
  }[],
): Promise<void> {
  // Bytes go as base64, so any body (invalid UTF-8 included) reaches RabbitMQ as it is.
  const lines = messages.map((m) => JSON.stringify(Buffer.isBuffer(m.body) ? { ...m, body: undefined, bodyBase64: m.body.toString('base64') } : m));
  await amqpPeers.call({ url: server.url, command: 'publish', args: [exchange, routingKey], lines });
}

/** Consumes (and acknowledges) `count` messages from a queue; fewer if none arrives for `idleS` seconds. */
export async function pikaConsume(server: MessageServer, queue: string, count: number, idleS = 15): Promise<AmqpReceived[]> {
  const lines = await amqpPeers.call({ url: server.url, command: 'consume', args: [queue, String(count), String(idleS)] });
  return lines.map((l) => {
    const m = JSON.parse(l) as AmqpReceived & { bodyBase64: string };
    return { ...m, bytes: Buffer.from(m.bodyBase64, 'base64') };
  });
}

/**
 * Holds `queue` with an exclusive consumer (RabbitMQ refuses any other consumer meanwhile, 403
 * ACCESS_REFUSED), publishing a message to `marker` (a queue) once it holds it, until a message
 * reaches the queue (it takes it) or `timeoutS` passes: `released` or `timed out`.
 */
export async function pikaHold(server: MessageServer, queue: string, marker: string, timeoutS = 60): Promise<string> {
  const [said] = await amqpPeers.call({ url: server.url, command: 'hold', args: [queue, marker, String(timeoutS)] });
  return said ?? '';
}

/** Declares a durable queue, bound to `exchange` with `key` ('' exchange: no binding). */
export async function pikaDeclareQueue(server: MessageServer, queue: string, exchange = '', key = ''): Promise<void> {
  await amqpPeers.call({ url: server.url, command: 'declare', args: [queue, exchange, key] });
}

/** Declares a durable exchange of `type` (topic, direct, fanout, headers). */
export async function pikaDeclareExchange(server: MessageServer, exchange: string, type = 'topic'): Promise<void> {
  await amqpPeers.call({ url: server.url, command: 'declare-exchange', args: [exchange, type] });
}

/** Deletes an exchange, and with it every binding to it. */
export async function pikaDeleteExchange(server: MessageServer, exchange: string): Promise<void> {
  await amqpPeers.call({ url: server.url, command: 'delete-exchange', args: [exchange] });
}

/** Deletes a queue, as an operator would: its messages and bindings go with it, and its consumers are cancelled. */
export async function pikaDeleteQueue(server: MessageServer, queue: string): Promise<void> {
  await amqpPeers.call({ url: server.url, command: 'delete', args: [queue] });
}

/** Messages ready in a queue (neither delivered nor unacknowledged). */
export async function pikaQueueDepth(server: MessageServer, queue: string): Promise<number> {
  const [count] = await amqpPeers.call({ url: server.url, command: 'count', args: [queue] });
  return Number(count);
}

/**
 * Consumers on a queue, as a passive declare answers: what `rabbitmqctl list_consumers` counts,
 * without an Erlang VM of its own (30-60 s a run on a loaded machine).
 */
export async function pikaQueueConsumers(server: MessageServer, queue: string): Promise<number> {
  const [count] = await amqpPeers.call({ url: server.url, command: 'consumers', args: [queue] });
  return Number(count);
}

/**
 * Fails unless the server has `queue`, durable, with `args` (as a declare sends them): RabbitMQ
 * refuses a declare of a queue it has with other arguments (406 PRECONDITION_FAILED, `inequivalent
 * arg`). What `rabbitmqctl list_queues name arguments` would show, without an Erlang VM of its own.
 */
export async function pikaQueueDeclaredAs(server: MessageServer, queue: string, args: Record<string, unknown>): Promise<void> {
  await amqpPeers.call({ url: server.url, command: 'declared-as', args: [queue, JSON.stringify(args)] });
}

/** A gate on an AMQP client's bytes (a TcpProxy's `toServer`): see amqpMethodGate. */
export interface AmqpMethodGate {
  /** One stream per proxied connection. */
  stream(): Transform;
  /** Resolves when a connection sent the method first (its frame and all after it are held from then). */
  readonly reached: Promise<void>;
  /** Passes what is held, and everything after it. */
  release(): void;
}

/**
 * Holds an AMQP client's frames from its first method `classId`.`methodId` on (queue.bind is 50.20),
 * until release(): a server that stops answering at that point of the client's protocol.
 */
export function amqpMethodGate(classId: number, methodId: number): AmqpMethodGate {
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  let released = false;
  const holding: (() => void)[] = [];
  return {
    reached,
    release() {
      released = true;
      for (const pass of holding.splice(0)) pass();
    },
    stream() {
      // The protocol header ("AMQP" 0 0 9 1), then frames: type, channel (2), size (4), payload, 0xCE.
      let pending = Buffer.alloc(0);
      let headerSeen = false;
      let held: Buffer[] | undefined;
      const gate: Transform = new Transform({
        transform(chunk: Buffer, _enc, done) {
          if (held) {
            if (released) gate.push(chunk);
            else held.push(chunk);
            return done();
          }
          pending = Buffer.concat([pending, chunk]);
          if (!headerSeen && pending.length >= 8) {
            headerSeen = true;
            gate.push(pending.subarray(0, 8));
            pending = pending.subarray(8);
          }
          while (headerSeen && pending.length >= 7) {
            const size = pending.readUInt32BE(3);
            if (pending.length < 8 + size) break;
            const frame = pending.subarray(0, 8 + size);
            pending = pending.subarray(8 + size);
            const method = frame[0] === 1 && size >= 4 && frame.readUInt16BE(7) === classId && frame.readUInt16BE(9) === methodId;
            if (method && !released) {
              held = [frame, pending];
              pending = Buffer.alloc(0);
              holding.push(() => {
                for (const b of held!) if (!gate.destroyed) gate.push(b);
              });
              reach();
              break;
            }
            gate.push(frame);
          }
          done();
        },
      });
      return gate;
    },
  };
}

/** One AMQP frame as amqpFrameHold reads it: the method's class and id (0 for frames that carry none), and a queue.bind's or queue.unbind's names. */
export interface AmqpFrameSeen {
  classId: number;
  methodId: number;
  queue?: string;
  exchange?: string;
  routingKey?: string;
}

function readAmqpFrame(frame: Buffer): AmqpFrameSeen {
  if (frame[0] !== 1 || frame.length < 12) return { classId: 0, methodId: 0 };
  const seen: AmqpFrameSeen = { classId: frame.readUInt16BE(7), methodId: frame.readUInt16BE(9) };
  // queue.bind (50.20) and queue.unbind (50.50): reserved short, then queue, exchange and routing key as short strings.
  if (seen.classId === 50 && (seen.methodId === 20 || seen.methodId === 50)) {
    let at = 13;
    const shortString = () => {
      const n = frame[at]!;
      const text = frame.toString('latin1', at + 1, at + 1 + n);
      at += 1 + n;
      return text;
    };
    seen.queue = shortString();
    seen.exchange = shortString();
    seen.routingKey = shortString();
  }
  return seen;
}

/** A stream of one direction of an AMQP connection, frame by frame (`header`: the client's side, which starts with the protocol header). */
function amqpFrameStream(header: boolean, onFrame: (frame: Buffer, pass: (b: Buffer) => void) => void): Transform {
  let pending = Buffer.alloc(0);
  let headerSeen = !header;
  const stream: Transform = new Transform({
    transform(chunk: Buffer, _enc, done) {
      const pass = (b: Buffer) => {
        if (!stream.destroyed) stream.push(b);
      };
      pending = Buffer.concat([pending, chunk]);
      if (!headerSeen && pending.length >= 8) {
        headerSeen = true;
        pass(pending.subarray(0, 8));
        pending = pending.subarray(8);
      }
      while (headerSeen && pending.length >= 7) {
        const size = pending.readUInt32BE(3);
        if (pending.length < 8 + size) break;
        const frame = pending.subarray(0, 8 + size);
        pending = pending.subarray(8 + size);
        onFrame(frame, pass);
      }
      done();
    },
  });
  return stream;
}

/**
 * Holds one frame of an AMQP client (the first hold()'s `match` accepts) while every other frame,
 * before and after it, goes on (TcpProxy's `toServer`; AMQP channels are independent, so the
 * server reads the frames after it as a client would send them), until release(): one request of
 * the client answered late, the rest of its connection not. `toClient` watches the server's
 * frames (serverSends).
 */
export class AmqpFrameHold {
  private matching: ((f: AmqpFrameSeen) => boolean) | undefined;
  private held: { frame: Buffer; pass: (b: Buffer) => void } | undefined;
  private reached: (() => void) | undefined;
  private readonly watchers: { classId: number; methodId: number; seen: () => void }[] = [];

  readonly toServer = (): Transform =>
    amqpFrameStream(true, (frame, pass) => {
      if (this.matching?.(readAmqpFrame(frame))) {
        this.matching = undefined;
        this.held = { frame, pass };
        this.reached?.();
      } else pass(frame);
    });

  readonly toClient = (): Transform =>
    amqpFrameStream(false, (frame, pass) => {
      pass(frame);
      const f = readAmqpFrame(frame);
      for (const w of this.watchers.filter((w) => w.classId === f.classId && w.methodId === f.methodId)) {
        this.watchers.splice(this.watchers.indexOf(w), 1);
        w.seen();
      }
    });

  /** Holds the next client frame `match` accepts; resolves once one is held. */
  hold(match: (f: AmqpFrameSeen) => boolean): Promise<void> {
    this.matching = match;
    return new Promise((resolve) => (this.reached = resolve));
  }

  /** Whether a frame is held now. */
  holding(): boolean {
    return this.held !== undefined;
  }

  /** Passes the held frame on (after what went meanwhile). */
  release(): void {
    const held = this.held;
    this.held = undefined;
    held?.pass(held.frame);
  }

  /** Resolves when the server sends the method `classId`.`methodId` (from now on). */
  serverSends(classId: number, methodId: number): Promise<void> {
    return new Promise((seen) => this.watchers.push({ classId, methodId, seen }));
  }
}

// ---- NATS: the text protocol over a raw socket ------------------------------------------

export interface NatsReceived {
  subject: string;
  reply: string | undefined;
  headers: Record<string, string>;
  payload: string;
  /** The payload as sent, byte for byte. */
  bytes: Buffer;
  /** The status of a status message (its header block's first line after `NATS/1.0`: `409 Consumer Deleted`, `100 Idle Heartbeat`); undefined when it has none. */
  status?: string;
}

/**
 * A NATS client written against the protocol text (INFO / CONNECT / PUB / HPUB / SUB / MSG /
 * HMSG), sharing no code with the gateway's client library.
 */
export class RawNats {
  private buffer = Buffer.alloc(0);
  private readonly subs = new Map<string, NatsReceived[]>();
  private waiters: (() => void)[] = [];
  private pongs: { resolve: () => void; reject: (e: Error) => void }[] = [];
  /** Set once the server sent `-ERR` (it closes the connection after most) or the socket closed. */
  private failed: Error | undefined;
  private nextSid = 1;
  /** Told each INFO line the server sends (connect() reads the first one's nonce). */
  private onInfo: ((line: string) => void) | undefined;
  private constructor(private readonly socket: Socket) {}

  /** `login`: a user and password for a server that asks for one, or a JWT login made from the server's nonce. */
  static async connect(server: MessageServer, login: NatsLogin = {}): Promise<RawNats> {
    // No Nagle, as the nats client has it: a PUB's line and its payload go as two writes, and the
    // second waited for the server's delayed ACK of the first (~90 ms a request, against ~1.3).
    const socket = connect({ port: server.port, host: server.host, noDelay: true });
    await once(socket, 'connect');
    const c = new RawNats(socket);
    const info = new Promise<string>((resolve) => (c.onInfo = resolve));
    socket.on('data', (d: Buffer) => c.onData(d));
    socket.on('error', () => undefined);
    socket.on('close', () => c.fail(new Error('NATS server closed the connection')));
    const fields = natsLoginFields(login, await info);
    socket.write(`CONNECT ${JSON.stringify({ verbose: false, pedantic: false, headers: true, no_responders: true, lang: 'raw', version: '0', ...fields })}\r\n`);
    await c.ping();
    return c;
  }

  /** A round trip: everything sent before it has been processed by the server. */
  ping(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const p = new Promise<void>((resolve, reject) => this.pongs.push({ resolve, reject }));
    this.socket.write('PING\r\n');
    return p;
  }

  /** Rejects every round trip waiting (connect()'s too): a refused login is connect()'s rejection, not an exception thrown from the socket's data handler. */
  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.pongs.splice(0)) p.reject(this.failed);
  }

  /** Subscribes; returns the subscription id, whose messages `take()` reads. */
  async subscribe(subject: string, queueGroup?: string): Promise<string> {
    const sid = String(this.nextSid++);
    this.subs.set(sid, []);
    this.socket.write(`SUB ${subject}${queueGroup ? ` ${queueGroup}` : ''} ${sid}\r\n`);
    await this.ping();
    return sid;
  }

  /** `headers`: a list is the header once per value (NATS allows a name to repeat). */
  publish(subject: string, payload: string | Buffer, headers: Record<string, string | string[]> = {}, reply?: string): void {
    const body = Buffer.from(payload);
    const r = reply ? ` ${reply}` : '';
    if (Object.keys(headers).length === 0) {
      this.socket.write(`PUB ${subject}${r} ${body.length}\r\n`);
    } else {
      const head = Buffer.from(
        `NATS/1.0\r\n${Object.entries(headers)
          .flatMap(([k, v]) => [v].flat().map((one) => `${k}: ${one}\r\n`))
          .join('')}\r\n`,
      );
      this.socket.write(`HPUB ${subject}${r} ${head.length} ${head.length + body.length}\r\n`);
      this.socket.write(head);
    }
    this.socket.write(Buffer.concat([body, Buffer.from('\r\n')]));
  }

  /** Publishes with a reply subject of its own and waits for the one reply (a request). */
  async request(subject: string, payload: string | Buffer, headers: Record<string, string> = {}): Promise<NatsReceived> {
    const inbox = `_INBOX.raw.${Math.random().toString(36).slice(2)}`;
    const sid = await this.subscribe(inbox);
    this.publish(subject, payload, headers, inbox);
    const [reply] = await this.take(sid, 1);
    return reply!;
  }

  /** A JetStream API request (`$JS.API...`, as the nats CLI sends them): its JSON answer. */
  async jsApi(subject: string, body: unknown): Promise<any> {
    return JSON.parse((await this.request(subject, JSON.stringify(body))).payload);
  }

  /** A consumer's state through the JetStream API (`$JS.API.CONSUMER.INFO`, an empty request). */
  async consumerInfo(stream: string, consumer: string): Promise<{ num_ack_pending: number; num_pending: number }> {
    return JSON.parse((await this.request(`$JS.API.CONSUMER.INFO.${stream}.${consumer}`, '')).payload);
  }

  /** How many messages `stream` holds; 0 while its info is an error (the gateway may not have declared it yet). */
  async streamMessages(stream: string): Promise<number> {
    return ((await this.jsApi(`$JS.API.STREAM.INFO.${stream}`, {})) as { state?: { messages: number } }).state?.messages ?? 0;
  }

  /** Waits until `stream` holds at least `n` messages; fails after `timeoutMs` saying how many it holds. */
  async storedAtLeast(stream: string, n: number, timeoutMs: number): Promise<void> {
    await eventually(
      async () => {
        const c = await this.streamMessages(stream);
        if (c < n) throw new Error(`${c} of ${n} stored`);
      },
      timeoutMs,
      100,
    );
  }

  /** Message `seq` of `stream`, its data as text (`$JS.API.STREAM.MSG.GET`); undefined when there is none. */
  async storedMessage(stream: string, seq: number): Promise<{ subject: string; data: string } | undefined> {
    const { message } = (await this.jsApi(`$JS.API.STREAM.MSG.GET.${stream}`, { seq })) as { message?: { subject: string; data: string } };
    return message && { subject: message.subject, data: Buffer.from(message.data, 'base64').toString('utf8') };
  }

  /**
   * Publishes to a JetStream subject and waits for the stream's acknowledgement (the JSON reply
   * `{"stream","seq"}`), as a JetStream client does.
   */
  async jsPublish(subject: string, payload: string | Buffer, headers: Record<string, string> = {}): Promise<{ stream: string; seq: number }> {
    const reply = await this.request(subject, payload, headers);
    const ack = JSON.parse(reply.payload) as { stream: string; seq: number; error?: unknown };
    if (ack.error) throw new Error(`JetStream refused the message: ${reply.payload}`);
    return ack;
  }

  /** The first `count` messages of subscription `sid`. */
  async take(sid: string, count: number, timeoutMs = 15000): Promise<NatsReceived[]> {
    const deadline = Date.now() + timeoutMs;
    const got = this.subs.get(sid)!;
    while (got.length < count) {
      if (Date.now() > deadline) throw new Error(`raw NATS subscription got ${got.length} of ${count} messages`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return got.slice(0, count);
  }

  /** Everything subscription `sid` received so far. */
  received(sid: string): readonly NatsReceived[] {
    return this.subs.get(sid) ?? [];
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, d]);
    for (;;) {
      const eol = this.buffer.indexOf('\r\n');
      if (eol < 0) return;
      const line = this.buffer.subarray(0, eol).toString('utf8');
      const [op, ...parts] = line.split(' ');
      if (op === 'MSG' || op === 'HMSG') {
        // MSG <subject> <sid> [reply] <#bytes>; HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>
        const sizes = op === 'MSG' ? 1 : 2;
        const total = Number(parts[parts.length - 1]);
        const headerBytes = op === 'HMSG' ? Number(parts[parts.length - 2]) : 0;
        const [subject, sid] = parts;
        const reply = parts.length - sizes === 3 ? parts[2] : undefined;
        if (this.buffer.length < eol + 2 + total + 2) return;
        const body = this.buffer.subarray(eol + 2, eol + 2 + total);
        this.buffer = this.buffer.subarray(eol + 2 + total + 2);
        const entries: [string, string][] = [];
        const [first = '', ...lines] = body.subarray(0, headerBytes).toString('utf8').split('\r\n');
        const status = first.slice('NATS/1.0'.length).trim() || undefined;
        for (const h of lines) {
          const i = h.indexOf(':');
          if (i > 0) entries.push([h.slice(0, i).trim(), h.slice(i + 1).trim()]);
        }
        // fromEntries: a header named __proto__ is kept as one (an assignment would set the prototype).
        const headers = Object.fromEntries(entries);
        this.subs
          .get(sid!)
          ?.push({ subject: subject!, reply, headers, payload: body.subarray(headerBytes).toString('utf8'), bytes: Buffer.from(body.subarray(headerBytes)), ...(status ? { status } : {}) });
        for (const w of this.waiters.splice(0)) w();
        continue;
      }
      this.buffer = this.buffer.subarray(eol + 2);
      if (op === 'INFO') this.onInfo?.(line);
      if (op === 'PING') this.socket.write('PONG\r\n');
      else if (op === 'PONG') this.pongs.shift()?.resolve();
      else if (op === '-ERR') this.fail(new Error(`NATS server: ${line}`));
    }
  }
}

/**
 * For a TcpProxy between a NATS client and the server (`toServer`): passes the client's protocol
 * as it comes, except its PUB and HPUB frames to a subject beginning with `prefix`, which reach the
 * server `delay` ms later, or once `delay` resolves, in their order (`held` is called as each is held).
 * A function `delay` is asked per frame; undefined passes the frame at once.
 */
export function delayNatsFrames(prefix: string, delay: number | Promise<unknown> | ((subject: string) => number | Promise<unknown> | undefined), held?: (subject: string) => void): Transform {
  let pending = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const eol = pending.indexOf('\r\n');
        if (eol < 0) break;
        const [op, subject, ...rest] = pending.subarray(0, eol).toString().split(' ');
        const verb = op!.toUpperCase();
        // PUB <subject> [reply] <size>; HPUB <subject> [reply] <header size> <total size>: the payload and its CRLF follow.
        const size = verb === 'PUB' || verb === 'HPUB' ? Number(rest[rest.length - 1]) + 2 : 0;
        if (pending.length < eol + 2 + size) break;
        const frame = pending.subarray(0, eol + 2 + size);
        pending = pending.subarray(eol + 2 + size);
        const wait = size > 0 && subject!.startsWith(prefix) ? (typeof delay === 'function' ? delay(subject!) : delay) : undefined;
        if (wait !== undefined) {
          if (typeof wait === 'number') setTimeout(() => this.push(frame), wait).unref();
          else void wait.then(() => this.push(frame));
          held?.(subject!);
        } else this.push(frame);
      }
      done();
    },
  });
}

/**
 * Passes a NATS connection's protocol as it comes, telling `each` the verb and arguments of each
 * frame (`PUB subject [reply] size`, `MSG subject sid [reply] size`, `PING`, ...), for a TcpProxy's
 * `toServer` or `toClient`.
 */
export function watchNatsFrames(each: (verb: string, args: string[]) => void): Transform {
  let pending = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      this.push(chunk);
      pending = Buffer.concat([pending, chunk]);
      for (;;) {
        const eol = pending.indexOf('\r\n');
        if (eol < 0) break;
        const [op, ...args] = pending.subarray(0, eol).toString().split(' ');
        const verb = op!.toUpperCase();
        // These carry a payload (its size last) and its CRLF after the line.
        const size = ['PUB', 'HPUB', 'MSG', 'HMSG'].includes(verb) ? Number(args[args.length - 1]) + 2 : 0;
        if (pending.length < eol + 2 + size) break;
        pending = pending.subarray(eol + 2 + size);
        each(verb, args);
      }
      done();
    },
  });
}

/**
 * A NATS client's requests to subjects beginning with `prefix`, seen through a TcpProxy
 * (`toServer`/`toClient`): how many went to each subject, and the most that were out at once (sent,
 * their reply not yet back).
 */
export class NatsRequestWatch {
  readonly sent = new Map<string, number>();
  maxOut = 0;
  private readonly out = new Set<string>();
  /** Replies that came back, by their request's subject. */
  readonly answered = new Map<string, number>();
  private readonly subjectOf = new Map<string, string>();

  constructor(private readonly prefix: string) {}

  toServer = (): Transform =>
    watchNatsFrames((verb, args) => {
      // PUB <subject> [reply] <size>; HPUB <subject> [reply] <header size> <total size>
      const reply = verb === 'PUB' ? (args.length === 3 ? args[1] : undefined) : verb === 'HPUB' ? (args.length === 4 ? args[1] : undefined) : undefined;
      const subject = args[0];
      if (reply === undefined || subject === undefined || !subject.startsWith(this.prefix)) return;
      this.sent.set(subject, (this.sent.get(subject) ?? 0) + 1);
      this.out.add(reply);
      this.subjectOf.set(reply, subject);
      this.maxOut = Math.max(this.maxOut, this.out.size);
    });

  toClient = (): Transform =>
    watchNatsFrames((verb, args) => {
      if ((verb !== 'MSG' && verb !== 'HMSG') || !this.out.delete(args[0]!)) return;
      const subject = this.subjectOf.get(args[0]!)!;
      this.answered.set(subject, (this.answered.get(subject) ?? 0) + 1);
    });

  /** Requests sent to `subject`, or to every subject under the prefix. */
  count(subject?: string): number {
    if (subject !== undefined) return this.sent.get(subject) ?? 0;
    let n = 0;
    for (const c of this.sent.values()) n += c;
    return n;
  }
}

/**
 * The client's JetStream acknowledgements (`$JS.ACK.…`) reach the server `delayMs` late: a server
 * slow to apply them, as nats-server is under load (it queues them for the consumer and answers
 * other requests meanwhile).
 */
export const delayJetStreamAcks = (delayMs: number): Transform => delayNatsFrames('$JS.ACK.', delayMs);

/**
 * For the enclosing `describe`: a nats-server with JetStream (startNats) and a RawNats peer on it,
 * read through the returned object once `before()` ran; `after()` closes the peer and stops the
 * server. The describe's gateways are its own (they name `server.url`).
 */
export function useNatsPeer(): { readonly server: MessageServer; peer: RawNats } {
  let server: MessageServer | undefined;
  let peer: RawNats | undefined;
  before(async () => {
    server = await startNats();
    peer = await RawNats.connect(server);
  });
  after(async () => {
    peer?.close();
    await server?.stop();
    server = undefined;
    peer = undefined;
  });
  // Read too early (a config built at describe time), an undefined would end up in a gateway's YAML.
  const made = <T>(value: T | undefined, name: string): T => {
    if (value === undefined) throw new Error(`useNatsPeer: no ${name} yet (read outside a test, or before the block's before())`);
    return value;
  };
  return {
    get server() {
      return made(server, 'server');
    },
    get peer() {
      return made(peer, 'peer');
    },
    // A case that restarts the server connects a new peer; `after()` closes the last one.
    set peer(next: RawNats) {
      peer = next;
    },
  };
}
