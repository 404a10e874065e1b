import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { crc32c } from '../../src/codecs/crc32c.js';
import { WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduceLines, produceRaw, recordBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { scrape } from '../helpers/prometheus.js';

const { Kafka, logLevel } = kafkajs;

const TOKEN = 'tap-token-acks';
const SCHEMA = '{ type: object, required: [id], properties: { id: { type: integer } } }';
/** Kafka's TOPIC_AUTHORIZATION_FAILED: an error no client retries. */
const TOPIC_AUTHORIZATION_FAILED = 29;
const PRODUCE = 0;

/**
 * A record counts as delivered on a kafka listener's route only once the cluster acknowledged it:
 * the route's counters and its tap follow the cluster's Produce response, partition by partition.
 */
describe('kafka listener: outcomes follow the cluster’s acknowledgement', () => {
  let kafka: KafkaCluster;
  let proxy: string;
  let topic: string;
  let taggedTopic: string;
  let spreadTopic: string;
  /** Read by route `late-in`, whose records are answered after a reload retired it (spec-checklist 1049). */
  let lateTopic: string;
  let tap: WsClient;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('acked');
    await kafka.createTopic(topic, 1);
    taggedTopic = kafka.topic('tagged');
    await kafka.createTopic(taggedTopic, 1);
    spreadTopic = kafka.topic('spread');
    await kafka.createTopic(spreadTopic, 3);
    lateTopic = kafka.topic('late');
    await kafka.createTopic(lateTopic, 3);
  });
  /** `lateSteps`: what a reload changes in route late-in, so that it is rebuilt and the old one retired. */
  const config = (lateSteps = '[]') => `
version: 1
admin: { port: 0, token: ${TOKEN}, tap: { maxPerSecond: 1000 }, drainTimeoutMs: 500 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: acked-in
    from: { listener: kafka-in, topic: ${topic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: tagged-in
    from: { listener: kafka-in, topic: ${taggedTopic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: tag } } ]
  - name: spread-in
    from: { listener: kafka-in, topic: ${spreadTopic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: late-in
    from: { listener: kafka-in, topic: ${lateTopic} }
    through: ${lateSteps}
`;
  // Registered after the before() that starts the cluster, so the config can name its topics.
  const gw = useGateway(
    () => config(),
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(async () => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
    tap = await WsClient.connect(`${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=acked-in`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal((await tap.next()).type, 'hello');
  });

  after(async () => {
    tap?.close();
    await kafka?.stop();
  });

  const counts = async (route = 'acked-in') => {
    const s = await scrape(gw.adminUrl, { authorization: `Bearer ${TOKEN}` });
    const c = (outcome: string) => s.value('eventgate_route_messages_total', { route, outcome }) ?? 0;
    return { received: c('received'), delivered: c('delivered'), failed: c('failed'), invalid: c('invalid'), rejected: c('rejected'), tagged: c('tagged') };
  };

  it('counts acknowledged records as delivered, with the offsets the cluster gave them on the tap', async () => {
    const r = await kcatProduceLines(proxy, topic, ['{"id":1}', '{"id":2}']);
    assert.equal(r.code, 0, r.stderr);
    const events = [await tap.next(), await tap.next()];
    assert.deepEqual(
      events.map((e) => e.outcome),
      ['delivered', 'delivered'],
    );
    const onCluster = await kcatConsumeAll(kafka.bootstrap, topic);
    for (const e of events) {
      const [d] = e.deliveries as { broker: string; topic: string; partition: number; offset: string }[];
      assert.equal(d!.broker, 'cluster');
      assert.equal(d!.topic, topic);
      // The offset the tap shows is where the cluster put that very record.
      const stored = onCluster.find((c) => c.partition === d!.partition && String(c.offset) === d!.offset);
      assert.equal(stored?.value, JSON.stringify(e.message.value));
    }
    assert.deepEqual(await counts(), { received: 2, delivered: 2, failed: 0, invalid: 0, rejected: 0, tagged: 0 });
  });

  it('counts records the cluster answered with an error as failed, never delivered', async () => {
    // The mock cluster answers the next Produce request with TOPIC_AUTHORIZATION_FAILED for every partition.
    await kafka.failRequests(PRODUCE, 1, TOPIC_AUTHORIZATION_FAILED);
    const r = await kcatProduceLines(proxy, topic, ['{"id":3}']);
    assert.match(r.stderr, /Topic authorization failed/i);
    const failed = await tap.next();
    assert.equal(failed.outcome, 'failed');
    assert.equal(failed.problem.code, 'EG_KAFKA_ERROR');
    assert.match(failed.problem.detail, /29 \(TOPIC_AUTHORIZATION_FAILED\)/);
    assert.deepEqual(failed.message.value, { id: 3 });
    assert.deepEqual(await counts(), { received: 3, delivered: 2, failed: 1, invalid: 0, rejected: 0, tagged: 0 });
    // One warn line for the partition (the log reaches the test through a pipe, maybe after the tap's frame).
    await eventually(() => assert.ok(gw.logs.some((l) => l.msg === 'records failed' && l.route === 'acked-in' && l.records === 1)));
    // A sentinel after it: the next request is acknowledged and counted as usual.
    const next = await kcatProduceLines(proxy, topic, ['{"id":4}']);
    assert.equal(next.code, 0, next.stderr);
    assert.equal((await tap.next()).outcome, 'delivered');
    assert.deepEqual(await counts(), { received: 4, delivered: 3, failed: 1, invalid: 0, rejected: 0, tagged: 0 });
  });

  it('counts the valid records of a refused request as rejected, not delivered', async () => {
    // One request, one batch: a valid record and an invalid one.
    const producer = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
    await producer.connect();
    try {
      const err = await producer.send({ topic, messages: [{ value: '{"id":5}' }, { value: '{"id":"six"}' }] }).then(
        () => undefined,
        (e: { type?: string }) => e,
      );
      assert.equal(err?.type, 'INVALID_RECORD');
    } finally {
      await producer.disconnect();
    }
    const events = [await tap.next(), await tap.next()];
    assert.deepEqual(
      events.map((e) => [e.outcome, e.problem.code]),
      [
        ['rejected', 'EG_PRODUCE_REFUSED'],
        ['invalid', 'EG_INVALID_MESSAGE'],
      ],
    );
    assert.deepEqual(await counts(), { received: 6, delivered: 3, failed: 1, invalid: 1, rejected: 1, tagged: 0 });
  });

  it('counts acks=0 records as delivered once written upstream: no acknowledgement will ever come', async () => {
    const producer = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    try {
      await producer.send({ topic, acks: 0, messages: [{ value: '{"id":7}' }] });
    } finally {
      await producer.disconnect();
    }
    const e = await tap.next();
    assert.equal(e.outcome, 'delivered');
    assert.equal(e.deliveries[0].offset, '-1');
    await eventually(async () => assert.deepEqual(await counts(), { received: 7, delivered: 4, failed: 1, invalid: 1, rejected: 1, tagged: 0 }));
  });

  it('counts only the invalid records of a batch as tagged, the valid ones after them as delivered', async () => {
    const r = await kcatProduceLines(proxy, taggedTopic, ['{"id":"one"}', '{"id":2}', '{"id":3}'], ['linger.ms=50']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => assert.deepEqual(await counts('tagged-in'), { received: 3, delivered: 2, failed: 0, invalid: 0, rejected: 0, tagged: 1 }));
    const stored = await kcatConsumeAll(kafka.bootstrap, taggedTopic);
    assert.deepEqual(
      stored.map((s) => s.headers._asyncapi_eg_validation_error !== undefined),
      [true, false, false],
    );
  });

  // Last: it stops the gateway, whose shutdown logs what the warning counted and had not logged yet.
  it('logs records failed at most once per route per interval, the rest counted in the next line, not a line per partition', async () => {
    await kafka.failRequests(PRODUCE, 1, TOPIC_AUTHORIZATION_FAILED);
    const producer = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
    await producer.connect();
    try {
      // One request, a record to each of the topic's three partitions.
      const err = await producer.send({ topic: spreadTopic, messages: [0, 1, 2].map((partition) => ({ partition, value: `{"id":${partition}}` })) }).then(
        () => undefined,
        (e: { type?: string }) => e,
      );
      assert.equal(err?.type, 'TOPIC_AUTHORIZATION_FAILED');
    } finally {
      await producer.disconnect();
    }
    await eventually(async () => assert.equal((await counts('spread-in')).failed, 3));
    const first = await gw.waitForLog((l) => l.msg === 'records failed' && l.route === 'spread-in');
    assert.equal(first.level, 'warn');
    assert.deepEqual([first.records, first.partitions, first.code], [1, 1, 'EG_KAFKA_ERROR']);
    // Records the cluster answers with an error after a reload retired their route at its drain
    // timeout (500 ms): one line came at once and the others' count was lost when the process
    // exited before the interval's end.
    await kafka.failRequests(PRODUCE, 1, TOPIC_AUTHORIZATION_FAILED);
    await kafka.delayAnswers(1, 1500);
    const late = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
    let sent: Promise<unknown> | undefined;
    try {
      await late.connect();
      sent = late.send({ topic: lateTopic, messages: [0, 1, 2].map((partition) => ({ partition, value: `{"id":${partition}}` })) }).catch((e: unknown) => e);
      await eventually(async () => assert.equal((await counts('late-in')).received, 3));
      assert.equal((await gw.reconfigure(config('[ { transform: "$" } ]'))).msg, 'config reloaded');
      await sent;
    } finally {
      await kafka.delayAnswers(1, 0);
      await late.disconnect();
    }
    await gw.waitForLog((l) => l.msg === 'records failed' && l.route === 'late-in');
    await gw.stop();
    const lateLines = gw.logs.filter((l) => l.msg === 'records failed' && l.route === 'late-in');
    assert.deepEqual([lateLines.reduce((n, l) => n + Number(l.records), 0), lateLines.reduce((n, l) => n + Number(l.partitions), 0)], [3, 3]);
    const lines = gw.logs.filter((l) => l.msg === 'records failed' && l.route === 'spread-in');
    assert.deepEqual(
      lines.map((l) => [l.records, l.partitions]),
      [
        [1, 1],
        [2, 2],
      ],
    );
  });
});

/** The byte where a magic-2 batch's first record starts (its length varint): after the 61-byte batch header. */
const FIRST_RECORD = 61;
/** A batch's record count (int32), and its CRC-32C (int32) over the bytes from CRC_FROM on. */
const RECORD_COUNT = 57;
const CRC_FROM = 21;
const INVALID_RECORD = 87;
/** A Kafka broker's answer to a batch whose bytes do not match its CRC-32C; clients send it again. */
const CORRUPT_MESSAGE = 2;

/**
 * Record batches a client sends that the gateway cannot read, or must not rewrite: the request is
 * refused with INVALID_RECORD and a message naming the problem, nothing is written, and the listener
 * stays up (the connection is not closed as a bad request: the request itself was readable).
 */
describe('kafka listener: record batches that cannot be read or rewritten', () => {
  let kafka: KafkaCluster;
  let proxy: string;
  let checked: string;
  let tagged: string;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    checked = kafka.topic('unreadable');
    tagged = kafka.topic('unrewritable');
    await kafka.createTopic(checked, 1);
    await kafka.createTopic(tagged, 1);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: checked-in
    from: { listener: kafka-in, topic: ${checked} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: tagged-in
    from: { listener: kafka-in, topic: ${tagged} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: tag } } ]
`,
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });
  after(async () => {
    await kafka?.stop();
  });

  const closedByProxy = async (): Promise<number> => (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').closedByProxy ?? 0;
  /** `batch` with its length field set to its size (after a test changed its records). */
  const sized = (batch: Buffer) => {
    batch.writeInt32BE(batch.length - 12, 8);
    return batch;
  };
  /** `batch` with its CRC-32C written again after a test changed its bytes. */
  const withCrc = (batch: Buffer) => {
    batch.writeUInt32BE(crc32c(batch.subarray(CRC_FROM)) >>> 0, CRC_FROM - 4);
    return batch;
  };
  /** After a refusal: a good record goes through, and it is the only one the topic has. */
  const onlyGoodOneWritten = async (topic: string) => {
    const r = await kcatProduceLines(proxy, topic, ['{"id":1}']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, topic)).map((s) => s.value),
      ['{"id":1}'],
    );
  };

  it('refuses a record whose length varint runs past 5 bytes, naming it', async () => {
    const good = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":0}') });
    // With a CRC of its own: a hostile producer's batch, not one damaged on the way (the case below).
    const batch = withCrc(sized(Buffer.concat([good.subarray(0, FIRST_RECORD), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01])])));
    const before = await closedByProxy();
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: checked, partition: 0, batch });
    assert.equal(answer.errorCode, INVALID_RECORD);
    assert.equal(answer.errorMessage, "route 'checked-in' refused record 0: cannot read the batch: varint longer than 5 bytes");
    assert.equal(await closedByProxy(), before);
    await onlyGoodOneWritten(checked);
  });

  it('refuses a batch whose record count is negative, naming it, and keeps the connection (as a Kafka broker does)', async () => {
    const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":0}') });
    batch.writeInt32BE(-3, RECORD_COUNT);
    batch.writeUInt32BE(crc32c(batch.subarray(CRC_FROM)) >>> 0, CRC_FROM - 4);
    const before = await closedByProxy();
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: checked, partition: 0, batch });
    assert.equal(answer.errorCode, INVALID_RECORD);
    assert.equal(answer.errorMessage, "route 'checked-in' refused record 0: cannot read the batch: record count -3 is negative");
    assert.equal(await closedByProxy(), before);
  });

  it('refuses a batch whose length runs past the records sent, naming it', async () => {
    const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":0}') });
    batch.writeInt32BE(batch.length + 100, 8);
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: tagged, partition: 0, batch });
    assert.equal(answer.errorCode, INVALID_RECORD);
    assert.match(answer.errorMessage ?? '', /^route 'tagged-in' cannot read these records: record batch length \d+ does not fit the \d+ bytes left$/);
  });

  it('refuses a batch with a wrong CRC that a step would rewrite with CORRUPT_MESSAGE, as a Kafka broker does, rather than sending it on with a good CRC', async () => {
    // Invalid (id is no integer): the tag step adds a header, so the batch would be rebuilt, with a CRC of its own.
    const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":"x"}') });
    const at = batch.indexOf('"x"');
    batch[at + 1] = 'y'.charCodeAt(0); // after the CRC was computed: the record is not what its producer sent
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: tagged, partition: 0, batch });
    assert.equal(answer.errorCode, CORRUPT_MESSAGE);
    assert.match(answer.errorMessage ?? '', /^route 'tagged-in' refused record 0: record batch CRC mismatch \([0-9a-f]{1,8} stored, [0-9a-f]{1,8} computed\)$/);
    await onlyGoodOneWritten(tagged);
  });

  // A route without `to` does not check the CRC of the batches it sends on (the cluster does), but
  // one whose records it refuses or cannot read is checked before it answers: a record damaged on
  // the way is not the producer's to drop as invalid (INVALID_RECORD, which no client retries).
  it('answers CORRUPT_MESSAGE, not INVALID_RECORD, for a damaged batch whose record a route refuses or cannot read', async () => {
    const refused = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":17}') });
    refused[refused.indexOf('{"id":17}') + 6] = 'x'.charCodeAt(0); // after the CRC was computed: `{"id":x7}`, no JSON object
    const good = recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":0}') });
    const unreadable = sized(Buffer.concat([good.subarray(0, FIRST_RECORD), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x01])]));
    for (const batch of [refused, unreadable]) {
      const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: checked, partition: 0, batch });
      assert.equal(answer.errorCode, CORRUPT_MESSAGE);
      assert.match(answer.errorMessage ?? '', /^route 'checked-in' refused record 0: record batch CRC mismatch \([0-9a-f]{1,8} stored, [0-9a-f]{1,8} computed\)$/);
    }
  });
});
