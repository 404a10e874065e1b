import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { KafkaRecord, RecordHeader } from '../../src/codecs/record-batch.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { claimingHeaders, committedOffsets, deadLetters, encodedBatch, kcatConsume, produceBatch, produceTo, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { fetch } from '../helpers/http.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const record = (offsetDelta: number, value: string, headers: RecordHeader[] = []): KafkaRecord => ({
  attributes: 0,
  timestampDelta: offsetDelta,
  offsetDelta,
  key: null,
  value: Buffer.from(value),
  headers,
});

/** The bytes a batch holds for `r`: its length, then its fields (the header count as it claims). */
async function recordAsHeld(r: KafkaRecord): Promise<Buffer> {
  const one = await encodedBatch([r]);
  return one.subarray(61);
}

/**
 * Records that claim more headers than their bytes hold, or a header count below -1: a Kafka broker
 * refuses them on produce, but librdkafka's mock cluster stores a batch as it is sent, as a damaged
 * log would serve it. Each is one undecodable record: dead-lettered alone, or the partition halts at
 * it; the batch's other records, the records after it and the other partitions go on.
 */
describe('Kafka records with impossible header counts', () => {
  let kafka: KafkaCluster;
  let hook: WebhookReceiver;
  const t = { src: '', copied: '', dlq: '', hookDlq: '', strict: '', strictOut: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    hook = await WebhookReceiver.start();
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    // The copies land in one partition, so their order is the order they were written in (records
    // without a key are spread over a topic's partitions, and kcat reads partitions in any order).
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
  # Several records of a partition in hand at once: the other consume loop.
  - name: hooked
    from: { broker: kafka, topic: ${t.src} }
    to: { http: { url: "${hook.url}/records", concurrency: 4 } }
    deadletter: { broker: kafka, topic: ${t.hookDlq} }
  - name: strict
    from: { broker: kafka, topic: ${t.strict} }
    to: { broker: kafka, topic: ${t.strictOut} }
`,
  );
  after(async () => {
    await hook?.stop();
    await kafka?.stop();
  });

  it('dead-letters each such record alone, as its bytes, and copies the records around it and on the other partition', async () => {
    const huge = record(1, 'claims 3,000,000 headers', claimingHeaders(3_000_000));
    const negative = record(0, 'claims -2 headers', claimingHeaders(-2));
    await produceBatch(kafka, t.src, 0, await encodedBatch([record(0, '{"n":"before"}', [{ key: 'h', value: Buffer.from('1') }]), huge, record(2, '{"n":"after"}')]));
    // A gzip batch: its records are read after decompressing, by the same decoder.
    await produceBatch(kafka, t.src, 0, await encodedBatch([negative, record(1, '{"n":"after gzip"}')], 1));
    await produceTo(kafka.bootstrap, t.src, 1, '{"n":"other partition"}');

    const copied = await kcatConsume(kafka.bootstrap, t.copied, 4, 30000);
    const values = copied.map((r) => JSON.parse(r.value!).n);
    assert.deepEqual(
      values.filter((n) => n !== 'other partition'),
      ['before', 'after', 'after gzip'],
    );
    assert.ok(values.includes('other partition'));
    assert.equal(copied.find((r) => JSON.parse(r.value!).n === 'before')!.headers.h, '1');

    const dead = await deadLetters(kafka, t.dlq, 2);
    const bySource = new Map(dead.map((m) => [JSON.parse(String(m.headers!._eventgate_source)).offset as string, m]));
    assert.deepEqual([...bySource.keys()].sort(), ['1', '3']);
    const first = bySource.get('1')!;
    assert.deepEqual(JSON.parse(String(first.headers!._eventgate_source)), { topic: t.src, partition: 0, offset: '1', lastOffset: '1' });
    const error = JSON.parse(String(first.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_RECORD');
    assert.equal(error.status, 422);
    assert.equal(error.route, 'tolerant');
    assert.match(error.detail, /^a record could not be decoded: it claims 3000000 headers in the 0 bytes after its value/);
    // The value is the record as its batch holds it: its length, then its fields.
    assert.deepEqual(first.value, await recordAsHeld(huge));
    const second = bySource.get('3')!;
    assert.equal(JSON.parse(String(second.headers!._eventgate_error)).detail, 'a record could not be decoded: its header count is -2');
    assert.deepEqual(JSON.parse(String(second.headers!._eventgate_source)), { topic: t.src, partition: 0, offset: '3', lastOffset: '3' });

    // Committed past both batches: the partition moved on.
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-tolerant', t.src))[0], '5'), 15000, 200);
    await gw.waitForLog((l) => l.msg === 'undecodable record sent to the dead-letter topic' && l.offset === '3', 15000);
    const health = (await gw.status()).routes.find((r: { name: string }) => r.name === 'tolerant').consumer;
    assert.deepEqual(health, { ready: true });

    // The route with four records in hand: the same records delivered, the same two dead-lettered.
    const posted = (await hook.received(4, 30000)).map((r) => JSON.parse(r.body).n);
    // Four in hand at once, unordered: they may arrive in any order.
    assert.deepEqual(posted.sort(), ['after', 'after gzip', 'before', 'other partition']);
    const hookDead = await deadLetters(kafka, t.hookDlq, 2);
    assert.deepEqual(hookDead.map((m) => [JSON.parse(String(m.headers!._eventgate_source)).offset, JSON.parse(String(m.headers!._eventgate_error)).code]).sort(), [
      ['1', 'EG_UNDECODABLE_RECORD'],
      ['3', 'EG_UNDECODABLE_RECORD'],
    ]);
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-hooked', t.src))[0], '5'), 15000, 200);
    assert.equal(hook.requests.length, 4);
  });

  it('without a dead-letter topic, halts that partition at the record (the records before it delivered) and says so, while the other partition goes on', async () => {
    await produceBatch(kafka, t.strict, 0, await encodedBatch([record(0, '{"n":"before"}'), record(1, 'bad', claimingHeaders(1000)), record(2, '{"n":"stuck"}')]));
    await produceTo(kafka.bootstrap, t.strict, 1, '{"n":"other partition"}');
    const out = await kcatConsume(kafka.bootstrap, t.strictOut, 2, 30000);
    assert.deepEqual(out.map((r) => JSON.parse(r.value!).n).sort(), ['before', 'other partition']);

    const line = await gw.waitForLog((l) => l.msg.startsWith('consumer stopped on a partition') && l.route === 'strict', 15000);
    assert.equal(line.level, 'error');
    assert.equal(line.offset, '1');
    const res = await fetch(`${gw.adminUrl}/readyz`);
    assert.equal(res.status, 503);
    const body = (await res.json()) as { reasons: string[] };
    assert.ok(body.reasons.includes(`route strict: partition 0 of ${t.strict} stopped at offset 1`), JSON.stringify(body));
    const health = (await gw.status()).routes.find((r: { name: string }) => r.name === 'strict').consumer;
    assert.equal(
      health.detail,
      `partition 0 of ${t.strict} stopped at offset 1: a record there cannot be decoded (it claims 1000 headers in the 0 bytes after its value (a header takes 2 at least)); give the route a deadletter topic to move past it`,
    );
    // The record before it is committed, nothing from it on.
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-strict', t.strict))[0], '1'), 15000, 200);
    await produceTo(kafka.bootstrap, t.strict, 1, '{"n":"sentinel"}');
    const later = await kcatConsume(kafka.bootstrap, t.strictOut, 3, 30000);
    assert.deepEqual(later.map((r) => JSON.parse(r.value!).n).sort(), ['before', 'other partition', 'sentinel']);
  });
});
