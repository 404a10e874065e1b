import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { listenerStatus, ofPartition, openStream, produceTicks, resumeFrom, type SseEvent, type Tick, ticks } from '../helpers/sse.js';

/**
 * A Kafka replay ends where ListOffsets put each partition's end as the read began (the last
 * stable offset, less one). Live records a lagging route delivers during the replay at or below
 * that end are the replay's to send (not held: they would count against the client's send
 * bound); those above it are held and sent after. An end one too far would let go of the first
 * record produced after the read began; none at all would hold the whole backlog and cut the
 * client off.
 */
const PAD = 'x'.repeat(40 * 1024);
/** Per partition: 4 MB, within what the mock cluster retains of a partition (5 MB); 12 MB in all, far more than the loopback sockets take from a client that stops reading, so its replay stays under way. */
const BACKLOG = 100;
const PARTITIONS = [0, 1, 2];
/** Records produced to each partition once the read listed its ends: above them, held. */
const AFTER = 3;
const BOUND = 256 * 1024;

const numbers = (events: SseEvent[]) => ticks(events).map((t) => t.n);

describe('SSE over Kafka: live records during a replay, at and above the ends it listed', () => {
  let kafka: KafkaCluster;
  let target: HeldTarget;
  let topic = '';
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('sse-ends');
    await kafka.createTopic(topic, PARTITIONS.length);
    target = await HeldTarget.start();
  });
  // The webhook holds the route: it has one record in hand, and the rest wait in the topic.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml} }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, events: { maxBufferedBytes: ${BOUND} } }
routes:
  - name: out
    from: { broker: kafka, topic: ${topic} }
    to: [{ listener: api, path: /out }, { http: { url: "${target.url}", concurrency: 1, timeoutMs: 120000 } }]
`,
  );
  // After the gateway's own stop (registered first): its consumers commit and leave while the
  // servers still answer, rather than retrying against stopped ones until its drain runs out.
  after(async () => {
    await target?.stop();
    await kafka?.stop();
  });
  before(() => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'out', 20_000));

  /** The records the route handed its webhook (each once: it waits for the answer longer than the case). */
  const taken = () => [...new Set(target.bodies.map((b) => (JSON.parse(b) as { n: number }).n))];

  it('sends every record once, in order: the replay those up to its ends, the held ones after', { timeout: 120_000 }, async () => {
    let n = 0;
    const made = (count: number) => PARTITIONS.flatMap((p) => Array.from({ length: count }, () => ({ n: ++n, p })));
    const probe = await openStream(gw.url('api', '/out'));
    // The route has this record in hand (its webhook does not answer): the backlog waits in the
    // topic, on every partition (the route hands its webhook one record at a time). The id names
    // partition 0 only: the replay reads the others from their oldest record.
    const heads = [{ n: ++n, p: 0 }];
    await produceTicks(kafka.bootstrap, topic, heads);
    await eventually(() => assert.equal(ticks(probe.events()).length, 1), 20_000);
    const first = probe.events()[0]!.id!;
    assert.match(first, /~0:0$/);
    probe.close();
    const backlog = made(BACKLOG);
    await produceTicks(kafka.bootstrap, topic, backlog, PAD);
    assert.equal(taken().length, 1);

    const client = await resumeFrom(gw.url('api', '/out'), first);
    try {
      // One event read, then nothing: the read listed its ends (partition 0's offset BACKLOG, the others' BACKLOG - 1), and waits for the client.
      while (client.events.length === 0) await client.step();
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');
      // Above the read's ends: the first of each partition at the offset the listing gave as its end.
      const later = made(AFTER);
      await produceTicks(kafka.bootstrap, topic, later);
      // The route catches up: the backlog it delivers now is the replay's to send, the rest is held.
      target.release();
      const all = heads.length + backlog.length + later.length;
      await eventually(() => assert.equal(taken().length, all, JSON.stringify(gw.logs.filter((l) => l.level !== 'info' && l.level !== 'debug').slice(-10))), 60_000);
      const s = await listenerStatus(gw);
      assert.deepEqual([s.eventStreams, s.eventStreamReplays, s.slowStreamsClosed], [1, 1, 0], 'still replayed, and not cut off for the records its replay sends');

      client.read();
      await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreamReplays, 0, 'the replay is over'), 60_000);
      // The next goes out live, after everything the replay and the held events brought.
      const next = made(1).slice(0, 1);
      await produceTicks(kafka.bootstrap, topic, next);
      await eventually(() => assert.equal(numbers(client.events).at(-1), next[0]!.n), 20_000);
      const got = ticks(client.events);
      const expected = [...backlog, ...later, ...next];
      assert.equal(got.length, expected.length, 'as many events as records after the id');
      for (const p of PARTITIONS) assert.deepEqual(ofPartition(got, p), ofPartition(expected, p), `partition ${p}: every record after the id, once, in order`);
      assert.ok(client.events.at(-1)!.id!.endsWith(`~0:${BACKLOG + AFTER + 1},1:${BACKLOG + AFTER - 1},2:${BACKLOG + AFTER - 1}`), client.events.at(-1)!.id);
      // What the topic holds, read by another client: the same records, in the same order.
      const stored = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => ({ ...(JSON.parse(r.value!) as Tick), p: r.partition }));
      for (const p of PARTITIONS) assert.deepEqual(ofPartition(stored, p), ofPartition([...heads, ...expected], p), `partition ${p} of the topic`);
    } finally {
      client.close();
    }
  });
});
