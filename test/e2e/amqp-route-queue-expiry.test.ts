import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { consumersReady, eventually, useGateway } from '../helpers/gateway.js';
import { pikaDeleteQueue, pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { readyz } from '../helpers/outage.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A reload that renames (or removes) a routing-key route leaves its group's queue on the server,
 * bound: every instance shares it, and during a rolling update the instances on the old config
 * still read it, so no instance may delete it. It then collected every matching message for
 * ever (docs/spec-checklist.md point 157). With `routeQueueExpiresMs` the queues are declared with
 * RabbitMQ's `x-expires`, and the server deletes one that no consumer has used for that long.
 */
describe('kind: amqp, routeQueueExpiresMs', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  let receiver: WebhookReceiver;
  const suffix = `${process.pid}`;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });

  const config = (route: string, expiresMs = 1500) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url}, exchange: { name: eg-expiry-${suffix}, type: topic }, routeQueueExpiresMs: ${expiresMs} }
routes:
  - name: ${route}
    from: { broker: rabbit, topic: "orders.*" }
    to: { http: { url: "${receiver.url}/${route}" } }
`;
  const gw = useGateway(() => config(`old-${suffix}`));

  /** The queue's ready messages, or 'gone' once the server answers a passive declare with 404. */
  const depth = (queue: string) => pikaQueueDepth(rabbit, queue).then(String, (err: Error) => (/NOT_FOUND|404/.test(err.message) ? 'gone' : Promise.reject(err)));

  it('lets the server delete the queue a renamed route left, while the renamed route consumes from its own', async () => {
    await consumersReady(gw, `old-${suffix}`, 60000);
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(`new-${suffix}`));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await consumersReady(gw, `new-${suffix}`, 30000, from);
    // Unused since the old route stopped consuming: deleted once the expiry passes. A declare, passive
    // too, counts as a use and starts the expiry again, so each look comes more than 1.5 s after the last.
    await eventually(async () => assert.equal(await depth(`eventgate-old-${suffix}`), 'gone'), 30000, 2500);
    // The renamed route's queue stays while it is consumed, past the expiry, and gets what is published.
    await new Promise((r) => setTimeout(r, 2000));
    await pikaPublish(rabbit, `eg-expiry-${suffix}`, 'orders.paid', [{ body: JSON.stringify({ n: 1 }) }]);
    await eventually(() => assert.equal(receiver.requests.filter((r) => r.url === `/new-${suffix}`).length, 1), 15000, 50);
    assert.equal(await depth(`eventgate-new-${suffix}`), '0');
  });

  it('says in /readyz and /admin/status that a route cannot consume while its queue exists with another expiry, and consumes once it is deleted', async () => {
    // A queue of its own, declared with an expiry no step of this test outlives: the 1.5 s one of
    // the test before expired while the route waited (a failed declare does not renew it), and
    // the route then consumed before the test looked, on a loaded machine.
    const route = `other-${suffix}`;
    const declared = gw.logs.length;
    assert.equal((await gw.reconfigure(config(route, 600000))).msg, 'config reloaded');
    await consumersReady(gw, route, 30000, declared);
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(config(route, 60000))).msg, 'config reloaded');
    // RabbitMQ refuses to declare a queue again with other arguments (406), and the route tries again with backoff.
    await gw.waitForLog((l) => l.msg === 'amqp consumer could not start; retrying' && /inequivalent arg 'x-expires'/.test(String(l.err)), 30000, from);
    await eventually(async () => {
      const r = await readyz(gw);
      assert.equal(r.status, 503, JSON.stringify(r.body));
      assert.deepEqual(r.body.reasons, [`route ${route}: consumer could not start, retrying`]);
    });
    const consumer = (await gw.status()).routes.find((r: { name: string }) => r.name === route).consumer;
    assert.equal(consumer.ready, false);
    assert.match(consumer.detail, /^consumer could not start, retrying: .*406 \(PRECONDITION-FAILED\).*inequivalent arg 'x-expires'/);

    // As the docs say: delete the queue, and the route declares it with the new expiry and consumes.
    const deleted = gw.logs.length;
    await pikaDeleteQueue(rabbit, `eventgate-${route}`);
    await consumersReady(gw, route, 30000, deleted);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200));
    await pikaPublish(rabbit, `eg-expiry-${suffix}`, 'orders.shipped', [{ body: JSON.stringify({ n: 2 }) }]);
    await eventually(() => assert.equal(receiver.requests.filter((r) => r.url === `/${route}`).length, 1), 15000, 50);
  });
});
