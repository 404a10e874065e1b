import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { MosquittoSub, mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

/**
 * A topic's retained message comes to a consume route with its new subscription, once. Before, the
 * route asked for it again each time it subscribed on the session that already had it (MQTT 5
 * Retain Handling 0): a reload that rebuilt the route copied the same retained message to its
 * targets once more, each time.
 */
describe('kind: mqtt, a retained message, against mosquitto', () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });
  const gw = useGateway();
  const config = (steps: string, qos = 1) => `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-retained-${process.pid} }
routes:
  - name: copy
    from: { broker: devices, topic: "state/+", qos: ${qos} }
    through: [${steps}]
    to: { broker: devices, topic: copies }
`;

  it('is copied once by a route, not again by the route a reload rebuilds on the same session', { timeout: 90_000 }, async () => {
    const copies = await MosquittoSub.start(mqtt, 'copies');
    try {
      await gw.start(config(''));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copy', 15_000);
      await mosquittoPub(mqtt, 'state/lamp', JSON.stringify({ v: 'retained' }), { retain: true });
      await copies.until((m) => JSON.parse(m.payload).v === 'retained');
      // Steps alone changed: the rebuilt route takes the subscription over (point 128); a QoS
      // changed: it subscribes again on the same session, the server's retained message not asked for again.
      for (const [steps, qos, said] of [
        ["{ filter: 'true' }", 1, 'subscription handed over to the rebuilt route'],
        ["{ filter: 'true' }, { transform: '$' }", 2, 'consumer ready'],
        ["{ filter: 'true' }", 2, 'subscription handed over to the rebuilt route'],
      ] as const) {
        const from = gw.logs.length;
        await gw.reconfigure(config(steps, qos));
        await gw.waitForLog((l) => l.msg === said && l.route === 'copy', 15_000, from);
      }
      await mosquittoPub(mqtt, 'state/lamp', JSON.stringify({ v: 'live' }));
      const got = await copies.until((m) => JSON.parse(m.payload).v === 'live');
      assert.deepEqual(
        got.map((m) => JSON.parse(m.payload).v),
        ['retained', 'live'],
      );
    } finally {
      await copies.stop();
    }
  });
});
