import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { reloaded } from '../helpers/pipeline.js';

/**
 * The upstream cluster changes under a running kafka listener (docs/kafka-proxy.md, "Broker
 * ports"): the upstream broker's `brokers` is edited to a larger cluster and hot-reloaded. The
 * listener keeps its sockets; the node ids it knew keep their local ports and new connections
 * follow them to their new addresses; the node ids it had never seen (they appear later, as when
 * a cluster grows) get ports of their own. librdkafka's mock cluster names every broker it has in
 * every metadata response, so a second, larger mock cluster is the way a real peer shows new brokers.
 */
describe('kafka listener: the upstream cluster moves and grows under it', () => {
  let small: KafkaCluster;
  let large: KafkaCluster;
  let topicSmall = '';
  let topicLarge = '';

  const config = (bootstrap: string) => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: ${JSON.stringify(bootstrap)} }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: orders-in
    from: { listener: kafka-in, topic: orders }
    through: [ { validate: { schema: { type: object }, onInvalid: reject } } ]
`;

  before(async () => {
    [small, large] = await Promise.all([startKafka({ brokers: 3 }), startKafka({ brokers: 5 })]);
    topicSmall = small.topic('before');
    topicLarge = large.topic('after');
    await small.createTopic(topicSmall, 3);
    // One partition per broker: records on every partition have been written through every broker's port.
    await large.createTopic(topicLarge, 5);
  });
  const gw = useGateway(() => config(small.bootstrap));
  after(async () => {
    await Promise.all([small?.stop(), large?.stop()]);
  });

  const kafkaIn = async () => (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in') as { ports: { nodeId: number; port: number }[] };
  const records = (n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i}`, value: JSON.stringify({ i }) }));

  it('keeps the known brokers’ ports, gives the new ones ports, and clients reach every partition of the new cluster through them', async () => {
    const proxy = `127.0.0.1:${gw.port('kafka-in')}`;
    await kcatProduce(proxy, topicSmall, records(30));
    assert.equal((await kcatConsumeAll(small.bootstrap, topicSmall)).length, 30);
    const before = (await kafkaIn()).ports;
    assert.deepEqual(
      before.map((p) => p.nodeId),
      [1, 2, 3],
    );

    const from = gw.logs.length;
    const line = await gw.reconfigure(config(large.bootstrap));
    assert.ok(reloaded(line), JSON.stringify(line));
    assert.equal(gw.port('kafka-in'), Number(proxy.split(':')[1]), 'the bootstrap port stayed');

    // 100 keys over 5 partitions: every partition, so every broker of the larger cluster, gets records.
    await kcatProduce(proxy, topicLarge, records(100));
    const got = await kcatConsumeAll(large.bootstrap, topicLarge);
    assert.equal(got.length, 100);
    assert.deepEqual([...new Set(got.map((r) => r.partition))].sort(), [0, 1, 2, 3, 4]);
    assert.deepEqual((await kcatConsumeAll(small.bootstrap, topicSmall)).length, 30, 'nothing went to the old cluster');

    const afterPorts = (await kafkaIn()).ports;
    assert.deepEqual(
      afterPorts.map((p) => p.nodeId),
      [1, 2, 3, 4, 5],
    );
    for (const p of before) assert.equal(afterPorts.find((q) => q.nodeId === p.nodeId)?.port, p.port, `node ${p.nodeId} kept its port`);
    assert.equal(new Set(afterPorts.map((p) => p.port)).size, 5);
    for (const nodeId of [1, 2, 3]) await gw.waitForLog((l) => l.msg === 'kafka broker moved; new connections follow it' && l.nodeId === nodeId, 10000, from);
    for (const nodeId of [4, 5]) await gw.waitForLog((l) => l.msg === 'kafka broker port bound' && l.nodeId === nodeId, 10000, from);
  });
});
