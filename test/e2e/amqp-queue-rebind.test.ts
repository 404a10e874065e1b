import assert from 'node:assert/strict';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { consumersReady, eventually, startGateway, useGateway } from '../helpers/gateway.js';
import { pikaDeleteExchange, pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A queue declared under `queues:` is bound at every connect with its `bindings`. A reload that
 * dropped one (or changed it, or removed the queue's entry) left the old binding on the server:
 * RabbitMQ keeps every binding a durable queue was given, so the route reading the queue went on
 * delivering what the edited config no longer asks for.
 */
describe('kind: amqp, a reload that drops bindings of a declared queue', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });

  const config = (bindings: string[], exchange = 'amq.topic') => `
version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    exchange: { name: ${exchange}, type: topic }
    queues:
      billing: { bindings: [${bindings.join(', ')}] }
routes:
  - name: relay
    from: { broker: rabbit, topic: billing }
    to: { http: { url: "${receiver.url}/relay" } }
`;
  const gw = useGateway(() => config(['orders.created', 'orders.paid']));
  const unbound = (routingKey: string, from: number) =>
    gw.waitForLog((l) => l.msg === 'amqp queue unbound from a binding a reload dropped' && l.queue === 'billing' && l.routingKey === routingKey, 15000, from);
  const bodies = (from = 0) => receiver.requests.slice(from).map((r) => JSON.parse(r.body) as { key: string; i: number });
  const send = (exchange: string, key: string, ...ids: number[]) =>
    pikaPublish(
      rabbit,
      exchange,
      key,
      ids.map((i) => ({ body: JSON.stringify({ key, i }) })),
    );

  it('unbinds the one removed: its key no longer arrives, the kept one loses nothing across the reload', async () => {
    await consumersReady(gw, 'relay', 60000);
    // The kept key published before, during and after the reload, ten messages at a time.
    let publishing = true;
    let next = 0;
    let batches = 0;
    const publisher = (async () => {
      while (publishing) {
        await send('amq.topic', 'orders.paid', ...Array.from({ length: 10 }, () => next++));
        batches++;
      }
    })();
    try {
      await eventually(() => assert.ok(batches >= 2), 15000, 20);
      const from = gw.logs.length;
      const line = await gw.reconfigure(config(['orders.paid']));
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
      const unbind = await unbound('orders.created', from);
      assert.equal(unbind.exchange, 'amq.topic');
      const after = batches;
      await eventually(() => assert.ok(batches >= after + 2), 15000, 20);
    } finally {
      publishing = false;
      await publisher;
    }
    const published = next;
    // Every message published for the kept key arrives (none lost across the reload), before the
    // probe below: under load the last batches were still on their way when it started, and came
    // after it in the list.
    await eventually(
      () => {
        const kept = new Set(bodies().map((b) => b.i));
        const lost = Array.from({ length: published }, (_, i) => i).filter((i) => !kept.has(i));
        assert.deepEqual(lost, [], `${lost.length} of the ${published} messages published for the kept key never arrived`);
      },
      15000,
      50,
    );
    // One queue, in publish order: a message of the removed key would come before the last one.
    const start = receiver.requests.length;
    await send('amq.topic', 'orders.created', -1);
    await send('amq.topic', 'orders.paid', published);
    await eventually(() => assert.ok(bodies(start).some((b) => b.i === published)), 15000, 50);
    assert.deepEqual(bodies(start), [{ key: 'orders.paid', i: published }]);
  });

  it('a replaced pattern: the old key stops, the new one flows', async () => {
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(['orders.shipped']));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await unbound('orders.paid', from);
    await consumersReady(gw, 'relay', 30000, from);
    const start = receiver.requests.length;
    await send('amq.topic', 'orders.paid', 100);
    await send('amq.topic', 'orders.shipped', 101, 102);
    await eventually(() => assert.equal(receiver.requests.length, start + 2), 15000, 50);
    assert.deepEqual(
      bodies(start).map((b) => b.i),
      [101, 102],
    );
  });

  it("changes the broker's exchange, the old one deleted meanwhile: one line about the old binding, and the route consumes on", async () => {
    let from = gw.logs.length;
    await gw.reconfigure(config(['orders.shipped'], 'old-events'));
    await consumersReady(gw, 'relay', 30000, from);
    // Deleting the exchange takes its bindings with it. RabbitMQ 3.10 answers the unbind with
    // unbind-ok all the same; a server that answers 404 gets the refusal logged instead.
    await pikaDeleteExchange(rabbit, 'old-events');
    from = gw.logs.length;
    const line = await gw.reconfigure(config(['orders.shipped'], 'new-events'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const aboutOld = (l: { msg: string; exchange?: unknown }) => typeof l.msg === 'string' && l.msg.includes('a binding a reload dropped') && l.exchange === 'old-events';
    await gw.waitForLog(aboutOld, 15000, from);
    await consumersReady(gw, 'relay', 30000, from);
    const start = receiver.requests.length;
    await send('new-events', 'orders.shipped', 200, 201);
    await eventually(() => assert.equal(receiver.requests.length, start + 2), 15000, 50);
    assert.deepEqual(
      bodies(start).map((b) => b.i),
      [200, 201],
    );
    assert.equal(gw.logs.slice(from).filter(aboutOld).length, 1);
  });

  it('an unbind RabbitMQ refuses (403: no read permission on the old exchange) is logged once, and the route consumes on', async () => {
    let from = gw.logs.length;
    await gw.reconfigure(config(['orders.denied'], 'denied-events'));
    await consumersReady(gw, 'relay', 30000, from);
    // queue.unbind needs read permission on the exchange: taken away for that one exchange.
    await rabbit.admin.setPermissions(rabbit.vhost, 'guest', '.*', '.*', '^(?!denied-events$).*');
    try {
      from = gw.logs.length;
      const line = await gw.reconfigure(config(['orders.allowed'], 'allowed-events'));
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
      const refused = await gw.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('amqp unbind of a binding a reload dropped refused'), 15000, from);
      assert.equal(refused.exchange, 'denied-events');
      assert.match(String(refused.err), /ACCESS_REFUSED/);
      await consumersReady(gw, 'relay', 30000, from);
      const start = receiver.requests.length;
      await send('allowed-events', 'orders.allowed', 600, 601);
      await eventually(() => assert.equal(receiver.requests.length, start + 2), 15000, 50);
      assert.deepEqual(
        bodies(start).map((b) => b.i),
        [600, 601],
      );
      assert.equal(gw.logs.slice(from).filter((l) => typeof l.msg === 'string' && l.msg.includes('a binding a reload dropped')).length, 1);
    } finally {
      await rabbit.admin.setPermissions(rabbit.vhost, 'guest', '.*', '.*', '.*');
    }
  });

  it('a reload rejected after the new broker bound its queue: what it added is unbound, what the running config has stays', async () => {
    let from = gw.logs.length;
    await gw.reconfigure(config(['orders.kept']));
    await consumersReady(gw, 'relay', 30000, from);
    // The new broker connects and binds before the listener fails to start on a port in use.
    const holder = createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    try {
      const port = (holder.address() as AddressInfo).port;
      from = gw.logs.length;
      const line = await gw.reconfigure(`${config(['orders.kept', 'orders.added'])}listeners:\n  api: { kind: http, port: ${port}, host: 127.0.0.1 }\n`);
      assert.match(String(line.msg), /^reload rejected/, JSON.stringify(line));
    } finally {
      holder.close();
    }
    await unbound('orders.added', from);
    const start = receiver.requests.length;
    await send('amq.topic', 'orders.added', 400);
    await send('amq.topic', 'orders.kept', 401);
    await eventually(() => assert.ok(bodies(start).some((b) => b.i === 401)), 15000, 50);
    assert.deepEqual(
      bodies(start).map((b) => b.i),
      [401],
    );
  });

  it('another gateway declaring the same queue leaves its bindings when it shuts down: the queue keeps collecting for the next start', async () => {
    const other = await startGateway(config(['orders.kept']));
    try {
      await consumersReady(other, 'relay', 30000);
    } finally {
      await other.stop();
      rmSync(other.dir, { recursive: true, force: true });
    }
    const start = receiver.requests.length;
    await send('amq.topic', 'orders.kept', 500);
    await eventually(() => assert.ok(bodies(start).some((b) => b.i === 500)), 15000, 50);
    // The same binding (queue, exchange, key) as this gateway's: unbound, the message would have been dropped.
    assert.deepEqual(
      other.logs.filter((l) => typeof l.msg === 'string' && l.msg.includes('a binding a reload dropped')),
      [],
    );
  });

  it('removes the queue entry: the queue kept on the server is unbound and collects nothing more', async () => {
    let from = gw.logs.length;
    await gw.reconfigure(config(['orders.returned']));
    await consumersReady(gw, 'relay', 30000, from);
    from = gw.logs.length;
    const line = await gw.reconfigure(`
version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url} }
routes:
  - name: other
    from: { broker: rabbit, topic: audit.# }
    to: { http: { url: "${receiver.url}/other" } }
`);
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await unbound('orders.returned', from);
    // Nothing reads the queue now: a message still bound to it would wait there.
    await send('amq.topic', 'orders.returned', 300);
    assert.equal(await pikaQueueDepth(rabbit, 'billing'), 0);
  });
});
