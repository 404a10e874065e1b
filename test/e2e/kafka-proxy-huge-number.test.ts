import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduceLines, produceRaw, recordBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';

const INVALID_RECORD = 87;

/**
 * A record produced through the kafka listener whose JSON value holds a number beyond a double
 * (`1e400`, which JSON.parse reads as Infinity): a route with steps or targets refuses its request
 * with INVALID_RECORD, naming the number's place, as the HTTP listener refuses such a body, whether
 * the record is judged from its bytes (validate steps json-bytes.ts reads) or decoded. Before, a
 * validate step passed it (Infinity is a number, and >= 0), and a transform wrote it on as null.
 */
describe('kafka listener: a record with a number beyond a double', () => {
  let kafka: KafkaCluster;
  let proxy: string;
  const t = { plain: '', bounded: '', shaped: '', sent: '', copy: '', free: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(`huge-${k}`);
      await kafka.createTopic(t[k], 1);
    }
  });
  // `plain-in` checks `total` with scanNumber (no bound), `bounded-in` with the number code
  // generated for its bound; both are judged from the records' bytes.
  const gw = useGateway(
    () => `
version: 1
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: plain-in
    from: { listener: kafka-in, topic: ${t.plain} }
    through: [ { validate: { schema: { type: object, required: [id], properties: { id: { type: integer }, total: { type: number } } }, onInvalid: reject } } ]
  - name: bounded-in
    from: { listener: kafka-in, topic: ${t.bounded} }
    through: [ { validate: { schema: { type: object, required: [id], properties: { id: { type: integer }, total: { type: number, minimum: 0 } } }, onInvalid: reject } } ]
  - name: shaped-in
    from: { listener: kafka-in, topic: ${t.shaped} }
    through: [ { transform: '{"id": id, "total": total}' } ]
  - name: sent-in
    from: { listener: kafka-in, topic: ${t.sent} }
    to: { broker: cluster, topic: ${t.copy} }
  - name: free-in
    from: { listener: kafka-in, topic: ${t.free} }
`,
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });
  after(async () => {
    await kafka?.stop();
  });

  const values = async (topic: string) => (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value);
  const v8 = (topic: string, value: string) =>
    produceRaw(proxy, { version: 8, transactionalId: null, topic, partition: 0, batch: recordBatch({ attributes: 0, key: null, value: Buffer.from(value) }) });

  it('is refused by a validate step judging bytes, with or without a bound, and by one judging decoded values', async () => {
    for (const topic of [t.plain, t.bounded]) {
      // The second value has a repeated name: decoded and judged by ajv.
      for (const huge of ['{"id":1,"total":1e400}', '{"id":1,"id":2,"total":1e400}', '{"id":1,"total":-1E+400}', `{"id":1,"total":${'9'.repeat(309)}}`, '{"id":1,"more":[0,{"a/b":2e308}]}']) {
        const r = await kcatProduceLines(proxy, topic, [huge]);
        assert.match(r.stderr, /Broker: Broker failed to validate record/, `${topic}: ${huge}`);
      }
      const ok = await kcatProduceLines(proxy, topic, ['{"id":3,"total":1e2}', '{"id":4,"total":1e-400}', `{"id":5,"total":${'9'.repeat(308)}}`]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(await values(topic), ['{"id":3,"total":1e2}', '{"id":4,"total":1e-400}', `{"id":5,"total":${'9'.repeat(308)}}`]);
    }
  });

  it("names the number's place in Produce v8's error_message", async () => {
    const answer = await v8(t.bounded, '{"id":1,"more":[0,{"a/b":2e308}]}');
    assert.deepEqual(answer, {
      errorCode: INVALID_RECORD,
      errorMessage: "route 'bounded-in' refused record 0: the record has a number too large to represent (over ±1.8e308) at /more/1/a~1b",
    });
    const whole = await v8(t.plain, '-1e999');
    assert.deepEqual(whole, { errorCode: INVALID_RECORD, errorMessage: "route 'plain-in' refused record 0: the record has a number too large to represent (over ±1.8e308)" });
  });

  it('is refused by a transform and by a route with targets, which wrote it on as null', async () => {
    for (const topic of [t.shaped, t.sent]) {
      const r = await kcatProduceLines(proxy, topic, ['{"id":1,"total":1e400}']);
      assert.match(r.stderr, /Broker: Broker failed to validate record/, topic);
      assert.equal((await kcatProduceLines(proxy, topic, ['{"id":2,"total":1}'])).code, 0);
    }
    assert.deepEqual(await values(t.shaped), ['{"id":2,"total":1}']);
    assert.deepEqual(await values(t.copy), ['{"id":2,"total":1}']);
  });

  it('goes on as its bytes through a route with neither steps nor targets', async () => {
    const r = await kcatProduceLines(proxy, t.free, ['{"id":1,"total":1e400}']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await values(t.free), ['{"id":1,"total":1e400}']);
  });
});
