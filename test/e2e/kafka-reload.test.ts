import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { type LogLine, useGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatConsumeAll, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';

describe('Kafka consumers through hot reloads', () => {
  let kafka: KafkaCluster;
  const t = { steadyIn: '', steadyOut: '', changingIn: '', changingOut: '', posted: '' };

  const config = (opts: { transform: string; clientId: string; extraRoute?: boolean }) => `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    clientId: ${opts.clientId}
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: steady
    from: { broker: kafka, topic: ${t.steadyIn}, fromBeginning: true }
    to: { broker: kafka, topic: ${t.steadyOut}, key: $key }
  - name: changing
    from: { broker: kafka, topic: ${t.changingIn}, fromBeginning: true }
    through:
      - transform: '${opts.transform}'
    to: { broker: kafka, topic: ${t.changingOut} }
${opts.extraRoute ? `  - name: posted\n    from: { listener: api, path: /posted }\n    to: { broker: kafka, topic: ${t.posted} }\n` : ''}`;

  const records = (tag: string, n: number) => Array.from({ length: n }, (_, i) => ({ key: `k${i % 5}`, value: JSON.stringify({ tag, i }) }));
  const logsSince = (from: number, pred: (l: LogLine) => boolean) => gw.logs.slice(from).filter(pred);

  before(async () => {
    kafka = await startKafka();
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 4);
  });
  const gw = useGateway(() => config({ transform: '{"v": 1, "i": i}', clientId: 'first' }));
  before(async () => {
    await Promise.all(['steady', 'changing'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000)));
  });
  after(async () => {
    await kafka?.stop();
  });

  it("keeps the consumer and group membership of a route that did not change, and hands a changed one's running consumer to its successor, without loss or repeats", async () => {
    await kcatProduce(kafka.bootstrap, t.steadyIn, records('before', 30));
    await kcatProduce(kafka.bootstrap, t.changingIn, records('before', 30));
    await kcatConsume(kafka.bootstrap, t.steadyOut, 30);
    await kcatConsume(kafka.bootstrap, t.changingOut, 30);

    const mark = gw.logs.length;
    const reloaded = await gw.reconfigure(config({ transform: '{"v": 2, "i": i}', clientId: 'first', extraRoute: true }));
    assert.equal(reloaded.msg, 'config reloaded');
    await gw.waitForLog((l) => l.msg === 'subscription handed over to the rebuilt route' && l.route === 'changing', 20000, mark);
    await kcatProduce(kafka.bootstrap, t.steadyIn, records('after', 30));
    await kcatProduce(kafka.bootstrap, t.changingIn, records('after', 30));
    await kcatConsume(kafka.bootstrap, t.steadyOut, 60);
    await kcatConsume(kafka.bootstrap, t.changingOut, 60);

    // The unchanged route never left its group nor joined it again: same member, no rebalance.
    assert.deepEqual(
      logsSince(mark, (l) => l.route === 'steady' && /consumer (joined|stopped|crashed)/.test(l.msg)),
      [],
    );
    // The changed one's rebuilt successor took the running consumer over (Subscription.handOver): no leave, no join, no rebalance.
    assert.deepEqual(
      logsSince(mark, (l) => l.route === 'changing' && /consumer (joined|stopped|crashed)/.test(l.msg)),
      [],
    );

    const steady = await kcatConsumeAll(kafka.bootstrap, t.steadyOut);
    assert.equal(steady.length, 60, 'each record copied once');
    const changing = (await kcatConsumeAll(kafka.bootstrap, t.changingOut)).map((r) => JSON.parse(r.value!));
    assert.equal(changing.length, 60, 'each record copied once');
    assert.equal(changing.filter((v) => v.v === 1).length, 30, 'records before the reload went through the old chain');
    assert.equal(changing.filter((v) => v.v === 2).length, 30, 'records after it through the new one');
    assert.equal((await post(gw.url('api', '/posted'), { added: true })).status, 200);
  });

  it('replaces a kafka broker whose options changed, and its routes carry on from their committed offsets', async () => {
    const mark = gw.logs.length;
    const reloaded = await gw.reconfigure(config({ transform: '{"v": 2, "i": i}', clientId: 'second', extraRoute: true }));
    assert.equal(reloaded.msg, 'config reloaded');
    await Promise.all(['steady', 'changing'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000, mark)));
    await kcatProduce(kafka.bootstrap, t.steadyIn, records('replaced', 10));
    await kcatConsume(kafka.bootstrap, t.steadyOut, 70);
    assert.equal((await kcatConsumeAll(kafka.bootstrap, t.steadyOut)).length, 70, 'nothing copied twice by the new broker');
    assert.equal((await post(gw.url('api', '/posted'), { after: 'replace' })).status, 200);
  });
});
