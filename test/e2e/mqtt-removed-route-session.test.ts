import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { eventually, useGateway } from '../helpers/gateway.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const run = promisify(execFile);

/**
 * A reload that removes an MQTT consume route (or renames it: its default group, so its filter,
 * changes) left the route's persistent session on the server, still subscribed: mosquitto queued
 * every later message of the topic for a session nothing would resume, until sessionExpirySeconds
 * (a day by default) or its queue limit (docs/spec-checklist.md, point 156). The session is now
 * ended once the reload is done; routes the reload keeps or rebuilds keep theirs.
 */
describe('hot reload: an MQTT consume route removed by a reload', () => {
  let mqtt: MessageServer;
  let webhook: WebhookReceiver;
  const clientId = `eg-removed-${process.pid}`;
  before(async () => {
    [mqtt, webhook] = await Promise.all([startMosquitto(), WebhookReceiver.start()]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), webhook?.stop()]);
  });

  const route = (name: string, topic: string) => `  - name: ${name}
    from: {broker: mqtt, topic: ${topic}}
    to: {http: {url: "${webhook.url}/${name}"}}
`;
  const config = (routes: string) => `version: 1
admin: {port: 0}
brokers:
  mqtt: {kind: mqtt, url: ${mqtt.url}, clientId: ${clientId}, qos: 1}
routes:
${routes}`;
  const gw = useGateway(() => config(route('kept', 'removed/kept') + route('gone', 'removed/gone') + route('renamed', 'removed/renamed')));

  /** What the server holds for a client id's session: a persistent mosquitto_sub under it, subscribed to nothing, for a second. */
  const held = async (id: string): Promise<string[]> => {
    const { stdout } = await run('mosquitto_sub', ['-h', mqtt.host, '-p', String(mqtt.port), '-V', 'mqttv5', '-c', '-i', id, '-t', 'removed/none', '-q', '1', '-W', '1']).catch(
      (e) => e as { stdout: string },
    );
    return stdout.split('\n').filter(Boolean);
  };

  it('ends the sessions of the removed and the renamed route, and keeps the kept one', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'renamed', 15000);
    const line = await gw.reconfigure(config(route('kept', 'removed/kept') + route('renamed-now', 'removed/renamed')));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const from = gw.logs.indexOf(line);
    for (const session of [`${clientId}-gone`, `${clientId}-renamed`]) {
      await gw.waitForLog((l) => l.msg === 'mqtt session of a consume route a reload removed ended on the server' && l.session === session, 10000, from);
    }
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'renamed-now', 15000, from);

    for (const topic of ['removed/gone', 'removed/renamed', 'removed/kept']) await mosquittoPub(mqtt, topic, JSON.stringify({ topic }));
    // Nothing queued for the sessions of routes that no longer run.
    assert.deepEqual(await held(`${clientId}-gone`), []);
    assert.deepEqual(await held(`${clientId}-renamed`), []);
    // The running routes got theirs.
    await eventually(() => assert.deepEqual(webhook.requests.map((r) => r.url).sort(), ['/kept', '/renamed-now']), 10000);
    assert.ok(!gw.logs.slice(from).some((l) => l.route === 'kept'), 'the kept route was not touched');
  });
});
