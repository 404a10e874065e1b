import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A consume route held on one message (its target failing, no dead-letter target) over lost
 * connections (cut here by a proxy; before branch mqtt-held, the route's own keepalive lapsed
 * every 1.5 × keepaliveSeconds while it held a message). The server sends the message again (DUP)
 * on each new connection; once the route delivers it, every copy must be acknowledged without
 * being delivered again.
 */
describe('mqtt: a route held on one message over several reconnects', () => {
  let mqtt: MessageServer;
  let hook: WebhookReceiver;
  let proxy: TcpProxy;
  let failing = true;
  /** Bodies the receiver answered 200: the deliveries. */
  const delivered: string[] = [];

  before(async () => {
    [mqtt, hook] = await Promise.all([startMosquitto(), WebhookReceiver.start()]);
    proxy = await TcpProxy.start(mqtt.port);
    hook.respond = (r, res) => {
      if (!failing) delivered.push(r.body);
      res.statusCode = failing ? 500 : 200;
      res.end();
    };
  });
  after(async () => {
    await Promise.all([proxy?.stop(), mqtt?.stop(), hook?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: eg-stall-${process.pid}, reconnectPeriodMs: 100, keepaliveSeconds: 1 }
routes:
  - name: held
    from: { broker: devices, topic: held/in }
    to: { http: { url: "${hook.url}/held", retry: { attempts: 1 } } }
`,
  );

  it('delivers the message once, however many connections it was sent on', async () => {
    // Subscribed first: mosquitto drops what it has no subscriber for.
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'held', 30000);
    await mosquittoPub(mqtt, 'held/in', '{"i":1}');
    while (hook.requests.length < 1) await new Promise((r) => setTimeout(r, 20));
    // Two reconnects while the route holds the message: a copy of it waits on each new connection.
    for (let cut = 0; cut < 2; cut++) {
      const from = gw.logs.length;
      proxy.cutAndHold();
      await gw.waitForLog((l) => l.route === 'held' && l.msg === 'mqtt connection lost; reconnecting', 15000, from);
      proxy.release();
      await gw.waitForLog((l) => l.route === 'held' && l.msg === 'consumer ready', 15000, from);
    }
    failing = false;
    // Messages are handled in order: once the next one is delivered, every copy of the first was handled.
    await mosquittoPub(mqtt, 'held/in', '{"i":2}');
    const deadline = Date.now() + 30000;
    while (!delivered.includes('{"i":2}')) {
      if (Date.now() > deadline) throw new Error(`{"i":2} not delivered: ${JSON.stringify(delivered)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(delivered, ['{"i":1}', '{"i":2}']);
  });
});
