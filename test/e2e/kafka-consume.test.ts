import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';

describe('Kafka topics consumed to websockets, other topics and memory topics', () => {
  let kafka: KafkaCluster;
  const t = { live: '', src: '', dst: '', poison: '', good: '', dlq: '', mem: '' };

  before(async () => {
    kafka = await startKafka();
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 4);
  });
  const gw = useGateway(
    () => `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
  local: { kind: memory }
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: live
    from: { broker: kafka, topic: ${t.live} }
    to: { listener: ws, path: /live, format: envelope }
  - name: copy
    from: { broker: kafka, topic: ${t.src}, fromBeginning: true }
    through:
      - filter: kind = "light"
      - transform: '{"id": id, "lux": lumens * 10}'
      - headers: { set: { x-copied-by: '"eventgate"' } }
    to: { broker: kafka, topic: ${t.dst}, key: $string(id) }
  - name: picky
    from: { broker: kafka, topic: ${t.poison}, fromBeginning: true }
    through:
      - validate: { schema: { type: object, required: [n], properties: { n: { type: integer } } } }
    to: { broker: kafka, topic: ${t.good} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
  - name: to-memory
    from: { broker: kafka, topic: ${t.mem}, fromBeginning: true }
    to: { broker: local, topic: lights }
  - name: from-memory
    from: { broker: local, topic: lights }
    to: { listener: ws, path: /mem }
`,
  );
  before(async () => {
    // Until a group has its partitions and offsets, a record produced to a `latest` group is not its to read.
    await Promise.all(['live', 'copy', 'picky', 'to-memory'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000)));
  });
  after(async () => {
    await kafka?.stop();
  });

  it('streams records kcat produces to websocket clients as envelopes with key, headers and value', async () => {
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    await kcatProduce(kafka.bootstrap, t.live, [
      { key: 'lamp-1', value: '{"lux":3}', headers: { 'ce-type': 'light.measured', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } },
      { key: 'lamp-1', value: 'plain text' },
    ]);
    const first = await client.next(10000);
    assert.equal(first.topic, t.live);
    assert.equal(typeof first.partition, 'number');
    assert.equal(first.offset, '0');
    assert.equal(first.key, 'lamp-1');
    // The record's headers travel on; its traceparent continues the producer's trace in the route's own span (docs/operations.md).
    const { traceparent, ...rest } = first.headers;
    assert.deepEqual(rest, { 'ce-type': 'light.measured' });
    assert.match(traceparent, /^00-4bf92f3577b34da6a3ce929d0e0e4736-(?!00f067aa0ba902b7)[0-9a-f]{16}-01$/);
    assert.deepEqual(first.value, { lux: 3 });
    assert.equal(typeof first.timestamp, 'number');
    const second = await client.next(10000);
    assert.equal(second.value, 'plain text');
    assert.deepEqual(Object.keys(second.headers), ['traceparent'], 'a record without trace context starts a trace');
    assert.equal(second.offset, '1');
    client.close();
  });

  it('copies records to another topic through a chain (filter, transform, headers, key)', async () => {
    // One key, so one source partition: the route handles the three records in this order.
    await kcatProduce(kafka.bootstrap, t.src, [
      { key: 'street-9', value: '{"id":1,"kind":"light","lumens":5}', headers: { origin: 'sensor' } },
      { key: 'street-9', value: '{"id":2,"kind":"noise","db":70}', headers: { origin: 'sensor' } },
      { key: 'street-9', value: '{"id":3,"kind":"light","lumens":7}', headers: { origin: 'sensor' } },
    ]);
    const copied = await kcatConsume(kafka.bootstrap, t.dst, 2);
    copied.sort((a, b) => Number(a.key) - Number(b.key));
    assert.deepEqual(
      copied.map((r) => r.key),
      ['1', '3'],
    );
    assert.deepEqual(
      copied.map((r) => JSON.parse(r.value!)),
      [
        { id: 1, lux: 50 },
        { id: 3, lux: 70 },
      ],
    );
    for (const r of copied) {
      const { traceparent, ...rest } = r.headers;
      assert.deepEqual(rest, { origin: 'sensor', 'x-copied-by': 'eventgate' });
      assert.match(traceparent!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    }
    // Record 2 was handled between 1 and 3: had it passed the filter, it would be there by now.
    assert.equal((await kcatConsumeAll(kafka.bootstrap, t.dst)).length, 2);
  });

  it('sends a poison record to the dead-letter topic and moves on to the next record of its partition', async () => {
    await kcatProduce(kafka.bootstrap, t.poison, [
      { key: 'p', value: '{"n":"not a number"}', headers: { origin: 'test' } },
      { key: 'p', value: 'not even JSON' },
      { key: 'p', value: '{"n":2}' },
    ]);
    const [good] = await kcatConsume(kafka.bootstrap, t.good, 1);
    assert.deepEqual(JSON.parse(good!.value!), { n: 2 });
    const dead = await kcatConsume(kafka.bootstrap, t.dlq, 2);
    dead.sort((a, b) => a.offset - b.offset);
    assert.deepEqual(
      dead.map((r) => r.value),
      ['{"n":"not a number"}', 'not even JSON'],
    );
    assert.equal(dead[0]!.key, 'p');
    assert.equal(dead[0]!.headers.origin, 'test');
    const why = JSON.parse(dead[0]!.headers._eventgate_error!);
    assert.equal(why.route, 'picky');
    assert.equal(why.code, 'EG_INVALID_MESSAGE');
    assert.deepEqual(why.errors, ['/n: must be integer']);
    assert.equal(JSON.parse(dead[1]!.headers._eventgate_error!).code, 'EG_INVALID_MESSAGE');
  });

  it('forwards Kafka records to a memory topic that other routes read', async () => {
    const client = await WsClient.connect(gw.url('ws', '/mem', 'ws'));
    await kcatProduce(kafka.bootstrap, t.mem, [{ key: 'm', value: '{"via":"memory"}' }]);
    assert.deepEqual(await client.next(10000), { via: 'memory' });
    client.close();
  });
});

describe('a record the target topic refuses for good', () => {
  let kafka: KafkaCluster;
  const t = { src: '', copy: '', dlq: '' };
  const gw = useGateway();
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) await kafka.createTopic((t[k] = kafka.topic(k)), 1);
  });
  after(async () => {
    await kafka?.stop();
  });

  it('goes to the dead-letter topic with the refusal, and the partition moves on (no retrying it for ever)', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: a real cluster cannot be made to refuse a record from here');
    await kcatProduce(kafka.bootstrap, t.src, [
      { key: 'k', value: '{"n":1}' },
      { key: 'k', value: '{"n":2}' },
    ]);
    // The gateway's first produce request (the copy of n:1) is refused as too large, as a broker
    // refuses a record over its message.max.bytes; the mock cluster itself takes any size.
    await kafka.failRequests(0, 1, 10);
    await gw.start(`
version: 1
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml} }
routes:
  - name: sized
    from: { broker: kafka, topic: ${t.src}, startFrom: earliest }
    to: { broker: kafka, topic: ${t.copy} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
`);
    const [dead] = await kcatConsume(kafka.bootstrap, t.dlq, 1, 30000);
    assert.equal(dead!.value, '{"n":1}');
    const why = JSON.parse(dead!.headers._eventgate_error!);
    assert.equal(why.code, 'EG_PAYLOAD_TOO_LARGE');
    assert.match(why.detail, /larger than it accepts/);
    const copied = await kcatConsume(kafka.bootstrap, t.copy, 1, 30000);
    assert.deepEqual(
      copied.map((r) => r.value),
      ['{"n":2}'],
    );
    await gw.waitForLog((l) => l.msg === 'message sent to the dead-letter topic' && l.code === 'EG_PAYLOAD_TOO_LARGE');
  });
});
