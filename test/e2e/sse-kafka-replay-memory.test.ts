import assert from 'node:assert/strict';
import { get, type IncomingMessage } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatProduce, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { sleep } from '../../src/core/within.js';

/**
 * The backlog behind the resuming client: per partition, under what the mock cluster retains of
 * one (5 MB; the live events below may all land on one partition, kcat's sticky partitioner) and
 * the replay reads of one (10 000 records over the partitions); in all far more than the loopback
 * socket's buffers take from a client that does not read (a few MB).
 */
const PARTITIONS = 16;
const PER_PARTITION = 500;
const VALUE_BYTES = 7 * 1024;
const BACKLOG = PARTITIONS * PER_PARTITION;
const BOUND = 256 * 1024;

/**
 * A client resuming with Last-Event-ID far behind (a browser reconnecting after a gateway restart):
 * the replay is read from the cluster as the client takes it, a Fetch at a time. Read whole before
 * the first event was sent, every reconnecting client held its whole backlog (up to 10 000
 * records) in the gateway's memory, which maxBufferedBytes did not bound.
 */
describe('SSE over Kafka: a resume of a large backlog to a client that reads slowly', () => {
  let kafka: KafkaCluster | undefined;
  let topic = '';
  before(async () => {
    kafka = await startKafka();
    topic = kafka.topic('sse-replay-memory');
    await kafka.createTopic(topic, PARTITIONS);
    // Before the gateway starts: its route reads from the end, so only the replay reads these.
    const value = JSON.stringify({ pad: 'x'.repeat(VALUE_BYTES) });
    for (let p = 0; p < PARTITIONS; p++) {
      const lines = Array.from({ length: PER_PARTITION }, (_, n) => `${value.replace('{', `{"n":${n},`)}\n`).join('');
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
  api: { kind: http, port: 0, events: { maxBufferedBytes: ${BOUND} } }
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

  /** The gateway's heap in use plus the memory of its Buffers, as its own /metrics says. */
  const memory = async (): Promise<number> => {
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
    const bytes = gauge('nodejs_heap_size_used_bytes') + gauge('nodejs_external_memory_bytes');
    assert.ok(Number.isFinite(bytes), 'the gateway reports its heap and external memory');
    return bytes;
  };

  /** What stays of the gateway's memory over a few scrapes (garbage it has not collected yet comes and goes). */
  const held = async (): Promise<number> => {
    let least = Infinity;
    for (let i = 0; i < 10; i++) {
      least = Math.min(least, await memory());
      await sleep(200);
    }
    return least;
  };

  it('holds about one Fetch of the backlog, not all of it, cuts the client once live events pile up, and gives a reader every event once', async () => {
    const url = gw.url('api', '/stream');
    const before = await held();
    // Resumes after offset 0 of every partition: the rest of the backlog (about 55 MiB) is replayed. Reads a few events, then stops reading.
    const from = Array.from({ length: PARTITIONS }, (_, p) => `${p}:0`).join(',');
    const slow = await rawStream(url, from);
    await eventually(() => assert.ok(slow.events() >= 20, `the replay began (${slow.events()} events)`), 30000);
    slow.res.pause();
    const grown = (await held()) - before;
    const backlog = BACKLOG * VALUE_BYTES;
    assert.ok(grown < backlog / 2, `the gateway grew ${(grown / 2 ** 20).toFixed(1)} MiB for a client that stopped reading a replay of ${(backlog / 2 ** 20).toFixed(1)} MiB`);

    // Live events for it meanwhile wait behind the replay; more than its bound of them cut it off, as a live client that does not read.
    const live = Array.from({ length: Math.ceil((2 * BOUND) / VALUE_BYTES) }, (_, i) => ({ value: JSON.stringify({ live: i, pad: 'y'.repeat(VALUE_BYTES) }) }));
    await kcatProduce(kafka!.bootstrap, topic, live);
    await eventually(async () => assert.match(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /^eventgate_slow_clients_disconnected_total(\{[^}]*\})? [1-9]/m), 30000);
    slow.res.resume();
    await slow.closed;

    // A client that reads gets the backlog and the live events, each once, in order per partition.
    const reader = await rawStream(url, from);
    const total = BACKLOG - PARTITIONS + live.length;
    await eventually(() => assert.ok(reader.events() >= total, `read ${reader.events()} of ${total}`), 60000);
    reader.res.destroy();
    assert.equal(reader.events(), total, 'no event twice');
    assert.deepEqual(reader.notices, [], 'no resume notice');
    assert.equal(reader.outOfOrder.length, 0, `each event one past the last of its partition: ${reader.outOfOrder.slice(0, 5).join('; ')}`);
  });
});

/**
 * An event stream read with node's http client (paused, it stops reading: the gateway's writes
 * back up): counts its events, and checks each one's id against the one before: exactly one
 * partition moved on, by one (an id names every partition's position, `<tag>~p:o,...`).
 */
async function rawStream(url: string, lastId: string): Promise<{ res: IncomingMessage; events: () => number; outOfOrder: string[]; notices: string[]; closed: Promise<void> }> {
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    get(url, { agent: false, headers: { accept: 'text/event-stream', 'last-event-id': lastId } }, resolve).on('error', reject);
  });
  assert.equal(res.statusCode, 200);
  const positions = (id: string) =>
    new Map(
      id
        .replace(/^[^~]*~/, '')
        .split(',')
        .map((pair) => pair.split(':').map(Number) as [number, number]),
    );
  let last = positions(lastId);
  const outOfOrder: string[] = [];
  const notices: string[] = [];
  let pending = '';
  let count = 0;
  res.setEncoding('utf8');
  res.on('data', (chunk: string) => {
    pending += chunk;
    let end: number;
    while ((end = pending.indexOf('\n\n')) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      if (!/^data:/m.test(block)) continue;
      if (/^event: eventgate\./m.test(block)) {
        notices.push(block);
        continue;
      }
      count++;
      const id = /^id: (.*)$/m.exec(block)?.[1] ?? '';
      const now = positions(id);
      const moved = [...now].filter(([p, o]) => last.get(p) !== o);
      if (moved.length !== 1 || moved[0]![1] !== (last.get(moved[0]![0]) ?? -1) + 1) outOfOrder.push(`event ${count}: ${id} after ${[...last].join(' ')}`);
      last = now;
    }
  });
  const closed = new Promise<void>((resolve) => res.on('close', () => resolve()));
  res.on('error', () => {});
  return { res, events: () => count, outOfOrder: outOfOrder, notices, closed };
}
