import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before } from 'node:test';
import type { ReplaySource } from '../../src/kinds/contracts.js';
import type { SseStreams } from '../../src/kinds/listeners/sse.js';
import { useGateway, type GatewayFixture } from './gateway.js';
import { runProcess, startKafka, type KafkaCluster } from './kafka.js';
export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** The `reason` of the `eventgate.resume` notice for an id of another source (a reload changed the route's topic, a memory broker restarted). */
export const OTHER_SOURCE_REASON =
  "Last-Event-ID is of another source than this stream's (another topic or stream, this route's before a reload changed it, or a memory topic of another instance or an earlier run of the gateway); resuming from the oldest retained event";

/** Asserts `notice` is the `eventgate.resume` notice of an id of another source: resumed from the oldest retained event, with a gap. */
export function assertOtherSourceNotice(notice: SseEvent | undefined): void {
  assert.equal(notice?.event, 'eventgate.resume');
  assert.deepEqual(JSON.parse(notice.data), { resumed: true, gap: true, reason: OTHER_SOURCE_REASON });
}

/** The tag of an event id's source (docs/http-edge.md, "Server-Sent Events"): four base64url characters. */
export const SOURCE_TAG = /^[A-Za-z0-9_-]{4}$/;

/**
 * An event id's sources' tags and what is left without them: `kQ3x~0:41` → `0:41`, and
 * `a=kQ3x~0:1;b=Zb_9~0:5` → `a=0:1;b=0:5` with tags `[kQ3x, Zb_9]`. Fails unless every position
 * carries a tag.
 */
export function splitId(id: string | undefined): { tags: string[]; positions: string } {
  assert.ok(id !== undefined, 'the event has an id');
  const tags: string[] = [];
  const positions = id
    .split(';')
    .map((part) => {
      const m = /^(?:([A-Za-z0-9._-]+)=)?([^~=;]*)~(.*)$/.exec(part);
      assert.ok(m, `${id}: every route's positions carry their source's tag`);
      assert.match(m[2]!, SOURCE_TAG, `${id}: a source tag`);
      tags.push(m[2]!);
      return m[1] === undefined ? m[3]! : `${m[1]}=${m[3]}`;
    })
    .join(';');
  return { tags, positions };
}

/** An event id without its sources' tags (splitId). */
export function untagged(id: string | undefined): string {
  return splitId(id).positions;
}

/** Parses an event stream's text into its events (comments skipped), as a browser's EventSource does. */
export function parseEvents(text: string): SseEvent[] {
  const out: SseEvent[] = [];
  for (const block of text.split('\n\n').slice(0, -1)) {
    const e: SseEvent = { data: '' };
    let hasData = false;
    for (const line of block.split('\n')) {
      const i = line.indexOf(':');
      if (i === 0) continue;
      const field = line.slice(0, i);
      const value = line.slice(i + 1).replace(/^ /, '');
      if (field === 'data') {
        e.data = hasData ? `${e.data}\n${value}` : value;
        hasData = true;
      } else if (field === 'id') e.id = value;
      else if (field === 'event') e.event = value;
    }
    if (hasData) out.push(e);
  }
  return out;
}

/** An event stream read with fetch: `text()` is everything received so far; `ended` settles when the server ends it (or close() aborts it). */
export async function openStream(url: string, headers: Record<string, string> = {}): Promise<{ text: () => string; events: () => SseEvent[]; close: () => void; ended: Promise<void> }> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: controller.signal });
  if (res.status !== 200) throw new Error(`event stream answered ${res.status}: ${await res.text()}`);
  let text = '';
  const decoder = new TextDecoder();
  const ended = (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += decoder.decode(chunk, { stream: true });
    } catch {
      // aborted
    }
  })();
  return { text: () => text, events: () => parseEvents(text), close: () => controller.abort(), ended };
}

/** What a client read across its connections: events (resume notices apart), notices, and how often it connected. */
export interface Follower {
  events: SseEvent[];
  /** `eventgate.resume` and `eventgate.end` events. */
  notices: SseEvent[];
  connections: number;
  /** Whether the gateway ended the stream, or answered a reconnect 404 (the follower then stops: it does not reconnect). */
  endedByServer: boolean;
  stop: () => void;
  done: Promise<void>;
}

/**
 * Follows the event stream at `url`, dropping the connection once it has read `drops[i]` events in all (read to the
 * end of the chunk that got it there: the rest of the chunk is lost to it, as to a browser whose
 * connection broke) and reconnecting at once with the id of the last event it read. A stream the
 * gateway ends is not reconnected.
 */
export function follow(url: string, drops: number[]): { follower: Follower; connected: Promise<void> } {
  const follower: Follower = { events: [], notices: [], connections: 0, endedByServer: false, stop: () => {}, done: Promise.resolve() };
  let stopped = false;
  let current: AbortController | undefined;
  let onConnected: () => void = () => {};
  let onFailed: (err: unknown) => void = () => {};
  const connected = new Promise<void>((resolve, reject) => {
    onConnected = resolve;
    onFailed = reject;
  });
  follower.stop = () => {
    stopped = true;
    current?.abort();
  };
  follower.done = (async () => {
    const pending = [...drops];
    while (!stopped) {
      const controller = new AbortController();
      current = controller;
      const lastId = follower.events.at(-1)?.id;
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (lastId !== undefined) headers['last-event-id'] = lastId;
      let res: Response;
      try {
        res = await fetch(url, { headers, signal: controller.signal });
      } catch (err) {
        if (stopped) return;
        throw err;
      }
      // A reconnect may come after a reload removed the path: the gateway then ends the stream with
      // a 404, as an EventSource would take it (a non-200 answer fails it for good). Any other
      // answer, or a 404 to the first connection, is wrong.
      if (res.status === 404 && follower.connections > 0) {
        follower.endedByServer = true;
        return;
      }
      assert.equal(res.status, 200);
      follower.connections++;
      onConnected();
      const decoder = new TextDecoder();
      let text = '';
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          text += decoder.decode(chunk, { stream: true });
          const end = text.lastIndexOf('\n\n');
          if (end === -1) continue;
          for (const e of parseEvents(text.slice(0, end + 2))) {
            if (e.event?.startsWith('eventgate.')) follower.notices.push(e);
            else follower.events.push(e);
          }
          text = text.slice(end + 2);
          if (pending.length > 0 && follower.events.length >= pending[0]!) {
            while (pending.length > 0 && follower.events.length >= pending[0]!) pending.shift();
            controller.abort();
            break;
          }
        }
      } catch {
        // aborted
      }
      if (!controller.signal.aborted) {
        follower.endedByServer = true;
        return;
      }
    }
  })();
  // A failure before the first connection fails the wait for it; later ones surface through `done`.
  follower.done.catch(onFailed);
  return { follower, connected };
}

/**
 * A gateway that publishes POST /ticks to a Kafka topic (keyed by `room`) and streams the topic back
 * as events on GET /ticks: the set-up of the SSE-over-Kafka tests. `group`: the stream route's group.
 */
export function sseKafkaConfig(kafka: { bootstrap: string; consumerYaml: string }, topic: string, group?: string): string {
  return `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /ticks }
    to: { broker: kafka, topic: ${topic}, key: $string(room) }
  - name: stream
    from: { broker: kafka, topic: ${topic}${group ? `, group: ${group}` : ''} }
    to: { listener: api, path: /ticks }
`;
}

/**
 * For the enclosing `describe`: a mock cluster with a 3-partition topic named after `prefix`
 * (partition p led by broker p + 1), and
 * a gateway on sseKafkaConfig whose stream route consumes it (ready once its consumer is). The
 * cluster and topic are read through `kafka()` and `topic()` once `before()` ran.
 */
export function useSseKafka(prefix: string, group?: string): { kafka: () => KafkaCluster; topic: () => string; gw: GatewayFixture } {
  let kafka: KafkaCluster | undefined;
  let topic = '';
  before(async () => {
    kafka = await startKafka();
    topic = kafka.topic(prefix);
    await kafka.createTopic(topic, 3);
    // Each partition led by a broker of its own (the mock places leaders at random), before the gateway starts.
    for (const p of [0, 1, 2]) await kafka.moveLeader(topic, p, p + 1);
  });
  const gw = useGateway(() => sseKafkaConfig(kafka!, topic, group));
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });
  return { kafka: () => kafka!, topic: () => topic, gw };
}

/** An http listener's event-stream counts in /admin/status. */
export interface EventStreamStatus {
  name: string;
  eventStreams: number;
  eventStreamReplays: number;
  slowStreamsClosed: number;
}

/** The event-stream counts of `gw`'s http listener `listener` (/admin/status). */
export async function listenerStatus(gw: GatewayFixture, listener = 'api'): Promise<EventStreamStatus> {
  const found = ((await gw.status()) as { listeners: EventStreamStatus[] }).listeners.find((l) => l.name === listener);
  assert.ok(found, `no listener '${listener}' in /admin/status`);
  return found;
}

/** A record of the SSE-over-Kafka replay tests: its number, and the partition it was produced to. */
export interface Tick {
  n: number;
  p: number;
}
/** The ticks among `events` (notices left out), in the order they came. */
export const ticks = (events: SseEvent[]): Tick[] => events.filter((e) => e.event === undefined).map((e) => JSON.parse(e.data) as Tick);
/** What `list` holds of partition `p`, in the order it has them. */
export const ofPartition = (list: Tick[], p: number): number[] => list.filter((t) => t.p === p).map((t) => t.n);

/** Produces `list` to their partitions with kcat (an independent client), one partition after another, each record `{ n, p, pad }`. */
export async function produceTicks(bootstrap: string, topic: string, list: Tick[], pad = ''): Promise<void> {
  for (const p of [...new Set(list.map((t) => t.p))].sort((a, b) => a - b)) {
    const lines = list.filter((t) => t.p === p).map((t) => `${JSON.stringify({ ...t, pad })}\n`);
    const r = await runProcess('kcat', ['-P', '-b', bootstrap, '-t', topic, '-p', String(p), '-q'], lines.join(''), 60_000);
    assert.equal(r.code, 0, r.stderr);
  }
}

/** A resumed stream read by hand: it takes nothing (its replay then waits) until `step()` or `read()`. */
export interface Reader {
  events: SseEvent[];
  read: () => void;
  /** Takes one more chunk of what the socket holds, then stops again. */
  step: () => Promise<void>;
  close: () => void;
}

export async function resumeFrom(url: string, lastId: string): Promise<Reader> {
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(url, { agent: false, headers: { accept: 'text/event-stream', 'last-event-id': lastId } }, resolve).on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  const reader: Reader = {
    events: [],
    read: () => res.resume(),
    step: () =>
      new Promise<void>((resolve) => {
        res.once('data', () => {
          res.pause();
          resolve();
        });
        res.resume();
      }),
    close: () => res.destroy(),
  };
  let text = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    text += chunk;
    const end = text.lastIndexOf('\n\n');
    if (end === -1) return;
    reader.events.push(...parseEvents(text.slice(0, end + 2)));
    text = text.slice(end + 2);
  });
  res.on('error', () => {});
  // Not flowing ('data' listeners make it flow) until the case says so.
  res.pause();
  return reader;
}

/**
 * For unit tests of SseStreams without a gateway: an http server on an ephemeral port opening
 * every request as a stream of `path(req)` (`/e` unless said) fed by the routes `routes()` names
 * (asked per request, so a case may swap a source). closeSse() ends the streams and the server.
 */
export async function serveSse(streams: SseStreams, routes: () => ReadonlyMap<string, ReplaySource>, path: (req: IncomingMessage) => string = () => '/e'): Promise<Server> {
  const server = createServer((req, res) => streams.open(req, res, path(req), routes(), { request: { headers: req.headers, query: {}, remoteAddress: req.socket.remoteAddress }, until: undefined }));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** serveSse()'s streams and server ended, every connection with them. */
export function closeSse(streams: SseStreams, server: Server): void {
  streams.closeAll();
  server.closeAllConnections();
  server.close();
}

/**
 * A client of a serveSse() server resumed from `lastEventId`, read with node's client on a
 * connection of its own (`res.destroy()` leaves): `text()` is what came so far, `events()` it parsed.
 */
export async function resumeSse(server: Server, lastEventId: string, path = '/e'): Promise<{ res: IncomingMessage; text: () => string; events: () => SseEvent[] }> {
  const { port } = server.address() as AddressInfo;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent: false, headers: { accept: 'text/event-stream', 'last-event-id': lastEventId } }, resolve).on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  let text = '';
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    text += chunk;
  });
  res.on('error', () => {});
  return { res, text: () => text, events: () => parseEvents(text) };
}
