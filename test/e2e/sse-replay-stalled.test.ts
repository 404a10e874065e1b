import assert from 'node:assert/strict';
import { get, type IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from 'nats';
import { afterGateways, eventually, useGateway, type GatewayFixture } from '../helpers/gateway.js';
import { runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { readyz } from '../helpers/outage.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { listenerStatus } from '../helpers/sse.js';

/**
 * A client that stops reading in the middle of its resume's replay, on a path where nothing live
 * arrives: its replay waits for it to read, holding one read of the backlog (and a Kafka replay, a
 * JetStream consumer). Heartbeats skipped clients being replayed and no live event came to pile
 * up behind the replay, so nothing cut it off: the replay stayed open for as long as the client
 * kept its connection. Now the first heartbeat that finds it over the send bound, having taken
 * nothing for `replayStallTimeoutMs` (60 s by default, 3 s here), cuts it off as a live client over the bound.
 */
const VALUE_BYTES = 7 * 1024;
/** Far more than the loopback sockets' buffers take from a client that does not read (a few MB). */
const BACKLOG = 1600;
const BOUND = 64 * 1024;
const HEARTBEAT_MS = 200;
const STALL_MS = 3000;
const value = (n: number) => JSON.stringify({ n, pad: 'x'.repeat(VALUE_BYTES) });

const listener = `api: { kind: http, port: 0, events: { maxBufferedBytes: ${BOUND}, heartbeatMs: ${HEARTBEAT_MS}, replayStallTimeoutMs: ${STALL_MS} } }`;

describe('SSE over Kafka: a client that stops reading mid-replay on a quiet path', () => {
  const PARTITIONS = 4;
  let kafka: KafkaCluster | undefined;
  let topic = '';
  before(async () => {
    kafka = await startKafka();
    topic = kafka.topic('sse-replay-stalled');
    await kafka.createTopic(topic, PARTITIONS);
    // Before the gateway starts: its route reads from the end, so only the replay reads these (and nothing live comes).
    for (let p = 0; p < PARTITIONS; p++) {
      const lines = Array.from({ length: BACKLOG / PARTITIONS }, (_, n) => `${value(n)}\n`).join('');
      const r = await runProcess('kcat', ['-P', '-b', kafka.bootstrap, '-t', topic, '-p', String(p), '-q'], lines, 60000);
      assert.equal(r.code, 0, r.stderr);
    }
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: ["${kafka!.bootstrap}"]
    consumer: ${kafka!.consumerYaml}
listeners:
  ${listener}
routes:
  - name: stream
    from: { broker: kafka, topic: ${topic} }
    to: { listener: api, path: /stream }
`,
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });

  it('is cut off as a slow live client, and its replay ends', { timeout: 90_000 }, async () => {
    const from = Array.from({ length: PARTITIONS }, (_, p) => `${p}:0`).join(',');
    await stallAndCut(gw, gw.url('api', '/stream'), from);
  });
});

describe('SSE over JetStream: a client that stops reading mid-replay on a quiet path', () => {
  let nats: MessageServer | undefined;
  let nc: NatsConnection | undefined;
  before(async () => {
    nats = await startNats();
  });
  afterGateways(async () => {
    await nc?.close();
    nats?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats!.url}
    streams:
      STALLED: { subjects: ["st.>"] }
listeners:
  ${listener}
  quiet: { kind: http, port: 0 }
routes:
  - name: stream
    from: { broker: nats, topic: st.made }
    to: { listener: api, path: /stream }
  - name: big
    from: { broker: nats, topic: st.big }
    to: { listener: quiet, path: /big }
`,
  );
  before(async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000);
    nc = await connect({ servers: nats!.url });
    const js = nc.jetstream();
    // Stored before the client comes: the route delivers them to a path without clients, and the replay reads them back.
    for (let n = 0; n < BACKLOG; n++) await js.publish('st.made', value(n));
  });

  it('is cut off as a slow live client, its replay ends and its consumer is deleted', { timeout: 90_000 }, async () => {
    const jsm = await nc!.jetstreamManager();
    const consumers = async () => (await jsm.streams.info('STALLED')).state.consumer_count;
    // The route's own durable consumer.
    const before = await consumers();
    await stallAndCut(gw, gw.url('api', '/stream'), '0:1');
    await eventually(async () => assert.equal(await consumers(), before, 'the replay deleted its ordered consumer'), 10_000);
  });

  it('pulls a replay 1 MiB at a time, a message larger than that alone', { timeout: 90_000 }, async () => {
    const js = nc!.jetstream();
    // 800 KB messages: a pull of 128 (the count that bounded a pull before) held 100 MB. One over
    // 1 MiB as the server counts it (with its subject and reply) is pulled alone.
    const sizes = [...Array.from({ length: 40 }, () => 800_000), 1_048_570, ...Array.from({ length: 40 }, () => 800_000)];
    const seqs: number[] = [];
    for (const [n, size] of sizes.entries()) seqs.push((await js.publish('st.big', JSON.stringify({ n, pad: 'x'.repeat(size - 20) }))).seq);
    const jsm = await nc!.jetstreamManager();
    // The replay's ordered consumer acknowledges nothing; the routes' consumers (not durable either: one per instance) do.
    const replayConsumer = async () => {
      for await (const c of jsm.consumers.list('STALLED')) if (c.config.ack_policy === 'none') return c;
      return undefined;
    };
    // The route delivers these to /big live, too. Live events that reach a client during its replay
    // are held behind it (and cut it off past `maxBufferedBytes`, 1 MiB: two of these), so the
    // client resumes only once the route has taken them all: under load it lagged its publisher by
    // up to 13 messages, and the client was cut off before its first event.
    await eventually(async () => {
      for await (const c of jsm.consumers.list('STALLED'))
        if (c.config.filter_subject === 'st.big' && c.config.ack_policy !== 'none') return assert.ok(c.ack_floor.stream_seq >= seqs.at(-1)!, `the route acknowledged up to ${c.ack_floor.stream_seq}`);
      assert.fail("the route's consumer of st.big");
    }, 30_000);
    const after = `0:${seqs[0]! - 1}`;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get(gw.url('quiet', '/big'), { agent: false, headers: { accept: 'text/event-stream', 'last-event-id': after } }, resolve).on('error', reject);
    });
    try {
      const ns: number[] = [];
      let text = '';
      let stopped = false;
      let first!: () => void;
      // Ended before it (the client cut off), not a wait for the case's timeout.
      const firstEvent = new Promise<void>((resolve, reject) => {
        first = resolve;
        res.on('close', () => {
          // Only before the first event: the close that `res.destroy()` makes below comes after the gateway stopped.
          if (!stopped) reject(new Error(`the stream ended before its first event: ${JSON.stringify(gw.logs.filter((l) => l.level !== 'info'))}`));
        });
      });
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
        const blocks = text.split('\n\n');
        text = blocks.pop()!;
        for (const b of blocks) {
          const m = /^data: \{"n":(\d+)/m.exec(b);
          if (m) ns.push(Number(m[1]));
        }
        if (ns.length > 0 && !stopped) {
          stopped = true;
          res.pause();
          first();
        }
      });
      await firstEvent;
      // The replay has pulled what the client took, what the sockets between hold (a few MB at most) and one pull more.
      const c = await replayConsumer();
      assert.ok(c, 'the replay reads through a consumer of its own');
      const pulled = c.delivered.stream_seq - seqs[0]! + 1;
      assert.ok(pulled < sizes.length / 2, `the replay pulled ${pulled} of ${sizes.length} messages for a client that read ${ns.length}`);
      res.resume();
      await eventually(() => assert.equal(ns.length, sizes.length), 60_000);
      assert.deepEqual(
        ns,
        sizes.map((_, n) => n),
        'every message once, in order, the large one too',
      );
    } finally {
      res.destroy();
    }
  });
});

/**
 * Resumes from `lastId`, reads a few events and stops reading: the gateway cuts the stream off at
 * a heartbeat (as it cuts a live client over the bound: the log line and the count), its replay
 * ends (`eventStreamReplays` back to 0), and the client, reading again, finds its socket closed
 * short of the backlog.
 */
async function stallAndCut(gw: GatewayFixture, url: string, lastId: string): Promise<void> {
  assert.equal((await listenerStatus(gw)).eventStreamReplays, 0);
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(url, { agent: false, headers: { accept: 'text/event-stream', 'last-event-id': lastId } }, resolve).on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  let events = 0;
  let text = '';
  // Paused in the handler that counts the 20th event. Paused from a poll, a loaded machine's client
  // can read far past it first, and the rest of the 11 MB backlog fits this kernel's socket buffers
  // (tcp_rmem up to 32 MB): in one loaded run the replay ended, never cut off, the stream still open.
  let paused = false;
  let began!: () => void;
  const replayBegan = new Promise<void>((resolve) => (began = resolve));
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    text += chunk;
    const blocks = text.split('\n\n');
    text = blocks.pop()!;
    events += blocks.filter((b) => /^data: \{"n"/m.test(b)).length;
    if (events >= 20 && !paused) {
      paused = true;
      res.pause();
      began();
    }
  });
  const closed = new Promise<void>((resolve) => res.on('close', () => resolve()));
  res.on('error', () => {});
  let noStart: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    noStart = setTimeout(() => reject(new Error(`the replay did not begin in 30 s (${events} events)`)), 30_000);
  });
  await Promise.race([replayBegan, timedOut]).finally(() => clearTimeout(noStart));
  assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');

  await eventually(async () => {
    const s = await listenerStatus(gw);
    assert.deepEqual([s.eventStreams, s.eventStreamReplays, s.slowStreamsClosed], [0, 0, 1], 'the stream cut off, its replay ended');
  }, 40_000);
  const cut = gw.logs.find((l) => l.msg === 'event stream client too slow; disconnecting');
  assert.ok(cut, 'logged as a slow client');
  assert.match(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /^eventgate_slow_clients_disconnected_total\{[^}]*listener="api"[^}]*\} 1$/m);
  res.resume();
  await closed;
  assert.ok(events < BACKLOG - 1, `the client got ${events} of the ${BACKLOG - 1} events its replay had`);
}
