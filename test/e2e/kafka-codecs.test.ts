import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CODEC_IDS, CODECS, type CodecName } from '../../src/codecs/compression.js';
import { compressionOf } from '../../src/codecs/record-batch.js';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatProduce, readRecords, startKafka, type KafkaCluster } from '../helpers/kafka.js';

describe('every Kafka codec, both directions, with kcat as the other client', () => {
  let kafka: KafkaCluster;
  let live = '';
  const out: Record<string, string> = {};

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    live = kafka.topic('live');
    await kafka.createTopic(live, 1);
    for (const codec of CODECS) out[codec] = kafka.topic(`out-${codec}`);
  });
  // Started once the cluster is up: one broker per codec, each with a route publishing through it.
  const gw = useGateway(() => {
    const brokers = CODECS.map((c) => `  k-${c}: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { compression: ${c}, lingerMs: 1 }, consumer: ${kafka.consumerYaml} }`).join('\n');
    const routes = CODECS.map((c) => `  - { name: to-${c}, from: { listener: api, path: /${c} }, to: { broker: k-${c}, topic: ${out[c]} } }`).join('\n');
    return `
version: 1
brokers:
${brokers}
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
${routes}
  - name: live
    from: { broker: k-none, topic: ${live} }
    to: { listener: ws, path: /live }
`;
  });
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'live', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });

  it('streams records kcat writes with each codec to a websocket client, in order, an lz4 or zstd batch never stopping the route', async () => {
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    // lz4 and zstd first: they used to crash the route for good, so the gzip records after them never came.
    const order: CodecName[] = ['lz4', 'zstd', 'gzip', 'snappy', 'none', 'zstd', 'lz4'];
    const sent: unknown[] = [];
    for (const [i, codec] of order.entries()) {
      const batch = [0, 1, 2].map((j) => ({ n: i * 3 + j, codec }));
      sent.push(...batch);
      await kcatProduce(
        kafka.bootstrap,
        live,
        batch.map((v) => ({ value: JSON.stringify(v) })),
        { compression: codec },
      );
    }
    const seen: unknown[] = [];
    for (let i = 0; i < sent.length; i++) seen.push(await client.next(15000));
    assert.deepEqual(seen, sent);
    client.close();
  });

  for (const codec of CODECS) {
    it(`writes ${codec} record batches that kcat reads back`, async () => {
      const value = { codec, text: 'compressible '.repeat(40) };
      const reply = await post(gw.url('api', `/${codec}`), value);
      assert.equal(reply.status, 200, reply.text);
      const [rec] = await kcatConsume(kafka.bootstrap, out[codec]!, 1);
      assert.deepEqual(JSON.parse(rec!.value!), value);
      // The codec the stored batch names (its attributes), read without a consumer group (no 3 s first join).
      const codecs: number[] = [];
      await readRecords(kafka, out[codec]!, 1, { onBatch: (b) => codecs.push(compressionOf(b.attributes)) });
      assert.deepEqual(codecs, [CODEC_IDS[codec as CodecName]], `the batch was written with ${codec}`);
    });
  }
});
