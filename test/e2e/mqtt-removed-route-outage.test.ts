import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { eventually, useGateway } from '../helpers/gateway.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const run = promisify(execFile);

/**
 * A reload that removes an MQTT consume route ends the route's persistent session on the server
 * (test/e2e/mqtt-removed-route-session). A reload while the server cannot be reached (a network
 * partition, the server away) could not: the session was left subscribed, with a warning to remove
 * it by hand, and once the path was back mosquitto queued every message of the route's topic for a
 * session nothing would resume, until `sessionExpirySeconds` (a day by default) or its queue limit
 * (fault audit, point 172). It is now ended at the broker's next connect to that server.
 */
describe('hot reload: an MQTT consume route removed while the server cannot be reached', () => {
  let mqtt: MessageServer;
  let proxy: TcpProxy;
  let webhook: WebhookReceiver;
  const clientId = `eg-removed-away-${process.pid}`;
  before(async () => {
    [mqtt, webhook] = await Promise.all([startMosquitto(), WebhookReceiver.start()]);
    proxy = await TcpProxy.start(mqtt.port);
  });
  after(async () => {
    await proxy?.stop();
    await Promise.all([mqtt?.stop(), webhook?.stop()]);
  });

  const route = (name: string) => `  - name: ${name}
    from: {broker: mqtt, topic: away/${name}}
    to: {http: {url: "${webhook.url}/${name}"}}
`;
  const config = (routes: string) => `version: 1
admin: {port: 0}
brokers:
  mqtt: {kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: ${clientId}, qos: 1, reconnectPeriodMs: 200, connectTimeoutMs: 1000}
routes:
${routes}`;
  const gw = useGateway(() => config(route('kept') + route('gone')));

  /** What the server holds for a client id's session: a persistent mosquitto_sub under it (straight to the server), subscribed to nothing, for a second. */
  const held = async (id: string): Promise<string[]> => {
    const { stdout } = await run('mosquitto_sub', ['-h', mqtt.host, '-p', String(mqtt.port), '-V', 'mqttv5', '-c', '-i', id, '-t', 'away/none', '-q', '1', '-W', '1']).catch(
      (e) => e as { stdout: string },
    );
    return stdout.split('\n').filter(Boolean);
  };

  it('ends the removed route’s session once the server is reached again', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'gone', 15000);
    // The path to the server goes: open connections cut, new ones held unanswered.
    proxy.cutAndHold();
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(route('kept')));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => /^mqtt session of a consume route a reload removed could not be ended/.test(l.msg) && l.session === `${clientId}-gone`, 15000, from);

    proxy.release();
    await gw.waitForLog((l) => l.msg === 'mqtt session of a consume route a reload removed ended on the server' && l.session === `${clientId}-gone`, 15000, from);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'kept', 15000, from);

    for (const name of ['gone', 'kept']) await mosquittoPub(mqtt, `away/${name}`, JSON.stringify({ name }));
    // Nothing queued for the session of the route that no longer runs; the kept route got its message.
    assert.deepEqual(await held(`${clientId}-gone`), []);
    await eventually(
      () =>
        assert.deepEqual(
          webhook.requests.map((r) => r.url),
          ['/kept'],
        ),
      10000,
    );
  });
});
