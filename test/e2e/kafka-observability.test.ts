import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { appendCommitMarker, committedOffsets, endOffsets, kcatConsume, kcatProduce, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { scrape, scrapeUntil } from '../helpers/prometheus.js';
import { fetch } from '../helpers/http.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const SHAPE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

describe('observability of Kafka routes', () => {
  let kafka: KafkaCluster;
  /** The stuck route's target cluster: connected at start, taken down by the test. */
  let target: KafkaCluster;
  const t = { events: '', stuck: '', txn: '', due: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    target = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      // The stuck route's topic has a second partition, whose records wait behind the first's retried one.
      await kafka.createTopic(t[k], k === 'stuck' ? 2 : 1);
    }
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    producer: { lingerMs: 1 }
    # Commits of handled records at a batch's end only, never kafkajs' own of a marker-only batch
    # (its interval passed): the retried-commit test below makes the next commit fail, and that one
    # must be the gateway's commit past the marker, however slowly the test's kcat runs.
    consumer: ${kafka.consumerYaml.replace(/ }$/, ', commitIntervalMs: 600000 }')}
  # kafkajs' own commit interval (1 s by default): it commits a marker-only batch itself once it has passed.
  kafkaDue:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    consumer: ${kafka.consumerYaml}
  # Taken down once connected: every publish to it then fails after its ack timeout. (A route waits
  # for the first connection of its target brokers, so one that never connected would not be tried.)
  nowhere:
    kind: kafka
    brokers: ["${target.bootstrap}"]
    connectionTimeoutMs: 200
    producer: { ackTimeoutMs: 200 }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /events }
    to: { broker: kafka, topic: ${t.events} }
  - name: relay
    from: { broker: kafka, topic: ${t.events}, fromBeginning: true }
    to: { listener: ws, path: /events, format: envelope }
  - name: txn
    from: { broker: kafka, topic: ${t.txn}, fromBeginning: true }
    to: { listener: ws, path: /txn }
  - name: marker-due
    from: { broker: kafkaDue, topic: ${t.due}, fromBeginning: true }
    to: { listener: ws, path: /due }
  - name: stuck
    from: { broker: kafka, topic: ${t.stuck}, fromBeginning: true }
    to: { broker: nowhere, topic: anywhere }
`,
  );
  before(async () => {
    await Promise.all(['relay', 'stuck', 'txn', 'marker-due'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000)));
  });
  after(async () => {
    await kafka?.stop();
    await target?.stop();
  });

  it('carries an HTTP traceparent into the Kafka record (read with kcat) and on to the websocket envelope, a new span id at each route', async () => {
    const client = await WsClient.connect(gw.url('ws', '/events', 'ws'));
    const reply = await post(gw.url('api', '/events'), { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);

    const [record] = await kcatConsume(kafka.bootstrap, t.events, 1);
    const inKafka = SHAPE.exec(record!.headers.traceparent ?? '');
    assert.ok(inKafka, `record headers: ${JSON.stringify(record!.headers)}`);
    assert.equal(inKafka[1], TRACE);
    assert.notEqual(inKafka[2], PARENT);

    const envelope = await client.next(10000);
    const delivered = SHAPE.exec(envelope.headers.traceparent)!;
    assert.equal(delivered[1], TRACE);
    assert.ok(delivered[2] !== PARENT && delivered[2] !== inKafka[2]);
    client.close();

    // The relay route handled the only record of its partition: it is not behind.
    const s = await scrapeUntil(gw.adminUrl, (m) => m.value('eventgate_kafka_consumer_lag', { route: 'relay', topic: t.events, partition: '0' }) === 0);
    assert.equal(s.value('eventgate_route_messages_total', { route: 'relay', outcome: 'delivered' }), 1);
  });

  it('reports no lag for a partition that ends with a transaction marker, once the records before it are handled, and never delivers the marker', async () => {
    const client = await WsClient.connect(gw.url('ws', '/txn', 'ws'));
    // A record and its transaction's commit marker, then another transaction (a record and its marker).
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":1}' }]);
    await appendCommitMarker(kafka.bootstrap, t.txn, 0);
    assert.deepEqual(await client.next(15000), { n: 1 });
    await scrapeUntil(gw.adminUrl, (m) => m.value('eventgate_kafka_consumer_lag', { route: 'txn', topic: t.txn, partition: '0' }) === 0, 15000);
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":2}' }]);
    await appendCommitMarker(kafka.bootstrap, t.txn, 0);
    assert.deepEqual(await client.next(15000), { n: 2 });
    await scrapeUntil(gw.adminUrl, (m) => m.value('eventgate_kafka_consumer_lag', { route: 'txn', topic: t.txn, partition: '0' }) === 0, 15000);
    assert.equal(client.frames.length, 0, `nothing else was forwarded: ${client.frames.join(' ')}`);
    client.close();
  });

  // A marker fetched alone (the records before it handed over already, as when a transaction
  // commits after its records were read, or aborts) came as a batch kafkajs resolves but commits
  // only when its commit interval has passed: the group's offset stayed at the marker.
  it('commits past a transaction marker fetched on its own, as Kafka consumers do', async () => {
    const client = await WsClient.connect(gw.url('ws', '/txn', 'ws'));
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":3}' }]);
    assert.deepEqual(await client.next(15000), { n: 3 });
    await appendCommitMarker(kafka.bootstrap, t.txn, 0);
    const group = (await kafka.groups()).find((g) => g.startsWith('eventgate-txn-'));
    assert.ok(group, 'the txn route has a group');
    const end = (await endOffsets(kafka.bootstrap, t.txn))[0];
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, group, t.txn))[0], end), 20000, 200);
    assert.equal(client.frames.length, 0, `nothing else was forwarded: ${client.frames.join(' ')}`);
    client.close();
  });

  // kafkajs retries a commit that fails (a coordinator busy loading, say) after ~300 ms: the marker's,
  // sent apart from the records' commits, landed after the commit of the record that followed it,
  // and the group's offset went back before that record (delivered again after a restart).
  it('never lets a retried commit past a transaction marker move the group back past a later record', async (tc) => {
    if (!kafka.canInjectOutages) return tc.diagnostic('KAFKA_BROKERS is set: a real cluster cannot be made to refuse a commit from here');
    const client = await WsClient.connect(gw.url('ws', '/txn', 'ws'));
    const group = (await kafka.groups()).find((g) => g.startsWith('eventgate-txn-'))!;
    // The broker's commit interval is long: kafkajs does not commit the marker itself.
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":4}' }]);
    assert.deepEqual(await client.next(15000), { n: 4 });
    // The record's own commit follows its delivery: once it is done, the next commit of any group
    // is the marker's (the other routes are idle). Counted from before it, the record's commit was
    // taken for the marker's and the injected failure could hit it (spec-checklist 2420).
    const afterRecord = (await endOffsets(kafka.bootstrap, t.txn))[0];
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, group, t.txn))[0], afterRecord), 20000, 100);
    const commits = kafka.commitRequests();
    await kafka.failRequests(8, 1, 14); // the next OffsetCommit: COORDINATOR_LOAD_IN_PROGRESS, which kafkajs retries
    await appendCommitMarker(kafka.bootstrap, t.txn, 0);
    // The marker's commit failed once: the record after it comes while kafkajs waits to retry (and
    // is fetched on its own, the marker's batch handled already).
    await eventually(() => assert.ok(kafka.commitRequests() > commits), 20000);
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":5}' }]);
    assert.deepEqual(await client.next(15000), { n: 5 });
    // The failed commit, its retry and the record's commit have all reached the cluster.
    await eventually(() => assert.ok(kafka.commitRequests() >= commits + 3), 20000);
    const end = (await endOffsets(kafka.bootstrap, t.txn))[0];
    assert.equal((await committedOffsets(kafka.bootstrap, group, t.txn))[0], end, 'the group stays past the record after the marker');
    assert.equal(client.frames.length, 0, `nothing else was forwarded: ${client.frames.join(' ')}`);
    client.close();
  });

  // kafkajs commits at a batch's end once, and when that commit failed (a coordinator busy loading,
  // say) nothing committed the partition again until another record came: on a quiet partition the
  // group's offset stayed before a handled record (lag 1 to Kafka's tools, the record delivered
  // again after a restart or a rebalance).
  it("commits a handled record whose commit at its batch's end failed once, without another record coming", async (tc) => {
    if (!kafka.canInjectOutages) return tc.diagnostic('KAFKA_BROKERS is set: a real cluster cannot be made to refuse a commit from here');
    const client = await WsClient.connect(gw.url('ws', '/txn', 'ws'));
    const group = (await kafka.groups()).find((g) => g.startsWith('eventgate-txn-'));
    assert.ok(group, 'the txn route has a group');
    // Every record of the partition committed (none yet: no offset): the next OffsetCommit of any group is the next record's.
    const start = (await endOffsets(kafka.bootstrap, t.txn))[0];
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, group, t.txn))[0], start === '0' ? '-1' : start), 20000, 100);
    await kafka.failRequests(8, 1, 14); // COORDINATOR_LOAD_IN_PROGRESS
    await kcatProduce(kafka.bootstrap, t.txn, [{ value: '{"n":6}' }]);
    assert.deepEqual(await client.next(15000), { n: 6 });
    const end = (await endOffsets(kafka.bootstrap, t.txn))[0];
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, group, t.txn))[0], end), 20000, 200);
    assert.equal(client.frames.length, 0, `nothing else was forwarded: ${client.frames.join(' ')}`);
    client.close();
  });

  // kafkajs commits a marker-only batch itself once its commit interval has passed since the last
  // commit, and does not retry that commit: when it failed, the batch's end never came, nor the
  // gateway's commit there. The group stayed before the marker (lag 1) until another record came.
  it("commits past a transaction marker when kafkajs' own commit of it fails", async (tc) => {
    if (!kafka.canInjectOutages) return tc.diagnostic('KAFKA_BROKERS is set: a real cluster cannot be made to refuse a commit from here');
    const client = await WsClient.connect(gw.url('ws', '/due', 'ws'));
    const group = (await kafka.groups()).find((g) => g.startsWith('eventgate-marker-due-'));
    assert.ok(group, 'the marker-due route has a group');
    await kcatProduce(kafka.bootstrap, t.due, [{ value: '{"n":1}' }]);
    assert.deepEqual(await client.next(15000), { n: 1 });
    // Past the broker's commit interval (1 s) since that record's commit: kafkajs commits the marker's batch.
    await new Promise((r) => setTimeout(r, 1500));
    await kafka.failRequests(8, 1, 14); // the next OffsetCommit: COORDINATOR_LOAD_IN_PROGRESS
    await appendCommitMarker(kafka.bootstrap, t.due, 0);
    const end = (await endOffsets(kafka.bootstrap, t.due))[0];
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, group, t.due))[0], end), 20000, 200);
    await scrapeUntil(gw.adminUrl, (m) => m.value('eventgate_kafka_consumer_lag', { route: 'marker-due', topic: t.due, partition: '0' }) === 0, 15000);
    assert.equal(client.frames.length, 0, `nothing else was forwarded: ${client.frames.join(' ')}`);
    client.close();
  });

  it('reports the lag, consumer errors and producer errors of a route whose target broker is unreachable', async () => {
    const nowhere = async () => ((await gw.status()).brokers as { name: string; ready: boolean }[]).find((b) => b.name === 'nowhere')!;
    await eventually(async () => assert.equal((await nowhere()).ready, true), 20000);
    await target.down();
    const toPartition = async (partition: number, values: string[]) => {
      const r = await runProcess('kcat', ['-P', '-b', kafka.bootstrap, '-t', t.stuck, '-p', String(partition)], values.map((v) => `${v}\n`).join(''));
      assert.equal(r.code, 0, r.stderr);
    };
    await toPartition(0, ['{"n":1}', '{"n":2}', '{"n":3}']);
    // The first record is retried (never committed), so all three are behind.
    const s = await scrapeUntil(
      gw.adminUrl,
      (m) =>
        m.value('eventgate_kafka_consumer_lag', { route: 'stuck', topic: t.stuck, partition: '0' }) === 3 &&
        (m.value('eventgate_kafka_consumer_errors_total', { broker: 'kafka', route: 'stuck' }) ?? 0) >= 1 &&
        (m.value('eventgate_kafka_producer_errors_total', { broker: 'nowhere' }) ?? 0) >= 5 &&
        // A try counts as failed once the late answer of its write came (lost here), after its deadline's producer error.
        (m.value('eventgate_route_messages_total', { route: 'stuck', outcome: 'failed' }) ?? 0) >= 5,
      20000,
    );
    assert.ok(s.value('eventgate_kafka_producer_errors_total', { broker: 'nowhere' })! >= 5, 'every attempt of the route is a failed publish');
    assert.equal(s.value('eventgate_kafka_producer_errors_total', { broker: 'kafka' }), 0);
    assert.ok(s.value('eventgate_route_messages_total', { route: 'stuck', outcome: 'failed' })! >= 5);
    assert.equal(s.value('eventgate_route_messages_total', { route: 'stuck', outcome: 'delivered' }), 0);
    // Readiness says why.
    assert.equal(s.value('eventgate_ready'), 0);
    const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { consumerLag: { route: string; partition: number; lag: number }[] };
    assert.deepEqual(stats.consumerLag.find((l) => l.route === 'stuck' && l.partition === 0)?.lag, 3);
    // Failed attempts are logged with their trace id.
    const failed = await gw.waitForLog((l) => l.msg === 'message failed' && l.route === 'stuck');
    assert.match(failed.traceId as string, /^[0-9a-f]{32}$/);
    assert.equal(failed.code, 'EG_BROKER_UNAVAILABLE');
    assert.equal((await scrape(gw.adminUrl)).types.get('eventgate_kafka_consumer_lag'), 'gauge');

    // Records produced while the route retries, to its partition and to the other: the member
    // fetches nothing while it holds a batch, so the lag comes from asking the cluster (spec-checklist 1891).
    await toPartition(0, ['{"n":4}']);
    await toPartition(1, ['{"n":5}', '{"n":6}']);
    const lag = (m: Awaited<ReturnType<typeof scrape>>, partition: string) => m.value('eventgate_kafka_consumer_lag', { route: 'stuck', topic: t.stuck, partition });
    const behind = await scrapeUntil(gw.adminUrl, (m) => lag(m, '0') === 4 && lag(m, '1') === 2, 20000);
    assert.deepEqual([lag(behind, '0'), lag(behind, '1')], [4, 2]);
    assert.deepEqual(await committedOffsets(kafka.bootstrap, 'eventgate-stuck', t.stuck), { 0: '-1', 1: '-1' }, 'nothing of either partition was handled');
  });
});
