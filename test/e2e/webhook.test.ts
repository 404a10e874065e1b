import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { runCliInProcess } from '../helpers/cli.js';
import { WsClient } from '../helpers/clients.js';
import { eventually, startGateway, useGateway } from '../helpers/gateway.js';
import { freezeProcess } from '../helpers/outage.js';
import { WebhookReceiver, type Received } from '../helpers/webhook-receiver.js';
import { conforms } from '../helpers/wire-formats.js';
import { fetch } from '../helpers/http.js';
import { signatureKey } from '../../src/kinds/targets/webhook.js';

const SECRET = `whsec_${Buffer.from('a secret of thirty-two bytes, ok').toString('base64')}`;

/** A port nothing listens on: connections to it are refused. */
async function closedPort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('webhook targets (to: {http})', () => {
  let hook: WebhookReceiver;
  let refusedPort: number;

  before(async () => {
    hook = await WebhookReceiver.start();
    refusedPort = await closedPort();
  });
  // Registered after the receiver's before(), so the config can name its URL; stopped before it.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  other: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: direct
    from: { listener: api, path: /direct/:name }
    to:
      http:
        url: { expression: '"${hook.url}/direct/" & $path.name' }
        headers: { authorization: '"Bearer " & "\${HOOK_TOKEN}"', x-order: $string(orderId) }
        retry: { attempts: 3, backoffMs: 10 }
        signature: { secret: "\${HOOK_SECRET}" }
  - name: computed
    from: { listener: api, path: /computed }
    to:
      http:
        url: { expression: target }
        headers: { x-name: $uppercase(name), x-static: '"fixed"', x-who: '$headers.\`x-who\`' }
  - name: ws-computed
    from: { listener: ws, path: /computed }
    to: { http: { url: "${hook.url}/ws-computed", headers: { x-name: name } } }
  - name: enqueue-named
    from: { listener: api, path: /enqueue-named }
    to: { broker: local, topic: named-jobs }
  - name: consume-named
    from: { broker: local, topic: named-jobs }
    to: { http: { url: "${hook.url}/named", headers: { x-name: name } } }
    deadletter: { broker: local, topic: jobs-dlq }
  - name: refused
    from: { listener: api, path: /refused }
    to: { http: { url: "http://127.0.0.1:${refusedPort}/x", retry: { attempts: 2, backoffMs: 10 } } }
  - name: slow
    from: { listener: api, path: /slow }
    to: { http: { url: "${hook.url}/slow", timeoutMs: 300, retry: { attempts: 1 } } }
  - name: stalled
    from: { listener: api, path: /stalled }
    to: { http: { url: "${hook.url}/stalled", timeoutMs: 1000, retry: { attempts: 2, backoffMs: 10 } } }
  - name: patient
    from: { listener: api, path: /patient }
    to: { http: { url: "${hook.url}/patient", timeoutMs: 2000, concurrency: 1, retry: { attempts: 1 } } }
  - name: bounded
    from: { listener: api, path: /bounded }
    to: { http: { url: "${hook.url}/bounded", concurrency: 2 } }
  - name: ordered
    from: { listener: api, path: /ordered }
    to: { http: { url: "${hook.url}/ordered", concurrency: 8, orderBy: k } }
  - name: enqueue
    from: { listener: api, path: /enqueue }
    to: { broker: local, topic: jobs }
  - name: consume
    from: { broker: local, topic: jobs }
    to: { http: { url: "${hook.url}/consume", retry: { attempts: 2, backoffMs: 10 } } }
    deadletter: { broker: local, topic: jobs-dlq }
  - name: enqueue-held
    from: { listener: api, path: /enqueue-held }
    to: { broker: local, topic: held-jobs }
  - name: consume-held
    from: { broker: local, topic: held-jobs }
    to: { http: { url: "${hook.url}/held", concurrency: 3 } }
  - name: dlq-watch
    from: { broker: local, topic: jobs-dlq }
    to: { listener: ws, path: /dlq, format: envelope }
  - name: fan-partial
    from: { listener: api, path: /fan-partial }
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "http://127.0.0.1:${refusedPort}/x", retry: { attempts: 1 } } }
      - { http: { url: "${hook.url}/fanned" } }
  - name: fan-partial-ws
    from: { listener: ws, path: /fan-partial }
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "http://127.0.0.1:${refusedPort}/x", retry: { attempts: 1 } } }
  - name: fan-none
    from: { listener: api, path: /fan-none }
    to:
      - { http: { url: "http://127.0.0.1:${refusedPort}/a", retry: { attempts: 1 } } }
      - { http: { url: "http://127.0.0.1:${refusedPort}/b", retry: { attempts: 1 } } }
  - name: fan-invalid
    from: { listener: api, path: /fan-invalid }
    to:
      - { http: { url: "${hook.url}/fan-invalid", headers: { x-name: name } } }
      - { http: { url: "http://127.0.0.1:${refusedPort}/c", retry: { attempts: 1 } } }
  - name: enqueue-fan
    from: { listener: api, path: /enqueue-fan }
    to: { broker: local, topic: fan-jobs }
  - name: consume-fan
    from: { broker: local, topic: fan-jobs }
    to:
      - { http: { url: "${hook.url}/fan-steady", retry: { attempts: 1 } } }
      - { http: { url: "${hook.url}/fan-flaky", retry: { attempts: 1 } } }
  - name: fanned-watch
    from: { broker: local, topic: fanned }
    to: { listener: ws, path: /fanned, format: envelope }
  - name: enqueue-signed
    from: { listener: api, path: /enqueue-signed }
    to: [{ broker: local, topic: signed }, { broker: other, topic: signed }]
  - name: consume-signed
    from: { broker: local, topic: signed }
    to: { http: { url: "${hook.url}/signed", retry: { attempts: 2, backoffMs: 10 }, signature: { secret: "\${HOOK_SECRET}" } } }
  - name: consume-signed-other
    from: { broker: other, topic: signed }
    to:
      - { http: { url: "${hook.url}/signed", signature: { secret: "\${HOOK_SECRET}" } } }
      - { http: { url: "${hook.url}/signed-twin", signature: { secret: "\${HOOK_SECRET}" } } }
  - name: to-text
    from: { listener: api, path: /to-text }
    through: [ { transform: '"order " & $string(orderId)' } ]
    to: { http: { url: "${hook.url}/to-text" } }
  - name: to-json
    from: { listener: api, path: /to-json }
    through: [ { transform: '{"said": $}' } ]
    to: { http: { url: "${hook.url}/to-json" } }
`,
    { env: { HOOK_TOKEN: 't0ken', HOOK_SECRET: SECRET } },
  );
  after(async () => {
    await hook?.stop();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  it('answers 200 only after the endpoint did, with URL and headers from expressions and a Standard Webhooks signature', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    hook.respond = (_r, res) => void held.then(() => res.end('thanks'));
    let settled = false;
    const answer = post('/direct/orders', { orderId: 7 }).then((r) => ((settled = true), r));
    const [r] = await hook.received(1);
    // The endpoint has the request but has not answered: neither has the gateway.
    assert.equal(settled, false);
    release();
    const res = await answer;
    assert.equal(res.status, 200);
    const body = (await res.json()) as { deliveries: { endpoint: string; status: number; attempts: number }[] };
    assert.deepEqual(body.deliveries, [{ endpoint: `${hook.url}/direct/orders`, status: 200, attempts: 1 }]);
    assert.equal(r!.url, '/direct/orders');
    assert.equal(r!.headers.authorization, 'Bearer t0ken');
    assert.equal(r!.headers['x-order'], '7');
    assert.deepEqual(JSON.parse(r!.body), { orderId: 7 });
    // The independent Standard Webhooks implementation accepts the signature.
    assert.deepEqual(new Webhook(SECRET).verify(r!.body, r!.headers as Record<string, string>), { orderId: 7 });
    hook.respond = (_r, res) => res.end('ok');
  });

  // Receivers read a header's bytes beyond ASCII as Latin-1 (node, Python's http.server): a
  // CloudEvent id of `ordé 1` went out as its UTF-8 bytes, signed as such, and verified nowhere.
  it("signs a CloudEvent's id beyond ASCII as its ce-id header carries it, percent-encoded, so a receiver verifies it", async () => {
    const utf8 = (s: string) => Buffer.from(s, 'utf8').toString('latin1');
    const ce = { 'ce-specversion': '1.0', 'ce-id': utf8('ordé 1'), 'ce-source': '/shop', 'ce-type': 'order.placed' };
    const before = hook.requests.length;
    const res = await post('/direct/ce', { orderId: 8 }, ce);
    assert.equal(res.status, 200, await res.text());
    const r = hook.requests.slice(before).find((q) => q.url === '/direct/ce')!;
    assert.equal(r.headers['ce-id'], 'ord%C3%A9%201');
    assert.equal(r.headers['webhook-id'], r.headers['ce-id']);
    assert.deepEqual(new Webhook(SECRET).verify(r.body, r.headers as Record<string, string>), { orderId: 8 });
  });

  // A `whsec_` secret node's decoder half read signed with an empty key (anyone could sign) or with
  // another key than the endpoint's Standard Webhooks library decodes: config errors, the secret never quoted.
  it('refuses a signature.secret of whsec_ and anything but standard base64, at its line, without quoting it', async () => {
    // base64url, a wrong '=', a length no base64 has.
    const secrets = ['whsec_', 'whsec_!!!!', 'whsec_c2VjcmV0-_-_', 'whsec_c2VjcmV0LXNlY3JldA=', 'whsec_c2VjcmV0L'];
    const routes = secrets.map((s, i) => `  - { name: s${i}, from: { listener: api, path: /s${i} }, to: { http: { url: "http://127.0.0.1:1/x", signature: { secret: "${s}" } } } }`);
    // Unpadded is taken: Java's and PHP's Standard Webhooks libraries decode it as the padded form.
    const good = [SECRET, 'whsec_c2VjcmV0LXNlY3JldA', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'].map(
      (s, i) => `  - { name: good${i}, from: { listener: api, path: /good${i} }, to: { http: { url: "http://127.0.0.1:1/x", signature: { secret: "${s}" } } } }`,
    );
    writeFileSync(join(gw.dir, 'secrets.yaml'), ['version: 1', 'listeners: { api: { kind: http, port: 0 } }', 'routes:', ...routes, ...good, ''].join('\n'));
    const r = await runCliInProcess(['validate', '-c', 'secrets.yaml'], { cwd: gw.dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^secrets\.yaml:4:\d+: signature\.secret is 'whsec_' with nothing after it: the signing key would be empty/);
    for (const [i, line] of lines.slice(1).entries()) assert.match(line, new RegExp(`^secrets\\.yaml:${5 + i}:\\d+: signature\\.secret starts with 'whsec_' but what follows is not base64 `));
    assert.equal(lines.length, secrets.length, r.stdout);
    for (const s of secrets.slice(1)) assert.ok(!r.stdout.includes(s.slice(6)), r.stdout);
    // The unpadded secret's key is the padded one's; the spec's test vector signs as its libraries do.
    assert.deepEqual(signatureKey('whsec_c2VjcmV0LXNlY3JldA'), signatureKey('whsec_c2VjcmV0LXNlY3JldA=='));
    const spec = new Webhook('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw').sign('msg_p5jXN8AQM9LWM0D4loKWxJek', new Date(1614265330 * 1000), '{"test": 2432232314}');
    assert.equal(spec, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
    const key = signatureKey('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') as Buffer;
    assert.equal(`v1,${createHmac('sha256', key).update('msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}').digest('base64')}`, spec);
  });

  // docs/http-edge.md, "What is sent": the value as JSON, a string value as text. The request's
  // content-type is the body's, not the one the message arrived with before a step changed it.
  it('sends a value a step turned into a string as text/plain, and one it turned into an object as application/json', async () => {
    const before = hook.requests.length;
    assert.equal((await post('/to-text', { orderId: 7 })).status, 200);
    const json = await fetch(gw.url('api', '/to-json'), { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' });
    assert.equal(json.status, 200);
    const [text, object] = (await hook.received(before + 2)).slice(before);
    assert.equal(text!.url, '/to-text');
    assert.equal(text!.body, 'order 7');
    assert.equal(text!.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(object!.url, '/to-json');
    assert.deepEqual(JSON.parse(object!.body), { said: 'hi' });
    assert.equal(object!.headers['content-type'], 'application/json');
  });

  it('evaluates URL and headers that need JSONata’s own evaluator as well as those it answers at once, and fails a computed URL that is not http(s) or names port 0', async () => {
    const from = hook.requests.length;
    // `target` and the literal have fast paths; $uppercase needs JSONata.
    const ok = await post('/computed', { target: `${hook.url}/computed/1`, name: 'alice' });
    assert.equal(ok.status, 200);
    const [r] = hook.requests.slice(from);
    assert.equal(r!.url, '/computed/1');
    assert.equal(r!.headers['x-name'], 'ALICE');
    assert.equal(r!.headers['x-static'], 'fixed');
    const bad = await post('/computed', { target: 'ftp://example.com/x', name: 'bob' });
    assert.equal(bad.status, 500);
    const p = (await bad.json()) as { code: string; detail: string };
    assert.equal(p.code, 'EG_EXPRESSION_FAILED');
    assert.match(p.detail, /url expression gave "ftp:\/\/example.com\/x", which is not an http\(s\) URL/);
    const port0 = await post('/computed', { target: 'http://127.0.0.1:0/x', name: 'carol' });
    assert.equal(port0.status, 500);
    const p0 = (await port0.json()) as { code: string; detail: string };
    assert.equal(p0.code, 'EG_EXPRESSION_FAILED');
    assert.equal(p0.detail, "'http://127.0.0.1:0/x' names port 0, which no request can reach");
    // Nothing was sent for either.
    assert.equal(hook.requests.length, from + 1);
  });

  it('refuses as invalid (400) a message whose computed header or URL would carry CR/LF (header injection), fails one whose URL cannot be parsed, naming which, and sends nothing', async () => {
    const from = hook.requests.length;
    const logsFrom = gw.logs.length;
    const injected = await post('/computed', { target: `${hook.url}/computed/2`, name: 'eve\r\nx-injected: 1' });
    // The client's data holds the CR/LF: its message is invalid, the expression did not fail (1428).
    assert.equal(injected.status, 400);
    const pi = (await injected.json()) as { code: string; detail: string; errors: string[] };
    assert.equal(pi.code, 'EG_INVALID_MESSAGE');
    assert.equal(pi.detail, 'headers.x-name gave a value with control characters (such as CR or LF), which HTTP does not allow in a header');
    assert.deepEqual(pi.errors, [pi.detail]);
    // A computed URL with one: the URL parser would have dropped it and sent the request elsewhere.
    const inUrl = await post('/computed', { target: `${hook.url}/computed/2\nx`, name: 'eve' });
    assert.equal(inUrl.status, 400);
    assert.equal(((await inUrl.json()) as { detail: string }).detail, 'url gave a value with control characters (such as CR or LF), which a URL cannot hold');
    // A WebSocket frame gets the same invalid answer, and the connection stays open.
    const client = await WsClient.connect(gw.url('ws', '/computed', 'ws'));
    client.send({ name: 'a\u0007b' });
    const frame = (await client.next()) as { type: string; status: number; code: string; detail: string };
    conforms('ws-error-frame.json', frame);
    assert.deepEqual(
      [frame.type, frame.status, frame.code, frame.detail],
      ['error', 400, 'EG_INVALID_MESSAGE', 'headers.x-name gave a value with control characters (such as CR or LF), which HTTP does not allow in a header'],
    );
    client.close();
    // Last: its warning, once logged, comes after any the ones before it would have had.
    const unparsable = await post('/computed', { target: 'http://[::1/x', name: 'frank' });
    assert.equal(unparsable.status, 500);
    const pu = (await unparsable.json()) as { code: string; detail: string };
    assert.equal(pu.code, 'EG_EXPRESSION_FAILED');
    assert.equal(pu.detail, "'http://[::1/x' is not a valid URL");
    assert.equal(hook.requests.length, from, 'nothing was sent');
    // The gateway is not at fault: no `message failed` warning for the invalid ones, as there is for a failed expression.
    await gw.waitForLog((l) => l.msg === 'message failed' && l.detail === pu.detail, 10000);
    // By detail: a warning of the test before (its failed URLs) may still be written after logsFrom.
    const warned = gw.logs.slice(logsFrom).filter((l) => l.msg === 'message failed' && typeof l.detail === 'string' && l.detail.includes('gave a value with'));
    assert.deepEqual(warned, []);
    const fine = await post('/computed', { target: `${hook.url}/computed/3`, name: 'grace' });
    assert.equal(fine.status, 200);
    // Beyond Latin-1 (an emoji, or a request header sent as UTF-8 and read so, point 1680): its
    // UTF-8 bytes, as curl sends it; it was a 500, and a request header copied here failed so.
    const emoji = await post('/computed', { target: `${hook.url}/computed/4`, name: 'zoë 東京 😀' });
    assert.equal(emoji.status, 200);
    const sent = hook.requests.find((r) => r.url === '/computed/4')!;
    assert.equal(Buffer.from(sent.headers['x-name'] as string, 'latin1').toString('utf8'), 'ZOË 東京 😀');
    // Every value beyond ASCII as its UTF-8 bytes, one within Latin-1 too (it went as Latin-1, a
    // byte per character, so a receiver could not tell which a byte meant): a body's `zoë`, and
    // curl's UTF-8 `Jürgen` copied from the request (node's parser gives the bytes as latin1).
    const latin = await post('/computed', { target: `${hook.url}/computed/5`, name: 'zoë' });
    assert.equal(latin.status, 200);
    const curled = await new Promise<string>((resolve, reject) =>
      execFile(
        'curl',
        ['-s', '-H', 'content-type: application/json', '-H', 'x-who: Jürgen', '--data-binary', JSON.stringify({ target: `${hook.url}/computed/6`, name: 'x' }), gw.url('api', '/computed')],
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      ),
    );
    assert.match(curled, /"deliveries"/);
    const bytes = (url: string, name: string) => Buffer.from(hook.requests.find((r) => r.url === url)!.headers[name] as string, 'latin1').toString('hex');
    assert.equal(bytes('/computed/5', 'x-name'), Buffer.from('ZOË').toString('hex'));
    assert.equal(bytes('/computed/6', 'x-who'), Buffer.from('Jürgen').toString('hex'));
  });

  it('consume routes: a message whose computed header would carry CR/LF is dead-lettered at once as invalid, the next one delivered', async () => {
    const dlq = await WsClient.connect(gw.url('ws', '/dlq', 'ws'));
    const from = hook.requests.length;
    assert.equal((await post('/enqueue-named', { name: 'a\r\nx-injected: 1' })).status, 200);
    assert.equal((await post('/enqueue-named', { name: 'b' })).status, 200);
    const frame = (await dlq.next()) as { value: { name: string }; headers: Record<string, string> };
    assert.equal(frame.value.name, 'a\r\nx-injected: 1');
    const error = JSON.parse(frame.headers._eventgate_error!);
    assert.deepEqual([error.status, error.code, error.route], [400, 'EG_INVALID_MESSAGE', 'consume-named']);
    assert.match(error.detail, /^headers\.x-name gave a value with control characters/);
    await eventually(() =>
      assert.deepEqual(
        hook.requests.slice(from).map((r) => [r.url, r.headers['x-name']]),
        [['/named', 'b']],
      ),
    );
    dlq.close();
  });

  it('retries 5xx with backoff and counts every answer per route in the metrics', async () => {
    const from = hook.requests.length;
    let n = 0;
    hook.respond = (_r, res) => {
      // The first asks for a second's wait: the retry after it is in a later second.
      if (++n === 1) res.setHeader('retry-after', '1');
      res.statusCode = n <= 2 ? 503 : 200;
      res.end();
    };
    const res = await post('/direct/retry', { orderId: 1 });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { deliveries: { attempts: number }[] };
    assert.equal(body.deliveries[0]!.attempts, 3);
    const tries = hook.requests.slice(from);
    assert.equal(tries.length, 3);
    // Every try carries the same webhook-id, so a receiver can deduplicate.
    assert.equal(new Set(tries.map((r) => r.headers['webhook-id'])).size, 1);
    // Each is signed at its own time (receivers refuse a timestamp 5 minutes old, and retries can
    // last longer), and the independent implementation accepts each signature.
    const stamps = tries.map((r) => Number(r.headers['webhook-timestamp']));
    assert.ok(stamps[1]! > stamps[0]!, `the retry a second later is stamped later: ${stamps}`);
    for (const r of tries) assert.deepEqual(new Webhook(SECRET).verify(r.body, r.headers as Record<string, string>), { orderId: 1 });
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /eventgate_webhook_requests_total\{route="direct",target="0",result="5xx"\} 2/);
    assert.match(metrics, /eventgate_webhook_requests_total\{route="direct",target="0",result="2xx"\} [2-9]/);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('answers 502 after the last try when the endpoint keeps failing, refuses the connection, or refuses the message', async () => {
    hook.respond = (_r, res) => {
      res.statusCode = 500;
      res.end('database down');
    };
    let res = await post('/direct/down', { orderId: 1 });
    assert.equal(res.status, 502);
    let p = (await res.json()) as { code: string; detail: string };
    assert.equal(p.code, 'EG_WEBHOOK_FAILED');
    assert.match(p.detail, /answered 500: database down \(after 3 tries\)$/, 'an endpoint that answered each try: no "may still have reached it"');

    hook.respond = (_r, res) => {
      res.statusCode = 422;
      res.end();
    };
    const from = hook.requests.length;
    res = await post('/direct/refuses', { orderId: 1 });
    assert.equal(res.status, 502);
    assert.equal(((await res.json()) as { code: string }).code, 'EG_WEBHOOK_REFUSED');
    assert.equal(hook.requests.length - from, 1, 'a final 4xx is not retried');
    hook.respond = (_r, res) => res.end('ok');

    res = await post('/refused', { a: 1 });
    assert.equal(res.status, 502);
    p = (await res.json()) as { code: string; detail: string };
    assert.match(p.detail, /could not be reached: ECONNREFUSED \(after 2 tries\)$/, 'a refused connection took nothing: no "may still have reached it"');
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /eventgate_webhook_requests_total\{route="refused",target="0",result="connection"\} 2/);
    assert.match(metrics, /eventgate_webhook_requests_total\{route="direct",target="0",result="4xx"\} 1/);
  });

  it('fan-out: a target that fails is answered once every target did, naming the ones that took the message', async () => {
    const watch = await WsClient.connect(gw.url('ws', '/fanned', 'ws'));
    const from = hook.requests.length;
    const res = await post('/fan-partial', { n: 1 });
    // The refused webhook (the second target) fails; the memory topic and the third target took it.
    assert.equal(res.status, 502);
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    const p = (await res.json()) as { code: string; detail: string; deliveries: Record<string, unknown>[] };
    conforms('problem.json', p);
    assert.match(p.code, /^EG_WEBHOOK_/);
    assert.match(p.detail, /could not be reached: ECONNREFUSED.*; 2 of the 3 targets took it \(see deliveries\): a retry sends it to them again$/);
    const [topic, endpoint] = p.deliveries;
    assert.deepEqual({ ...topic, offset: undefined }, { broker: 'local', topic: 'fanned', partition: 0, offset: undefined });
    assert.deepEqual(endpoint, { endpoint: `${hook.url}/fanned`, status: 200, attempts: 1 });
    assert.equal(p.deliveries.length, 2);
    // What the answer lists is what happened: the topic has it at that offset, the endpoint got it once.
    const consumed = (await watch.next()) as { offset: string; value: unknown };
    assert.deepEqual([consumed.offset, consumed.value], [topic!.offset, { n: 1 }]);
    assert.deepEqual(
      hook.requests.slice(from).map((r) => [r.url, JSON.parse(r.body)]),
      [['/fanned', { n: 1 }]],
    );
    watch.close();
  });

  it('fan-out: when no target took the message the failure says so, with no deliveries', async () => {
    const res = await post('/fan-none', { n: 1 });
    assert.equal(res.status, 502);
    const p = (await res.json()) as { detail: string; deliveries: unknown[] };
    assert.match(p.detail, /\(none of the 2 targets took it\)$/);
    assert.deepEqual(p.deliveries, []);
  });

  it('fan-out: a target that fails for itself is logged at warn though another refused the message as invalid first, which the answer says', async () => {
    const res = await post('/fan-invalid', { name: 'a\r\nb' });
    assert.equal(res.status, 400);
    const p = (await res.json()) as { code: string; detail: string };
    assert.equal(p.code, 'EG_INVALID_MESSAGE');
    assert.match(p.detail, /^headers\.x-name gave a value with control characters .*\(none of the 2 targets took it\)$/);
    // The second target's own failure, at the level it has alone (before, only the route's debug line named the invalid one).
    const line = await gw.waitForLog((l) => l.msg === 'message failed at a target of its fan-out' && l.route === 'fan-invalid', 10000);
    assert.deepEqual([line.level, line.target, line.status], ['warn', 1, 502]);
    assert.match(line.code as string, /^EG_WEBHOOK_/);
    assert.match(line.detail as string, /could not be reached: ECONNREFUSED/);
  });

  it('fan-out on a websocket publish route: the error frame names the targets that took the frame, and the connection stays open', async () => {
    const client = await WsClient.connect(gw.url('ws', '/fan-partial', 'ws'));
    for (const n of [1, 2]) {
      client.send({ n });
      const frame = (await client.next()) as { type: string; status: number; detail: string; deliveries: { broker: string; topic: string }[] };
      conforms('ws-error-frame.json', frame);
      assert.equal(frame.type, 'error');
      assert.equal(frame.status, 502);
      assert.match(frame.detail, /1 of the 2 targets took it/);
      assert.deepEqual(
        frame.deliveries.map((d) => [d.broker, d.topic]),
        [['local', 'fanned']],
      );
    }
    client.close();
  });

  it('fan-out on a consume route: a retry goes to the targets that failed, not again to those that took the message', async () => {
    let flaky = 0;
    hook.respond = (r, res) => {
      // The flaky endpoint refuses its first two requests.
      res.statusCode = r.url === '/fan-flaky' && ++flaky <= 2 ? 500 : 200;
      res.end();
    };
    const from = hook.requests.length;
    assert.equal((await post('/enqueue-fan', { n: 1 })).status, 200);
    await eventually(() => assert.equal(hook.requests.slice(from).filter((r) => r.url === '/fan-flaky').length, 3));
    // The next message goes once to each: the first one was done once the flaky endpoint took it.
    assert.equal((await post('/enqueue-fan', { n: 2 })).status, 200);
    await eventually(() => assert.equal(hook.requests.slice(from).filter((r) => JSON.parse(r.body).n === 2).length, 2));
    const seen = (url: string) =>
      hook.requests
        .slice(from)
        .filter((r) => r.url === url)
        .map((r) => JSON.parse(r.body).n);
    assert.deepEqual(seen('/fan-steady'), [1, 2]);
    assert.deepEqual(seen('/fan-flaky'), [1, 1, 1, 2]);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('answers 504 when the endpoint does not answer within timeoutMs, saying that the endpoint may have the message all the same', async () => {
    hook.respond = () => undefined; // never answers
    const from = hook.requests.length;
    const res = await post('/slow', { a: 1 });
    assert.equal(res.status, 504);
    const p = (await res.json()) as { code: string; detail: string };
    assert.equal(p.code, 'EG_WEBHOOK_TIMEOUT');
    // The endpoint read the request: a client that takes the 504 for "not delivered" and sends again gets it there twice.
    assert.equal(hook.requests.length - from, 1);
    assert.match(p.detail, /did not answer within 300 ms; the message may still have reached it \(sending it again may deliver it twice\)$/);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('takes an answer that came within timeoutMs though the gateway could not run until after it: not a timeout, not sent again', async () => {
    // The gateway's process stopped (as one starved of CPU, or in a long pause) as the endpoint
    // answers at once, and going on only after timeoutMs: the answer waits in its socket when the
    // try's timer falls due. Taken for a timeout, the request was sent again, and the endpoint had
    // the message twice (spec-checklist 3976).
    const pid = gw.process.pid!;
    let thawed: Promise<void> | undefined;
    hook.respond = (r, res) => {
      if (r.url !== '/stalled' || thawed !== undefined) return void res.end('ok');
      thawed = (async () => {
        await freezeProcess(pid, false);
        res.end('ok');
        await new Promise((resolve) => setTimeout(resolve, 1500));
        process.kill(pid, 'SIGCONT');
      })();
    };
    const from = hook.requests.length;
    try {
      const res = await post('/stalled', { n: 1 });
      assert.equal(res.status, 200, await res.text());
      await thawed;
      // A second try would have followed at once (10 ms of backoff): the next message comes after it.
      assert.equal((await post('/stalled', { n: 2 })).status, 200);
      assert.deepEqual(
        hook.requests.slice(from).map((r) => r.body),
        ['{"n":1}', '{"n":2}'],
      );
    } finally {
      if (thawed) await thawed.catch(() => process.kill(pid, 'SIGCONT'));
      hook.respond = (_r, res) => res.end('ok');
    }
  });

  it("`eventgate test` answers { error: refused } and { error: timeout } as this gateway's endpoints fail (1290)", async () => {
    hook.respond = () => undefined; // never answers
    const live = await Promise.all([post('/refused', { a: 1 }), post('/slow', { a: 1 })]);
    const [refused, slow] = await Promise.all(live.map(async (r) => ({ status: r.status, detail: ((await r.json()) as { detail: string }).detail })));
    hook.respond = (_r, res) => res.end('ok');
    assert.deepEqual([refused!.status, slow!.status], [502, 504]);
    // The same config's routes in a config test, whose endpoints say they failed so: the same answers.
    const exactly = (text: string) => JSON.stringify(`^${text.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}$`);
    const tests = [
      'config: gateway.yaml',
      'tests:',
      `  - { name: refused, route: refused, input: { path: /refused, value: { a: 1 } }, answers: { "http://127.0.0.1:${refusedPort}/x": { error: refused } }, expect: { outcome: failed, status: ${refused!.status}, error: ${exactly(refused!.detail)} } }`,
      `  - { name: timeout, route: slow, input: { path: /slow, value: { a: 1 } }, answers: { "${hook.url}/slow": { error: timeout } }, expect: { outcome: failed, status: ${slow!.status}, error: ${exactly(slow!.detail)} } }`,
    ];
    writeFileSync(join(gw.dir, 'endpoints.tests.yaml'), `${tests.join('\n')}\n`);
    const r = await runCliInProcess(['test', 'endpoints.tests.yaml'], { cwd: gw.dir, env: { HOOK_TOKEN: 't0ken', HOOK_SECRET: SECRET } });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^2 tests passed$/m);
  });

  it('gives each try its whole timeoutMs, also one that starts late in the time of the try before it on the same connection', async () => {
    // Concurrency 1: the second message's try starts once the first is answered, 1.5 s into the first one's 2 s.
    let n = 0;
    hook.respond = (r, res) => {
      if (r.url !== '/patient') return void res.end('ok');
      setTimeout(() => res.end('ok'), n++ === 0 ? 1500 : 1000);
    };
    const answers = await Promise.all([post('/patient', { n: 1 }), post('/patient', { n: 2 })]);
    assert.deepEqual(
      answers.map((r) => r.status),
      [200, 200],
    );
    assert.equal(n, 2);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('keeps at most `concurrency` requests in flight, over reused keep-alive connections', async () => {
    const pending: ServerResponse[] = [];
    let inFlight = 0;
    let most = 0;
    hook.respond = (r, res) => {
      if (r.url !== '/bounded') return void res.end();
      most = Math.max(most, ++inFlight);
      pending.push(res);
    };
    const from = hook.requests.length;
    const answers = Array.from({ length: 6 }, (_, i) => post('/bounded', { i }));
    for (let done = 0; done < 6; done++) {
      await eventually(() => assert.ok(pending.length > 0));
      // Answer one; only then may the next request reach the endpoint.
      inFlight--;
      pending.shift()!.end();
    }
    assert.deepEqual(
      (await Promise.all(answers)).map((r) => r.status),
      [200, 200, 200, 200, 200, 200],
    );
    assert.equal(most, 2);
    const ports = new Set(hook.requests.slice(from).map((r: Received) => r.remotePort));
    assert.ok(ports.size <= 2, `6 requests over ${ports.size} connections`);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('with orderBy, delivers messages of one key one after another, others meanwhile', async () => {
    const heldA: ServerResponse[] = [];
    hook.respond = (r, res) => {
      if (r.url === '/ordered' && JSON.parse(r.body).v === 'a1') heldA.push(res);
      else res.end();
    };
    const from = hook.requests.length;
    const a1 = post('/ordered', { k: 'a', v: 'a1' });
    await eventually(() => assert.equal(heldA.length, 1));
    const a2 = post('/ordered', { k: 'a', v: 'a2' });
    const b1 = post('/ordered', { k: 'b', v: 'b1' });
    assert.equal((await b1).status, 200);
    // b1 was sent after a2 and is delivered; a2 waits for a1.
    assert.deepEqual(
      hook.requests.slice(from).map((r) => JSON.parse(r.body).v),
      ['a1', 'b1'],
    );
    heldA[0]!.end();
    assert.equal((await a1).status, 200);
    assert.equal((await a2).status, 200);
    assert.deepEqual(
      hook.requests.slice(from).map((r) => JSON.parse(r.body).v),
      ['a1', 'b1', 'a2'],
    );
    hook.respond = (_r, res) => res.end('ok');
  });

  it('consume routes: delivered after a 2xx, dead-lettered after the last try', async () => {
    const dlq = await WsClient.connect(gw.url('ws', '/dlq', 'ws'));
    hook.respond = (r, res) => {
      res.statusCode = r.url === '/consume' && JSON.parse(r.body).fail ? 500 : 200;
      res.end();
    };
    const from = hook.requests.length;
    assert.equal((await post('/enqueue', { n: 1 })).status, 200);
    assert.equal((await post('/enqueue', { n: 2, fail: true })).status, 200);
    assert.equal((await post('/enqueue', { n: 3 })).status, 200);
    const frame = (await dlq.next()) as { value: { n: number }; headers: Record<string, string> };
    assert.equal(frame.value.n, 2);
    assert.match(JSON.parse(frame.headers._eventgate_error!).code, /EG_WEBHOOK_FAILED/);
    // Without orderBy the route has several messages in hand at once: 3 may go while 2 is retried.
    await eventually(() =>
      assert.deepEqual(
        hook.requests
          .slice(from)
          .filter((r) => r.url === '/consume')
          .map((r) => JSON.parse(r.body).n)
          .sort(),
        [1, 2, 2, 3],
      ),
    );
    dlq.close();
    hook.respond = (_r, res) => res.end('ok');
  });

  it('consume routes: a signed request’s webhook-id is the same on every try of a message and no other message’s, though two memory topics hold each at offset 0', async () => {
    // Each broker's `signed` topic gets the message at offset 0 (as a memory topic does again after
    // every restart): `<topic>-<partition>-<offset>` was one id for both, so a receiver deduplicating
    // by id dropped the second message as a copy.
    let failed = false;
    hook.respond = (r, res) => {
      res.statusCode = r.url === '/signed' && !failed && (failed = true) ? 503 : 200;
      res.end();
    };
    const from = hook.requests.length;
    assert.equal((await post('/enqueue-signed', { n: 1 })).status, 200);
    assert.equal((await post('/enqueue-signed', { n: 2 })).status, 200);
    await eventually(() => assert.equal(hook.requests.slice(from).filter((r) => r.url.startsWith('/signed')).length, 7));
    const signed = hook.requests.slice(from).filter((r) => r.url.startsWith('/signed'));
    const wh = new Webhook(SECRET);
    for (const r of signed) wh.verify(r.body, r.headers as Record<string, string>);
    const ids = signed.map((r) => r.headers['webhook-id'] as string);
    // Four messages (two per topic), one retry, and the other topic's two again to a second target
    // of its route (a request of its own): six ids, the retry's its first try's.
    assert.equal(new Set(ids).size, 6, `ids: ${ids.join(' ')}`);
    assert.equal(ids.indexOf(ids[0]!, 1) > 0, true, 'the first request (answered 503) tried again with its id');
    const twin = signed.filter((r) => r.url === '/signed-twin').map((r) => r.headers['webhook-id']);
    assert.equal(twin.length, 2);
    for (const id of twin) assert.equal(ids.filter((i) => i === id).length, 1, 'a second target of the route sends the message with an id of its own');
    for (const id of ids) assert.match(id, /^msg_[A-Za-z0-9_-]{32}$/);
    hook.respond = (_r, res) => res.end('ok');
  });

  it('memory consume routes: up to `concurrency` messages of the topic in flight at once, all committed once answered', async () => {
    const held: ServerResponse[] = [];
    hook.respond = (r, res) => (r.url === '/held' ? held.push(res) : res.end('ok'));
    for (let n = 0; n < 6; n++) assert.equal((await post('/enqueue-held', { n })).status, 200);
    // Three at once reach the endpoint before it answers any; then the next three.
    await eventually(() => assert.equal(held.length, 3));
    for (const res of held.splice(0)) res.end('ok');
    await eventually(() => assert.equal(held.length, 3));
    for (const res of held.splice(0)) res.end('ok');
    const bodies = hook.requests.filter((r) => r.url === '/held').map((r) => JSON.parse(r.body).n as number);
    assert.deepEqual(bodies.sort(), [0, 1, 2, 3, 4, 5]);
    // The group moved past all six: a sentinel is the only one delivered next.
    hook.respond = (_r, res) => res.end('ok');
    assert.equal((await post('/enqueue-held', { n: 'sentinel' })).status, 200);
    await eventually(() => assert.equal(hook.requests.filter((r) => r.url === '/held').length, 7));
    assert.equal(JSON.parse(hook.requests.filter((r) => r.url === '/held').at(-1)!.body).n, 'sentinel');
  });
});

describe('webhook targets: reloads that replace memory consume routes (a new concurrency, a retry waiting out its backoff)', () => {
  let hook: WebhookReceiver;
  before(async () => {
    hook = await WebhookReceiver.start();
  });
  // `later`: the path of the route whose endpoint asks for a long wait (the second test).
  const config = (concurrency: number, later = 'before') => `
version: 1
admin: { port: 0, drainTimeoutMs: 300 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: enqueue
    from: { listener: api, path: /enqueue }
    to: { broker: local, topic: jobs }
  - name: consume
    from: { broker: local, topic: jobs }
    to: { http: { url: "${hook.url}/job", concurrency: ${concurrency} } }
  - name: enqueue-later
    from: { listener: api, path: /enqueue-later }
    to: { broker: local, topic: later }
  - name: consume-later
    from: { broker: local, topic: later }
    to: { http: { url: "${hook.url}/${later}", retry: { attempts: 3, maxBackoffMs: 600000 } } }
`;
  // One gateway for both tests (started in before(), after the receiver).
  const gw = useGateway(() => config(1));
  after(async () => {
    await hook?.stop();
  });

  it('takes the new concurrency: the consumer group that survives the reload hands out that many at once', async () => {
    const g = gw;
    const held: ServerResponse[] = [];
    hook.respond = (_r, res) => held.push(res);
    const post = (n: number) => fetch(g.url('api', '/enqueue'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal((await post(0)).status, 200);
    await eventually(() => assert.equal(held.length, 1));
    held.splice(0)[0]!.end('ok');
    // The route is rebuilt with concurrency 4; its memory consumer group (and position) survives the reload.
    assert.equal((await g.reconfigure(config(4))).msg, 'config reloaded');
    for (let n = 1; n <= 8; n++) assert.equal((await post(n)).status, 200);
    // Four at once now; before, the group's window stayed at the capacity it was made with: one.
    await eventually(() => assert.equal(held.length, 4));
    for (const res of held.splice(0)) res.end('ok');
    await eventually(() => assert.equal(held.length, 4));
    hook.respond = (_r, res) => res.end('ok');
    for (const res of held.splice(0)) res.end('ok');
    await eventually(() => assert.equal(hook.requests.length, 9));
    const bodies = hook.requests.map((r) => JSON.parse(r.body).n as number);
    assert.deepEqual(
      bodies.sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8],
      'each message once',
    );
  });

  it('ends a retry waiting out its backoff when the reload replaces the route: nothing more is sent from the old one, the new one delivers the message once', async () => {
    const from = hook.requests.length;
    // The old endpoint asks for ten minutes: the reload held that long, for a try it would then not send.
    hook.respond = (r, res) => {
      if (r.url === '/before') res.writeHead(503, { 'retry-after': '600' }).end('later');
      else res.end('ok');
    };
    const g = gw;
    const res = await fetch(g.url('api', '/enqueue-later'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
    assert.equal(res.status, 200);
    await eventually(() => assert.equal(hook.requests.length, from + 1));
    assert.equal((await g.reconfigure(config(4, 'after'))).msg, 'config reloaded');
    await eventually(() => assert.equal(hook.requests.length, from + 2));
    assert.deepEqual(
      hook.requests.slice(from).map((r) => [r.url, r.body]),
      [
        ['/before', '{"n":1}'],
        ['/after', '{"n":1}'],
      ],
    );
    const back = g.logs.find((l) => l.msg.startsWith('message given back uncommitted'));
    assert.match(String(back?.detail), /^the route stopped while waiting to try http:\/\/127\.0\.0\.1:\d+\/before again: not delivered \(.*\/before answered 503: later\)$/);
    hook.respond = (_r, res) => res.end('ok');
  });
});

describe("webhook targets: a gateway's own start-up work is not counted in a try's timeoutMs", () => {
  it('loads the HTTP client before the first try starts its clock: a slow load is no timeout, the message sent once', async () => {
    const hook = await WebhookReceiver.start();
    const preload = fileURLToPath(new URL('../helpers/slow-undici-load.js', import.meta.url));
    const gw = await startGateway(
      `
version: 1
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: first
    from: { listener: api, path: /first }
    to: { http: { url: "${hook.url}/first", timeoutMs: 3000, retry: { attempts: 2, backoffMs: 10 } } }
`,
      // Loading it takes longer than the try may: counted in the try, the first one timed out.
      { env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${preload}`, EVENTGATE_TEST_UNDICI_LOAD_MS: '4000' } },
    );
    try {
      const res = await fetch(gw.url('api', '/first'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
      const body = (await res.json()) as { deliveries: { attempts: number }[] };
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.deepEqual(
        body.deliveries.map((d) => d.attempts),
        [1],
      );
      assert.equal(hook.requests.length, 1);
    } finally {
      await gw.stop();
      await hook.stop();
    }
  });
});
