import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';
import { fetch } from '../helpers/http.js';

const TOKEN = 'tap-token-1234';
const KEY = 'tap-key-5678-90ab-cdef';
const SCHEMA = '{ type: object, required: [qty], properties: { qty: { type: integer, minimum: 1 } } }';

const config = (tap: string, extraRoute = true) => `
version: 1
admin:
  port: 0
  token: ${TOKEN}
  tap: ${tap}
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: orders
    from: { listener: api, path: /orders }
    through:
      - validate: { schema: ${SCHEMA} }
      - filter: qty < 100
      - transform: '{ "quantity": qty }'
    to: { broker: local, topic: orders }
  - name: lenient
    from: { listener: api, path: /lenient }
    through:
      - validate: { schema: ${SCHEMA}, onInvalid: tag }
    to: { broker: local, topic: lenient }
  - name: hooked-in
    from: { listener: api, path: /hooked }
    to: { broker: local, topic: hooked }
  - name: hook
    from: { broker: local, topic: hooked }
    to: { http: { url: 'http://127.0.0.1:1/refused', retry: { attempts: 1 } } }
    deadletter: { broker: local, topic: hook-dlq }
  - name: keyed
    from: { listener: api, path: /keyed }
    through:
      - auth: { apiKey: { keys: { alice: ${KEY} } } }
    to: { broker: local, topic: keyed }
${
  extraRoute
    ? `  - name: busy
    from: { listener: api, path: /busy }
    to: { broker: local, topic: busy }`
    : ''
}
`;

describe('live tap (GET /admin/tap?route=...)', () => {
  const gw = useGateway(config('{ maxPerSecond: 100 }'));
  const tapUrl = (query: string) => `${gw.adminUrl.replace('http', 'ws')}/admin/tap?${query}`;
  const openTap = async (route: string) => {
    const tap = await WsClient.connect(tapUrl(`route=${route}`), { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.deepEqual(await tap.next(), { type: 'hello', route, maxPerSecond: tapLimit });
    return tap;
  };
  let tapLimit = 100;

  it('needs the admin token, as a Bearer header or ?token= (what a browser can send)', async () => {
    await assert.rejects(WsClient.connect(tapUrl('route=orders')), { statusCode: 401 });
    await assert.rejects(WsClient.connect(tapUrl('route=orders&token=wrong')), { statusCode: 401 });
    await assert.rejects(WsClient.connect(tapUrl('route=orders'), { headers: { authorization: 'Bearer wrong' } }), { statusCode: 401 });
    const byQuery = await WsClient.connect(tapUrl(`route=orders&token=${TOKEN}`));
    assert.equal((await byQuery.next()).type, 'hello');
    byQuery.close();
    (await openTap('orders')).close();
  });

  it('refuses unknown routes and plain GETs with a reason', async () => {
    const auth = { headers: { authorization: `Bearer ${TOKEN}` } };
    await assert.rejects(WsClient.connect(tapUrl('route=nope'), auth), { statusCode: 404 });
    await assert.rejects(WsClient.connect(tapUrl(''), auth), { statusCode: 404 });
    // A parameter given twice with different values is not guessed at: the first route, or the
    // first token (the right one before a wrong one), would be taken silently.
    await assert.rejects(WsClient.connect(tapUrl('route=orders&route=nope'), auth), { statusCode: 400 });
    await assert.rejects(WsClient.connect(tapUrl(`route=orders&token=${TOKEN}&token=wrong`)), { statusCode: 400 });
    const same = await WsClient.connect(tapUrl('route=orders&route=orders'), auth);
    assert.equal((await same.next()).type, 'hello');
    same.close();
    const plain = await fetch(`${gw.adminUrl}/admin/tap?route=orders`, auth);
    assert.equal(plain.status, 426);
    assert.equal(plain.headers.get('upgrade'), 'websocket');
    assert.equal(((await plain.json()) as { code: string }).code, 'EG_UPGRADE_REQUIRED');
  });

  it("answers a malformed handshake as problem+json, as the WebSocket listener does (not ws's text/html)", async () => {
    const port = Number(new URL(gw.adminUrl).port);
    const handshake = (lines: string[], method = 'GET') =>
      `${method} /admin/tap?route=orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TOKEN}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n`;
    const key = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==';
    const cases: [string, string, number, Record<string, string>][] = [
      ['version 7', handshake([key, 'Sec-WebSocket-Version: 7']), 426, { upgrade: 'websocket', 'sec-websocket-version': '13, 8' }],
      ['no key', handshake(['Sec-WebSocket-Version: 13']), 400, {}],
      ['POST', handshake([key, 'Sec-WebSocket-Version: 13'], 'POST'), 405, { allow: 'GET' }],
    ];
    for (const [what, request, status, headers] of cases) {
      const reply = await rawHttp(port, request);
      assert.ok(reply, `${what}: answered`);
      assert.equal(reply.status, status, what);
      assert.equal(reply.headers['content-type'], 'application/problem+json', what);
      for (const [name, value] of Object.entries(headers)) assert.equal(reply.headers[name], value, `${what}: ${name}`);
      assert.equal(JSON.parse(reply.body).status, status, what);
    }
  });

  it('streams each message of the route with its outcome, the validation errors and what the targets received', async () => {
    const tap = await openTap('orders');
    const traceparent = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    assert.equal((await post(gw.url('api', '/orders'), { qty: 3 }, { traceparent })).status, 200);
    assert.equal((await post(gw.url('api', '/orders'), { qty: 500 })).status, 200);
    assert.equal((await post(gw.url('api', '/orders'), { qty: 0 })).status, 400);

    const delivered = await tap.next();
    assert.equal(delivered.type, 'message');
    assert.equal(delivered.route, 'orders');
    assert.equal(delivered.outcome, 'delivered');
    assert.equal(delivered.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
    assert.deepEqual(delivered.message.value, { qty: 3 }, 'the message as the route received it');
    assert.equal(delivered.message.headers.traceparent, traceparent);
    assert.deepEqual(delivered.output.value, { quantity: 3 }, 'and as its targets received it');
    assert.equal(delivered.output.headers.traceparent, delivered.traceparent);
    assert.deepEqual(delivered.deliveries, [{ broker: 'local', topic: 'orders', partition: 0, offset: '0' }]);
    assert.equal(typeof delivered.latencyMs, 'number');
    assert.ok(!Number.isNaN(Date.parse(delivered.at)));

    const filtered = await tap.next();
    assert.equal(filtered.outcome, 'filtered');
    assert.deepEqual(filtered.message.value, { qty: 500 });

    const invalid = await tap.next();
    assert.equal(invalid.outcome, 'invalid');
    assert.equal(invalid.status, 400);
    assert.deepEqual(invalid.errors, ['/qty: must be >= 1']);
    assert.equal(invalid.problem.code, 'EG_INVALID_MESSAGE');
    tap.close();
  });

  // Refused from its head (auth before the body is read), a request has no value to show: the
  // frame says its body was not read, not `value: null`, which a client may send (spec-checklist 1849).
  it('shows a request refused from its head without a value, saying its body was not read', async () => {
    const tap = await openTap('keyed');
    assert.equal((await post(gw.url('api', '/keyed'), { qty: 1 })).status, 401);
    assert.equal((await post(gw.url('api', '/keyed'), null, { 'x-api-key': KEY })).status, 200);
    const refused = await tap.next();
    assert.deepEqual([refused.outcome, refused.status, refused.problem.code], ['rejected', 401, 'EG_UNAUTHORIZED']);
    assert.ok(!('value' in refused.message), JSON.stringify(refused.message));
    assert.equal(refused.message.bodyNotRead, true);
    // A body of `null` that was read is shown as the value it is.
    const delivered = await tap.next();
    assert.equal(delivered.outcome, 'delivered');
    assert.ok('value' in delivered.message && delivered.message.value === null, JSON.stringify(delivered.message));
    assert.ok(!('bodyNotRead' in delivered.message));
    tap.close();
  });

  it('shows tagged messages with their validation errors, and only the tapped route', async () => {
    const lenient = await openTap('lenient');
    const orders = await openTap('orders');
    await post(gw.url('api', '/lenient'), { qty: -2 });
    const tagged = await lenient.next();
    assert.equal(tagged.outcome, 'tagged');
    assert.deepEqual(tagged.errors, ['/qty: must be >= 1']);
    assert.ok(tagged.output.headers._asyncapi_eg_validation_error);
    await post(gw.url('api', '/orders'), { qty: 1 });
    assert.equal((await orders.next()).outcome, 'delivered');
    // A sentinel on the lenient route is the next thing its tap shows: it did not see the orders message.
    await post(gw.url('api', '/lenient'), { qty: 3 });
    assert.deepEqual((await lenient.next()).message.value, { qty: 3 }, 'the lenient tap does not see the orders route');
    lenient.close();
    orders.close();
  });

  it('shows a consumed message its targets did not take as failed, then as deadlettered with where it went and why', async () => {
    const tap = await openTap('hook');
    assert.equal((await post(gw.url('api', '/hooked'), { qty: 7 })).status, 200);
    const failed = await tap.next();
    assert.equal(failed.outcome, 'failed');
    assert.equal(failed.problem.code, 'EG_WEBHOOK_FAILED');
    const deadlettered = await tap.next();
    assert.equal(deadlettered.outcome, 'deadlettered');
    assert.deepEqual(deadlettered.message.value, { qty: 7 });
    assert.equal(deadlettered.traceId, failed.traceId);
    assert.deepEqual(deadlettered.deliveries, [{ broker: 'local', topic: 'hook-dlq', partition: 0, offset: '0' }]);
    assert.equal(deadlettered.status, failed.status);
    assert.deepEqual(deadlettered.problem, failed.problem, 'why it went there: the failure of its last try');
    assert.equal(typeof deadlettered.latencyMs, 'number');
    tap.close();
  });

  it('sends at most admin.tap.maxPerSecond messages a second and counts the rest in "skipped" frames', async () => {
    await gw.reconfigure(config('{ maxPerSecond: 5 }'));
    tapLimit = 5;
    const tap = await openTap('busy');
    const total = 40;
    const started = Date.now();
    const replies = await Promise.all(Array.from({ length: total }, (_, i) => post(gw.url('api', '/busy'), { i })));
    assert.ok(replies.every((r) => r.status === 200));
    let shown = 0;
    let skipped = 0;
    while (shown + skipped < total) {
      const frame = await tap.next(3000);
      if (frame.type === 'message') shown++;
      else {
        assert.equal(frame.type, 'skipped');
        assert.equal(frame.maxPerSecond, 5);
        assert.ok(frame.count > 0);
        skipped += frame.count;
      }
    }
    const windows = Math.ceil((Date.now() - started) / 1000) + 1;
    assert.equal(shown + skipped, total, 'every message is either shown or counted');
    assert.ok(shown >= 5, `the first window is filled (${shown})`);
    assert.ok(shown <= 5 * windows, `${shown} messages shown in at most ${windows} one-second windows`);
    // Nothing was shown or counted twice: the next frame accounts for a sentinel posted now —
    // shown, or (while the window is full) counted as 1 skipped when it ends; then one more.
    for (let n = 1; ; n++) {
      assert.ok(n <= 5, 'a sentinel is shown once a window has room');
      assert.equal((await post(gw.url('api', '/busy'), { sentinel: n })).status, 200);
      const frame = await tap.next(3000);
      if (frame.type === 'message') {
        assert.deepEqual(frame.message.value, { sentinel: n });
        break;
      }
      assert.deepEqual([frame.type, frame.count], ['skipped', 1]);
    }
    tap.close();
  });

  it('closes the tap of a route that a reload removes, and every tap on shutdown, with 1001', async () => {
    const busy = await openTap('busy');
    const orders = await openTap('orders');
    await gw.reconfigure(config('{ maxPerSecond: 5 }', false));
    assert.deepEqual(await busy.waitClose(), { code: 1001, reason: 'route removed' });
    assert.equal(orders.closed, undefined);
    await gw.stop();
    assert.equal((await orders.waitClose()).code, 1001);
  });
});
