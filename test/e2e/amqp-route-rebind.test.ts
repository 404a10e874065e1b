import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { consumersReady, eventually, useGateway } from '../helpers/gateway.js';
import { pikaDeleteExchange, pikaPublish } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A consume route whose `from.topic` is a routing-key pattern reads its group's durable queue,
 * bound with the pattern. A reload that changed the pattern bound the queue with the new one and
 * left the old binding: RabbitMQ keeps every binding a durable queue was given, so the route went
 * on receiving the messages of the pattern it no longer reads.
 */
describe('kind: amqp, a reload that changes the routing-key pattern of a consume route', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });

  const config = (pattern: string) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url} }
routes:
  - name: relay
    from: { broker: rabbit, topic: ${pattern} }
    to: { http: { url: "${receiver.url}/relay" } }
`;
  const gw = useGateway(() => config('orders.created'));

  it('unbinds the old pattern from the route queue: only the new one arrives', async () => {
    await consumersReady(gw, 'relay', 60000);
    const from = gw.logs.length;
    const line = await gw.reconfigure(config('orders.paid'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await consumersReady(gw, 'relay', 30000, from);
    // One queue, in publish order: a message of the old pattern would come first.
    await pikaPublish(rabbit, 'amq.topic', 'orders.created', [{ body: JSON.stringify({ i: 1 }) }]);
    await pikaPublish(rabbit, 'amq.topic', 'orders.paid', [{ body: JSON.stringify({ i: 2 }) }]);
    await eventually(() => assert.ok(receiver.requests.some((r) => JSON.parse(r.body).i === 2)), 15000, 50);
    assert.deepEqual(
      receiver.requests.map((r) => JSON.parse(r.body).i),
      [2],
    );
  });

  it("unbinds from the old exchange when the reload changes the broker's exchange too, and consumes on though that exchange was deleted", async () => {
    const onExchange = (exchange: string, pattern: string) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url}, exchange: { name: ${exchange}, type: topic } }
routes:
  - name: relay
    from: { broker: rabbit, topic: ${pattern} }
    to: { http: { url: "${receiver.url}/relay" } }
`;
    let from = gw.logs.length;
    await gw.reconfigure(onExchange('old-events', 'orders.created'));
    await consumersReady(gw, 'relay', 30000, from);
    // Its bindings go with it. An unbind from an exchange that no longer exists may be refused (404,
    // closing the channel it was asked on: the route unbinds on a channel of its own); either way it consumes on.
    await pikaDeleteExchange(rabbit, 'old-events');
    from = gw.logs.length;
    const line = await gw.reconfigure(onExchange('new-events', 'orders.shipped'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const unbind = await gw.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('amqp') && l.msg.includes('a binding a reload dropped'), 30000, from);
    assert.equal(unbind.exchange, 'old-events');
    await consumersReady(gw, 'relay', 30000, from);
    const before = receiver.requests.length;
    await pikaPublish(rabbit, 'new-events', 'orders.shipped', [{ body: JSON.stringify({ i: 3 }) }, { body: JSON.stringify({ i: 4 }) }]);
    await eventually(() => assert.equal(receiver.requests.length, before + 2), 15000, 50);
    assert.deepEqual(
      receiver.requests.slice(before).map((r) => JSON.parse(r.body).i),
      [3, 4],
    );
  });
});
