import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume, pikaDeclareExchange, pikaDeclareQueue, pikaDeleteExchange } from '../helpers/peers.js';
import type { RabbitServer } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';

/**
 * `exchange: {declare: false}` says the exchange must exist already, as `queues.<name>.declare:
 * false` says of a queue. A missing exchange, which every publish and binding of the broker needs,
 * keeps the broker not ready until it exists (a missing queue stops only the routes reading it:
 * test/e2e/missing-topology); it did not: /readyz said ready, and each publish closed the channel
 * (RabbitMQ's 404), the gateway the connection with it (every consume route's channel too),
 * answering 503 "channel closed" with nothing saying which exchange.
 */
describe('kind: amqp, an exchange that must exist (declare: false) and does not yet', () => {
  let rabbit: RabbitServer;
  const exchange = `eg-existing-${process.pid}`;
  const queue = `eg-existing-q-${process.pid}`;
  before(async () => {
    rabbit = await sharedRabbit();
  });
  after(async () => {
    await rabbit?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb: { kind: amqp, url: ${rabbit.url}, exchange: { name: ${exchange}, declare: false } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: rb, topic: orders.created } }
`,
  );

  it("is not ready and says which exchange is missing, refuses publishes with 503, and is ready once it exists; deleted again, a 503 and a reconnect in the server's words", async () => {
    await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying' && String(l.err).includes(`no exchange '${exchange}'`), 15000);
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body.reasons, ['broker rb: topology not ready']);
    const refused = await post(gw.url('api', '/out'), { n: 0 });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, new RegExp(`no exchange '${exchange}'`));

    await pikaDeclareExchange(rabbit, exchange, 'topic');
    await pikaDeclareQueue(rabbit, queue, exchange, 'orders.*');
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const reply = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(reply.status, 200, reply.text);
    const [got] = await pikaConsume(rabbit, queue, 1);
    assert.equal(got!.body, '{"n":1}');
    assert.equal(got!.routingKey, 'orders.created');

    // Deleted while the gateway runs: the publish that finds it gone is a 503 in the server's words,
    // and the broker, connecting again to check it, says why meanwhile (not `unreachable`).
    const from = gw.logs.length;
    await pikaDeleteExchange(rabbit, exchange);
    const gone = await post(gw.url('api', '/out'), { n: 2 });
    assert.equal(gone.status, 503, gone.text);
    assert.match(gone.body.detail, new RegExp(`the server closed the publish channel \\(404 NOT_FOUND - no exchange '${exchange}' in vhost '[^']+'\\)`));
    const lost = await gw.waitForLog((l) => l.msg === 'amqp connection lost; reconnecting', 15000, from);
    assert.match(String(lost.reason), new RegExp(`^reconnecting: the server closed the publish channel \\(404 NOT_FOUND - no exchange '${exchange}'`));
    await eventually(async () => assert.deepEqual((await readyz(gw)).body.reasons, ['broker rb: topology not ready']), 15000, 100);
  });
});
