import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { eventually, type RunningGateway, startGateway, useGateway } from '../helpers/gateway.js';
import { committedOffsets, deadLetters, endOffsets, kcatConsume, kcatConsumeAll, kcatProduce, produceTo, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { fetch } from '../helpers/http.js';

const { CompressionCodecs, CompressionTypes } = kafkajs;

/**
 * A producer that lies: it marks batches as lz4 but writes bytes no lz4 decoder takes. The
 * cluster stores them as they are, as it would a batch corrupted on disk or by a buggy client.
 */
(CompressionCodecs as unknown as Record<number, unknown>)[CompressionTypes.LZ4] = () => ({
  compress: async () => Buffer.from('these bytes are no LZ4 frame, whatever the batch attributes claim'),
  decompress: async () => {
    throw new Error('the test never reads lz4');
  },
});

/** Codec id 5 is not one Kafka defines: this producer writes plain records under it. */
(CompressionCodecs as unknown as Record<number, unknown>)[5] = () => ({
  compress: async (encoder: { buffer: Buffer }) => encoder.buffer,
  decompress: async () => {
    throw new Error('the test never reads codec 5');
  },
});

async function produceCorruptBatch(bootstrap: string, topic: string, partition: number, records: number, codec: number = CompressionTypes.LZ4): Promise<void> {
  const producer = testClient(bootstrap).producer();
  await producer.connect();
  try {
    await producer.send({ topic, compression: codec, messages: Array.from({ length: records }, (_, i) => ({ partition, value: `lost ${i}` })) });
  } finally {
    await producer.disconnect();
  }
}

async function readyz(gw: RunningGateway): Promise<{ status: number; body: { reasons?: string[] } }> {
  const res = await fetch(`${gw.adminUrl}/readyz`);
  return { status: res.status, body: (await res.json()) as { reasons?: string[] } };
}

describe('no consumer stays dead', () => {
  let kafka: KafkaCluster;
  const t = { poison: '', copied: '', dlq: '', strict: '', strictOut: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 2);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
routes:
  - name: tolerant
    from: { broker: kafka, topic: ${t.poison} }
    to: { broker: kafka, topic: ${t.copied} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
  - name: strict
    from: { broker: kafka, topic: ${t.strict} }
    to: { broker: kafka, topic: ${t.strictOut} }
`,
  );
  after(async () => {
    await kafka?.stop();
  });

  it('sends a record batch it cannot decode to the dead-letter topic as raw bytes, saying why and where from, and goes on with the next records', async () => {
    await produceCorruptBatch(kafka.bootstrap, t.poison, 0, 3);
    await produceTo(kafka.bootstrap, t.poison, 0, '{"after":"the corrupt batch"}');
    await produceTo(kafka.bootstrap, t.poison, 1, '{"on":"another partition"}');
    const copied = await kcatConsume(kafka.bootstrap, t.copied, 2, 30000);
    assert.deepEqual(copied.map((r) => r.value).sort(), ['{"after":"the corrupt batch"}', '{"on":"another partition"}']);

    const [dead] = (await deadLetters(kafka, t.dlq, 1)) as [kafkajs.KafkaMessage];
    const error = JSON.parse(String(dead.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_BATCH');
    assert.equal(error.route, 'tolerant');
    assert.match(error.detail, /lz4 decompress failed/);
    assert.deepEqual(JSON.parse(String(dead.headers!._eventgate_source)), { topic: t.poison, partition: 0, offset: '0', lastOffset: '2' });
    // The value is the record batch as the cluster stored it: magic 2, lz4 (codec id 3), three records.
    const batch = dead.value!;
    assert.equal(batch.readInt8(16), 2);
    assert.equal(batch.readInt16BE(21) & 0x07, 3);
    assert.equal(batch.readInt32BE(57), 3);
    assert.ok(batch.includes(Buffer.from('these bytes are no LZ4 frame')));

    // Committed past the batch and the record after it: the partition moved on.
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-tolerant', t.poison))[0], '4'), 15000, 200);
    const health = (await gw.status()).routes.find((r: { name: string }) => r.name === 'tolerant').consumer;
    assert.deepEqual(health, { ready: true });
  });

  it('dead-letters a batch that names a codec Kafka does not define (id 5) the same way', async () => {
    await produceCorruptBatch(kafka.bootstrap, t.poison, 1, 2, 5);
    await produceTo(kafka.bootstrap, t.poison, 1, '{"after":"the unknown codec"}');
    await kcatConsume(kafka.bootstrap, t.copied, 3, 30000);
    const dead = await deadLetters(kafka, t.dlq, 2);
    const unknown = dead.find((m) => JSON.parse(String(m.headers!._eventgate_source)).partition === 1)!;
    const error = JSON.parse(String(unknown.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_BATCH');
    assert.match(error.detail, /codec id 5, which Kafka does not define/);
    assert.deepEqual(JSON.parse(String(unknown.headers!._eventgate_source)), { topic: t.poison, partition: 1, offset: '1', lastOffset: '2' });
  });

  it('without a dead-letter topic, stops on that partition and says so in /readyz, /admin/status and the log, while other partitions go on', async () => {
    await produceCorruptBatch(kafka.bootstrap, t.strict, 0, 2);
    await produceTo(kafka.bootstrap, t.strict, 0, '{"stuck":"behind the corrupt batch"}');
    await produceTo(kafka.bootstrap, t.strict, 1, '{"on":"another partition"}');
    const [other] = await kcatConsume(kafka.bootstrap, t.strictOut, 1, 30000);
    assert.deepEqual(JSON.parse(other!.value!), { on: 'another partition' });

    const line = await gw.waitForLog((l) => l.msg.startsWith('consumer stopped on a partition') && l.route === 'strict', 15000);
    assert.equal(line.level, 'error');
    const r = await readyz(gw);
    assert.equal(r.status, 503);
    // An open /readyz names the state; /admin/status (behind the admin token, if any) has the cause.
    assert.ok(r.body.reasons!.includes(`route strict: partition 0 of ${t.strict} stopped at offset 0`), JSON.stringify(r.body));
    const health = (await gw.status()).routes.find((x: { name: string }) => x.name === 'strict').consumer;
    assert.equal(health.ready, false);
    assert.match(
      health.detail,
      new RegExp(`^partition 0 of ${t.strict} stopped at offset 0: a record batch there cannot be decoded \\(lz4 decompress failed: .*\\); give the route a deadletter topic to move past it$`),
    );
    // Nothing of the corrupt batch, nor what follows it, was committed or copied.
    assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-strict', t.strict))[0], '-1');
    await produceTo(kafka.bootstrap, t.strict, 1, '{"sentinel":true}');
    const out = await kcatConsume(kafka.bootstrap, t.strictOut, 2, 30000);
    assert.deepEqual(out.map((x) => x.value).sort(), ['{"on":"another partition"}', '{"sentinel":true}']);
  });
});

describe('a corrupt batch in the middle of a fetch', () => {
  let kafka: KafkaCluster;
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
  });
  after(async () => {
    await kafka?.stop();
  });

  it('copies the records before it once, dead-letters it, and copies the records after it, all read in one fetch', async () => {
    const [from, out, dlq] = [kafka.topic('mid'), kafka.topic('mid-out'), kafka.topic('mid-dlq')];
    for (const topic of [from, out, dlq]) await kafka.createTopic(topic, 1);
    // Three batches written before any consumer reads the topic: the route's first fetch has them all.
    const producer = testClient(kafka.bootstrap).producer();
    await producer.connect();
    try {
      await producer.send({ topic: from, messages: [{ value: '{"before":1}' }, { value: '{"before":2}' }] });
    } finally {
      await producer.disconnect();
    }
    await produceCorruptBatch(kafka.bootstrap, from, 0, 3);
    await produceTo(kafka.bootstrap, from, 0, '{"after":1}');

    const gw = await startGateway(`
version: 1
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
routes:
  - name: mid
    from: { broker: kafka, topic: ${from} }
    to: { broker: kafka, topic: ${out} }
    deadletter: { broker: kafka, topic: ${dlq} }
`);
    try {
      await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-mid', from))[0], '6'), 30000, 200);
    } finally {
      await gw.stop();
    }
    // Each good record once, in order; the corrupt batch's three records are one dead letter.
    assert.deepEqual((await endOffsets(kafka.bootstrap, out))[0], '3');
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, out)).map((r) => r.value),
      ['{"before":1}', '{"before":2}', '{"after":1}'],
    );
    const dead = await kcatConsumeAll(kafka.bootstrap, dlq);
    assert.equal(dead.length, 1);
    assert.deepEqual(JSON.parse(dead[0]!.headers._eventgate_source!), { topic: from, partition: 0, offset: '2', lastOffset: '4' });
  });
});

describe('a consumer that crashes is started again', () => {
  let kafka: KafkaCluster;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
  });
  const gw = useGateway();
  after(async () => {
    await kafka?.stop();
  });

  /** A route copying a topic of its own to another; the topics are made first. */
  const copyRoute = async (name: string) => {
    const src = kafka.topic('src');
    const dst = kafka.topic('dst');
    await kafka.createTopic(src, 1);
    await kafka.createTopic(dst, 1);
    const yaml = `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
routes:
  - name: ${name}
    from: { broker: kafka, topic: ${src} }
    to: { broker: kafka, topic: ${dst} }
`;
    return { src, dst, yaml };
  };

  it('restarts it with backoff, counts the crashes per route, says why in /readyz meanwhile, and then consumes', async () => {
    const { src, dst, yaml } = await copyRoute('flaky');
    // The coordinator refuses the next joins with GROUP_AUTHORIZATION_FAILED (30): kafkajs gives up on the consumer ("restart: false").
    await kafka.failRequests(11, 3, 30);
    await gw.start(yaml);
    const crashed = await gw.waitForLog((l) => l.msg === 'consumer crashed; starting a new one' && l.route === 'flaky', 20000);
    // The log names the code the cluster answered, kafkajs' words for it beside it.
    assert.equal(crashed.kafkaError, 'GROUP_AUTHORIZATION_FAILED (30)', JSON.stringify(crashed));
    // Until the backoff's wait is over (0.5, 1, then 2 s: three joins are refused), /readyz and
    // /admin/status say when it starts again.
    await eventually(
      async () => {
        const down = await readyz(gw);
        assert.equal(down.status, 503);
        assert.ok(
          down.body.reasons!.some((r) => /^route flaky: consumer crashed, restarting in \d+ ms$/.test(r)),
          JSON.stringify(down.body),
        );
        const health = (await gw.status()).routes.find((x: { name: string }) => x.name === 'flaky').consumer;
        assert.match(health.detail, /^consumer crashed, restarting in \d+ ms: .*(authoriz|Authoriz)/);
      },
      30000,
      25,
    );
    // Once the wait is over, the new consumer connects and joins the group (until the crashed
    // member's session runs out, on the mock): /readyz says so, not a restart still to come.
    const restarted = 'route flaky: consumer crashed and was started again, not consuming yet';
    await eventually(
      async () => {
        const r = await readyz(gw);
        assert.equal(r.status, 503);
        assert.ok(r.body.reasons!.includes(restarted), JSON.stringify(r.body));
      },
      30000,
      25,
    );

    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'flaky', 60000);
    await kcatProduce(kafka.bootstrap, src, [{ value: '{"after":"the crashes"}' }]);
    const [copied] = await kcatConsume(kafka.bootstrap, dst, 1, 30000);
    assert.deepEqual(JSON.parse(copied!.value!), { after: 'the crashes' });
    assert.equal((await readyz(gw)).status, 200);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const crashes = /^eventgate_kafka_consumer_crashes_total\{broker="kafka",route="flaky"\} (\d+)$/m.exec(metrics);
    assert.ok(
      crashes && Number(crashes[1]) >= 1,
      metrics
        .split('\n')
        .filter((l) => l.includes('crashes'))
        .join('\n'),
    );
  });

  it('names the code of a crash whose words fit several causes: INVALID_REQUEST (42) for a SyncGroup, and consumes after it', async () => {
    const { src, dst, yaml } = await copyRoute('synced-late');
    // What the mock answers a member whose SyncGroup arrives after the leader's completed the sync
    // (docs/testing.md): kafkajs does not retry it, and says only "... a request being malformed ...".
    await kafka.failRequests(14, 1, 42);
    await gw.start(yaml);
    const crashed = await gw.waitForLog((l) => l.msg === 'consumer crashed; starting a new one' && l.route === 'synced-late', 20000);
    assert.equal(crashed.kafkaError, 'INVALID_REQUEST (42)', JSON.stringify(crashed));
    assert.match(String(crashed.err), /request being malformed/);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'synced-late', 60000);
    await kcatProduce(kafka.bootstrap, src, [{ value: '{"after":"the sync"}' }]);
    const [copied] = await kcatConsume(kafka.bootstrap, dst, 1, 30000);
    assert.deepEqual(JSON.parse(copied!.value!), { after: 'the sync' });
  });
});
