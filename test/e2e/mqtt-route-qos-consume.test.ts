import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, useGateway, type RunningGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { MosquittoSub, mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

/** Consume routes at a QoS of their own (issue #17: "QoS per route (0/1/2)"); publishes are in mqtt-route-qos.test.ts. */
describe('kind: mqtt, QoS per consume route, against mosquitto', () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });
  const gw = useGateway();

  it("subscribes each consume route at its own QoS: on one filter, the QoS 1 route's session keeps what comes while the gateway is down, the QoS 0 route's does not", async () => {
    const yaml = `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-qos-sub-${process.pid}, qos: 2 }
routes:
  - { name: q0, from: { broker: devices, topic: "in/c/+", qos: 0 }, to: { broker: devices, topic: out/c0 } }
  - { name: q1, from: { broker: devices, topic: "in/c/+", qos: 1 }, to: { broker: devices, topic: out/c1 } }
`;
    const sub = await MosquittoSub.start(mqtt, 'out/#', 2);
    try {
      const first = await startGateway(yaml);
      await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'q0' && l.qos === 0, 15000);
      await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'q1' && l.qos === 1, 15000);
      await first.stop();
      for (let i = 0; i < 3; i++) await mosquittoPub(mqtt, `in/c/${i}`, JSON.stringify({ i }), { qos: 2 });
      const second = await startGateway(yaml);
      try {
        await second.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'q0', 15000);
        await second.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'q1', 15000);
        await mosquittoPub(mqtt, 'in/c/sentinel', JSON.stringify({ i: 'sentinel' }), { qos: 2 });
        await sub.until((m) => m.topic === 'out/c0' && JSON.parse(m.payload).i === 'sentinel');
        const got = await sub.until((m) => m.topic === 'out/c1' && JSON.parse(m.payload).i === 'sentinel');
        const of = (topic: string) => got.filter((m) => m.topic === topic).map((m) => JSON.parse(m.payload).i);
        assert.deepEqual(of('out/c0'), ['sentinel']);
        assert.deepEqual(of('out/c1'), [0, 1, 2, 'sentinel']);
      } finally {
        await second.stop();
      }
    } finally {
      await sub.stop();
    }
  });

  it("re-subscribes at a route's new QoS on reload, losing nothing of a stream published meanwhile", async () => {
    const target = await HeldTarget.start();
    target.release();
    const config = (qos: number) => `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-qos-reload-${process.pid}, reconnectPeriodMs: 200 }
routes:
  - name: relay
    from: { broker: devices, topic: "in/r/+", qos: ${qos} }
    to: { http: { url: "${target.url}" } }
`;
    try {
      let running: RunningGateway = await gw.start(config(0));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay' && l.qos === 0, 15000);
      await gw.reconfigure(config(1));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay' && l.qos === 1, 15000);
      // A stream of QoS 2 publishes while the route moves from QoS 1 to 2: its session keeps what comes between the two subscriptions.
      const from = gw.logs.length;
      const stream = (async () => {
        for (let i = 0; i < 40; i++) await mosquittoPub(mqtt, `in/r/${i}`, JSON.stringify({ i }), { qos: 2 });
      })();
      await eventually(() => assert.ok(target.bodies.length >= 10), 15000);
      await gw.reconfigure(config(2));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay' && l.qos === 2, 15000, from);
      await stream;
      const received = () => new Set(target.bodies.map((b) => JSON.parse(b).i));
      await eventually(() => assert.equal(received().size, 40), 15000, 100);
      // At QoS 2 the server keeps for the route what comes while the gateway is down (it kept nothing at the QoS 0 it started with).
      await running.stop();
      await mosquittoPub(mqtt, 'in/r/away', JSON.stringify({ i: 'away' }), { qos: 2 });
      running = await startGateway(config(2));
      try {
        await eventually(() => assert.ok(received().has('away')), 15000, 100);
      } finally {
        await running.stop();
      }
    } finally {
      await target.stop();
    }
  });
});
