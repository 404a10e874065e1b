import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { startGateway, type LogLine, type RunningGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';

/** The partitions of the latest join of `route` on this gateway. */
const assigned = (gw: RunningGateway, route: string): number[] =>
  ([...gw.logs].reverse().find((l) => l.msg === 'consumer joined group' && l.route === route) as (LogLine & { partitions: number[] }) | undefined)?.partitions ?? [];

describe('several gateway instances on one config', () => {
  let kafka: KafkaCluster;
  let a: RunningGateway;
  let b: RunningGateway;
  const t = { src: '', dst: '', live: '' };

  before(async () => {
    kafka = await startKafka();
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 4);
    const yaml = `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: copy
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.dst}, key: $key }
  - name: live
    from: { broker: kafka, topic: ${t.live} }
    to: { listener: ws, path: /live }
`;
    // Started together, they join the shared group in the same round.
    [a, b] = await Promise.all([startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: 'a' } }), startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: 'b' } })]);
    await Promise.all([a, b].flatMap((gw) => ['copy', 'live'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000))));
    // Until the shared group settles, each member may briefly own every partition.
    const deadline = Date.now() + 20000;
    for (;;) {
      const pa = assigned(a, 'copy');
      const pb = assigned(b, 'copy');
      if (pa.length > 0 && pb.length > 0 && new Set([...pa, ...pb]).size === 4 && pa.length + pb.length === 4) break;
      if (Date.now() > deadline) throw new Error(`shared group did not settle: a=${pa} b=${pb}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await Promise.all(
      [a, b].map((gw) =>
        gw.waitForLog(
          (l) => l.msg === 'consumer ready' && l.route === 'copy',
          20000,
          gw.logs.findLastIndex((l) => l.msg === 'consumer joined group' && l.route === 'copy'),
        ),
      ),
    );
  });
  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await kafka?.stop();
  });

  it('shares one consumer group between instances for broker targets: each record is copied once', async () => {
    await kcatProduce(
      kafka.bootstrap,
      t.src,
      Array.from({ length: 40 }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ i }) })),
    );
    await kcatConsume(kafka.bootstrap, t.dst, 40);
    const all = await kcatConsumeAll(kafka.bootstrap, t.dst);
    assert.equal(all.length, 40);
    assert.equal(new Set(all.map((r) => r.value)).size, 40);
    const groups = [a, b].map((gw) => gw.logs.find((l) => l.msg === 'consumer joined group' && l.route === 'copy')!.group);
    assert.deepEqual(groups, ['eventgate-copy', 'eventgate-copy']);
  });

  it('gives websocket forward routes a group per instance: the clients of every instance see every record', async () => {
    const ca = await WsClient.connect(a.url('ws', '/live', 'ws'));
    const cb = await WsClient.connect(b.url('ws', '/live', 'ws'));
    await kcatProduce(
      kafka.bootstrap,
      t.live,
      Array.from({ length: 5 }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ i }) })),
    );
    for (const c of [ca, cb]) {
      const got = [];
      for (let i = 0; i < 5; i++) got.push((await c.next(10000)).i);
      assert.deepEqual(got.sort(), [0, 1, 2, 3, 4]);
      c.close();
    }
    const groups = [a, b].map((gw) => gw.logs.find((l) => l.msg === 'consumer joined group' && l.route === 'live')!.group);
    assert.deepEqual(groups, ['eventgate-live-a', 'eventgate-live-b']);
  });
});
