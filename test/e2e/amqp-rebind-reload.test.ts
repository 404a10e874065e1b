import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { consumersReady, eventually, useGateway } from '../helpers/gateway.js';
import { AmqpFrameHold, pikaDeclareExchange, pikaDeleteExchange, pikaPublish } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const frames = new AmqpFrameHold();
const rabbit = useRabbit(() => sharedRabbit(), { proxy: { toServer: frames.toServer, toClient: frames.toClient } });

/**
 * A routing-key route's queue is bound again when a publish for its pattern comes back unroutable
 * (walk-amqp-s55, checklist 5085). A reload that changed the route's pattern while that bind was in
 * flight stopped the route without waiting for it: the successor, reusing the group's queue, bound
 * its own pattern and unbound the old one, and the bind landing after that left the old pattern
 * bound for good, the new route reading its messages too (review-c-s55, checklist 5132). The proxy
 * holds that one bind frame (the connection's other frames go on) until the successor's unbind is
 * answered (the old code) or the stopping route says it waits for the bind (the fix).
 */
describe('kind: amqp, a reload that changes a pattern while its queue is being bound again', () => {
  const exchange = `eg-rebind-reload-${process.pid}`;
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    frames.release();
    await receiver?.stop();
    await pikaDeleteExchange(rabbit, exchange).catch(() => undefined);
  });

  const config = (pattern: string) => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.proxiedUrl}
    connectTimeoutMs: 120000
    exchange: { name: ${exchange}, type: topic }
routes:
  - { name: rr-in, from: { listener: api, path: /orders }, to: { broker: rabbit, topic: orders.created } }
  - { name: rr-relay, from: { broker: rabbit, topic: "${pattern}" }, to: { http: { url: "${receiver.url}/relay" } } }
`;
  const gw = useGateway(() => config('orders.*'));

  it('the stopping route waits for the bind: the old pattern is unbound after it, and the new route reads only its own', async () => {
    await consumersReady(gw, 'rr-relay', 60000);
    // Another client deletes the exchange and makes it again: the route's queue lost its binding.
    await pikaDeleteExchange(rabbit, exchange);
    await pikaDeclareExchange(rabbit, exchange, 'topic');
    const queue = 'eventgate-rr-relay';
    const held = frames.hold((f) => f.classId === 50 && f.methodId === 20 && f.queue === queue && f.routingKey === 'orders.*');
    const returned = await post(gw.url('api', '/orders'), { n: 0 });
    assert.equal(returned.status, 503, returned.text);
    // The route binds its queue again after the return: that bind is held.
    await held;

    const from = gw.logs.length;
    const unbound = frames.serverSends(50, 51).then(() => 'the successor unbound the old pattern while the bind was in flight');
    const waits = gw.waitForLog((l) => l.msg === "amqp route waits for its queue's bind in flight before it stops", 60000, from).then(() => 'waits');
    const reloaded = gw.reconfigure(config('orders.created'));
    const first = await Promise.race([unbound, waits]);
    frames.release();
    const line = await reloaded;
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await consumersReady(gw, 'rr-relay', 30000, from);

    // One queue, in publish order: a message of the old pattern would come first.
    await pikaPublish(rabbit, exchange, 'orders.other', [{ body: JSON.stringify({ key: 'orders.other' }) }]);
    await pikaPublish(rabbit, exchange, 'orders.created', [{ body: JSON.stringify({ key: 'orders.created' }) }]);
    await eventually(() => assert.ok(receiver.requests.length > 0), 15000, 50);
    // Before: ['orders.other', 'orders.created'] (the old pattern bound again after the successor unbound it).
    assert.deepEqual(
      receiver.requests.map((r) => JSON.parse(r.body).key),
      ['orders.created'],
    );
    assert.equal(first, 'waits');
  });
});
