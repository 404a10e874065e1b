import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Transform, type TransformCallback } from 'node:stream';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume, pikaDeclareExchange, pikaDeclareQueue, pikaDeleteExchange } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
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
  const rabbit = useRabbit(() => sharedRabbit());
  const exchange = `eg-existing-${process.pid}`;
  const queue = `eg-existing-q-${process.pid}`;
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

/** The server's bytes to one connection, held while `holding` and passed on at release(). */
class HeldReplies extends Transform {
  holding = false;
  private readonly held: Buffer[] = [];
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.holding) this.held.push(chunk);
    else this.push(chunk);
    done();
  }
  release(): void {
    this.holding = false;
    for (const c of this.held.splice(0)) this.push(c);
  }
}

/**
 * The exchange deleted under a running broker: the publish channel closes (404) and the broker
 * closes its other connection to connect again. Until the server answers that close, the closed
 * channel's publisher stayed in use: a publish meanwhile went out on it, on the publish
 * connection, which the server then closed (504 CHANNEL_ERROR), logged as that connection lost
 * and opened again, the publish told of a 504. The server's answer to the close is held here,
 * so the publish always comes in that time.
 */
describe('kind: amqp, a publish while the broker reconnects for a publish channel the server closed', () => {
  const exchange = `eg-reclosed-${process.pid}`;
  /** Each connection's server bytes, in the order the gateway opened them (a connect opens the broker's connection, then its publish connection). */
  const replies: HeldReplies[] = [];
  // Registered first, so it runs before the proxy stops.
  after(() => {
    for (const r of replies) r.release();
  });
  const rabbit = useRabbit(() => sharedRabbit(), {
    proxy: {
      toClient: () => {
        const r = new HeldReplies();
        replies.push(r);
        return r;
      },
    },
  });
  before(async () => {
    await pikaDeclareExchange(rabbit, exchange, 'topic');
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb: { kind: amqp, url: "${rabbit.proxiedUrl}", mandatory: false, exchange: { name: ${exchange}, declare: false } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: rb, topic: orders.created } }
`,
  );

  it("refuses it at once, in the server's words, and does not send it on the closed channel", async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/out'), { n: 0 })).status, 200), 15000, 100);
    // The broker's connection, opened just before its publish connection (after any failed try).
    const main = replies.at(-2)!;
    const from = gw.logs.length;
    main.holding = true;
    await pikaDeleteExchange(rabbit, exchange);
    const gone = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(gone.status, 503, gone.text);
    assert.match(gone.body.detail, /the server closed the publish channel \(404 NOT_FOUND/);
    const meanwhile = await post(gw.url('api', '/out'), { n: 2 });
    assert.equal(meanwhile.status, 503, meanwhile.text);
    assert.match(meanwhile.body.detail, /is not connected \(reconnecting: the server closed the publish channel \(404 NOT_FOUND - no exchange/);
    main.release();
    await gw.waitForLog((l) => l.msg === 'amqp connection lost; reconnecting', 15000, from);
    await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying', 15000, from);
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => String(l.msg).startsWith('amqp publish connection')),
      [],
    );
  });
});

/**
 * A connect that fails on a declare (the exchange that must exist does not) fails on a connection
 * the server opened: each retry left that one open on the server, one more per try, for as long as
 * the exchange was missing (hundreds an hour at the longest backoff). Counted at a proxy.
 */
describe('kind: amqp, connects failing on a missing exchange', () => {
  const rabbit = useRabbit(() => sharedRabbit(), { proxy: true });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb: { kind: amqp, url: "${rabbit.proxiedUrl}", exchange: { name: eg-never-${process.pid}, declare: false } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: rb, topic: orders.created } }
`,
  );

  it('close the connection of each failed try: one is open at most, the one trying', async () => {
    await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying' && String(l.err).includes('no exchange'), 15000);
    await eventually(() => assert.ok(rabbit.proxy.accepted >= 4, `${rabbit.proxy.accepted} connections so far`), 20000, 50);
    await eventually(() => assert.ok(rabbit.proxy.openLinks() <= 1, `${rabbit.proxy.openLinks()} connections open after ${rabbit.proxy.accepted} tries`), 5000, 50);
  });
});
