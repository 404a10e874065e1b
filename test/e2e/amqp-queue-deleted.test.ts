import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { consumersReady, eventually, startGateway, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume, pikaDeclareExchange, pikaDeclareQueue, pikaDeleteExchange, pikaDeleteQueue, pikaPublish, pikaQueueDeclaredAs, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * One vhost (or, run alone, one server) for the whole file, taken before its first case (useRabbit
 * outside any describe). When the server's side was read and changed with rabbitmqctl (an Erlang
 * VM each, 30-55 s on a loaded machine), what it has was read with pika where it could be
 * (pikaQueueDeclaredAs), and the cases that close connections went to amqp-connection-closed.test.ts;
 * rabbit.admin (erl_call) does it in milliseconds now.
 */
const rabbit = useRabbit(() => sharedRabbit());

/**
 * A queue the amqp broker declares (`queues.<name>`, `declare: true`), deleted on the server while
 * the gateway runs: its route found it missing and waited for the next reconnect (`queue 'Q' not
 * found on broker 'B'`), and every publish to its bindings was 503 meanwhile. Now the route
 * declares it again, with its arguments and bindings, and consumes. One no route reads has no
 * consumer to be cancelled: it stayed deleted until the next reconnect, every publish for its
 * bindings 503; now the broker declares it again when such a publish comes back unroutable. A
 * queue that must exist (`declare: false`) is still waited for; a routing-key route's own queue is
 * declared by the route.
 */
describe('kind: amqp, a queue deleted on the server while the gateway runs', () => {
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
    await pikaDeclareQueue(rabbit, 'outside', 'amq.topic', 'outside.*');
  });
  after(async () => {
    await receiver?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    queues:
      orders: { bindings: ["orders.*"], arguments: { x-max-length: 1000 } }
      outside: { declare: false }
      unread: { bindings: ["unread.*.x", "other.#"], arguments: { x-max-length: 1000 } }
  regional:
    kind: amqp
    url: ${rabbit.url}
    exchange: { name: eg-regions, type: headers }
    queues:
      eu-orders: { bindings: [{ arguments: { region: eu, tier: gold } }, { arguments: { x-match: any, region: eu-west, country: ie } }] }
      us-orders: { bindings: [{ arguments: { region: us } }] }
routes:
  - { name: post-regional, from: { listener: api, path: /regional }, to: { broker: regional, topic: any.key } }
  - { name: eu-orders, from: { broker: regional, topic: eu-orders }, to: { http: { url: "${receiver.url}/eu" } } }
  - { name: post-orders, from: { listener: api, path: /orders }, to: { broker: rabbit, topic: orders.new } }
  - { name: post-events, from: { listener: api, path: /events }, to: { broker: rabbit, topic: events.new } }
  - { name: post-outside, from: { listener: api, path: /outside }, to: { broker: rabbit, topic: outside.new } }
  - { name: post-unread, from: { listener: api, path: /unread }, to: { broker: rabbit, topic: unread.new.x } }
  - { name: orders, from: { broker: rabbit, topic: orders }, to: { http: { url: "${receiver.url}/orders" } } }
  - { name: events, from: { broker: rabbit, topic: "events.*", group: deleted-events }, to: { http: { url: "${receiver.url}/events" } } }
  - { name: outside, from: { broker: rabbit, topic: outside }, to: { http: { url: "${receiver.url}/outside" } } }
`,
  );

  const arrived = (path: string) => receiver.requests.filter((r) => r.url === path).map((r) => (JSON.parse(r.body) as { i: number }).i);

  /**
   * Deletes `queue` once a first message went through it, then publishes to `path` until one is
   * answered 200 after the deletion: every 200 (the first included) must reach the route's target.
   * What is answered meanwhile is 503 (no queue bound for the key: `mandatory`), never a 2xx.
   */
  async function deleteAndPublish(path: string, queue: string): Promise<number[]> {
    const taken: number[] = [];
    let n = 0;
    const publish = async () => {
      const i = n++;
      const res = await post(gw.url('api', path), { i });
      assert.ok(res.status === 200 || res.status === 503, `${res.status} ${res.text}`);
      if (res.status === 200) taken.push(i);
      else assert.equal(res.body.code, 'EG_BROKER_UNAVAILABLE', res.text);
      return res.status;
    };
    assert.equal(await publish(), 200);
    await eventually(() => assert.deepEqual(arrived(path), [0]), 15000, 50);
    await pikaDeleteQueue(rabbit, queue);
    await eventually(async () => assert.equal(await publish(), 200), 20000, 50);
    await eventually(() => assert.deepEqual(arrived(path), taken), 15000, 50);
    return taken;
  }

  it('a declared queue: its route declares it again with its arguments and bindings, logs it once, and consumes; nothing answered 200 is lost', async () => {
    await consumersReady(gw, 'orders', 60000);
    await consumersReady(gw, 'events', 30000);
    await consumersReady(gw, 'outside', 30000);
    const from = gw.logs.length;
    const taken = await deleteAndPublish('/orders', 'orders');
    assert.ok(taken.length >= 2, String(taken));
    // Declared again by the route that finds it missing, or by the broker after a publish came back unroutable: once either way.
    const declared = gw.logs.slice(from).filter((l) => l.msg === "amqp queue 'orders' was deleted on the server or lost its bindings; declared again with its arguments and bindings");
    assert.equal(declared.length, 1, JSON.stringify(gw.logs.slice(from)));
    assert.equal(declared[0]!.level, 'warn');
    assert.deepEqual(declared[0]!.bindings, [{ exchange: 'amq.topic', routingKey: 'orders.*' }]);
    assert.equal(gw.logs.slice(from).filter((l) => /not found; waiting for it/.test(String(l.msg))).length, 0);
    assert.equal((await readyz(gw)).status, 200);
    // With its arguments: a queue declared without them would be refused at the next connect (406 PRECONDITION_FAILED).
    await pikaQueueDeclaredAs(rabbit, 'orders', { 'x-max-length': 1000 });
  });

  it('a declared queue no route reads: an unroutable publish for its bindings has the broker declare it again, once; nothing answered 200 is lost or doubled', async () => {
    await gw.waitForLog((l) => l.msg === 'amqp connected', 60000);
    assert.equal((await post(gw.url('api', '/unread'), { i: -1 })).status, 200);
    assert.equal(await pikaQueueDepth(rabbit, 'unread'), 1);
    await pikaDeleteQueue(rabbit, 'unread');
    const from = gw.logs.length;
    const taken: number[] = [];
    let refused = 0;
    let n = 0;
    await eventually(
      async () => {
        const i = n++;
        const res = await post(gw.url('api', '/unread'), { i });
        assert.ok(res.status === 200 || res.status === 503, `${res.status} ${res.text}`);
        if (res.status === 503) {
          refused++;
          assert.equal(res.body.code, 'EG_BROKER_UNAVAILABLE', res.text);
        }
        assert.equal(res.status, 200);
        taken.push(i);
      },
      20000,
      50,
    );
    // The publish that found it gone was refused, not answered 2xx.
    assert.ok(refused >= 1, String(refused));
    for (let i = n; i < n + 5; i++) {
      assert.equal((await post(gw.url('api', '/unread'), { i })).status, 200);
      taken.push(i);
    }
    // Every 200 on the queue once; what went before the deletion went with it.
    assert.equal(await pikaQueueDepth(rabbit, 'unread'), taken.length);
    const bodies = (await pikaConsume(rabbit, 'unread', taken.length)).map((m) => (JSON.parse(m.body) as { i: number }).i);
    assert.deepEqual(bodies, taken);
    const declared = gw.logs.slice(from).filter((l) => l.msg === "amqp queue 'unread' was deleted on the server or lost its bindings; declared again with its arguments and bindings");
    assert.equal(declared.length, 1, JSON.stringify(gw.logs.slice(from)));
    assert.equal(declared[0]!.broker, 'rabbit');
    assert.deepEqual(declared[0]!.bindings, [
      { exchange: 'amq.topic', routingKey: 'unread.*.x' },
      { exchange: 'amq.topic', routingKey: 'other.#' },
    ]);
    await pikaQueueDeclaredAs(rabbit, 'unread', { 'x-max-length': 1000 });
    assert.equal((await readyz(gw)).status, 200);
  });

  it("a headers exchange routes by the bindings' arguments: only matching messages reach the route; a deleted queue is declared again only for a returned publish its arguments match (2192)", () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        await consumersReady(gw, 'eu-orders', 30000);
        // A pika publisher's headers: all of region eu and tier gold, or any of region eu-west and country ie (strings: a number 1 is not "1").
        const sent = [
          { i: 1, headers: { region: 'eu', tier: 'gold' } },
          { i: 2, headers: { region: 'eu' } },
          { i: 3, headers: { region: 'us', tier: 'gold' } },
          { i: 4, headers: { country: 'ie' } },
          { i: 5, headers: { region: 'eu-west', country: 'fr' } },
          { i: 6, headers: {} },
          { i: 7, headers: { region: 'eu', tier: 'silver' } },
          { i: 8, headers: { region: 'us' } },
        ];
        await pikaPublish(
          rabbit,
          'eg-regions',
          'ignored.key',
          sent.map(({ i, headers }) => ({ body: JSON.stringify({ i }), headers })),
        );
        // The gateway's own publishes (HTTP headers as AMQP string headers), the last one the sentinel.
        assert.equal((await post(gw.url('api', '/regional'), { i: 9 }, { region: 'eu', tier: 'gold' })).status, 200);
        // Sorted: the route hands up to min(prefetch, concurrency) messages to its webhook at once, so 4 may arrive before 1.
        await eventually(
          () =>
            assert.deepEqual(
              arrived('/eu').sort((a, b) => a - b),
              [1, 4, 5, 9],
            ),
          15000,
          50,
        );
        assert.equal(await pikaQueueDepth(rabbit, 'us-orders'), 2); // 3 and 8
        // us-orders, which no route reads, deleted: a publish for no binding comes back and declares nothing again; one its arguments match declares it.
        await pikaDeleteQueue(rabbit, 'us-orders');
        const from = gw.logs.length;
        const stray = await post(gw.url('api', '/regional'), { i: 10 }, { region: 'apac' });
        assert.equal(stray.status, 503, stray.text);
        let n = 11;
        await eventually(async () => assert.equal((await post(gw.url('api', '/regional'), { i: n++ }, { region: 'us' })).status, 200), 20000, 50);
        // The 200 is no proof the line is in gw.logs yet: the re-declare logs once its channel closed, a round trip after the
        // binding that routed the publish, and the line comes over another pipe than the answer.
        const isDeclared = (l: { msg?: unknown }) => /^amqp queue '.*' was deleted on the server/.test(String(l.msg));
        await gw.waitForLog(isDeclared, 15000, from);
        // The 200 reached the queue: it holds that publish alone (the deletion took 3 and 8, the 503s reached no queue).
        assert.equal(await pikaQueueDepth(rabbit, 'us-orders'), 1);
        const declared = gw.logs.slice(from).filter(isDeclared);
        assert.deepEqual(
          declared.map((l) => [l.msg, l.bindings]),
          [
            [
              "amqp queue 'us-orders' was deleted on the server or lost its bindings; declared again with its arguments and bindings",
              [{ exchange: 'eg-regions', routingKey: '', arguments: { region: 'us' } }],
            ],
          ],
        );
        // Bound with its arguments (bound without, it would take every message): what matches none is refused still.
        const apac = await post(gw.url('api', '/regional'), { i: n++ }, { region: 'apac' });
        assert.equal(apac.status, 503, apac.text);
      },
    ));

  it("a reload that changes a headers binding's arguments unbinds the old ones: RabbitMQ tells bindings apart by them (2192)", async () => {
    const original = readFileSync(gw.configFile, 'utf8');
    const changed = original.replace('us-orders: { bindings: [{ arguments: { region: us } }] }', 'us-orders: { bindings: [{ arguments: { region: ca } }] }');
    assert.notEqual(changed, original);
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(changed, undefined, { whole: true })).msg, 'config reloaded');
    const unbound = await gw.waitForLog((l) => l.msg === 'amqp queue unbound from a binding a reload dropped' && l.queue === 'us-orders', 15000, from);
    assert.deepEqual([unbound.exchange, unbound.routingKey, unbound.arguments], ['eg-regions', '', { region: 'us' }]);
    const depth = await pikaQueueDepth(rabbit, 'us-orders');
    const us = await post(gw.url('api', '/regional'), { i: 100 }, { region: 'us' });
    // Bound for nothing now (the case before bound the queue again with {region: us}): a binding left
    // would route it, so this is what `rabbitmqctl list_bindings` would show, without its Erlang VM.
    assert.equal(us.status, 503, us.text);
    assert.equal((await post(gw.url('api', '/regional'), { i: 101 }, { region: 'ca' })).status, 200);
    assert.equal(await pikaQueueDepth(rabbit, 'us-orders'), depth + 1);
  });

  it('a re-declare the server refuses (the queue made again with other arguments) is logged, the publishes stay 503, and a later one goes through once it can', async () => {
    await pikaDeleteQueue(rabbit, 'unread');
    // Plain: the config asks for x-max-length, so declaring it again is refused (406 PRECONDITION_FAILED), and nothing binds it.
    await pikaDeclareQueue(rabbit, 'unread');
    // Which is also what the check of a queue's arguments below sees in a queue made otherwise.
    await assert.rejects(pikaQueueDeclaredAs(rabbit, 'unread', { 'x-max-length': 1000 }), /406.*PRECONDITION_FAILED - inequivalent arg 'x-max-length'/);
    const from = gw.logs.length;
    const first = await post(gw.url('api', '/unread'), { i: 0 });
    assert.equal(first.status, 503, first.text);
    const refusal = await gw.waitForLog((l) => l.broker === 'rabbit' && /^amqp queue 'unread' took no publish for its bindings/.test(String(l.msg)), 15000, from);
    assert.match(String(refusal.err), /PRECONDITION.FAILED - inequivalent arg 'x-max-length'/);
    assert.equal(refusal.level, 'warn');
    assert.equal((await post(gw.url('api', '/unread'), { i: 1 })).status, 503);
    await pikaDeleteQueue(rabbit, 'unread');
    const taken: number[] = [];
    let n = 2;
    await eventually(
      async () => {
        const i = n++;
        const res = await post(gw.url('api', '/unread'), { i });
        assert.ok(res.status === 200 || res.status === 503, `${res.status} ${res.text}`);
        assert.equal(res.status, 200);
        taken.push(i);
      },
      20000,
      50,
    );
    assert.equal(await pikaQueueDepth(rabbit, 'unread'), taken.length);
    assert.deepEqual(
      (await pikaConsume(rabbit, 'unread', taken.length)).map((m) => (JSON.parse(m.body) as { i: number }).i),
      taken,
    );
    await pikaQueueDeclaredAs(rabbit, 'unread', { 'x-max-length': 1000 });
  });

  it("a routing-key route's queue: the route declares and binds it again, and consumes", async () => {
    const from = gw.logs.length;
    await deleteAndPublish('/events', 'deleted-events');
    await consumersReady(gw, 'events', 15000, from);
    assert.equal((await readyz(gw)).status, 200);
  });

  it('a queue that must exist (declare: false) is waited for, not declared: the route starts once it exists again', async () => {
    const from = gw.logs.length;
    assert.equal((await post(gw.url('api', '/outside'), { i: 0 })).status, 200);
    await eventually(() => assert.deepEqual(arrived('/outside'), [0]), 15000, 50);
    await pikaDeleteQueue(rabbit, 'outside');
    await gw.waitForLog((l) => l.route === 'outside' && /not found; waiting for it/.test(String(l.msg)), 15000, from);
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body.reasons, ["route outside: queue 'outside' not found on broker 'rabbit'"]);
    // Nothing is bound for its key: refused, not taken.
    const refused = await post(gw.url('api', '/outside'), { i: 1 });
    assert.equal(refused.status, 503, refused.text);
    assert.equal(gw.logs.slice(from).filter((l) => /was deleted on the server or lost its bindings; declared again/.test(String(l.msg))).length, 0);
    await pikaDeclareQueue(rabbit, 'outside', 'amq.topic', 'outside.*');
    await gw.waitForLog((l) => l.route === 'outside' && l.msg === "amqp queue 'outside' found", 15000, from);
    assert.equal((await post(gw.url('api', '/outside'), { i: 2 })).status, 200);
    await eventually(() => assert.deepEqual(arrived('/outside'), [0, 2]), 15000, 50);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
  });

  it("a reload that changes a declared queue's arguments (its declare refused, 406) stops only the route that reads it, in the server's words; publishes and other routes go on, and putting the config back loses nothing", async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const original = readFileSync(gw.configFile, 'utf8');
    const changed = original.replace('orders: { bindings: ["orders.*"], arguments: { x-max-length: 1000 } }', 'orders: { bindings: ["orders.*"], arguments: { x-max-length: 2000 } }');
    assert.notEqual(changed, original);
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(changed, undefined, { whole: true })).msg, 'config reloaded');
    await gw.waitForLog((l) => l.route === 'orders' && l.msg === "amqp queue 'orders' not as declared on the server; waiting for it (tried again with backoff)", 30000, from);
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body.reasons, ["route orders: queue 'orders' on broker 'rabbit' is not as declared"]);
    const routes = (await gw.status()).routes as { name: string; consumer: { detail: string } }[];
    assert.match(
      routes.find((r) => r.name === 'orders')!.consumer.detail,
      /^queue 'orders' on broker 'rabbit' is not as declared: 406 PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'orders'/,
    );
    // The broker publishes on (to the queue the server has), and its other routes consume on.
    const ordersBefore = arrived('/orders').length;
    const kept = await post(gw.url('api', '/orders'), { i: 100 });
    assert.equal(kept.status, 200, kept.text);
    assert.equal((await post(gw.url('api', '/events'), { i: 101 })).status, 200);
    await eventually(
      () =>
        assert.deepEqual(
          arrived('/events').filter((i) => i === 101),
          [101],
        ),
      15000,
      50,
    );
    assert.equal(arrived('/orders').length, ordersBefore);
    const back = gw.logs.length;
    assert.equal((await gw.reconfigure(original, undefined, { whole: true })).msg, 'config reloaded');
    await consumersReady(gw, 'orders', 30000, back);
    await eventually(() => assert.deepEqual(arrived('/orders').slice(ordersBefore), [100]), 15000, 50);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
  });
});

/**
 * The server refuses to open the connection's virtual host (one it does not have: 530 NOT_ALLOWED,
 * whose words amqplib drops at that step): /readyz and the broker's detail said `unreachable:
 * Expected ConnectionOpenOk; got <ConnectionClose channel:0>`, as for a server that is not there.
 */
describe('kind: amqp, a virtual host the server refuses to open', () => {
  // `100%` too: amqplib opens a `%` that starts no escape as written, and the detail said '/'.
  it('says `closed by the server`, naming the virtual host as amqplib opened it, not `unreachable`', async () => {
    const url = new URL(rabbit.url);
    url.pathname = '/eg-no-such-vhost';
    const lonePercent = new URL(rabbit.url);
    lonePercent.pathname = '/eg-100%-vhost';
    const gw = await startGateway(`
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  nohost: { kind: amqp, url: "${url.href}" }
  percent: { kind: amqp, url: "${lonePercent.href}" }
  wrongport: { kind: mqtt, url: "mqtt://${rabbit.host}:${rabbit.port}", clientId: eg-wrong-port-${process.pid}, reconnectPeriodMs: 100 }
routes:
  - { name: post, from: { listener: api, path: /in }, to: { broker: nohost, topic: x } }
  - { name: percent, from: { listener: api, path: /percent }, to: { broker: percent, topic: x } }
  - { name: wrongport, from: { listener: api, path: /wrongport }, to: { broker: wrongport, topic: x } }
`);
    try {
      await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying' && l.broker === 'nohost', 30000);
      await gw.waitForLog((l) => l.msg === 'amqp connect failed; retrying' && l.broker === 'percent', 30000);
      const probe = await readyz(gw);
      assert.equal(probe.status, 503);
      assert.deepEqual([...probe.body.reasons].sort(), ['broker nohost: closed by the server', 'broker percent: closed by the server', 'broker wrongport: unreachable']);
      const detail = async (name: string) => (await gw.status()).brokers.find((b: { name: string }) => b.name === name).detail;
      assert.equal(
        await detail('nohost'),
        "closed by the server: it refused to open virtual host 'eg-no-such-vhost' (one it does not have, one the user may not use, or a connection limit reached; the server's log says which)",
      );
      assert.equal(
        await detail('percent'),
        "closed by the server: it refused to open virtual host 'eg-100%-vhost' (one it does not have, one the user may not use, or a connection limit reached; the server's log says which)",
      );
      // An mqtt broker pointed at RabbitMQ fails each try twice (mqtt.js cannot parse the AMQP
      // header RabbitMQ answers with, then the reset): each reason is told once, not two warnings a try.
      const rabbitLog = join(rabbit.node.home, 'log', `${rabbit.node.nodeName}.log`);
      const mqttTries = () =>
        readFileSync(rabbitLog, 'utf8')
          .split('\n')
          .filter((l) => l.includes('bad_header') && l.includes('77,81,84,84')).length;
      await eventually(() => assert.ok(mqttTries() >= 6, `${mqttTries()} tries`), 30000, 100);
      const told = gw.logs.filter((l) => l.msg === 'mqtt connect failed; retrying' && l.broker === 'wrongport').map((l) => String(l.err));
      assert.ok(told.length > 0);
      assert.equal(new Set(told).size, told.length, JSON.stringify(told));
    } finally {
      await gw.stop();
    }
  });
});

/**
 * A route's re-declare that fails half-way: the queue is declared again, but its binding to an
 * exchange deleted meanwhile is refused (404). The queue was then there, unbound: the route's next
 * try found it, consumed it and said ready, while nothing published for its binding reached it
 * until a reconnect. Now a failed re-declare is tried again in full, bindings included.
 */
describe('kind: amqp, a re-declare that fails half-way (its binding exchange deleted too)', () => {
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
    await pikaDeclareExchange(rabbit, 'side-ex', 'topic');
  });
  after(async () => {
    await receiver?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    queues:
      halfway: { bindings: [{ exchange: side-ex, routingKey: "side.*" }] }
routes:
  - { name: halfway, from: { broker: rabbit, topic: halfway }, to: { http: { url: "${receiver.url}/halfway" } } }
`,
  );

  const arrived = () => receiver.requests.filter((r) => r.url === '/halfway').map((r) => (JSON.parse(r.body) as { i: number }).i);

  it('binds the queue again once the exchange is back: what is published for the binding arrives', async () => {
    await consumersReady(gw, 'halfway', 60000);
    await pikaPublish(rabbit, 'side-ex', 'side.a', [{ body: '{"i":0}' }]);
    await eventually(() => assert.deepEqual(arrived(), [0]), 15000, 50);
    const from = gw.logs.length;
    await pikaDeleteExchange(rabbit, 'side-ex');
    await pikaDeleteQueue(rabbit, 'halfway');
    // The route finds its queue gone, declares it (the server takes it) and binds it (refused: no exchange).
    await gw.waitForLog((l) => /declaring it again failed/.test(String(l.detail)), 30000, from);
    await pikaDeclareExchange(rabbit, 'side-ex', 'topic');
    let i = 1;
    await eventually(
      async () => {
        await pikaPublish(rabbit, 'side-ex', 'side.b', [{ body: `{"i":${i++}}` }]);
        assert.ok(arrived().length > 1, `arrived: ${JSON.stringify(arrived())}`);
      },
      30000,
      300,
    );
    assert.equal((await readyz(gw)).status, 200);
  });
});

/**
 * The broker's exchange deleted on the server and made again by another client (a definitions
 * import, an application declaring it at its start) before any publish of the gateway found it
 * missing: RabbitMQ drops a queue's bindings with their exchange, so the gateway's queues are
 * there, consumed and ready, and bound to nothing. A publish of the gateway for them comes back
 * unroutable (503). The declared queue matching it was declared again; a routing-key route's queue
 * was not: the next publishes reached the declared queue, 200, and never the route, whatever it
 * waited for, until the broker reconnected. Now a route whose binding matches a returned publish
 * binds its queue again too.
 */
describe('kind: amqp, the exchange deleted and made again by another client', () => {
  const exchange = `eg-remade-${process.pid}`;
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    exchange: { name: ${exchange}, type: topic }
    queues:
      remade-billing: { bindings: ["orders.*"] }
routes:
  - { name: remade-in, from: { listener: api, path: /orders }, to: { broker: rabbit, topic: orders.created } }
  - { name: remade-bill, from: { broker: rabbit, topic: remade-billing }, to: { http: { url: "${receiver.url}/bill" } } }
  - { name: remade-pattern, from: { broker: rabbit, topic: "orders.*" }, to: { http: { url: "${receiver.url}/pattern" } } }
`,
  );

  const arrived = (path: string) => receiver.requests.filter((r) => r.url === path).map((r) => (JSON.parse(r.body) as { n: number }).n);

  it("binds a routing-key route's queue again, as the declared queue's, once a publish for its pattern comes back unroutable: every later 200 reaches both", async () => {
    await consumersReady(gw, ['remade-bill', 'remade-pattern'], 60000);
    const first = await post(gw.url('api', '/orders'), { n: 0 });
    assert.equal(first.status, 200, first.text);
    await eventually(() => assert.deepEqual([arrived('/bill'), arrived('/pattern')], [[0], [0]]), 15000, 50);

    await pikaDeleteExchange(rabbit, exchange);
    await pikaDeclareExchange(rabbit, exchange, 'topic');
    const from = gw.logs.length;
    // Bound to nothing: the first publish comes back (mandatory), which has both queues bound again.
    const returned = await post(gw.url('api', '/orders'), { n: 1 });
    assert.equal(returned.status, 503, returned.text);
    assert.match(returned.body.detail, new RegExp(`no queue is bound to exchange '${exchange}' for routing key 'orders.created'`));
    await gw.waitForLog((l) => String(l.msg).startsWith("amqp queue 'remade-billing'"), 15000, from);
    await gw.waitForLog((l) => String(l.msg).startsWith("amqp queue 'eventgate-remade-pattern'"), 15000, from);

    const answered: number[] = [];
    for (let n = 2; n < 5; n++) {
      const reply = await post(gw.url('api', '/orders'), { n });
      assert.equal(reply.status, 200, reply.text);
      answered.push(n);
    }
    // Another client's publishes reach the route again too.
    await pikaPublish(rabbit, exchange, 'orders.pika', [{ body: '{"n":5}' }]);
    await eventually(
      () =>
        assert.deepEqual(
          [arrived('/bill'), arrived('/pattern')],
          [
            [0, ...answered, 5],
            [0, ...answered, 5],
          ],
        ),
      15000,
      50,
    );
    assert.equal((await readyz(gw)).status, 200);
  });
});

/**
 * The server refuses what the broker declares at connect: a queue it has with other arguments (406
 * PRECONDITION_FAILED), a queue a user may not configure (403 ACCESS_REFUSED: its permissions; a
 * name RabbitMQ keeps for itself, `amq.`, is a config error now). The login went through and the
 * server is there, but /readyz said `unreachable` for the first and `login refused` for the second,
 * sending people to the network or the credentials. Then the first took the whole broker down
 * (`topology not ready`, every publish 503); now it stops only the route that reads the queue.
 */
describe('kind: amqp, a declare the server refuses at connect', () => {
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
    // Declared plainly here, bound as the config binds it; the config asks for it with a length limit.
    await pikaDeclareQueue(rabbit, 'inequivalent', 'amq.topic', 'ineq.*');
    // The file's own user (the node has it from its boot) may read and write, not declare (configure) anything. No case before this one uses it.
    await rabbit.admin.setPermissions(rabbit.vhost, rabbit.user, '^$', '.*', '.*');
  });
  after(async () => {
    await receiver?.stop();
  });

  it("says `topology not ready` with the server's words for a queue the user may not declare, neither `unreachable` nor `login refused`; a queue the server has with other arguments stops only its route, in the server's words, until it is deleted", async () => {
    const gw = await startGateway(`
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  other-args:
    kind: amqp
    url: ${rabbit.url}
    queues:
      inequivalent: { bindings: ["ineq.*"], arguments: { x-max-length: 10 } }
      # An argument only quorum queues take: RabbitMQ refuses the classic queue, which it does not have.
      type-refused: { bindings: ["tref.*"], arguments: { x-delivery-limit: 2 } }
  restricted:
    kind: amqp
    url: ${rabbit.userUrl}
    queues:
      mine: {}
routes:
  - { name: post-ineq, from: { listener: api, path: /ineq }, to: { broker: other-args, topic: ineq.new } }
  - { name: inequivalent, from: { broker: other-args, topic: inequivalent }, to: { http: { url: "${receiver.url}/ineq" } } }
  - { name: type-refused, from: { broker: other-args, topic: type-refused }, to: { http: { url: "${receiver.url}/tref" } } }
`);
    try {
      await gw.waitForLog((l) => l.broker === 'restricted' && l.msg === 'amqp connect failed; retrying', 30000);
      const waiting = await gw.waitForLog((l) => l.route === 'inequivalent' && /not as declared on the server; waiting for it/.test(String(l.msg)), 30000);
      assert.equal(waiting.msg, "amqp queue 'inequivalent' not as declared on the server; waiting for it (tried again with backoff)");
      // A queue the server does not have is not said to be on it otherwise.
      const refused = await gw.waitForLog((l) => l.route === 'type-refused' && /on the server; waiting for it/.test(String(l.msg)), 30000);
      assert.equal(refused.msg, "amqp queue 'type-refused' refused as declared on the server; waiting for it (tried again with backoff)");
      assert.match(String(refused.detail), /^queue 'type-refused' on broker 'other-args' is refused as declared: 406 PRECONDITION_FAILED - invalid arg 'x-delivery-limit'/);
      assert.equal(
        gw.logs.find((l) => l.broker === 'other-args' && l.queue === 'type-refused')?.msg,
        "amqp queue 'type-refused' was refused as declared (an argument or property the server does not take for it); the routes that read it wait (declaring it again with backoff), publishes and other routes go on",
      );
      const probe = await readyz(gw);
      assert.equal(probe.status, 503);
      assert.deepEqual([...probe.body.reasons].sort(), [
        'broker restricted: topology not ready',
        "route inequivalent: queue 'inequivalent' on broker 'other-args' is not as declared",
        "route type-refused: queue 'type-refused' on broker 'other-args' is refused as declared",
      ]);
      const status = await gw.status();
      const brokers = status.brokers as { name: string; ready: boolean; detail: string }[];
      assert.equal(brokers.find((b) => b.name === 'other-args')!.ready, true);
      assert.match(
        (status.routes as { name: string; consumer: { detail: string } }[]).find((r) => r.name === 'inequivalent')!.consumer.detail,
        /^queue 'inequivalent' on broker 'other-args' is not as declared: 406 PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'inequivalent'/,
      );
      const restrictedDetail = brokers.find((b) => b.name === 'restricted')!.detail;
      assert.match(
        restrictedDetail,
        /^topology not ready: Operation failed: QueueDeclare; 403 \(ACCESS-REFUSED\) with message "ACCESS_REFUSED - access to queue 'mine' in vhost '[^']+' refused for user '/,
      );
      assert.ok(restrictedDetail.includes(`refused for user '${rabbit.user}'`), restrictedDetail);
      // Publishes go on, to the queue the server has; the route does not consume it as it is.
      const kept = await post(gw.url('api', '/ineq'), { i: 0 });
      assert.equal(kept.status, 200, kept.text);
      assert.equal(await pikaQueueDepth(rabbit, 'inequivalent'), 1);
      assert.equal((await pikaConsume(rabbit, 'inequivalent', 1))[0]!.body, '{"i":0}');
      // Deleted on the server: the route's next try declares it as configured, and it consumes.
      const from = gw.logs.length;
      await pikaDeleteQueue(rabbit, 'inequivalent');
      const declared = await gw.waitForLog((l) => l.broker === 'other-args' && /^amqp queue 'inequivalent' declared with its arguments and bindings/.test(String(l.msg)), 30000, from);
      assert.match(String(declared.refusedBefore), /^406 PRECONDITION_FAILED - inequivalent arg 'x-max-length'/);
      await consumersReady(gw, 'inequivalent', 30000, from);
      assert.equal((await post(gw.url('api', '/ineq'), { i: 1 })).status, 200);
      await eventually(
        () =>
          assert.deepEqual(
            receiver.requests.filter((r) => r.url === '/ineq').map((r) => r.body),
            ['{"i":1}'],
          ),
        15000,
        50,
      );
      await pikaQueueDeclaredAs(rabbit, 'inequivalent', { 'x-max-length': 10 });
    } finally {
      await gw.stop();
    }
  });
});

/**
 * What the broker does to its publish connection when it loses its other one (lost()): a reset,
 * so the publishes it answered 503 never reach a server the path comes back to (given-up.ts).
 * amqplib hears of its socket's end only from 'error' or 'end', which a reset does not emit.
 */
describe('kind: amqp, the publish connection reset with its pair', () => {
  it('is closed at once, amqplib told: not left waiting for a CloseOk until its heartbeat gives it up', async () => {
    const { connect } = await import('amqplib');
    const { resetConnection, RESET_WITH_ITS_PAIR } = await import('../../src/kinds/brokers/amqp/connection.js');
    const conn = await connect(rabbit.url);
    const errors: string[] = [];
    conn.on('error', (err: Error) => errors.push(err.message));
    const closed = new Promise<Error | undefined>((resolve) => conn.on('close', resolve));
    let isClosed = false;
    void closed.then(() => (isClosed = true));
    resetConnection(conn);
    // amqplib closes the connection as it is told, within the same turn: its 'close' is out by the next.
    await new Promise<void>((r) => setImmediate(r));
    assert.ok(isClosed, "the connection's close event, at once (before: not until its heartbeat gave it up)");
    assert.equal((await closed)?.message, RESET_WITH_ITS_PAIR);
    assert.deepEqual(errors, [RESET_WITH_ITS_PAIR], 'the one error is the reset, which the broker does not log');
  });
});
