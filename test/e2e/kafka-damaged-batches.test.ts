import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { KafkaRecord } from '../../src/codecs/record-batch.js';
import { crc32c } from '../../src/codecs/crc32c.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { committedOffsets, deadLetters, encodedBatch, kcatConsume, kcatConsumeAll, produceBatch, produceTo, startKafka, type KafkaCluster } from '../helpers/kafka.js';

const record = (offsetDelta: number, value: string): KafkaRecord => ({ attributes: 0, timestampDelta: offsetDelta, offsetDelta, key: null, value: Buffer.from(value), headers: [] });

/** `batch` with its record count (at 57) set to `count`, its CRC-32C written again: what a damaged log or a hostile producer holds. */
function claiming(batch: Buffer, count: number): Buffer {
  batch.writeInt32BE(count, 57);
  batch.writeUInt32BE(crc32c(batch.subarray(21)) >>> 0, 17);
  return batch;
}

/**
 * Record batches whose own counts are wrong: a record count above the records the batch holds, an
 * offset delta past the batch's last. A Kafka broker refuses them on produce, but librdkafka's mock
 * cluster stores a batch as it is sent, as a damaged log would serve it. kafkajs' batch decoder
 * threw RangeError at the first (the whole fetch failed, and again at each restart of the
 * consumer: nothing after it was ever read) and put the second's record at the offset it claimed.
 * Each is one undecodable batch: dead-lettered, the records after it and the other partition going on.
 */
describe('Kafka record batches whose counts do not match their records', () => {
  let kafka: KafkaCluster;
  const t = { src: '', copied: '', dlq: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    // The copies land in one partition, so their order is the order they were written in.
    for (const topic of Object.values(t)) await kafka.createTopic(topic, topic === t.copied ? 1 : 2);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
routes:
  - name: tolerant
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.copied} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
`,
  );
  after(async () => {
    await kafka?.stop();
  });

  it('dead-letters each such batch whole, as its bytes, and copies the records after it and on the other partition', async () => {
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"before"}');
    const short = claiming(await encodedBatch([record(0, '{"n":"held 1"}'), record(1, '{"n":"held 2"}'), record(2, '{"n":"held 3"}')]), 4);
    await produceBatch(kafka, t.src, 0, short);
    // Its last record claims offset delta 9 in a batch whose last is 2.
    await produceBatch(kafka, t.src, 0, await encodedBatch([record(0, '{"n":"d0"}'), record(1, '{"n":"d1"}'), record(9, '{"n":"d9"}')]));
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"after"}');
    await produceTo(kafka.bootstrap, t.src, 1, '{"n":"other partition"}');

    const copied = await kcatConsume(kafka.bootstrap, t.copied, 3, 30000);
    const values = copied.map((r) => JSON.parse(r.value!).n);
    assert.deepEqual(
      values.filter((n) => n !== 'other partition'),
      ['before', 'after'],
    );
    assert.ok(values.includes('other partition'));

    const dead = await deadLetters(kafka, t.dlq, 2);
    const bySource = new Map(dead.map((m) => [JSON.parse(String(m.headers!._eventgate_source)).offset as string, m]));
    assert.deepEqual([...bySource.keys()].sort(), ['1', '5']);
    const first = bySource.get('1')!;
    assert.deepEqual(JSON.parse(String(first.headers!._eventgate_source)), { topic: t.src, partition: 0, offset: '1', lastOffset: '3' });
    const error = JSON.parse(String(first.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_BATCH');
    assert.equal(error.detail, 'a record batch could not be decoded: the batch claims 4 records but holds 3');
    // The batch as the cluster served it: its base offset is the one the cluster gave it.
    const sent = Buffer.from(short);
    sent.writeBigInt64BE(1n, 0);
    assert.deepEqual(first.value, sent);
    // The mock cluster gave the first batch the four offsets its count claims (1 to 4): the second begins at 5.
    const second = bySource.get('5')!;
    assert.deepEqual(JSON.parse(String(second.headers!._eventgate_source)), { topic: t.src, partition: 0, offset: '5', lastOffset: '7' });
    assert.equal(JSON.parse(String(second.headers!._eventgate_error)).detail, "a record batch could not be decoded: record 2's offset delta 9 is past the batch's last, 2");

    // Committed past both batches: the partition moved on, and its consumer never crashed.
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-tolerant', t.src))[0], '9'), 15000, 200);
    assert.equal(
      gw.logs.find((l) => /crash/i.test(String(l.msg))),
      undefined,
    );
    const health = (await gw.status()).routes.find((r: { name: string }) => r.name === 'tolerant').consumer;
    assert.deepEqual(health, { ready: true });
  });
});

/**
 * A record batch whose bytes do not match its CRC-32C: one value changed after its producer wrote
 * the batch, as a damaged disk or a broken network card leaves it. A Kafka broker refuses it on
 * produce (CORRUPT_MESSAGE), but librdkafka's mock cluster stores it as sent, as a log damaged
 * afterwards would serve it. Java's consumer checks every batch's CRC (`check.crcs`, true by
 * default); kafkajs never did, and the gateway delivered the damaged record as it read. Now the
 * batch is undecodable (dead-lettered as its bytes), unless the broker's `consumer.checkCrcs` is false.
 */
describe('Kafka record batches whose bytes do not match their CRC-32C', () => {
  let kafka: KafkaCluster;
  const t = { src: '', copied: '', unchecked: '', dlq: '' };
  let batch: Buffer;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 1);
    batch = await encodedBatch([record(0, '{"n":"held 1"}'), record(1, '{"n":"held 2"}'), record(2, '{"n":"held 3"}')]);
    // After the CRC was written: "held 2" reads "hold 2".
    batch[batch.indexOf('held 2') + 1] = 'o'.charCodeAt(0);
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"before"}');
    await produceBatch(kafka, t.src, 0, batch);
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"after"}');
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
  trusting: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml.replace(/ }$/, ', checkCrcs: false }')} }
routes:
  - name: checking
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.copied} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
  - name: trusting
    from: { broker: trusting, topic: ${t.src} }
    to: { broker: trusting, topic: ${t.unchecked} }
`,
  );
  after(async () => {
    await kafka?.stop();
  });

  it('dead-letters such a batch whole, as its bytes, naming the CRC stored and the one computed, and copies the records after it', async () => {
    const copied = await kcatConsume(kafka.bootstrap, t.copied, 2, 30000);
    assert.deepEqual(
      copied.map((r) => JSON.parse(r.value!).n),
      ['before', 'after'],
    );
    const [dead] = await deadLetters(kafka, t.dlq, 1);
    assert.deepEqual(JSON.parse(String(dead!.headers!._eventgate_source)), { topic: t.src, partition: 0, offset: '1', lastOffset: '3' });
    const error = JSON.parse(String(dead!.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_BATCH');
    const stored = batch.readUInt32BE(17).toString(16);
    const computed = (crc32c(batch.subarray(21)) >>> 0).toString(16);
    assert.equal(error.detail, `a record batch could not be decoded: record batch CRC mismatch (${stored} stored, ${computed} computed)`);
    const served = Buffer.from(batch);
    served.writeBigInt64BE(1n, 0);
    assert.deepEqual(dead!.value, served);
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-checking', t.src))[0], '5'), 15000, 200);
    assert.deepEqual((await gw.status()).routes.find((r: { name: string }) => r.name === 'checking').consumer, { ready: true });
  });

  it('delivers its records as they read on a broker whose consumer.checkCrcs is false, as earlier releases did', async () => {
    const copied = await kcatConsume(kafka.bootstrap, t.unchecked, 5, 30000);
    assert.deepEqual(
      copied.map((r) => JSON.parse(r.value!).n),
      ['before', 'held 1', 'hold 2', 'held 3', 'after'],
    );
  });
});

/**
 * An operator whose partition stopped at a batch that fails its CRC, with no `deadletter` to send
 * it to, may choose to read it as it is: a reload that sets the broker's `consumer.checkCrcs` to
 * false replaces the broker (a consumer key), and the new member reads the partition from the
 * committed offset, the batch's records included.
 */
describe('a partition stopped at a batch that fails its CRC, then a reload setting checkCrcs false', () => {
  let kafka: KafkaCluster;
  const t = { src: '', copied: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 1);
    const batch = await encodedBatch([record(0, '{"n":"held 1"}'), record(1, '{"n":"held 2"}')]);
    batch[batch.indexOf('held 2') + 1] = 'o'.charCodeAt(0);
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"before"}');
    await produceBatch(kafka, t.src, 0, batch);
    await produceTo(kafka.bootstrap, t.src, 0, '{"n":"after"}');
  });
  const config = (checkCrcs: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml.replace(/ }$/, `, checkCrcs: ${checkCrcs} }`)} }
routes:
  - name: stopped
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.copied} }
`;
  const gw = useGateway(() => config(true));
  after(async () => {
    await kafka?.stop();
  });

  it('stops there, then reads the batch as it is, once each, and what follows it', async () => {
    const [first] = await kcatConsume(kafka.bootstrap, t.copied, 1, 30000);
    assert.equal(JSON.parse(first!.value!).n, 'before');
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-stopped', t.src))[0], '1'), 15000, 200);
    await eventually(async () => assert.match(JSON.stringify((await gw.status()).routes.find((r: { name: string }) => r.name === 'stopped').consumer), /CRC mismatch/), 15000, 200);
    await gw.reconfigure(config(false), undefined, { whole: true });
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-stopped', t.src))[0], '4'), 30000, 200);
    const copied = await kcatConsumeAll(kafka.bootstrap, t.copied, 15000);
    assert.deepEqual(
      copied.map((r) => JSON.parse(r.value!).n),
      ['before', 'held 1', 'hold 2', 'after'],
    );
    assert.deepEqual((await gw.status()).routes.find((r: { name: string }) => r.name === 'stopped').consumer, { ready: true });
  });
});
