import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, runCli, tempFiles, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { kcatConsume, kcatConsumeAll, kcatProduce, produceRaw, recordBatch, startKafka, type KafkaCluster, KeyedStream, type Numbered, SESSIONS_OUTLAST_STALLS } from '../helpers/kafka.js';
import { KafkaTap } from '../helpers/kafka-tap.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * Reloads that change what a Kafka route asks only in ways its hand-over takes (BrokerKind
 * handOverTakes: a `deadletter` added, webhook `concurrency`, `orderBy`) keep the group member:
 * no JoinGroup, no LeaveGroup (the mock cluster's request log), and `eventgate plan` says so
 * (no "consumer group" line). Before, each of them rejoined the group.
 */

/** What `eventgate plan -c new --from old` prints. */
async function plan(old: string, now: string): Promise<string> {
  const dir = tempFiles({ 'old.yaml': old, 'new.yaml': now });
  const r = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
  assert.equal(r.code, 2, r.stdout + r.stderr);
  return r.stdout;
}

describe('a Kafka route halted at an undecodable batch, given a deadletter by a reload; then producer keys changed in place', () => {
  let kafka: KafkaCluster;
  /** Between the gateway and the cluster: what the producer sends, read (the third test). */
  let tap: KafkaTap;
  const t = { in: '', out: '', dead: '', late: '', burst: '' };
  const group = 'eventgate-strict';
  before(async () => {
    // One broker: it leads every partition, so a raw Produce request can go to it (and one tap stands in front of it).
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
    tap = await KafkaTap.start(kafka.bootstrap);
  });
  // Sessions outlast the 3.5 s answers of the second test (the one broker is also the group's coordinator).
  // A probe an hour (one at the start, one after a failed publish) until the third test sets one every 100 ms.
  const config = (deadletter: boolean, producer = 'lingerMs: 1, ackTimeoutMs: 1000', probe = 3600000) => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: "${tap.bootstrap}"
    healthCheckIntervalMs: ${probe}
    producer: { ${producer} }
    consumer: { sessionTimeoutMs: 10000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 4000, maxWaitMs: 100 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: strict
    from: { broker: kafka, topic: ${t.in} }
    to: { broker: kafka, topic: ${t.out} }
${deadletter ? `    deadletter: { broker: kafka, topic: ${t.dead} }\n` : ''}  - name: late
    from: { listener: api, path: /late }
    to: { broker: kafka, topic: ${t.late} }
  - name: burst
    from: { listener: api, path: /burst }
    to: { broker: kafka, topic: ${t.burst} }
`;
  const gw = useGateway(() => config(false));
  after(async () => {
    await tap?.stop();
    await kafka?.stop();
  });

  it('keeps the member (plan says kept) and dead-letters the batch the partition halted at, then the records after it', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'strict', 30000);
    await kcatProduce(kafka.bootstrap, t.in, [{ key: 'a', value: '{"n":1}' }]);
    await kcatConsume(kafka.bootstrap, t.out, 1, 30000);
    // A batch that says gzip and holds no gzip stream: no codec can decode it.
    const batch = recordBatch({ attributes: 1, key: null, value: Buffer.from('not gzip at all') });
    assert.equal((await produceRaw(kafka.bootstrap, { version: 3, transactionalId: null, topic: t.in, partition: 0, batch })).errorCode, 0);
    await kcatProduce(kafka.bootstrap, t.in, [{ key: 'a', value: '{"n":2}' }]);
    await gw.waitForLog((l) => l.msg.startsWith('consumer stopped on a partition') && l.route === 'strict', 30000);

    const said = await plan(config(false), config(true));
    assert.match(said, /^ {2}~ route strict$/m);
    assert.doesNotMatch(said, /consumer group/);

    const from = gw.logs.length;
    const joins = kafka.joinRequests();
    const leaves = kafka.leaves(group);
    assert.equal((await gw.reconfigure(config(true))).msg, 'config reloaded');
    await kcatConsume(kafka.bootstrap, t.dead, 1, 30000);
    await kcatConsume(kafka.bootstrap, t.out, 2, 30000);
    assert.equal((await kcatConsumeAll(kafka.bootstrap, t.dead)).length, 1, 'the undecodable batch dead-lettered once');
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, t.out)).map((r) => r.value),
      ['{"n":1}', '{"n":2}'],
      'the record behind the batch copied once, after it',
    );
    await eventually(async () => assert.equal((await gw.status()).routes.find((x: { name: string }) => x.name === 'strict').consumer.ready, true), 10000);
    assert.equal(kafka.joinRequests(), joins, 'no JoinGroup request: no rebalance');
    assert.equal(kafka.leaves(group), leaves, 'no LeaveGroup request');
    assert.deepEqual(
      gw.logs
        .slice(from)
        .filter((l) => l.route === 'strict' && /handed over|consumer joined|consumer stopped;/.test(l.msg))
        .map((l) => l.msg),
      ['subscription handed over to the rebuilt route'],
    );
  });

  // Point 285 of docs/spec-checklist.md: any changed key replaced a kafka broker (a new producer,
  // every consume route rejoining its group). Keys read per produce request now apply in place.
  it('reconfigures the broker in place when only producer keys change (plan says so, --admin too): the member kept, the next publish has the new deadline, and its request is not sent again before it', async () => {
    const now = config(true, 'lingerMs: 1, ackTimeoutMs: 2500, compression: gzip');
    const said = await plan(config(true), now);
    assert.match(said, /^ {2}~ broker kafka \(reconfigured in place\)$/m);
    assert.doesNotMatch(said, /consumer group|route strict/);
    const running = await runCli(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl], { cwd: tempFiles({ 'new.yaml': now }) });
    assert.equal(running.code, 2, running.stdout + running.stderr);
    assert.match(running.stdout, /^ {2}~ broker kafka \(reconfigured in place\)$/m);
    assert.doesNotMatch(running.stdout, /consumer group|route strict/);

    assert.equal((await post(gw.url('api', '/late'), { n: 0 })).status, 200);
    const from = gw.logs.length;
    const joins = kafka.joinRequests();
    const leaves = kafka.leaves(group);
    assert.equal((await gw.reconfigure(now)).msg, 'config reloaded');
    await kcatProduce(kafka.bootstrap, t.in, [{ key: 'a', value: '{"n":3}' }]);
    await kcatConsume(kafka.bootstrap, t.out, 3, 30000);

    // Answers 3.5 s late: after the new deadline (2.5 s), past the 2 s kafkajs' client was made
    // to wait for (twice the 1 s it had); a request given up then would be sent again, and written twice.
    const sent = kafka.produceRequests();
    await kafka.delayAnswers(1, 3500);
    const late = await post(gw.url('api', '/late'), { n: 1 });
    await kafka.delayAnswers(1, 0);
    assert.equal(late.status, 503, late.text);
    assert.match(late.text, /within 2500 ms/);
    // Sent after the request before it was answered (one produce request per partition at a time).
    assert.equal((await post(gw.url('api', '/late'), { n: 2 })).status, 200);
    assert.equal(kafka.produceRequests(), sent + 2, 'the late request was not sent again');
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, t.late)).map((r) => (JSON.parse(r.value!) as { n: number }).n),
      [0, 1, 2],
    );
    assert.equal(kafka.joinRequests(), joins, 'no JoinGroup request: no rebalance');
    assert.equal(kafka.leaves(group), leaves, 'no LeaveGroup request');
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => /consumer joined|consumer stopped;|kafka broker connected|timed out/.test(l.msg)),
      [],
    );
  });

  // Point 338 of docs/spec-checklist.md: the keys test 2's reload changes in place, each seen before
  // and after in what the producer sends (the tap reads its requests with src/codecs).
  it('applies acks, compression, lingerMs, maxBatchRecords, maxBatchBytes and healthCheckIntervalMs in place, as the produce requests and probes show, a batch lingering at the reload going by the new ones; the producer, its connections and the member kept', async () => {
    const url = gw.url('api', '/burst');
    const big = (n: number) => post(url, { n, pad: 'x'.repeat(15000) });
    const small = (n: number) => post(url, { n, pad: 'x'.repeat(1000) });
    const statuses = async (answers: Promise<{ status: number }>[]) => (await Promise.all(answers)).map((r) => r.status);
    // Publishes the route holds: each is in the producer's queue or in a produce request (a route without steps hands it over at once).
    const inFlight = async () => (await gw.status()).routes.find((r: { name: string }) => r.name === 'burst').inFlight as number;
    /** Each produce request to the topic since the `from`-th: its acks, and its batches as `codec:records`. */
    const sent = (from: number) => tap.producesTo(t.burst, from).map((p) => ({ acks: p.acks, batches: p.batches.map((b) => `${b.codec}:${b.records}`) }));
    const joins = kafka.joinRequests();
    const leaves = kafka.leaves(group);
    const from = gw.logs.length;

    // A: a batch leaves full (lingerMs 60 s) at 4 records (maxBatchRecords; 60 KB, within the default
    // maxBatchBytes), acks all (-1), codec none (0); the cluster probed every 100 ms.
    const a = config(true, 'ackTimeoutMs: 10000, acks: all, compression: none, lingerMs: 60000, maxBatchRecords: 4', 100);
    assert.equal((await gw.reconfigure(a)).msg, 'config reloaded');
    const probesA = tap.probes;
    let seen = tap.produces.length;
    assert.deepEqual(await statuses([0, 1, 2, 3, 4, 5, 6, 7].map(big)), Array(8).fill(200));
    assert.deepEqual(sent(seen), Array(2).fill({ acks: -1, batches: ['0:4'] }));
    seen = tap.produces.length;
    // Three more wait in the producer for a fourth.
    const lingering = statuses([8, 9, 10].map(small));
    await eventually(async () => assert.equal(await inFlight(), 3));
    assert.deepEqual(sent(seen), [], 'held while lingerMs is 60 s');
    await eventually(() => assert.ok(tap.probes >= probesA + 3, `${tap.probes - probesA} probes`));
    // The probe's client was made again at its first round (a new ackTimeoutMs); nothing is from here on.
    const connections = tap.connections;

    // B: lingerMs 0, a batch at most 3 records and 25000 bytes, acks leader (1), gzip (1), a probe an hour.
    const b = config(true, 'ackTimeoutMs: 10000, acks: leader, compression: gzip, lingerMs: 0, maxBatchRecords: 3, maxBatchBytes: 25000', 3600000);
    assert.equal((await gw.reconfigure(b)).msg, 'config reloaded');
    const probesB = tap.probes;
    // The batch lingering at the reload goes by the new lingerMs, now (it kept the 60 s timer of the old one, answered 503 at the 10 s deadline).
    assert.deepEqual(await lingering, [200, 200, 200]);
    assert.deepEqual(sent(seen), [{ acks: 1, batches: ['1:3'] }]);
    seen = tap.produces.length;
    // A lone record leaves at once; its answer held, the next ones queue behind it (one batch in flight per partition).
    tap.holdProduce();
    const lone = small(11);
    await eventually(() => assert.equal(tap.producesTo(t.burst, seen).length, 1));
    const bigs = [12, 13].map(big);
    await eventually(async () => assert.equal(await inFlight(), 3));
    const smalls = [14, 15, 16, 17].map(small);
    await eventually(async () => assert.equal(await inFlight(), 7));
    tap.releaseProduce();
    assert.deepEqual(await statuses([lone, ...bigs, ...smalls]), Array(7).fill(200));
    // Two 15 KB records are over 25000 bytes: the first alone; then 3 records of 17 KB (maxBatchRecords); then the last 2.
    assert.deepEqual(
      sent(seen),
      [1, 1, 3, 2].map((n) => ({ acks: 1, batches: [`1:${n}`] })),
    );
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, t.burst)).map((r) => (JSON.parse(r.value!) as { n: number }).n).sort((x, y) => x - y),
      [...Array(18).keys()],
      'each record once',
    );
    // At most the round under way at the reload: no other in the hour.
    assert.ok(tap.probes <= probesB + 1, `${tap.probes - probesB} probes since the interval became an hour`);
    assert.equal(tap.connections, connections, 'no connection made again: the producer and the consumer kept');
    assert.deepEqual(tap.problems, []);
    assert.equal(kafka.joinRequests(), joins, 'no JoinGroup request: no rebalance');
    assert.equal(kafka.leaves(group), leaves, 'no LeaveGroup request');
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => /consumer joined|consumer stopped;|kafka broker connected|timed out|not settled/.test(l.msg)),
      [],
    );
  });
});

describe('a Kafka route whose webhook concurrency and orderBy a reload changes', () => {
  let kafka: KafkaCluster;
  let receiver: WebhookReceiver;
  let topic = '';
  const KEYS = 8;
  const group = 'eventgate-windowed';
  before(async () => {
    [kafka, receiver] = await Promise.all([startKafka(), WebhookReceiver.start()]);
    topic = kafka.topic('windowed');
    await kafka.createTopic(topic, 2);
    // A few milliseconds an answer: records are in hand when a reload comes.
    receiver.respond = (_r, res) => void setTimeout(() => res.end('ok'), 3);
  });
  const config = (concurrency: number, orderBy: boolean) => `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    consumer: ${SESSIONS_OUTLAST_STALLS}
routes:
  - name: windowed
    from: { broker: kafka, topic: ${topic} }
    to: { http: { url: "${receiver.url}/hook", concurrency: ${concurrency}${orderBy ? ', orderBy: k' : ''} } }
`;
  const gw = useGateway(() => config(1, false));
  after(async () => {
    await Promise.all([receiver?.stop(), kafka?.stop()]);
  });

  it('keeps the member (plan says kept) from 1 to 4 with orderBy and back, under a produced stream: each record once, each key in order', async () => {
    await withLogsOnFailure(
      () => [gw],
      async () => {
        const said = await plan(config(1, false), config(4, true));
        assert.match(said, /^ {2}~ route windowed$/m);
        assert.doesNotMatch(said, /consumer group/);

        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'windowed', 30000);
        const keyed = new KeyedStream(KEYS);
        const from = gw.logs.length;
        const joins = kafka.joinRequests();
        const leaves = kafka.leaves(group);
        await keyed.produceWhile(kafka.bootstrap, topic, async () => {
          for (const [concurrency, orderBy] of [
            [4, true],
            [4, false],
            [2, true],
            [1, false],
          ] as const)
            assert.equal((await gw.reconfigure(config(concurrency, orderBy))).msg, 'config reloaded');
        });
        const delivered = () => receiver.requests.map((r) => JSON.parse(r.body) as Numbered);
        await keyed.untilEachDelivered(delivered);
        // A rejoin reads from the last commit again: said as what it is, before the records are counted.
        assert.equal(kafka.joinRequests(), joins, 'no JoinGroup request: no rebalance');
        assert.equal(kafka.leaves(group), leaves, 'no LeaveGroup request');
        await keyed.assertDeliveredInTopicOrder(delivered, kafka.bootstrap, topic);
        assert.equal(gw.logs.slice(from).filter((l) => l.route === 'windowed' && l.msg === 'subscription handed over to the rebuilt route').length, 4);
        assert.deepEqual(
          gw.logs.slice(from).filter((l) => l.level === 'error'),
          [],
        );
      },
    );
  });
});

describe('a Kafka route retrying an undecodable batch to a deadletter that a reload removes', () => {
  let kafka: KafkaCluster;
  let dlCluster: KafkaCluster;
  const t = { in: '', out: '' };
  let dead = '';
  const group = 'eventgate-dropped';
  before(async () => {
    // The dead-letter topic on a cluster of its own, which goes down: the write fails and is retried.
    [kafka, dlCluster] = await Promise.all([startKafka({ brokers: 1 }), startKafka({ brokers: 1 })]);
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
    dead = dlCluster.topic('dead');
    await dlCluster.createTopic(dead, 1);
  });
  const config = (deadletter: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
${deadletter ? `  dl: { kind: kafka, brokers: "${dlCluster.bootstrap}", producer: { lingerMs: 1, ackTimeoutMs: 1000 } }\n` : ''}routes:
  - name: dropped
    from: { broker: kafka, topic: ${t.in} }
    to: { broker: kafka, topic: ${t.out} }
${deadletter ? `    deadletter: { broker: dl, topic: ${dead} }\n` : ''}`;
  const gw = useGateway(() => config(true));
  after(async () => {
    await Promise.all([kafka?.stop(), dlCluster?.stop()]);
  });

  it('keeps the member and halts the partition at the batch, the retries to the removed deadletter ended', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'dropped', 30000);
    await eventually(async () => assert.equal((await gw.status()).brokers.find((b: { name: string }) => b.name === 'dl')?.ready, true), 20000);
    await dlCluster.down();
    const batch = recordBatch({ attributes: 1, key: null, value: Buffer.from('not gzip at all') });
    assert.equal((await produceRaw(kafka.bootstrap, { version: 3, transactionalId: null, topic: t.in, partition: 0, batch })).errorCode, 0);
    await gw.waitForLog((l) => l.msg === 'undecodable record batch not dead-lettered; retrying' && l.route === 'dropped', 30000);

    const from = gw.logs.length;
    const joins = kafka.joinRequests();
    const leaves = kafka.leaves(group);
    assert.equal((await gw.reconfigure(config(false))).msg, 'config reloaded');
    await gw.waitForLog((l) => l.msg.startsWith('consumer stopped on a partition') && l.route === 'dropped', 30000);
    const health = (await gw.status()).routes.find((x: { name: string }) => x.name === 'dropped').consumer;
    assert.equal(health.ready, false);
    assert.match(health.detail, /^partition 0 of .* stopped at offset 0: a record batch there cannot be decoded/);
    // The retry in progress at the reload ended there: none called the removed deadletter.
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.route === 'dropped' && /not a function/.test(String(l.err))),
      [],
    );
    assert.equal(gw.logs.slice(from).filter((l) => l.route === 'dropped' && l.msg === 'subscription handed over to the rebuilt route').length, 1);
    assert.equal(kafka.joinRequests(), joins, 'no JoinGroup request: no rebalance');
    assert.equal(kafka.leaves(group), leaves, 'no LeaveGroup request');
  });
});
