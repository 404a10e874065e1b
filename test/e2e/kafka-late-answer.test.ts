import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway, type LogLine } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { PAST_DEADLINE, producerErrors, routeCounts } from '../helpers/late-answer.js';

/** The log line of a dead-letter write whose answer came after its ack deadline and took it. */
const DEADLETTER_TAKEN_LATE = 'a dead-letter write answered after its ack deadline was taken';
import { fetch } from '../helpers/http.js';

/**
 * A produce request the cluster answers only after `ackTimeoutMs`: the publish is answered 503,
 * and the request — which the cluster took as it arrived, so its record is written — is not sent
 * again. kafkajs' own timeout for the request is the ack timeout, and it used to retry it then,
 * writing the record once more per attempt after the publisher had been told it failed (a consume
 * route retrying it wrote it once more per try on top: docs/spec-checklist.md, point 50).
 */
describe('kafka: a produce answer later than ackTimeoutMs', () => {
  let kafka: KafkaCluster;
  let topic: string;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('late');
    await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { ackTimeoutMs: 1000 } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: late
    from: { listener: api, path: /late }
    to: { broker: kafka, topic: ${topic} }
`,
  );
  after(async () => {
    await kafka?.delayAnswers(1, 0).catch(() => {});
    await kafka?.stop();
  });

  const post = (n: number) => fetch(gw.url('api', '/late'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });

  it('answers 503 and does not send the request again: the record is written once', async () => {
    // The topic's partition and leader known: the next records go straight to it.
    assert.equal((await post(0)).status, 200);
    const sent = kafka.produceRequests();
    const from = gw.logs.length;
    await kafka.delayAnswers(1, 10000);
    const late = await post(1);
    assert.equal(late.status, 503);
    assert.equal(kafka.produceRequests(), sent + 1, 'the cluster took the request before the deadline');
    // kafkajs' own timeout for the request (the ack timeout) has passed too.
    await gw.waitForLog((l) => /Request Produce\(.*\) timed out/.test(l.msg), 10000, from);
    // Answers come at once again: a resend would be taken and answered now.
    await kafka.delayAnswers(1, 0);
    // The next record of the partition goes once the earlier request is given up or answered
    // (one produce request per partition at a time): after this 200 nothing of it is left.
    assert.equal((await post(2)).status, 200);
    const values = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => (JSON.parse(r.value!) as { n: number }).n);
    assert.deepEqual(values, [0, 1, 2], 'each record once, the late one included (the cluster wrote it)');
    assert.equal(kafka.produceRequests(), sent + 2);
    await gw.waitForLog((l) => l.msg.startsWith('every publish of a produce request was answered 503 at ackTimeoutMs'), 10000, from);
  });
});

/**
 * A consume route whose target's produce answers come later than `ackTimeoutMs` but within
 * kafkajs' request timeout (produce-request.ts, lateAnswerMs): its try fails at the deadline, and the
 * route waits for that write's real outcome before trying again. The cluster took it, so the
 * record is delivered and not written again: once per target. Before, each try (1 s deadline, then
 * backoff) wrote one more copy while the answers stayed late (docs/spec-checklist.md, point 62).
 * The fan-out route checks that the slow target's late answer is matched to it, and that the fast
 * target, which took the record at once, is not written twice either.
 */
describe('kafka: a consume route whose produce answers come late', () => {
  let kafka: KafkaCluster;
  let src: string;
  let slow: string;
  let slow2: string;
  let fast: string;

  before(async () => {
    kafka = await startKafka({ brokers: 2 });
    [src, slow, slow2, fast] = [kafka.topic('late-src'), kafka.topic('late-slow'), kafka.topic('late-slow2'), kafka.topic('late-fast')];
    for (const t of [src, slow, slow2, fast]) await kafka.createTopic(t, 1);
    // Broker 2 leads the targets whose answers are delayed; broker 1 the source and the fast target.
    for (const t of [src, fast]) await kafka.moveLeader(t, 0, 1);
    for (const t of [slow, slow2]) await kafka.moveLeader(t, 0, 2);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: "${kafka.bootstrap}"
    producer: { ackTimeoutMs: 1000 }
    consumer: { sessionTimeoutMs: 20000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 20000, maxWaitMs: 100 }
routes:
  - name: one
    from: { broker: kafka, topic: ${src} }
    to: { broker: kafka, topic: ${slow} }
  - name: fan
    from: { broker: kafka, topic: ${src} }
    to:
      - { broker: kafka, topic: ${slow2} }
      - { broker: kafka, topic: ${fast} }
`,
  );
  after(async () => {
    await kafka?.delayAnswers(2, 0).catch(() => {});
    await kafka?.stop();
  });

  const values = async (topic: string) => (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => (JSON.parse(r.value!) as { n: number }).n);
  /** Until `topic` has a record `n` (records of a partition are consumed in order: every one before it is settled). */
  const until = async (topic: string, n: number) => {
    for (const deadline = Date.now() + 30000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) if ((await values(topic)).includes(n)) return;
    assert.fail(`record ${n} never reached ${topic}: ${JSON.stringify(await values(topic))}`);
  };

  it('waits for the late answer of its try: each record once on each target', async () => {
    await kcatProduce(kafka.bootstrap, src, [{ value: JSON.stringify({ n: 0 }) }]);
    for (const t of [slow, slow2, fast]) await until(t, 0);
    const from = gw.logs.length;
    // Answers 1.5 s late: past the 1 s deadline, within kafkajs' request timeout (2 s).
    await kafka.delayAnswers(2, 1500);
    await kcatProduce(kafka.bootstrap, src, [{ value: JSON.stringify({ n: 1 }) }]);
    // Each route's try fails at the deadline; then it says its write was taken late, or (as before
    // the fix) its next try fails too, a second write out.
    for (const route of ['one', 'fan']) {
      let failed = 0;
      const lateOrAgain = (l: LogLine) => l.route === route && (l.msg.startsWith('a write answered after its ack deadline was taken') || (l.msg === 'message failed' && ++failed > 1));
      await gw.waitForLog(lateOrAgain, 15000, from);
    }
    await kafka.delayAnswers(2, 0);
    await kcatProduce(kafka.bootstrap, src, [{ value: JSON.stringify({ n: 2 }) }]);
    for (const t of [slow, slow2, fast]) await until(t, 2);
    assert.deepEqual(await values(slow), [0, 1, 2], 'the single target: record 1 once, taken by its first, late-answered write');
    assert.deepEqual(await values(slow2), [0, 1, 2], "the fan-out's slow target: once");
    assert.deepEqual(await values(fast), [0, 1, 2], "the fan-out's fast target: once");
    assert.ok(
      gw.logs.slice(from).some((l) => l.route === 'one' && /did not acknowledge|within 1000 ms/.test(JSON.stringify(l))),
      'the first try did fail at its deadline',
    );
    // What the user reads: each route delivered the three records, none failed; the deadlines
    // missed count as producer errors (one per route's slow write), not as consumer errors.
    for (const route of ['one', 'fan']) {
      const c = await routeCounts(gw, route, 3);
      assert.deepEqual(
        { received: c.received, delivered: c.delivered, failed: c.failed, consumerErrors: c.consumerErrors, statsDelivered: c.statsDelivered, statsFailed: c.statsFailed },
        { received: 3, delivered: 3, failed: 0, consumerErrors: 0, statsDelivered: 3, statsFailed: 0 },
        `route ${route}`,
      );
      assert.ok(
        gw.logs.slice(from).some((l) => l.route === route && l.msg.startsWith(PAST_DEADLINE)),
        `route ${route} said its write was past its deadline`,
      );
      assert.deepEqual(
        gw.logs.slice(from).filter((l) => l.route === route && l.msg === 'message failed'),
        [],
        `route ${route}: no \`message failed\``,
      );
    }
    assert.equal(producerErrors((await routeCounts(gw, 'one', 3)).scrape, 'kafka'), 2);
  });
});

/**
 * A consume route's dead-letter write whose produce answer comes later than `ackTimeoutMs` (within
 * kafkajs' request timeout): as a target's try, it waits for that answer, and the write taken late
 * counts as written. Before, the retry followed the deadline at once and the cluster, which had
 * taken the first write, stored the dead letter twice or more (e2e/kafka-bombs' gzip bomb dead-lettered
 * twice under load: its answer reached an event loop held up past the deadline). Both dead-letter
 * paths: an undecodable batch's (a gzip batch past `consumer.maxBatchBytes`) and a record whose
 * chain fails.
 */
describe('kafka: a dead-letter write whose produce answer comes late', () => {
  let kafka: KafkaCluster;
  let [bombs, broken, bombsDlq, brokenDlq] = ['', '', '', ''];

  before(async () => {
    kafka = await startKafka({ brokers: 2 });
    [bombs, broken, bombsDlq, brokenDlq] = [kafka.topic('late-bombs'), kafka.topic('late-broken'), kafka.topic('late-bombs-dlq'), kafka.topic('late-broken-dlq')];
    for (const t of [bombs, broken, bombsDlq, brokenDlq]) await kafka.createTopic(t, 1);
    // Broker 2 leads the dead-letter topics, whose answers are delayed; broker 1 the sources.
    for (const t of [bombs, broken]) await kafka.moveLeader(t, 0, 1);
    for (const t of [bombsDlq, brokenDlq]) await kafka.moveLeader(t, 0, 2);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: "${kafka.bootstrap}"
    producer: { ackTimeoutMs: 1000 }
    consumer: { sessionTimeoutMs: 20000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 20000, maxWaitMs: 100, maxBatchBytes: 1024 }
routes:
  - name: bombs
    from: { broker: kafka, topic: ${bombs} }
    to: { broker: kafka, topic: ${bombs}-copied }
    deadletter: { broker: kafka, topic: ${bombsDlq} }
  - name: broken
    from: { broker: kafka, topic: ${broken} }
    through:
      - transform: '$error("refused")'
    to: { broker: kafka, topic: ${broken}-copied }
    deadletter: { broker: kafka, topic: ${brokenDlq} }
`,
  );
  after(async () => {
    await kafka?.delayAnswers(2, 0).catch(() => {});
    await kafka?.stop();
  });

  /** A gzip batch of one record of 4 KB: past the 1 KB bound, so undecodable, dead-lettered raw. */
  const bomb = (n: number) => kcatProduce(kafka.bootstrap, bombs, [{ value: JSON.stringify({ n, pad: '0'.repeat(4096) }) }], { compression: 'gzip' });
  const fail = (n: number) => kcatProduce(kafka.bootstrap, broken, [{ value: JSON.stringify({ n }) }]);
  /** Which record each dead letter stands for, in the topic's order: a batch's source offset, a record's `n`. */
  const sources = async (topic: string) =>
    (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) =>
      topic === bombsDlq ? Number((JSON.parse(r.headers!._eventgate_source!) as { offset: string }).offset) : (JSON.parse(r.value!) as { n: number }).n,
    );
  const until = async (topic: string, count: number) => {
    for (const deadline = Date.now() + 30000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) if ((await sources(topic)).length >= count) return;
    assert.fail(`${topic} never had ${count} dead letters: ${JSON.stringify(await sources(topic))}`);
  };

  it('waits for the late answer of its dead-letter write: each dead letter once', async () => {
    // The dead-letter topics' leader known to the producer: the next writes go straight to it.
    await Promise.all([bomb(0), fail(0)]);
    await Promise.all([until(bombsDlq, 1), until(brokenDlq, 1)]);
    const from = gw.logs.length;
    // Answers 1.5 s late: past the 1 s deadline, within kafkajs' request timeout.
    await kafka.delayAnswers(2, 1500);
    await Promise.all([bomb(1), fail(1)]);
    // Each route says its write was taken late, or (as before the fix) retries it a second time: a second write out.
    for (const route of ['bombs', 'broken']) {
      let retried = 0;
      const takenOrAgain = (l: LogLine) =>
        l.route === route &&
        (l.msg.startsWith(DEADLETTER_TAKEN_LATE) || (/^(undecodable record batch not dead-lettered|dead-letter target did not acknowledge); retrying$/.test(l.msg) && ++retried > 1));
      await gw.waitForLog(takenOrAgain, 15000, from);
    }
    await kafka.delayAnswers(2, 0);
    await Promise.all([bomb(2), fail(2)]);
    await Promise.all([until(bombsDlq, 3), until(brokenDlq, 3)]);
    assert.deepEqual(await sources(bombsDlq), [0, 1, 2], 'each undecodable batch dead-lettered once, the late one included');
    assert.deepEqual(await sources(brokenDlq), [0, 1, 2], 'each failed record dead-lettered once, the late one included');
    for (const route of ['bombs', 'broken']) {
      const said = gw.logs.slice(from).filter((l) => l.route === route);
      assert.ok(
        said.some((l) => l.msg.startsWith('a dead-letter write is still out past its ack deadline') && /within 1000 ms/.test(String(l.err))),
        `route ${route}: its dead-letter write did reach its deadline`,
      );
      assert.deepEqual(
        said.filter((l) => /retrying$/.test(l.msg)),
        [],
        `route ${route}: no retry`,
      );
    }
  });
});
