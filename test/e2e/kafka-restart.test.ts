import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { committedOffsets, endOffsets, kcatConsume, kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';

const total = (offsets: Record<number, string>) => Object.values(offsets).reduce((sum, o) => sum + Math.max(0, Number(o)), 0);

describe('consumers across gateway restarts', () => {
  let kafka: KafkaCluster;
  let src: string;
  let dst: string;
  let group: string;
  let yaml: string;
  const running: RunningGateway[] = [];

  const start = async () => {
    const gw = await startGateway(yaml);
    running.push(gw);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copy', 20000);
    return gw;
  };
  const stop = async (gw: RunningGateway) => {
    const exit = await gw.stop('SIGTERM');
    assert.deepEqual(exit, { code: 0, signal: null }, gw.stderr());
  };
  const records = (from: number, n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${(from + i) % 7}`, value: JSON.stringify({ n: from + i }) }));

  before(async () => {
    kafka = await startKafka();
    src = kafka.topic('src');
    dst = kafka.topic('dst');
    group = kafka.topic('copy-group');
    await kafka.createTopic(src, 4);
    await kafka.createTopic(dst, 4);
    // Records are copied one at a time, each waiting lingerMs: a shutdown lands in the middle of the stream.
    yaml = `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    producer: { lingerMs: 5 }
    consumer: ${kafka.consumerYaml}
routes:
  - name: copy
    from: { broker: kafka, topic: ${src}, group: ${group}, fromBeginning: true }
    to: { broker: kafka, topic: ${dst}, key: $key }
`;
  });
  after(async () => {
    for (const gw of running) await gw.stop('SIGKILL');
    await kafka?.stop();
  });

  it('copies the 200 records produced while the gateway was down once it starts, and none again after a restart', async () => {
    await kcatProduce(kafka.bootstrap, src, records(0, 200));
    const first = await start();
    const copied = await kcatConsume(kafka.bootstrap, dst, 200, 30000);
    assert.deepEqual(new Set(copied.map((r) => JSON.parse(r.value!).n)).size, 200);
    await stop(first);

    const second = await start();
    await kcatProduce(kafka.bootstrap, src, [{ key: 'marker', value: '{"n":"marker"}' }]);
    await kcatConsume(kafka.bootstrap, dst, 201, 30000);
    await stop(second);
    const all = await kcatConsumeAll(kafka.bootstrap, dst);
    assert.equal(all.length, 201, 'the restarted gateway copied the marker and nothing it had copied before');
    // Keys travel with the records.
    for (const r of all) assert.equal(r.key, JSON.parse(r.value!).n === 'marker' ? 'marker' : `k${JSON.parse(r.value!).n % 7}`);
  });

  it('commits, on SIGTERM, exactly the records it copied, so the next run neither repeats nor skips any', async () => {
    const before = total(await committedOffsets(kafka.bootstrap, group, src));
    const copiedBefore = (await kcatConsumeAll(kafka.bootstrap, dst)).length;
    await kcatProduce(kafka.bootstrap, src, records(1000, 200));
    const gw = await start();
    // Stop in the middle of the stream: as soon as the first of the new records is copied.
    await kcatConsume(kafka.bootstrap, dst, copiedBefore + 1, 30000);
    await stop(gw);
    const committed = total(await committedOffsets(kafka.bootstrap, group, src));
    const copied = (await kcatConsumeAll(kafka.bootstrap, dst)).length;
    assert.equal(committed - before, copied - copiedBefore, 'every copied record is committed, and only those');

    const again = await start();
    await kcatConsume(kafka.bootstrap, dst, copiedBefore + 200, 30000);
    await stop(again);
    assert.equal(total(await committedOffsets(kafka.bootstrap, group, src)), total(await endOffsets(kafka.bootstrap, src)));
    const all = await kcatConsumeAll(kafka.bootstrap, dst);
    assert.equal(all.length, copiedBefore + 200, 'no record copied twice');
    assert.equal(new Set(all.map((r) => r.value)).size, all.length);
  });

  it('commits while a fetched batch is worked through, so a SIGKILL in its middle repeats only the records since the last commit', async () => {
    const from = kafka.topic('killed-src');
    const to = kafka.topic('killed-dst');
    const killedGroup = kafka.topic('killed-group');
    await kafka.createTopic(from, 1);
    await kafka.createTopic(to, 1);
    // One partition, 300 records ready before the gateway starts: the first fetches hand it long batches.
    await kcatProduce(kafka.bootstrap, from, records(0, 300));
    const gw = await startGateway(
      yaml
        .replace(`consumer: ${kafka.consumerYaml}`, `consumer: ${kafka.consumerYaml.replace('{', '{ commitIntervalMs: 0,')}`)
        .replace(`topic: ${src}, group: ${group}`, `topic: ${from}, group: ${killedGroup}`)
        .replace(`topic: ${dst}`, `topic: ${to}`),
    );
    running.push(gw);
    await kcatConsume(kafka.bootstrap, to, 60, 30000);
    await gw.stop('SIGKILL');
    const copied = (await kcatConsumeAll(kafka.bootstrap, to)).length;
    const committed = total(await committedOffsets(kafka.bootstrap, killedGroup, from));
    assert.ok(copied < 300, `killed in the middle (${copied} copied)`);
    // Each record's offset is committed once it is copied: at most the one in hand is left over.
    assert.ok(copied - committed <= 1, `${copied} copied, ${committed} committed`);
  });
});
