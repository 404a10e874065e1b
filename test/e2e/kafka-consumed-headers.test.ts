import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { committedOffsets, kcatConsume, runProcess, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { scrape } from '../helpers/prometheus.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/** Headers a record may carry in thousands: Kafka bounds a record's size, not its header count. */
const MANY = 20_000;

/**
 * Consumed Kafka headers that the record format allows and earlier walks did not send: headers
 * without a value (null, as kcat's `-H name` writes them), names that Object's prototype has
 * (`toString`, `constructor`), and thousands of headers on one record. kcat and kafkajs write the
 * records; kcat reads the copies back (kafkajs' own consumer decodes thousands of headers in time
 * that grows with their square, which is what the gateway's decoder must not do).
 */
describe('Kafka headers without a value, named after Object members, and by the thousand', () => {
  let kafka: KafkaCluster;
  let ws: WsClient;
  let hook: WebhookReceiver;
  const t = { src: '', copied: '', viaMemory: '' };
  const routes = ['copy', 'to-memory', 'live', 'hook'];
  const TRACESTATE = 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7';

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    hook = await WebhookReceiver.start();
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1, ackTimeoutMs: 30000 }, consumer: { sessionTimeoutMs: 30000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 30000, maxWaitMs: 100 } }
  mem: { kind: memory }
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: copy
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.copied} }
  - name: to-memory
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: mem, topic: parked }
  - name: from-memory
    from: { broker: mem, topic: parked }
    to: { broker: kafka, topic: ${t.viaMemory} }
  - name: live
    from: { broker: kafka, topic: ${t.src}, startFrom: earliest }
    to: { listener: push, path: /live, format: envelope }
  - name: hook
    from: { broker: kafka, topic: ${t.src} }
    to: { http: { url: "${hook.url}/records", concurrency: 1 } }
`,
  );
  before(async () => {
    ws = await WsClient.connect(gw.url('push', '/live', 'ws'));
    for (const route of routes) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);
    // kcat writes a header named without `=` with no value (null).
    const kcat = await runProcess(
      'kcat',
      ['-P', '-b', kafka.bootstrap, '-t', t.src, '-p', '0', '-k', 'a', '-H', 'nul', '-H', 'rep=1', '-H', 'rep', '-H', 'toString=t', '-H', 'constructor=c'],
      '{"n":1}\n',
      30000,
    );
    assert.equal(kcat.code, 0, kcat.stderr);
    const producer = testClient(kafka.bootstrap).producer();
    await producer.connect();
    const headers = Object.fromEntries(Array.from({ length: MANY }, (_, i) => [`h${i}`, 'v']));
    await producer.send({ topic: t.src, messages: [{ partition: 0, key: 'b', value: '{"n":2}', headers }] });
    await producer.send({ topic: t.src, messages: [{ partition: 0, key: 'c', value: '{"n":3}' }] });
    // A tracestate a webhook can carry, one of 20 KB (an endpoint's header limit is 8 to 16 KB), one with a control character.
    const tracestates = [TRACESTATE, `big=${'a'.repeat(20_000)}`, 'ctl=a\x01b'];
    await producer.send({ topic: t.src, messages: tracestates.map((tracestate, i) => ({ partition: 0, value: `{"n":${4 + i}}`, headers: { tracestate } })) });
    await producer.disconnect();
  });
  after(async () => {
    ws?.close();
    await kafka?.stop();
    await hook?.stop();
  });

  it('reads a header without a value as "" and a name Object has as any other', async () => {
    const first = JSON.parse(await ws.nextText(60000)) as { headers: Record<string, string>; value: unknown };
    assert.deepEqual(first.value, { n: 1 });
    const { traceparent, ...headers } = first.headers;
    assert.deepEqual(headers, { nul: '', rep: '', toString: 't', constructor: 'c' });
    assert.match(traceparent!, /^00-/);
  });

  it('delivers a record of 20,000 headers with every one, and the record after it', async () => {
    const second = JSON.parse(await ws.nextText(60000)) as { headers: Record<string, string>; value: unknown };
    assert.deepEqual(second.value, { n: 2 });
    assert.equal(Object.keys(second.headers).length, MANY + 1);
    assert.equal(second.headers[`h${MANY - 1}`], 'v');
    assert.deepEqual((JSON.parse(await ws.nextText(60000)) as { value: unknown }).value, { n: 3 });
  });

  it('copies the headers as the record had them, directly and through a memory topic: null stays null, every value of a repeat', async () => {
    for (const topic of [t.copied, t.viaMemory]) {
      const [first, second, third] = await kcatConsume(kafka.bootstrap, topic, 3, 60000);
      assert.deepEqual(
        first!.headerList.filter(([name]) => name !== 'traceparent'),
        [
          ['nul', null],
          ['rep', '1'],
          ['rep', null],
          ['toString', 't'],
          ['constructor', 'c'],
        ],
        topic,
      );
      assert.equal(second!.headerList.filter(([name]) => name !== 'traceparent').length, MANY, topic);
      assert.equal(third!.value, '{"n":3}', topic);
    }
  });

  it('sends a webhook the tracestate of a record while it is one an endpoint can take, and the record without one that is not (over 512 characters, a control character)', async () => {
    const got = await hook.received(6, 60000);
    assert.deepEqual(
      got.map((r) => r.body),
      ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}', '{"n":5}', '{"n":6}'],
    );
    assert.deepEqual(
      got.slice(3).map((r) => r.headers.tracestate),
      [TRACESTATE, undefined, undefined],
    );
  });

  it('commits past them, with no consumer error and no member dropped from its group meanwhile', async () => {
    // The webhook's last answer and the copies' writes come before the commits that follow them.
    for (const route of ['copy', 'to-memory', 'hook'])
      await eventually(async () => assert.deepEqual(await committedOffsets(kafka.bootstrap, `eventgate-${route}`, t.src), { 0: '6' }, route), 30000, 200);
    const s = await scrape(gw.adminUrl);
    for (const route of routes) {
      assert.equal(s.value('eventgate_kafka_consumer_errors_total', { broker: 'kafka', route }), 0, route);
      assert.equal(s.value('eventgate_kafka_consumer_rejoins_total', { broker: 'kafka', route }), 0, route);
    }
  });
});
