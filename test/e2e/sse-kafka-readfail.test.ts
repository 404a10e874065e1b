import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { listenerStatus, ofPartition, openStream, produceTicks, resumeFrom, type SseEvent, ticks } from '../helpers/sse.js';

/**
 * A Kafka replay read that fails midway: the live events its route delivered meanwhile, which the
 * read covered and had not yet sent, come after the `resumed: false` notice, once each, in order.
 *
 * The failure is a Fetch error pushed on one broker of a two-broker mock cluster (brokers 1 and
 * 2): partition 0 is led by broker 1, partitions 1 and 2 by broker 2, so the read's round meets
 * it on broker 2 while broker 1 answers. The route reads the same partitions, two at a time
 * (partitionsConsumedConcurrently: 2), and holds a record of partition 1 at that moment (its
 * webhook does not answer). kafkajs' fetcher for a broker waits until the batches of its last
 * Fetch are handled (empty ones too), so the route sends broker 2 no Fetch until the webhook
 * answers: the next Fetch broker 2 receives is the read's. Its fetcher for broker 1 polls on (the
 * other worker handles partition 0), and would meet an error pushed cluster-wide before the read.
 * With one partition at a time (the default) both fetchers wait behind the held record.
 */
const PAD = 'x'.repeat(40 * 1024);
/** Per partition: 4 MB, within what the mock cluster retains of a partition (5 MB); 8 MB on broker 2, far more than the loopback sockets take from a client that stops reading. */
const BACKLOG = 100;
const PARTITIONS = [0, 1, 2];
/** The mock's brokers are numbered from 1: broker 2 leads these, broker 1 partition 0. */
const ON_FAILING_BROKER = [1, 2];
const FAILING_BROKER = 2;
const FETCH = 1;
/** Not retriable for kafkajs: the read gives up at once rather than retrying to its timeout. */
const TOPIC_AUTHORIZATION_FAILED = 29;
const BOUND = 256 * 1024;
/**
 * The client reads nothing from its first event until the error is pushed: the case's waits for the
 * route (up to 20 s each, and kcat runs) may together pass the default 60 s under load, and a
 * client cut off as stalled would end the read before it met the error.
 */
const STALL_MS = 600_000;

const numbers = (events: SseEvent[]) => ticks(events).map((t) => t.n);

describe('SSE over Kafka: a replay read that fails midway (one broker fails its Fetch requests)', () => {
  let kafka: KafkaCluster;
  let target: HeldTarget;
  let topic = '';
  before(async () => {
    kafka = await startKafka({ brokers: 2 });
    topic = kafka.topic('sse-readfail');
    await kafka.createTopic(topic, PARTITIONS.length);
    for (const p of PARTITIONS) await kafka.moveLeader(topic, p, ON_FAILING_BROKER.includes(p) ? FAILING_BROKER : 1);
    target = await HeldTarget.start();
    target.release();
  });
  after(async () => {
    await target?.stop();
    await kafka?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml.replace(/ }$/, ', partitionsConsumedConcurrently: 2 }')} }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, events: { maxBufferedBytes: ${BOUND}, replayStallTimeoutMs: ${STALL_MS} } }
routes:
  - name: out
    from: { broker: kafka, topic: ${topic} }
    to: [{ listener: api, path: /out }, { http: { url: "${target.url}", concurrency: 1, timeoutMs: 120000 } }]
`,
  );
  before(() => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'out', 20_000));

  /** The records the route handed its webhook, as they came (it waits for the answer longer than the case: none is sent twice unless delivered twice). */
  const taken = () => target.bodies.map((b) => (JSON.parse(b) as { n: number }).n);

  it('sends the live events the read covered after telling resumed: false, once, in order; the route reads on', { timeout: 180_000 }, async () => {
    let n = 0;
    const made = (count: number, partitions = PARTITIONS) => partitions.flatMap((p) => Array.from({ length: count }, () => ({ n: ++n, p })));
    const probe = await openStream(gw.url('api', '/out'));
    const heads = made(1, [1]);
    await produceTicks(kafka.bootstrap, topic, heads);
    await eventually(() => assert.equal(ticks(probe.events()).length, 1), 20_000);
    const old = probe.events()[0]!.id!;
    assert.match(old, /~1:0$/);
    probe.close();
    // Long before the client resumes, the route delivers a backlog: the read will send it.
    const backlog = made(BACKLOG);
    await produceTicks(kafka.bootstrap, topic, backlog, PAD);
    await eventually(() => assert.equal(taken().length, heads.length + backlog.length), 60_000);

    // The route takes one record of partition 1 and waits for its webhook: the live ones wait in the topic.
    target.hold();
    const inHand = made(1, [1]);
    await produceTicks(kafka.bootstrap, topic, inHand);
    await eventually(() => assert.equal(taken().at(-1), inHand[0]!.n), 20_000);
    const live = made(8, [1]);
    await produceTicks(kafka.bootstrap, topic, live);

    const client = await resumeFrom(gw.url('api', '/out'), old);
    try {
      // One event read, then nothing: the read listed its ends (the live records included) and waits for the client.
      while (client.events.length === 0) await client.step();
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');
      // The route delivers the live records: covered by the read, not yet sent by it.
      target.release();
      await eventually(() => assert.equal(taken().at(-1), live.at(-1)!.n), 20_000);
      // The route takes one more (above the read's ends: held) and waits for its webhook again:
      // until it answers, the route's consumer sends broker 2 no Fetch, so the next is the read's.
      target.hold();
      const blocker = made(1, [1]);
      await produceTicks(kafka.bootstrap, topic, blocker);
      await eventually(() => assert.equal(taken().at(-1), blocker[0]!.n), 20_000);
      const joins = kafka.joinRequests();
      const from = gw.logs.length;
      await kafka.failBrokerRequests(FAILING_BROKER, FETCH, 1, TOPIC_AUTHORIZATION_FAILED);

      client.read();
      const failed = await gw.waitForLog((l) => l.msg === 'event stream could not be resumed; streaming from now', 60_000, from);
      assert.match(String(failed.err), /authoriz/i, 'the read met the error pushed on broker 2');
      await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreamReplays, 0, 'the replay is over'), 60_000);
      await eventually(() => assert.ok(client.events.some((e) => e.event === 'eventgate.resume')), 20_000);
      const notice = client.events.findIndex((e) => e.event === 'eventgate.resume');
      assert.deepEqual(JSON.parse(client.events[notice]!.data), { resumed: false, reason: 'the broker could not replay retained events' });

      // What the read sent before it failed: per partition, the backlog from the id on, once, in order, and not all of it.
      const sent = ticks(client.events.slice(0, notice));
      for (const p of PARTITIONS) {
        const expected = ofPartition(backlog, p);
        assert.deepEqual(ofPartition(sent, p), expected.slice(0, ofPartition(sent, p).length), `partition ${p}: what the read sent, from the id on, once, in order`);
      }
      const unsent = ON_FAILING_BROKER.filter((p) => ofPartition(sent, p).length < BACKLOG);
      assert.ok(unsent.length > 0, `the read failed midway (it sent ${ON_FAILING_BROKER.map((p) => ofPartition(sent, p).length)} of ${BACKLOG} on broker 2's partitions)`);

      // The route answers on: its next Fetch from broker 2 finds no error left.
      target.release();
      const next = made(1, [1]);
      await produceTicks(kafka.bootstrap, topic, next);
      await eventually(() => assert.equal(numbers(client.events).at(-1), next[0]!.n), 20_000);
      assert.deepEqual(
        numbers(client.events.slice(notice + 1)),
        [...live, ...blocker, ...next].map((t) => t.n),
        'after the notice: the live events the read covered, then those above its ends, once each, in order',
      );
      // Partition 1: the first record at offset 0, the backlog, the one in hand, the live ones, the blocker, the next.
      assert.match(client.events.at(-1)!.id!, new RegExp(`[~,]1:${BACKLOG + 1 + live.length + 2}(,|$)`), "the last id names partition 1's last record");
      const s = await listenerStatus(gw);
      assert.deepEqual([s.eventStreams, s.slowStreamsClosed], [1, 0], 'still streaming, not cut off');

      // The route was not hit: no crash, no new join, every record handed on once.
      assert.equal(kafka.joinRequests(), joins, 'the route did not join its group again');
      assert.deepEqual(
        gw.logs.slice(from).filter((l) => l.route === 'out' && l.listener === undefined && (l.level === 'warn' || l.level === 'error')),
        [],
        "no warning from the route's consumer",
      );
      const all = [...heads, ...backlog, ...inHand, ...live, ...blocker, ...next].map((t) => t.n);
      await eventually(() => assert.equal(taken().length, all.length), 20_000);
      assert.deepEqual(
        [...taken()].sort((a, b) => a - b),
        all,
        'the webhook got every record once',
      );
    } finally {
      client.close();
    }
  });
});
