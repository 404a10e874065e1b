import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { afterGateways, useGateway } from '../helpers/gateway.js';
import { RawNats } from '../helpers/peers.js';
import { type MessageServer, startNats } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * Header blocks any NATS publisher may send that the `nats` client refuses to decode: a name that
 * is not printable ASCII. nats-server passes them on as they are.
 */
describe('consumed NATS messages whose header names the client does not take', () => {
  let nats: MessageServer;
  let hook: WebhookReceiver;
  let raw: RawNats;

  before(async () => {
    [nats, hook] = await Promise.all([startNats(), WebhookReceiver.start()]);
    raw = await RawNats.connect(nats);
  });
  afterGateways(async () => {
    raw?.close();
    await Promise.all([nats?.stop(), hook?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  bus: { kind: nats, servers: ${nats.url}, streams: { ODD: { subjects: ["odd.js"] } } }
routes:
  - name: core
    from: { broker: bus, topic: odd.core }
    through:
      - transform: '{"v": $, "h": $headers}'
    to: { http: { url: "${hook.url}/core" } }
  - name: stream
    from: { broker: bus, topic: odd.js, group: odd }
    through:
      - transform: '{"v": $, "h": $headers}'
    to: { http: { url: "${hook.url}/stream" } }
`,
  );

  for (const [route, subject] of [
    ['core', 'odd.core'],
    ['stream', 'odd.js'],
  ] as const) {
    it(`delivers on a ${route} subject a message with a non-ASCII header name, its headers as sent, and the messages after it`, async () => {
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);
      // RawNats writes the header block as given: `Über-ä: é`.
      raw.publish(subject, '{"n":1}', { 'Über-ä': 'é', 'x-ok': '1' });
      raw.publish(subject, '{"n":2}', { 'x-ok': '2' });
      await raw.ping();
      const got = await eventuallyBodies(hook, `/${route}`, 2);
      assert.deepEqual(got, [
        { v: { n: 1 }, h: { 'Über-ä': 'é', 'x-ok': '1' } },
        { v: { n: 2 }, h: { 'x-ok': '2' } },
      ]);
      assert.doesNotMatch(gw.stderr(), /not a valid character|reader closed/);
      assert.equal(gw.logs.filter((l) => l.level === 'unparsed').length, 0);
    });
  }
});

async function eventuallyBodies(hook: WebhookReceiver, path: string, n: number, timeoutMs = 15000): Promise<unknown[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // The gateway's own traceparent left out.
    const bodies = hook.requests
      .filter((r) => r.url === path)
      .map((r) => JSON.parse(r.body) as { h: Record<string, string> })
      .map((b) => (delete b.h.traceparent, b));
    if (bodies.length >= n || Date.now() > deadline) return bodies;
    await new Promise((r) => setTimeout(r, 50));
  }
}
