import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { openStream } from '../helpers/sse.js';

describe('Server-Sent Events from a Kafka topic', () => {
  let kafka: KafkaCluster;
  let topic: string;

  before(async () => {
    kafka = await startKafka();
    topic = kafka.topic('sse');
    await kafka.createTopic(topic, 3);
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
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /ticks }
    to: { broker: kafka, topic: ${topic}, key: $string(room) }
  - name: stream
    from: { broker: kafka, topic: ${topic} }
    to: { listener: api, path: /ticks }
`,
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });

  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: `r${n % 5}` }) });
    assert.equal(res.status, 200);
  };

  it('resumes after Last-Event-ID from Kafka offsets (every partition), with no gap and no duplicate', async () => {
    const first = await openStream(gw.url('api', '/ticks'));
    for (let n = 1; n <= 6; n++) await publish(n);
    await eventually(() => assert.equal(first.events().length, 6), 15000);
    const lastId = first.events().at(-1)!.id!;
    assert.match(lastId, /^\d+:\d+(,\d+:\d+)*$/);
    first.close();

    for (let n = 7; n <= 10; n++) await publish(n);
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    await eventually(() => assert.equal(resumed.events().length, 4), 20000);
    await publish(11);
    await eventually(() => assert.equal(resumed.events().length, 5), 15000);
    const ns = resumed.events().map((e) => JSON.parse(e.data).n as number);
    // Order holds within a partition (a room), not across them.
    assert.deepEqual(
      [...ns].sort((a, b) => a - b),
      [7, 8, 9, 10, 11],
    );
    assert.equal(ns.at(-1), 11);
    resumed.close();
  });
  it('tells a client whose Last-Event-ID is past the end of the topic (created again since), and replays it from the oldest retained', async () => {
    const ahead = await openStream(gw.url('api', '/ticks'), { 'last-event-id': '0:9000,1:9000,2:9000' });
    // The 11 events the test before published, all of them, after the notice.
    await eventually(() => assert.equal(ahead.events().length, 12), 20000);
    const [notice, ...replayed] = ahead.events();
    assert.equal(notice!.event, 'eventgate.resume');
    assert.match((JSON.parse(notice!.data) as { reason: string }).reason, /past the end of the topic/);
    assert.deepEqual(
      replayed.map((e) => JSON.parse(e.data).n as number).sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    ahead.close();
  });
});
