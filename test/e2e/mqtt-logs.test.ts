import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

/**
 * What the log says about MQTT connections: a warning when a connection is lost, and none when
 * the gateway closes one itself (a route a reload removes, SIGTERM) — operators alert on warnings.
 */
describe('kind: mqtt, connection log lines', () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });

  const config = (consume: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  mq: { kind: mqtt, url: ${mqtt.url}, reconnectPeriodMs: 200 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: mq, topic: out } }
${consume ? '  - { name: sensors, from: { broker: mq, topic: sensors/# }, to: { broker: mem, topic: in } }' : ''}
`;
  const gw = useGateway();
  const lost = (from = 0) => gw.logs.slice(from).filter((l) => l.msg === 'mqtt connection lost; reconnecting');

  it('warns when the server goes away, once per connection', async () => {
    await gw.start(config(true));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'sensors', 15000);
    await mqtt.down();
    try {
      await gw.waitForLog((l) => l.msg === 'mqtt connection lost; reconnecting' && l.connection === 'publish', 15000);
      await gw.waitForLog((l) => l.msg === 'mqtt connection lost; reconnecting' && l.route === 'sensors', 15000);
    } finally {
      await mqtt.up();
    }
    await gw.waitForLog(
      (l) => l.msg === 'consumer ready' && l.route === 'sensors',
      15000,
      gw.logs.findLastIndex((l) => l.msg === 'mqtt connection lost; reconnecting'),
    );
    // Not once more per reconnection attempt while the server was away.
    assert.deepEqual(
      lost()
        .map((l) => l.connection)
        .sort(),
      ['publish', 'route sensors'],
    );
    // A server that keeps restarting (up a few seconds each time) is an outage each time, told as
    // one: three connections in a row that ended soon after they began were taken for another
    // client taking the client id, though connects were refused in between (the server was down).
    for (let outage = 0; outage < 3; outage++) {
      const before = gw.logs.length;
      await mqtt.down();
      try {
        // Both connections see the server refuse them (the route's may notice the outage later
        // than the publish one): a connection that saw none would take its three short ones for a
        // fight over its client id, which is what this case says does not happen.
        await gw.waitForLog((l) => l.msg === 'mqtt connect failed; retrying' && l.connection === 'publish', 15000, before);
        await gw.waitForLog((l) => l.msg === 'mqtt connect failed; retrying' && l.connection === 'route sensors', 15000, before);
      } finally {
        await mqtt.up();
      }
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'sensors', 15000, before);
      await gw.waitForLog((l) => l.msg === 'mqtt connected' && l.connection === 'publish', 15000, before);
    }
    assert.deepEqual(
      gw.logs.filter((l) => l.msg.startsWith('the server keeps closing this mqtt connection')),
      [],
    );
  });

  it('does not warn of a lost connection when a reload removes a route or SIGTERM stops the gateway', async () => {
    await gw.start(config(true));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'sensors', 15000);
    const reload = await gw.reconfigure(config(false));
    assert.equal(reload.msg, 'config reloaded');
    const stdout = gw.process.stdout!;
    const { code } = await gw.stop('SIGTERM');
    assert.equal(code, 0);
    if (!stdout.closed) await once(stdout, 'close'); // every line read
    assert.ok(gw.logs.some((l) => l.msg === 'shutdown complete'));
    assert.deepEqual(lost(), [], 'connections the gateway closed itself were not lost');
  });
});
