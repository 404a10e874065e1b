import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, withLogsOnFailure, type RunningGateway } from '../helpers/gateway.js';
import { committedOffsets, produceOneBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { SlowEndpoint } from '../helpers/slow-endpoint.js';

/**
 * A consume route stopped while its webhook endpoint holds one message and has answered the others:
 * the stop cuts the held try after a grace within `admin.drainTimeoutMs`, and what was answered
 * before it must still be committed (acknowledged) before the process exits. The grace used to be
 * the whole drain when `drainTimeoutMs` was 5 s or less, so the cut came at the drain's end and the
 * commit after it was lost to the exit: the Kafka group's offset stayed -1 where records 0 and 1 had
 * been answered, and the next start delivered them again (spec-checklist 4961, 5110).
 */
const ns = (arrivals: readonly { n: number }[]) => [...new Set(arrivals.map((a) => a.n))].sort((a, b) => a - b);
const TEN = Array.from({ length: 10 }, (_, i) => i);

describe('a short drain commits the Kafka records a webhook answered before the one it holds', () => {
  let kafka: KafkaCluster;
  let hook: SlowEndpoint;
  const running: RunningGateway[] = [];

  before(async () => {
    [kafka, hook] = await Promise.all([startKafka(), SlowEndpoint.start()]);
  });
  after(async () => {
    for (const gw of running) await gw.stop('SIGKILL');
    await hook?.stop();
    await kafka?.stop();
  });

  const config = (topic: string, group: string, drainMs: number, step = '') => `
version: 1
admin: { port: 0, drainTimeoutMs: ${drainMs} }
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml} }
routes:
  - name: hook
    from: { broker: kafka, topic: ${topic}, group: ${group}, startFrom: earliest }
${step}    to: { http: { url: "${hook.url}/in", concurrency: 4, timeoutMs: 600000 } }
`;

  /**
   * Records 0-9 in one batch (a route's window does not reach past its batch) to a gateway whose
   * endpoint holds record 2 and answers every other at once: 0 and 1 are committable, 2 is not.
   */
  const holdingRecord2 = async (name: string, drainMs: number) => {
    const topic = kafka.topic(name);
    const group = kafka.topic(`${name}-group`);
    await kafka.createTopic(topic, 1);
    hook.reset();
    hook.onArrival = (h) => (h.n === 2 ? hook.held.push(h) : h.res.end());
    await produceOneBatch(
      kafka,
      topic,
      TEN.map((n) => ({ key: `k${n}`, value: JSON.stringify({ n }) })),
    );
    const gw = await startGateway(config(topic, group, drainMs));
    running.push(gw);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hook', 30000);
    await eventually(() => assert.deepEqual(ns(hook.arrivals), TEN), 30000);
    assert.equal(hook.held.length, 1);
    return { gw, topic, group };
  };

  for (const drainMs of [2000, 500]) {
    it(`on SIGTERM with drainTimeoutMs: ${drainMs}, commits records 0 and 1 while record 2 is held`, async () => {
      const { gw, topic, group } = await holdingRecord2(`sigterm-${drainMs}`, drainMs);
      await withLogsOnFailure(
        () => [gw],
        async () => {
          assert.equal((await gw.stop('SIGTERM')).code, 0);
          assert.deepEqual(await committedOffsets(kafka.bootstrap, group, topic), { 0: '2' }, 'committed up to the held record: not before it, not past it');
          assert.ok(gw.logs.some((l) => l.msg.startsWith('message given back uncommitted')));
        },
      );
      hook.release();
    });
  }

  it('on SIGTERM while a reload hands the route over (drainTimeoutMs: 2000, the new config 10000), commits records 0 and 1', async () => {
    const { gw, topic, group } = await holdingRecord2('handing', 2000);
    await withLogsOnFailure(
      () => [gw],
      async () => {
        const from = gw.logs.length;
        // A step added: the route is rebuilt and takes the consumer over. The new config's 10 s of
        // drain give the hand-over's wait for the held try 5 s: the SIGTERM's own 2 s end it (the
        // old route's try is cut at the drain's end; the hand-over then commits what was answered).
        gw.write('gateway.yaml', config(topic, group, 10000, "    through:\n      - transform: '$'\n"));
        await gw.waitForLog((l) => l.msg === 'subscription handed over to the rebuilt route', 20000, from);
        assert.equal((await gw.stop('SIGTERM')).code, 0);
        assert.deepEqual(await committedOffsets(kafka.bootstrap, group, topic), { 0: '2' });
      },
    );
    hook.release();
  });

  it('on a reload that removes the route (drainTimeoutMs: 500), commits records 0 and 1', async () => {
    const { gw, topic, group } = await holdingRecord2('removed', 500);
    await withLogsOnFailure(
      () => [gw],
      async () => {
        const from = gw.logs.length;
        gw.write('gateway.yaml', 'version: 1\nadmin: { port: 0, drainTimeoutMs: 500 }\n');
        await gw.waitForLog((l) => l.msg === 'consumer stopped; offsets committed' && l.route === 'hook', 20000, from);
        assert.deepEqual(await committedOffsets(kafka.bootstrap, group, topic), { 0: '2' });
        assert.equal((await gw.stop('SIGTERM')).code, 0);
      },
    );
    hook.release();
  });
});

describe('a short drain acknowledges the MQTT messages a webhook answered before the one it holds', () => {
  let mqtt: MessageServer;
  let hook: SlowEndpoint;
  const running: RunningGateway[] = [];

  before(async () => {
    [mqtt, hook] = await Promise.all([startMosquitto(), SlowEndpoint.start()]);
  });
  after(async () => {
    for (const gw of running) await gw.stop('SIGKILL');
    await hook?.stop();
    await mqtt?.stop();
  });

  // A persistent session (the default) at QoS 1: what the route did not acknowledge the server sends again.
  const config = (drainMs: number) => `
version: 1
admin: { port: 0, drainTimeoutMs: ${drainMs} }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-stop-commit-${drainMs}-${process.pid} }
routes:
  - name: hook
    from: { broker: devices, topic: stop-commit/${drainMs}/#, qos: 1 }
    to: { http: { url: "${hook.url}/in", concurrency: 4, timeoutMs: 600000 } }
`;

  for (const drainMs of [2000, 500]) {
    it(`on SIGTERM with drainTimeoutMs: ${drainMs}, no answered message comes again, only the held one`, async () => {
      hook.reset();
      hook.onArrival = (h) => (h.n === 2 ? hook.held.push(h) : h.res.end());
      const first = await startGateway(config(drainMs));
      running.push(first);
      await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hook', 30000);
      for (const n of TEN) await mosquittoPub(mqtt, `stop-commit/${drainMs}/${n}`, JSON.stringify({ n }), { qos: 1 });
      await eventually(() => assert.deepEqual(ns(hook.arrivals), TEN), 30000);
      assert.equal(hook.held.length, 1);
      assert.equal((await first.stop('SIGTERM')).code, 0);
      hook.release();

      // The next run gets the held 2 again, then a sentinel; never one answered before the stop,
      // before 2 (acknowledged when answered) or after it (acknowledged once 2 was given back).
      hook.reset();
      hook.onArrival = (h) => h.res.end();
      const second = await startGateway(config(drainMs));
      running.push(second);
      await withLogsOnFailure(
        () => [first, second],
        async () => {
          await second.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hook', 30000);
          await mosquittoPub(mqtt, `stop-commit/${drainMs}/10`, JSON.stringify({ n: 10 }), { qos: 1 });
          await eventually(() => assert.ok(hook.arrivals.some((a) => a.n === 10)), 30000);
          assert.equal((await second.stop('SIGTERM')).code, 0);
          assert.deepEqual(ns(hook.arrivals), [2, 10]);
        },
      );
    });
  }
});
