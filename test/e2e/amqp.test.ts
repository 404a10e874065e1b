import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { freezeProcess, publishThroughOutage, readyz } from '../helpers/outage.js';
import { scrape } from '../helpers/prometheus.js';
import { consumersReady, eventually, startGateway, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { answerSideBySide, arrivedSideBySide, SlowEndpoint } from '../helpers/slow-endpoint.js';
import { pikaConsume, pikaDeclareQueue, pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { freePort, startRabbit } from '../helpers/servers.js';

// Room enough that no publish meant to be confirmed meets its deadline on a loaded machine (in one run there, some 35 of the
// 500-publish burst below outwaited 2 s); the tests of a publish left unconfirmed reload to DEADLINE_MS, in place, and back.
const ROOM_MS = 30_000;
const DEADLINE_MS = 2000;

// One RabbitMQ for the file (it takes seconds to boot), its own: tests stop, freeze and reconfigure it;
// each test uses queues of its own.
describe('kind: amqp (against rabbitmq-server)', () => {
  // The queues: where the gateway's publishes land, declared by an independent client.
  const rabbit = useRabbit(() => startRabbit(), {
    queues: [
      ['orders-seen', 'amq.topic', 'orders.*'],
      ['relayed', 'amq.topic', 'out.#'],
      ['raw-seen', 'amq.topic', 'raw.out'],
    ],
  });
  let config: (withStuck: boolean, hookOptions?: string, ackTimeoutMs?: number) => string;
  /** The webhook of route `hooked` (several deliveries of its queue in hand at once). */
  let hook: SlowEndpoint;
  const ORDERED = 'concurrency: 8, orderBy: $headers.k, retry: { attempts: 3, backoffMs: 10 }';
  /** The message_id of this file's gateway's first publish: another gateway's must differ. */
  let firstMessageId: string | null = null;

  before(async () => {
    const deadPort = await freePort();
    hook = await SlowEndpoint.start();
    config = (withStuck: boolean, hookOptions = ORDERED, ackTimeoutMs = ROOM_MS) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    ackTimeoutMs: ${ackTimeoutMs}
    queues:
      inbox: { bindings: ["in.#"] }
      held: { bindings: [held] }
      raw: { bindings: [raw.in] }
      concurrent: { bindings: [conc] }
  nowhere:
    kind: amqp
    url: amqp://guest:guest@127.0.0.1:${deadPort}
    ackTimeoutMs: 500
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: orders
    from: { listener: api, path: /orders/:event }
    to: { broker: rabbit, topic: { expression: '"orders." & $path.event' } }
  - name: shout
    from: { listener: api, path: /shout }
    through:
      - transform: '$uppercase(text)'
    to: { broker: rabbit, topic: orders.shout }
  - name: relay
    from: { broker: rabbit, topic: inbox }
    through:
      - transform: '{"from": $topic, "value": $, "tenant": $headers.tenant}'
    to: { broker: rabbit, topic: { expression: '"out." & $topic' } }
  - name: bytes
    from: { broker: rabbit, topic: raw }
    to: { broker: rabbit, topic: raw.out }
  - name: as-user
    from: { listener: api, path: /as/:user }
    through:
      - headers: { set: { amqp_userId: $path.user, priority: '"9"', amqp_expiration: '"60000"' } }
    to: { broker: rabbit, topic: orders.as }
  - name: hooked
    from: { broker: rabbit, topic: concurrent }
    to: { http: { url: "${hook.url}/in", headers: { x-key: $headers.k }, ${hookOptions} } }
${withStuck ? '  - name: stuck\n    from: { broker: rabbit, topic: held }\n    to: { broker: nowhere, topic: x }\n' : ''}  - name: live
    from: { broker: rabbit, topic: "live.*" }
    to: { listener: ws, path: /live, format: envelope }
`;
  });
  // Registered after the before() that starts RabbitMQ, so the config can name it.
  const gw = useGateway(() => config(true));
  before(async () => {
    await consumersReady(gw, ['relay', 'live', 'bytes', 'hooked'], 30000);
  });
  after(async () => {
    await hook?.stop();
  });

  it('answers 200 only after RabbitMQ confirmed the message; HTTP headers become AMQP headers', async () => {
    const res = await post(gw.url('api', '/orders/created'), { id: 7 }, { 'x-tenant': 'acme' });
    assert.equal(res.status, 200, res.text);
    assert.deepEqual(res.body.deliveries, [{ broker: 'rabbit', topic: 'orders.created', partition: 0, offset: '-1' }]);
    const [got] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.equal(got!.routingKey, 'orders.created');
    assert.deepEqual(JSON.parse(got!.body), { id: 7 });
    assert.equal(got!.headers['x-tenant'], 'acme');
    firstMessageId = got!.properties.messageId;
  });

  it("sends a CloudEvent's datacontenttype as the content_type property, with the attributes as ce_ headers and no content-type header", async () => {
    const event = { specversion: '1.0', id: 'x-1', source: '/http', type: 'com.example.xml', datacontenttype: 'application/xml', data: '<order id="7"/>' };
    const res = await post(gw.url('api', '/orders/xml'), event, { 'content-type': 'application/cloudevents+json' });
    assert.equal(res.status, 200, res.text);
    const [got] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.equal(got!.body, '<order id="7"/>');
    assert.equal(got!.properties.contentType, 'application/xml');
    assert.equal(got!.headers['content-type'], undefined);
    assert.deepEqual([got!.headers.ce_specversion, got!.headers.ce_id, got!.headers.ce_type], ['1.0', 'x-1', 'com.example.xml']);
  });

  it("names a plain message's body by what it is once a step changed its kind: a JSON request transformed to a string is text/plain", async () => {
    const res = await post(gw.url('api', '/shout'), { text: 'hello' }, { 'content-type': 'application/json' });
    assert.equal(res.status, 200, res.text);
    const [got] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.equal(got!.body, 'HELLO');
    assert.equal(got!.properties.contentType, 'text/plain');
    assert.equal(got!.headers['content-type'], undefined);
  });

  it('refuses with 400 a message with a header name AMQP cannot carry (over 255 bytes), not 503', async () => {
    const name = `x-${'n'.repeat(300)}`;
    const res = await post(gw.url('api', '/orders/created'), { id: 8 }, { [name]: 'v' });
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.code, 'EG_INVALID_MESSAGE');
    assert.match(res.body.errors[0], /^header "x-n+\.\.\.": an AMQP header name is at most 255 bytes$/);
  });

  it('answers 503 for a message no queue is bound for, instead of letting RabbitMQ drop it', async () => {
    const res = await post(gw.url('api', '/orders/nobody.listens'), { id: 8 });
    // orders.nobody.listens has three words: orders.* does not match it.
    assert.equal(res.status, 503, res.text);
    assert.match(res.body.detail, /no queue is bound/);
  });

  it('says what a connect that gets no AMQP answer means (a port that accepts and stays silent), not a bare "connect ETIMEDOUT", and keeps retrying, logging it once (as a nats broker does)', async () => {
    // What the tests' RabbitMQ port once was under load: taken by another program while RabbitMQ booted.
    // Each counts the connections it accepts: the gateway's tries, whether it logs them or not.
    const silentServer = async () => {
      const tries = { n: 0 };
      const server = createServer(() => tries.n++);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return { server, tries, port: (server.address() as AddressInfo).port };
    };
    const [silent, silentNats] = await Promise.all([silentServer(), silentServer()]);
    const port = silent.port;
    const quiet = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  quiet: { kind: amqp, url: "amqp://guest:guest@127.0.0.1:${port}", connectTimeoutMs: 300 }
  quietnats: { kind: nats, servers: ["nats://127.0.0.1:${silentNats.port}"], connectTimeoutMs: 300 }
`);
    try {
      const failures = (msg: string) => quiet.logs.filter((l) => l.msg === msg);
      await quiet.waitForLog((l) => l.msg === 'amqp connect failed; retrying', 30000);
      assert.equal(
        failures('amqp connect failed; retrying')[0]!.err,
        `no answer from 127.0.0.1:${port} within connectTimeoutMs (300 ms), the AMQP handshake included: is it a RabbitMQ (AMQP 0-9-1) port, and is the server up?`,
      );
      assert.doesNotMatch(String(failures('amqp connect failed; retrying')[0]!.err), /guest/);
      assert.equal((await readyz(quiet)).status, 503);
      // /readyz names the broker; /admin/status has the cause.
      const broker = (await quiet.status()).brokers.find((b: { name: string }) => b.name === 'quiet');
      assert.match(broker.detail, new RegExp(`^unreachable: no answer from 127\\.0\\.0\\.1:${port} within connectTimeoutMs`));
      // Retried, and said once per reason (docs/scaling.md): before, one warning per try, every 5 s for as long as the server was away.
      await eventually(() => assert.ok(silent.tries.n >= 3 && silentNats.tries.n >= 3, `retried: amqp ${silent.tries.n}, nats ${silentNats.tries.n}`), 30000, 100);
      assert.equal(failures('amqp connect failed; retrying').length, 1, JSON.stringify(failures('amqp connect failed; retrying')));
      assert.equal(failures('nats connect failed; retrying').length, 1, JSON.stringify(failures('nats connect failed; retrying')));
    } finally {
      await quiet.stop();
      silent.server.close();
      silentNats.server.close();
    }
  });

  it('writes frames RabbitMQ and pika read as sent: a body over several frames, non-ASCII headers, the properties; a burst each answered once confirmed', async () => {
    // 300 KB: three body frames at amqplib's default frameMax (128 KiB).
    const big = { text: 'grüße ☃ '.repeat(30_000) };
    const before = Math.floor(Date.now() / 1000);
    // Its connection is not kept for the burst: pika's read below can take seconds on a loaded
    // machine, and the burst should not depend on how long the gateway keeps an idle connection
    // (keepAliveTimeoutMs; at node's 5 s a starved client once sent just as it was closed).
    const res = await post(gw.url('api', '/orders/big'), big, { 'x-tenant': 'bäckerei', connection: 'close' });
    assert.equal(res.status, 200, res.text);
    const [got] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.equal(got!.routingKey, 'orders.big');
    assert.deepEqual(JSON.parse(got!.body), big);
    assert.equal(got!.headers['x-tenant'], 'bäckerei');
    assert.equal(got!.properties.contentType, 'application/json');
    assert.equal(got!.properties.deliveryMode, 2);
    assert.match(got!.properties.messageId ?? '', /^rabbit-[0-9a-f]{16}-\d+$/);
    assert.ok(got!.properties.timestamp! >= before && got!.properties.timestamp! <= Math.ceil(Date.now() / 1000), String(got!.properties.timestamp));
    // 500 concurrent publishes, encoded into shared writes: each 200 only once confirmed, and every one in the queue.
    const answers = await Promise.all(Array.from({ length: 500 }, (_, i) => post(gw.url('api', '/orders/burst'), { i })));
    assert.deepEqual(
      answers.filter((a) => a.status !== 200).map((a) => a.text),
      [],
    );
    const burst = await pikaConsume(rabbit, 'orders-seen', 500);
    assert.deepEqual(
      burst.map((m) => (JSON.parse(m.body) as { i: number }).i).sort((a, b) => a - b),
      Array.from({ length: 500 }, (_, i) => i),
    );
  });

  it('consumes a declared queue with $topic bound to the routing key and AMQP headers as $headers, acknowledging each message', async () => {
    await pikaPublish(rabbit, 'amq.topic', 'in.eu.paris', [
      { body: '{"n":1}', headers: { tenant: 't1' } },
      { body: 'plain text', headers: { tenant: 't2' } },
    ]);
    const got = await pikaConsume(rabbit, 'relayed', 2);
    assert.deepEqual(
      got.map((m) => [m.routingKey, JSON.parse(m.body)]),
      [
        ['out.in.eu.paris', { from: 'in.eu.paris', value: { n: 1 }, tenant: 't1' }],
        ['out.in.eu.paris', { from: 'in.eu.paris', value: 'plain text', tenant: 't2' }],
      ],
    );
    await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, 'inbox'), 0), 10000, 200);
  });

  // The bytes that are not UTF-8 were labelled text/plain (their value is text made of them).
  it('relays a consumed body byte for byte: bytes that are not UTF-8 (as application/octet-stream), and JSON as it was written', async () => {
    const notUtf8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3]);
    const spaced = Buffer.from('{ "a" : 1.0 }');
    await pikaPublish(rabbit, 'amq.topic', 'raw.in', [{ body: notUtf8 }, { body: spaced }, { body: 'plain text' }]);
    const got = await pikaConsume(rabbit, 'raw-seen', 3);
    assert.deepEqual(
      got.map((m) => [m.bytes.toString('hex'), m.properties.contentType]),
      [
        [notUtf8.toString('hex'), 'application/octet-stream'],
        [spaced.toString('hex'), 'application/json'],
        [Buffer.from('plain text').toString('hex'), 'text/plain'],
      ],
    );
  });

  it("keeps a consumed message's timestamp when it publishes it again, the epoch (0) included; correlation_id, reply_to, type, app_id, priority and expiration too (as amqp_<name> and priority headers between), its message_id and user_id as the amqp_messageId and amqp_receivedUserId headers, its typed header fields with their types", async () => {
    // 2001-09-09T01:46:40Z, and 0: a falsy check took the latter for "no time" and wrote the time of copying.
    await pikaPublish(rabbit, 'amq.topic', 'raw.in', [
      { body: 'epoch', timestamp: 0 },
      {
        body: 'old',
        timestamp: 1_000_000_000,
        headers: {
          kept: 'yes',
          count: 7,
          flag: true,
          price: { $decimal: '3.14' },
          at: { $timestamp: 1577934245 },
          blob: { $bytes: Buffer.from([0xff, 0x00, 0x41]).toString('base64') },
          nested: { x: [1, 'a'] },
        },
        // RabbitMQ takes a user_id only when it is the connection's user: pika logs in as guest.
        properties: { messageId: 'peer-1', correlationId: 'corr-1', replyTo: 'replies', type: 'order.created', appId: 'shop', userId: 'guest', priority: 7, expiration: '600000' },
      },
    ]);
    const got = await pikaConsume(rabbit, 'raw-seen', 2);
    assert.deepEqual(
      got.map((m) => [m.body, m.properties.timestamp]),
      [
        ['epoch', 0],
        ['old', 1_000_000_000],
      ],
    );
    const [plain, carried] = got;
    assert.deepEqual([plain!.properties.correlationId, plain!.properties.replyTo, plain!.properties.type, plain!.properties.appId], [null, null, null, null]);
    assert.deepEqual([carried!.properties.correlationId, carried!.properties.replyTo, carried!.properties.type, carried!.properties.appId], ['corr-1', 'replies', 'order.created', 'shop']);
    assert.deepEqual([plain!.properties.priority, plain!.properties.expiration, plain!.properties.userId], [null, null, null]);
    assert.deepEqual([carried!.properties.priority, carried!.properties.expiration], [7, '600000']);
    // The consumed user_id is not the copy's (a copy under another login would be refused): it stays a header, as in Spring AMQP.
    assert.equal(carried!.properties.userId, null);
    assert.equal(carried!.headers.amqp_receivedUserId, 'guest');
    // The message_id property is the gateway's own (it correlates a basic.return); the consumed one stays a header.
    assert.match(carried!.properties.messageId ?? '', /^rabbit-[0-9a-f]{16}-\d+$/);
    assert.equal(carried!.headers.amqp_messageId, 'peer-1');
    assert.equal(carried!.headers.kept, 'yes');
    // Typed header fields go on with their own types while no step changed them, not as strings of their text.
    assert.deepEqual(
      ['kept', 'count', 'flag', 'price', 'at', 'blob', 'nested'].map((k) => [k, carried!.headerTypes[k], carried!.headers[k]]),
      [
        ['kept', 'str', 'yes'],
        ['count', 'int', 7],
        ['flag', 'bool', true],
        ['price', 'Decimal', '3.14'],
        ['at', 'datetime', '2020-01-02 03:04:05'],
        ['blob', 'bytes', { $bytes: '/wBB' }],
        ['nested', 'dict', { x: [1, 'a'] }],
      ],
    );
    assert.deepEqual(
      Object.keys(carried!.headers)
        .filter((k) => k.startsWith('amqp_') || k === 'priority')
        .sort(),
      ['amqp_messageId', 'amqp_receivedUserId'],
    );
  });

  it("publishes amqp_userId as the user_id property, and a user_id the server refuses as a 400 in the server's words, on a new publish channel: the connection and consume routes kept", async () => {
    const from = gw.logs.length;
    const as = (user: string) => post(gw.url('api', `/as/${user}`), { as: user });
    assert.equal((await as('guest')).status, 200);
    const [taken] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.deepEqual([taken!.properties.userId, taken!.properties.priority, taken!.properties.expiration], ['guest', 9, '60000']);
    // Sent as properties, not also in the headers table.
    assert.deepEqual(Object.keys(taken!.headers), ['traceparent']);
    const refused = await as('alice');
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.code, 'EG_INVALID_MESSAGE');
    assert.match(refused.body.detail, /user_id 'alice'.*'guest'.*PRECONDITION_FAILED - user_id property set to 'alice' but authenticated user was 'guest'/);
    // Known now: refused before it is sent, the publish channel left open.
    const again = await as('alice');
    assert.equal(again.status, 400, again.text);
    assert.match(again.body.detail, /user_id 'alice'.*'guest'/);
    await gw.waitForLog((l) => l.msg === 'amqp publish channel opened again', 15000, from);
    assert.equal((await as('guest')).status, 200);
    const [next] = await pikaConsume(rabbit, 'orders-seen', 1);
    assert.equal(next!.properties.userId, 'guest');
    const seen = gw.logs.slice(from).map((l) => l.msg);
    assert.equal(seen.filter((m) => m.startsWith("amqp server refused a message's user_id")).length, 1);
    assert.deepEqual(
      seen.filter((m) => m === 'amqp connection lost; reconnecting' || m === 'consumer ready' || m === 'amqp publish channel error'),
      [],
    );
  });

  it('forwards a routing-key pattern to WebSocket clients through a queue of its own', async () => {
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    try {
      await pikaPublish(rabbit, 'amq.topic', 'live.scores', [{ body: '{"goal":1}', headers: { match: 'm1' } }]);
      const frame = await client.next(15000);
      assert.equal(frame.topic, 'live.scores');
      assert.deepEqual(frame.value, { goal: 1 });
      assert.equal(frame.headers.match, 'm1');
    } finally {
      client.close();
    }
  });

  it("takes the content_type property as the content type: a structured CloudEvent (application/cloudevents+json) a peer publishes is an event, as is a binary one in the AMQP binding's cloudEvents_ (or cloudEvents:) headers", async () => {
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    try {
      const event = { specversion: '1.0', id: 'p-1', source: '/pika', type: 'com.example.goal', tenant: 'acme', data: { goal: 2 } };
      // Binary mode as the CloudEvents SDK's Spring AMQP converter and AMQP 1.0 publishers to RabbitMQ send it.
      // `time` as the binding's AMQP timestamp (2025-12-01T17:00:00Z), which was read as its seconds.
      const binary = (sep: string, id: string) => ({
        body: '{"goal":3}',
        contentType: 'application/json',
        headers: {
          [`cloudEvents${sep}specversion`]: '1.0',
          [`cloudEvents${sep}id`]: id,
          [`cloudEvents${sep}source`]: '/spring',
          [`cloudEvents${sep}type`]: 'com.example.goal',
          [`cloudEvents${sep}time`]: { $timestamp: 1764608400 },
          // A Binary extension as the binding's AMQP binary: its canonical string is base64, and these bytes are no UTF-8.
          [`cloudEvents${sep}token`]: { $bytes: Buffer.from([0xff, 0x00, 0x9c]).toString('base64') },
          // The spec's own attributes have no Binary type: bytes for one are its text, as before.
          [`cloudEvents${sep}subject`]: { $bytes: Buffer.from('goal-3').toString('base64') },
          match: 'm2',
        },
      });
      await pikaPublish(rabbit, 'amq.topic', 'live.events', [{ body: JSON.stringify(event), contentType: 'application/cloudevents+json' }, binary('_', 'b-1'), binary(':', 'b-2')]);
      const frame = await client.next(15000);
      assert.equal(frame.topic, 'live.events');
      assert.deepEqual(frame.value, { goal: 2 });
      assert.deepEqual(frame.ce, { specversion: '1.0', id: 'p-1', source: '/pika', type: 'com.example.goal', tenant: 'acme', datacontenttype: 'application/json' });
      for (const id of ['b-1', 'b-2']) {
        const next = await client.next(15000);
        assert.deepEqual(next.value, { goal: 3 });
        assert.deepEqual(next.ce, {
          specversion: '1.0',
          id,
          source: '/spring',
          type: 'com.example.goal',
          time: '2025-12-01T17:00:00Z',
          subject: 'goal-3',
          token: '/wCc',
          datacontenttype: 'application/json',
        });
        assert.equal(next.headers.match, 'm2');
      }
    } finally {
      client.close();
    }
  });

  it("has up to a webhook's `concurrency` deliveries in hand (orderBy: one per key, in order, a failed try retried first), each acknowledged; a reload to another concurrency keeps the consumer and applies it", async () => {
    const keys = ['k0', 'k1', 'k2'];
    const total = 30;
    hook.reset();
    answerSideBySide(hook, keys, total / keys.length, 'k1');
    const messages = Array.from({ length: total }, (_, n) => ({ body: JSON.stringify({ n }), headers: { k: keys[n % keys.length]! } }));
    await pikaPublish(rabbit, 'amq.topic', 'conc', messages);
    await arrivedSideBySide(hook, keys, total, 'k1');
    // Every one acknowledged: none ready in the queue (as last polled), none held unacknowledged.
    const acked = async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_amqp_consumer_lag', { route: 'hooked', topic: 'concurrent', partition: '0' }), 0);
    await eventually(acked, 15000, 100);
    // Another concurrency, no orderBy: the rebuilt route takes the channel and consumer over.
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(config(true, 'concurrency: 2'))).msg, 'config reloaded');
    await gw.waitForLog((l) => l.route === 'hooked' && l.msg === 'subscription handed over to the rebuilt route', 15000, from);
    const ns = [100, 101, 102, 103, 104, 105];
    await hook.takesInWindowsOf(2, ns, () =>
      pikaPublish(
        rabbit,
        'amq.topic',
        'conc',
        ns.map((n) => ({ body: JSON.stringify({ n }), headers: { k: 'k0' } })),
      ),
    );
    await eventually(acked, 15000, 100);
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'amqp connected'),
      [],
    );
  });

  it("keeps a message unacknowledged while its target cannot take it, hands it back when a reload removes the route, and keeps the other routes' channels", async () => {
    await pikaPublish(rabbit, 'amq.topic', 'held', [{ body: '{"keep":"me"}' }]);
    // The route has it in hand (not ready in the queue any more), unacknowledged: its target broker
    // has never connected, so the route waits for that first connection before it tries it.
    await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, 'held'), 0), 15000, 200);
    const stuck = ((await gw.status()).routes as { name: string; consumer: unknown }[]).find((r) => r.name === 'stuck')!;
    assert.deepEqual(stuck.consumer, { ready: false, detail: "waiting for the first connection of broker 'nowhere' before consuming" });
    // A reload without the route stops it, which hands the never-acknowledged message back.
    const from = gw.logs.length;
    const reload = await gw.reconfigure(config(false));
    assert.equal(reload.msg, 'config reloaded');
    // The other routes kept their channels and the broker its connection.
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'amqp connected'),
      [],
    );
    const [back] = await pikaConsume(rabbit, 'held', 1);
    assert.deepEqual(JSON.parse(back!.body), { keep: 'me' });
    assert.equal(back!.redelivered, true);
  });

  it("reports a route's backlog (ready in its queue + held unacknowledged) as eventgate_amqp_consumer_lag, draining to 0 once its target takes messages again; a second gateway's message ids are not the first's", async () => {
    const target = await HeldTarget.start();
    const lagged = await startGateway(`
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    lagPollMs: 200
    queues:
      lagging: { bindings: [lagging] }
routes:
  - name: slow
    from: { broker: rabbit, topic: lagging }
    to: { http: { url: "${target.url}", timeoutMs: 120000 } }
  - name: orders
    from: { listener: api, path: /orders }
    to: { broker: rabbit, topic: orders.second }
`);
    try {
      await consumersReady(lagged, 'slow', 30000);
      // Its broker numbers its publishes from 1 as this file's gateway did: a consumer that drops
      // a message_id it saw before (an idempotent consumer) dropped this one as a repeat.
      assert.equal((await post(lagged.url('api', '/orders'), { second: true })).status, 200);
      const [second] = await pikaConsume(rabbit, 'orders-seen', 1);
      assert.deepEqual(JSON.parse(second!.body), { second: true });
      assert.notEqual(second!.properties.messageId, firstMessageId);
      assert.match(second!.properties.messageId ?? '', /^rabbit-[0-9a-f]{16}-1$/);
      assert.match(firstMessageId ?? '', /^rabbit-[0-9a-f]{16}-1$/);
      const lag = async () => (await scrape(lagged.adminUrl)).value('eventgate_amqp_consumer_lag', { route: 'slow', topic: 'lagging', partition: '0' });
      await pikaPublish(
        rabbit,
        'amq.topic',
        'lagging',
        Array.from({ length: 30 }, (_, i) => ({ body: JSON.stringify({ i }) })),
      );
      // The target holds the first message: 20 (prefetch) wait unacknowledged at the gateway, 10 ready in the queue.
      await eventually(async () => assert.equal(await lag(), 30), 30000, 100);
      assert.equal(await pikaQueueDepth(rabbit, 'lagging'), 10);
      target.release();
      await eventually(async () => assert.equal(await lag(), 0), 60000, 100);
      assert.deepEqual(new Set(target.bodies.map((b) => (JSON.parse(b) as { i: number }).i)), new Set(Array.from({ length: 30 }, (_, i) => i)));
    } finally {
      await lagged.stop();
      await target.stop();
    }
  });

  it('answers 503 once ackTimeoutMs passed without a confirm, ignores the confirms that come late, and goes on publishing', async () => {
    // Three words: orders.* (the queue other tests read) does not take these.
    await pikaDeclareQueue(rabbit, 'frozen-seen', 'amq.topic', 'orders.frozen.*');
    // A reload that changes only ackTimeoutMs applies it in place: the same connection, the next publish has the new deadline.
    assert.equal((await gw.reconfigure(config(false, ORDERED, DEADLINE_MS))).msg, 'config reloaded');
    // RabbitMQ stopped (SIGSTOP, its whole process group): the connection stays up, the publishes are written, no confirm comes.
    const pgid = rabbit.pid()!;
    await freezeProcess(pgid);
    // Resumed once every publish was answered, or (publishes the deadline never answered) after three deadlines: they then get 200s, and the test fails rather than hangs.
    const resume = () => {
      clearTimeout(bound);
      process.kill(-pgid, 'SIGCONT');
    };
    const bound = setTimeout(resume, 3 * DEADLINE_MS);
    let late: Awaited<ReturnType<typeof post>>[];
    try {
      late = await Promise.all(Array.from({ length: 20 }, (_, i) => post(gw.url('api', '/orders/frozen.late'), { i })));
    } finally {
      resume();
    }
    assert.deepEqual(
      late.map((r) => r.status),
      Array.from({ length: 20 }, () => 503),
    );
    assert.match(late[0]!.text, new RegExp(`no acknowledgement from broker 'rabbit' within ${DEADLINE_MS} ms`));
    // The confirms of those come once RabbitMQ runs again, and change nothing; what follows, with room again, is answered as confirmed.
    assert.equal((await gw.reconfigure(config(false))).msg, 'config reloaded');
    const after = await Promise.all(Array.from({ length: 20 }, (_, i) => post(gw.url('api', '/orders/frozen.after'), { i: 20 + i })));
    assert.deepEqual(
      after.flatMap((r, i) => (r.status === 200 ? [] : [`#${i}: ${r.status} ${r.text}`])),
      [],
    );
    // The 503s were written before the deadline, so RabbitMQ took them too (at least once, as a 503 allows); each message once.
    const got = await pikaConsume(rabbit, 'frozen-seen', 40);
    assert.deepEqual(
      got.map((m) => (JSON.parse(m.body) as { i: number }).i).sort((a, b) => a - b),
      Array.from({ length: 40 }, (_, k) => k),
    );
  });

  it('answers 503 "connected but blocked by the server" while a RabbitMQ memory alarm holds publishers back, not "not connected", and 200 once it clears; consume routes drain their queues meanwhile', async () => {
    const rabbitReason = async () => (await readyz(gw)).body.reasons.find((r: string) => r.startsWith('broker rabbit'));
    assert.equal((await gw.reconfigure(config(false, ORDERED, DEADLINE_MS))).msg, 'config reloaded');
    // More messages for route `hooked` than its prefetch (20), its webhook holding the first.
    const total = 30;
    hook.reset();
    hook.onArrival = (h) => hook.held.push(h);
    await pikaPublish(
      rabbit,
      'amq.topic',
      'conc',
      Array.from({ length: total }, (_, n) => ({ body: JSON.stringify({ n }), headers: { k: `k${n % 3}` } })),
    );
    await eventually(() => assert.ok(hook.held.length > 0), 15000, 50);
    // What `rabbitmqctl set_vm_memory_high_watermark absolute 1MB` calls, without booting its VM (two cost 160 s of a loaded run).
    await rabbit.call('vm_memory_monitor set_vm_memory_high_watermark [{absolute, 1048576}]');
    try {
      // RabbitMQ tells a connection it is blocked when it publishes during the alarm: this first
      // one is held unconfirmed (503 at ackTimeoutMs, "may still have reached it").
      const first = await post(gw.url('api', '/orders/alarm'), { n: 1 });
      assert.equal(first.status, 503, first.text);
      await eventually(async () => assert.equal(await rabbitReason(), 'broker rabbit: blocked by the server'), 30000, 250);
      const blocked = await post(gw.url('api', '/orders/alarm'), { n: 2 });
      assert.equal(blocked.status, 503);
      assert.equal(
        (JSON.parse(blocked.text) as { detail: string }).detail,
        "broker 'rabbit' did not acknowledge the message: broker 'rabbit' is connected but blocked by the server (low on memory): it takes no message until the server lifts the block",
      );
      // RabbitMQ reads nothing more of a blocked connection, acks included: the route, on a
      // connection that does not publish, still takes all of its queue (past its prefetch).
      hook.onArrival = (h) => h.res.end();
      hook.release();
      await eventually(() => assert.equal(new Set(hook.arrivals.map((a) => a.n)).size, total), 15000, 50);
      assert.equal(await rabbitReason(), 'broker rabbit: blocked by the server');
    } finally {
      await rabbit.call('vm_memory_monitor set_vm_memory_high_watermark [0.4]');
    }
    await eventually(async () => assert.equal(await rabbitReason(), undefined), 30000, 250);
    assert.equal((await gw.reconfigure(config(false))).msg, 'config reloaded');
    assert.equal((await post(gw.url('api', '/orders/alarm'), { n: 3 })).status, 200);
  });

  it('answers 503 while RabbitMQ is down, reports it in /readyz, loses no confirmed message, and resumes consuming', async () => {
    const load = await publishThroughOutage(
      (i) => post(gw.url('api', '/orders/load'), { i }),
      () => rabbit.down(),
      { total: 120 },
    );
    const acked = load.acked.map((a) => a.i);
    const refused = load.refused;
    // Counted like Kafka's: eventgate_<kind>_producer_errors_total{broker}.
    assert.ok((await scrape(gw.adminUrl)).value('eventgate_amqp_producer_errors_total', { broker: 'rabbit' })! >= refused);
    const down = await readyz(gw);
    assert.equal(down.status, 503);
    assert.ok(
      down.body.reasons.some((r: string) => r.startsWith('broker rabbit: unreachable')),
      JSON.stringify(down.body),
    );

    await rabbit.up();
    // (The 'nowhere' broker keeps /readyz at 503 for itself: look at rabbit's reason alone.)
    await eventually(async () => assert.ok(!(await readyz(gw)).body.reasons.some((r: string) => r.startsWith('broker rabbit'))), 60000, 250);
    const later = await post(gw.url('api', '/orders/load'), { i: 1000 });
    assert.equal(later.status, 200, later.text);
    acked.push(1000);

    // Everything the queue has now (the confirmed ones, and any refused one the server stored after
    // all): taken as soon as it is all in, rather than when none came for the idle time (3 s).
    const got = await pikaConsume(rabbit, 'orders-seen', await pikaQueueDepth(rabbit, 'orders-seen'), 3);
    const seen = new Set(got.map((m) => (JSON.parse(m.body) as { i: number }).i));
    const lost = acked.filter((i) => !seen.has(i));
    assert.deepEqual(lost, [], `confirmed but not in the queue: ${lost.join(', ')}`);

    // The consume route found its queue again on the new connection.
    await pikaPublish(rabbit, 'amq.topic', 'in.after', [{ body: '{"after":"outage"}' }]);
    const [relayed] = await pikaConsume(rabbit, 'relayed', 1, 30);
    assert.deepEqual(JSON.parse(relayed!.body), { from: 'in.after', value: { after: 'outage' } });
  });
});
