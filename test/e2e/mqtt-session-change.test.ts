import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoPubStream, mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const PER_PART = 30;

/**
 * A reload that changes an mqtt broker's `clientId` gives its consume routes new client ids, so new
 * persistent sessions. The session a route left kept its shared subscription: mosquitto went on
 * giving it its share of the group's messages (one in two with one instance, for as long as the
 * session lived: `sessionExpirySeconds`, a day by default), on top of the backlog it already held,
 * and no route would ever take them — a reload lost most of the messages after it, answered 200 to
 * their publishers (spec §4, §6). The successor now takes the left session over. Likewise a reload
 * that changed the route's topic (or group, or `sharedSubscriptions`) under the same client id:
 * the resumed session kept the old subscription beside the new one.
 */
let mqtt: MessageServer;
let receiver: WebhookReceiver;
/** While set, the endpoint answers nothing, so a backlog builds in the route's session. */
let held: ServerResponse[] | undefined;
before(async () => {
  mqtt = await startMosquitto();
  receiver = await WebhookReceiver.start();
  receiver.respond = (_r, res) => (held ? held.push(res) : res.end('ok'));
});
after(async () => {
  for (const res of held ?? []) res.end('ok');
  await receiver?.stop();
  await mqtt?.stop();
});

const config = (clientId: string, topic = 'jobs/#') => `
version: 1
admin: { port: 0, drainTimeoutMs: 500 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: ${clientId}, reconnectPeriodMs: 200 }
routes:
  - name: relay
    from: { broker: devices, topic: ${topic} }
    to: { http: { url: "${receiver.url}/relay" } }
`;

describe('kind: mqtt, a reload that gives a consume route another client id', () => {
  const gw = useGateway(() => config(`eg-before-${process.pid}`));

  /** How often the endpoint got each message. */
  const arrivals = () => {
    const seen = new Map<number, number>();
    for (const r of receiver.requests) {
      const { i } = JSON.parse(r.body) as { i: number };
      seen.set(i, (seen.get(i) ?? 0) + 1);
    }
    return seen;
  };

  it('delivers the backlog of the session it left and every message after the reload', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000);
    const pub = MosquittoPubStream.start(mqtt, 'jobs/a', 1);
    // Part 1 waits in the first session: the endpoint holds the first message, the rest stay with the server.
    held = [];
    pub.write(Array.from({ length: PER_PART }, (_, k) => JSON.stringify({ i: k })));
    await receiver.received(1, 20000);

    const from = gw.logs.length;
    const line = await gw.reconfigure(config(`eg-after-${process.pid}`));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    // What the route had in hand (up to its webhook's concurrency, point 520): every request so far, none answered.
    const inHand = new Set(receiver.requests.map((r) => (JSON.parse(r.body) as { i: number }).i));
    for (const res of held) res.end('ok');
    held = undefined;
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000, from);

    // Part 2 after the reload: the group's messages must all come to the route's new session.
    pub.write(Array.from({ length: PER_PART }, (_, k) => JSON.stringify({ i: PER_PART + k })));
    await pub.end();

    const seen = await eventually(
      () => {
        const s = arrivals();
        const missing = Array.from({ length: 2 * PER_PART }, (_, i) => i).filter((i) => !s.has(i));
        assert.deepEqual(missing, [], `not delivered: ${missing.join(', ')}`);
        return s;
      },
      30000,
      100,
    );
    // The messages held across the reload come again (their tries cut by the drain, they were given back unacknowledged); no other.
    const repeated = [...seen].filter(([i, n]) => n > 1 && !inHand.has(i)).map(([i]) => i);
    assert.deepEqual(repeated, [], 'delivered more than once');
    const warning = await gw.waitForLog((l) => l.msg.startsWith('mqtt consume route resumed under another client id'), 5000, from);
    assert.equal(warning.session, `eg-before-${process.pid}-relay`);
  });
});

describe('kind: mqtt, a reload that gives a consume route another filter under the same client id', () => {
  const gw = useGateway(() => config(`eg-topic-${process.pid}`, 'orders/#'));

  it('stops reading the topic a reload replaced: the resumed session does not keep its old subscription', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000);
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(`eg-topic-${process.pid}`, 'tasks/#'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.filter === '$share/eventgate-relay/tasks/#', 20000, from);
    const start = receiver.requests.length;
    // The server delivers a session's messages in order: the old topic's message would come first.
    await mosquittoPub(mqtt, 'orders/a', JSON.stringify({ i: 100 }));
    await mosquittoPub(mqtt, 'tasks/a', JSON.stringify({ i: 101 }));
    await eventually(() => assert.ok(receiver.requests.slice(start).some((r) => JSON.parse(r.body).i === 101)), 15000, 50);
    assert.deepEqual(
      receiver.requests.slice(start).map((r) => JSON.parse(r.body).i),
      [101],
    );
  });
});
