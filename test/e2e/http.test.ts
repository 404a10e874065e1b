import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { parseReplies, rawHttpText, rawPost, sendPastAnswer } from '../helpers/raw-http.js';
import { useGateway } from '../helpers/gateway.js';
import { fetch, type ReplyHeaders } from '../helpers/http.js';

const config = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  other: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, maxBodyBytes: 256 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
chains:
  light-file:
    - validate: { schema: schemas/light.json }
routes:
  - name: inline
    from: { listener: api, path: /inline }
    through:
      - validate:
          schema: { type: object, required: [lumens], properties: { lumens: { type: integer, minimum: 0 } } }
    to: { listener: push, path: /out/inline }
  - name: file
    from: { listener: api, path: /file }
    through: light-file
    to: { listener: push, path: /out/file }
  - name: tag
    from: { listener: api, path: /tag }
    through:
      - validate: { schema: schemas/light.json, onInvalid: tag }
    to: { listener: push, path: /out/tag, format: envelope }
  - name: deadletter
    from: { listener: api, path: /deadletter }
    through:
      - validate: { schema: schemas/light.json, onInvalid: deadletter }
    to: { listener: push, path: /out/valid }
    deadletter: { broker: local, topic: dead }
  - name: dead-out
    from: { broker: local, topic: dead }
    to: { listener: push, path: /out/dead, format: envelope }
  - name: filter
    from: { listener: api, path: /filter }
    through:
      - filter: lumens > 100
    to: { listener: push, path: /out/filter }
  - name: transform
    from: { listener: api, path: /rooms/:room/light }
    through:
      - transform: |
          {
            "room": $path.room,
            "unit": $query.unit,
            "source": $headers."x-source",
            "lux": lumens * 10
          }
    to: { listener: push, path: /out/transform }
  - name: no-value
    from: { listener: api, path: /no-value }
    through:
      - transform: missing.field
    to: { listener: push, path: /out/never }
  - name: headers
    from: { listener: api, path: /headers }
    through:
      - headers:
          set:
            x-room: '"kitchen"'
            x-doubled: $string(lumens * 2)
            x-debug: '"replaced"'
          remove: [x-debug, x-drop]
    to: { listener: push, path: /out/headers, format: envelope }
  - name: fanout
    from: { listener: api, path: /fanout }
    to:
      - { broker: local, topic: fan-a }
      - { broker: other, topic: fan-b }
      - { listener: push, path: /out/fanout }
  - name: fan-a
    from: { broker: local, topic: fan-a }
    to: { listener: push, path: /out/fan-a, format: envelope }
  - name: fan-b
    from: { broker: other, topic: fan-b }
    to: { listener: push, path: /out/fan-b, format: envelope }
  - name: text
    from: { listener: api, path: /text }
    to: { listener: push, path: /out/text }
  - name: relay-in
    from: { listener: api, path: /relay }
    to: { broker: local, topic: relay }
  - name: relay
    from: { broker: local, topic: relay }
    through:
      - validate: { schema: schemas/light.json, onInvalid: tag }
    to: { listener: push, path: /out/relay, format: envelope }
`;

const lightSchema = JSON.stringify({
  type: 'object',
  required: ['lumens', 'sentAt'],
  properties: { lumens: { type: 'integer', minimum: 0 }, sentAt: { type: 'string', format: 'date-time' } },
  additionalProperties: false,
});

/** Every error body is RFC 9457 problem+json with these members. */
function assertProblem(reply: { status: number; headers: ReplyHeaders; body: any }, status: number, code: string): void {
  assert.equal(reply.status, status);
  assert.equal(reply.headers.get('content-type'), 'application/problem+json');
  assert.equal(reply.body.status, status);
  assert.equal(reply.body.type, `urn:eventgate:problem:${code}`);
  assert.equal(typeof reply.body.title, 'string');
  assert.ok(reply.body.title.length > 0);
  assert.equal(typeof reply.body.detail, 'string');
  assert.ok(reply.body.detail.length > 0);
}

/** A raw POST whose body is sent in chunks without a content-length (transfer-encoding: chunked). */
function postChunked(url: string, chunks: string[]): Promise<{ status: number; body: any; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), headers: res.headers }));
    });
    // The gateway may answer 413 and close before the last chunk: that is the point.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    for (const c of chunks) req.write(c);
    req.end();
  });
}

describe('HTTP publish (spec §4)', () => {
  const clients: WsClient[] = [];
  after(() => {
    for (const c of clients) c.close();
  });
  const gw = useGateway(config, { files: { 'schemas/light.json': lightSchema } });
  const listen = async (path: string) => {
    const c = await WsClient.connect(gw.url('push', path, 'ws'));
    clients.push(c);
    return c;
  };

  describe('validate', () => {
    it('delivers a valid message through an inline schema and answers 200 with the deliveries', async () => {
      const out = await listen('/out/inline');
      const reply = await post(gw.url('api', '/inline'), { lumens: 5 });
      assert.equal(reply.status, 200);
      assert.equal(reply.headers.get('content-type'), 'application/json');
      assert.deepEqual(reply.body, { deliveries: [{ listener: 'push', path: '/out/inline', clients: 1 }] });
      assert.deepEqual(await out.next(), { lumens: 5 });
    });

    it('rejects an invalid message with 400 problem+json listing the errors, and delivers nothing', async () => {
      const out = await listen('/out/inline');
      const reply = await post(gw.url('api', '/inline'), { lumens: -3 });
      assertProblem(reply, 400, 'EG_INVALID_MESSAGE');
      assert.deepEqual(reply.body.errors, ['/lumens: must be >= 0']);
      // A sentinel through the same route is the next thing out: the invalid message was not delivered.
      assert.equal((await post(gw.url('api', '/inline'), { lumens: 7 })).status, 200);
      assert.deepEqual(await out.next(), { lumens: 7 });
    });

    it('validates against a schema file, with formats', async () => {
      const out = await listen('/out/file');
      const ok = await post(gw.url('api', '/file'), { lumens: 1, sentAt: '2026-11-23T10:00:00Z' });
      assert.equal(ok.status, 200);
      assert.deepEqual(await out.next(), { lumens: 1, sentAt: '2026-11-23T10:00:00Z' });
      const bad = await post(gw.url('api', '/file'), { lumens: 1, sentAt: 'yesterday', extra: true });
      assertProblem(bad, 400, 'EG_INVALID_MESSAGE');
      assert.deepEqual(bad.body.errors, ['/extra: must NOT have additional properties', '/sentAt: must match format "date-time"']);
    });

    it('with onInvalid: tag, forwards the invalid message with the _asyncapi_eg_validation_error header', async () => {
      const out = await listen('/out/tag');
      const before = Date.now();
      const reply = await post(gw.url('api', '/tag'), { lumens: 'bright', sentAt: '2026-11-23T10:00:00Z' });
      assert.equal(reply.status, 200);
      assert.equal(reply.body.tagged, true);
      const envelope = await out.next();
      assert.deepEqual(envelope.value, { lumens: 'bright', sentAt: '2026-11-23T10:00:00Z' });
      const header = JSON.parse(envelope.headers._asyncapi_eg_validation_error);
      assert.deepEqual(Object.keys(header).sort(), ['errors', 'ts']);
      assert.deepEqual(header.errors, ['/lumens: must be integer']);
      assert.match(header.ts, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      assert.ok(Date.parse(header.ts) >= before - 1000 && Date.parse(header.ts) <= Date.now() + 1000);
    });

    it('with onInvalid: tag, forwards a valid message without the header', async () => {
      const out = await listen('/out/tag');
      const reply = await post(gw.url('api', '/tag'), { lumens: 3, sentAt: '2026-11-23T10:00:00Z' });
      assert.equal(reply.status, 200);
      assert.equal(reply.body.tagged, undefined);
      const envelope = await out.next();
      assert.equal(envelope.headers._asyncapi_eg_validation_error, undefined);
    });

    it("drops a client's own _asyncapi_eg_validation_error on a route with a validate step: the header is the gateway's verdict", async () => {
      const forged = { _asyncapi_eg_validation_error: '{"errors":["forged"]}' };
      const sentAt = '2026-11-23T10:00:00Z';
      const tagFrom = (envelope: { headers: Record<string, string> }) => Object.entries(envelope.headers).filter(([name]) => /^_asyncapi_eg_validation_error$/i.test(name));
      // A valid message goes on without it; an invalid one carries the gateway's errors only.
      const out = await listen('/out/tag');
      assert.equal((await post(gw.url('api', '/tag'), { lumens: 3, sentAt }, forged)).status, 200);
      assert.deepEqual(tagFrom(await out.next()), []);
      assert.equal((await post(gw.url('api', '/tag'), { lumens: 'bright', sentAt }, forged)).body.tagged, true);
      const tagged = tagFrom(await out.next());
      assert.deepEqual(
        tagged.map(([name, value]) => [name, JSON.parse(value).errors]),
        [['_asyncapi_eg_validation_error', ['/lumens: must be integer']]],
      );
      // A route without a validate step passes it on as any other header (to the memory topic); the
      // consume route that validates what it reads from there drops it as the HTTP route did.
      const relayed = await listen('/out/relay');
      const published = await listen('/out/fan-a');
      assert.equal((await post(gw.url('api', '/fanout'), { lumens: 4, sentAt }, forged)).status, 200);
      assert.equal(tagFrom(await published.next()).length, 1, 'kept by a route without a validate step');
      assert.equal((await post(gw.url('api', '/relay'), { lumens: 4, sentAt }, forged)).status, 200);
      const consumed = await relayed.next();
      assert.deepEqual(consumed.value, { lumens: 4, sentAt });
      assert.deepEqual(tagFrom(consumed), []);
    });

    it('with onInvalid: deadletter, sends the invalid message to the dead-letter topic with the header, not to the targets', async () => {
      const valid = await listen('/out/valid');
      const dead = await listen('/out/dead');
      const reply = await post(gw.url('api', '/deadletter'), { lumens: -1, sentAt: '2026-11-23T10:00:00Z' });
      assert.equal(reply.status, 200);
      assert.equal(reply.body.deadlettered, true);
      assert.deepEqual(reply.body.errors, ['/lumens: must be >= 0']);
      assert.deepEqual(
        reply.body.deliveries.map((d: any) => [d.broker, d.topic]),
        [['local', 'dead']],
      );
      const envelope = await dead.next();
      assert.equal(envelope.topic, 'dead');
      assert.deepEqual(envelope.value, { lumens: -1, sentAt: '2026-11-23T10:00:00Z' });
      assert.deepEqual(JSON.parse(envelope.headers._asyncapi_eg_validation_error).errors, ['/lumens: must be >= 0']);
      // The next valid message is the first the targets see: the invalid one never reached them.
      const ok = await post(gw.url('api', '/deadletter'), { lumens: 1, sentAt: '2026-11-23T10:00:00Z' });
      assert.equal(ok.status, 200);
      assert.deepEqual(await valid.next(), { lumens: 1, sentAt: '2026-11-23T10:00:00Z' });
    });
  });

  describe('filter', () => {
    it('answers 200 {"deliveries":[],"filtered":true} for a dropped message and delivers nothing', async () => {
      const out = await listen('/out/filter');
      const reply = await post(gw.url('api', '/filter'), { lumens: 50 });
      assert.equal(reply.status, 200);
      assert.deepEqual(reply.body, { deliveries: [], filtered: true });
      // A message the filter lets through is the next thing out: the dropped one was not delivered.
      assert.equal((await post(gw.url('api', '/filter'), { lumens: 500 })).status, 200);
      assert.deepEqual(await out.next(), { lumens: 500 });
    });

    it('lets a message through when the expression is truthy', async () => {
      const out = await listen('/out/filter');
      const reply = await post(gw.url('api', '/filter'), { lumens: 500 });
      assert.equal(reply.status, 200);
      assert.equal(reply.body.deliveries.length, 1);
      assert.deepEqual(await out.next(), { lumens: 500 });
    });
  });

  describe('transform', () => {
    it('binds $path, $query and $headers', async () => {
      const out = await listen('/out/transform');
      const reply = await post(gw.url('api', '/rooms/kitchen/light?unit=lux'), { lumens: 7 }, { 'x-source': 'sensor-1' });
      assert.equal(reply.status, 200);
      assert.deepEqual(await out.next(), { room: 'kitchen', unit: 'lux', source: 'sensor-1', lux: 70 });
    });

    it('gives repeated query parameters as a list', async () => {
      const out = await listen('/out/transform');
      await post(gw.url('api', '/rooms/hall/light?unit=a&unit=b'), { lumens: 1 });
      assert.deepEqual((await out.next()).unit, ['a', 'b']);
    });

    it('answers 500 problem+json when the transform has no result for the message', async () => {
      const reply = await post(gw.url('api', '/no-value'), { lumens: 1 });
      assertProblem(reply, 500, 'EG_EXPRESSION_FAILED');
      assert.match(reply.body.detail, /transform produced no value/);
    });
  });

  describe('headers', () => {
    it('sets headers from expressions and removes listed ones (removal first, so a header can be replaced)', async () => {
      const out = await listen('/out/headers');
      const reply = await post(gw.url('api', '/headers'), { lumens: 21 }, { 'x-debug': 'original', 'x-drop': 'gone', 'x-keep': 'kept' });
      assert.equal(reply.status, 200);
      const { headers } = await out.next();
      assert.equal(headers['x-room'], 'kitchen');
      assert.equal(headers['x-doubled'], '42');
      assert.equal(headers['x-debug'], 'replaced');
      assert.equal(headers['x-drop'], undefined);
      assert.equal(headers['x-keep'], 'kept');
    });

    it('leaves behind the headers about the exchange: credentials, negotiation and browser fetch metadata', async () => {
      const out = await listen('/out/headers');
      const exchange = {
        authorization: 'Bearer not-for-kafka',
        cookie: 'session=1',
        'user-agent': 'Mozilla/5.0',
        'accept-language': 'en',
        'sec-fetch-mode': 'cors',
        'sec-fetch-site': 'same-origin',
        'sec-ch-ua': '"Chromium";v="130"',
        'sec-ch-ua-platform': '"Linux"',
        'sec-gpc': '1',
        priority: 'u=1, i',
        dnt: '1',
        'upgrade-insecure-requests': '1',
      };
      const reply = await post(gw.url('api', '/headers'), { lumens: 1 }, { ...exchange, 'x-keep': 'kept', 'x-section': 'not sec-' });
      assert.equal(reply.status, 200);
      const { headers } = await out.next();
      for (const name of Object.keys(exchange)) assert.equal(headers[name], undefined, name);
      assert.equal(headers['x-keep'], 'kept');
      assert.equal(headers['x-section'], 'not sec-');
    });

    it('reads a header value sent as UTF-8 (curl, Go) as UTF-8, and a byte that is no UTF-8 (Python, node) as Latin-1', async () => {
      const out = await listen('/out/headers');
      const body = JSON.stringify({ lumens: 1 });
      const head = `POST /headers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n` + 'X-Utf8: Jürgen ✓\r\nX-Latin1: ';
      const request = Buffer.concat([Buffer.from(head, 'utf8'), Buffer.from('Müller\r\nX-Plain: ascii\r\n\r\n', 'latin1'), Buffer.from(body)]);
      assert.match(await rawHttpText(gw.port('api'), request), /^HTTP\/1\.1 200 /);
      const { headers } = await out.next();
      assert.equal(headers['x-utf8'], 'Jürgen ✓');
      assert.equal(headers['x-latin1'], 'Müller');
      assert.equal(headers['x-plain'], 'ascii');
    });
  });

  describe('fan-out', () => {
    it('delivers to every target and lists one delivery per target', async () => {
      const [a, b, ws] = await Promise.all([listen('/out/fan-a'), listen('/out/fan-b'), listen('/out/fanout')]);
      const reply = await post(gw.url('api', '/fanout'), { n: 1 });
      assert.equal(reply.status, 200);
      const [da, db, dw] = reply.body.deliveries;
      assert.deepEqual({ ...da, offset: undefined }, { broker: 'local', topic: 'fan-a', partition: 0, offset: undefined });
      assert.deepEqual({ ...db, offset: undefined }, { broker: 'other', topic: 'fan-b', partition: 0, offset: undefined });
      assert.match(da.offset, /^\d+$/);
      assert.deepEqual(dw, { listener: 'push', path: '/out/fanout', clients: 1 });
      const [ea, eb, vw] = await Promise.all([a.next(), b.next(), ws.next()]);
      assert.deepEqual([ea.topic, ea.offset, ea.value], ['fan-a', da.offset, { n: 1 }]);
      assert.deepEqual([eb.topic, eb.offset, eb.value], ['fan-b', db.offset, { n: 1 }]);
      assert.deepEqual(vw, { n: 1 });
    });
  });

  describe('bodies and content types', () => {
    it('takes a text/plain body as a string value', async () => {
      const out = await listen('/out/text');
      const reply = await post(gw.url('api', '/text'), 'hello there', { 'content-type': 'text/plain' });
      assert.equal(reply.status, 200);
      assert.equal(await out.next(), 'hello there');
    });

    it('refuses text/plain in a charset other than UTF-8 with 415, rather than delivering it mis-decoded', async () => {
      const out = await listen('/out/text');
      // UTF-16 text is valid UTF-8 byte for byte: "hi" was delivered as "h\u0000i\u0000".
      for (const [charset, body] of [
        ['utf-16le', Buffer.from('hi', 'utf16le')],
        ['"ISO-8859-1"', Buffer.from('caf\xe9', 'latin1')],
      ] as const) {
        const res = await fetch(gw.url('api', '/text'), { method: 'POST', body, headers: { 'content-type': `text/plain; charset=${charset}` } });
        const problem = (await res.json()) as { code: string; detail: string };
        assert.equal(res.status, 415, charset);
        assert.equal(res.headers.get('content-type'), 'application/problem+json');
        assert.equal(problem.code, 'EG_UNSUPPORTED_MEDIA_TYPE');
        assert.equal(problem.detail, `text/plain in charset '${charset.replaceAll('"', '').toLowerCase()}' is not accepted; send the text as UTF-8 (charset=utf-8)`);
      }
      for (const charset of ['utf-8', '"UTF-8"', 'us-ascii']) {
        assert.equal((await post(gw.url('api', '/text'), `caf\u00e9 ${charset}`, { 'content-type': `text/plain;charset=${charset}` })).status, 200, charset);
        assert.equal(await out.next(), `caf\u00e9 ${charset}`, 'only what was accepted is delivered');
      }
    });

    it('takes a body with no content type as JSON', async () => {
      const out = await listen('/out/text');
      const res = await fetch(gw.url('api', '/text'), { method: 'POST', body: Buffer.from('{"a":1}') });
      assert.equal(res.status, 200);
      assert.deepEqual(await out.next(), { a: 1 });
    });

    it('takes application/*+json as JSON', async () => {
      const out = await listen('/out/text');
      // (application/cloudevents+json is a structured CloudEvent: test/e2e/cloudevents.test.ts)
      const reply = await post(gw.url('api', '/text'), { a: 2 }, { 'content-type': 'application/vnd.example.order+json; charset=utf-8' });
      assert.equal(reply.status, 200);
      assert.deepEqual(await out.next(), { a: 2 });
    });

    it('answers 400 problem+json for a body that is not JSON', async () => {
      const reply = await post(gw.url('api', '/text'), '{"lumens": ', { 'content-type': 'application/json' });
      assertProblem(reply, 400, 'EG_BAD_JSON');
    });

    it('answers 415 problem+json for an unsupported content type', async () => {
      const reply = await post(gw.url('api', '/text'), '<light/>', { 'content-type': 'application/xml' });
      assertProblem(reply, 415, 'EG_UNSUPPORTED_MEDIA_TYPE');
    });

    it('answers 413 problem+json for a declared body over maxBodyBytes', async () => {
      const reply = await post(gw.url('api', '/text'), { pad: 'x'.repeat(300) });
      assertProblem(reply, 413, 'EG_PAYLOAD_TOO_LARGE');
    });

    it('answers 413 problem+json for a chunked body that grows over maxBodyBytes', async () => {
      const reply = await postChunked(gw.url('api', '/text'), ['{"pad":"', ...Array.from({ length: 20 }, () => 'x'.repeat(50)), '"}']);
      assert.equal(reply.status, 413);
      assert.equal(reply.headers['content-type'], 'application/problem+json');
      assert.equal(reply.body.type, 'urn:eventgate:problem:EG_PAYLOAD_TOO_LARGE');
    });

    it('accepts a chunked body under maxBodyBytes', async () => {
      const out = await listen('/out/text');
      const reply = await postChunked(gw.url('api', '/text'), ['{"a":', '3}']);
      assert.equal(reply.status, 200);
      assert.deepEqual(await out.next(), { a: 3 });
    });

    it('accepts a body of exactly maxBodyBytes', async () => {
      const out = await listen('/out/text');
      const body = JSON.stringify({ pad: 'x'.repeat(256 - 10) });
      assert.equal(Buffer.byteLength(body), 256);
      const reply = await post(gw.url('api', '/text'), body);
      assert.equal(reply.status, 200);
      assert.equal((await out.next()).pad.length, 246);
    });

    it('takes on nothing pipelined behind an answer that closes the connection (400 for a missing or doubled Host, 413): node would never send its answer', async () => {
      const out = await listen('/out/text');
      const hostless = 'POST /text HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"n": 0}';
      const large = `POST /text HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"${'x'.repeat(298)}"`;
      // Two Host lines: node keeps the first, where a proxy in front may have routed by the second (RFC 9112 §3.2: 400).
      const twoHosts = 'POST /text HTTP/1.1\r\nHost: gw\r\nhost: elsewhere\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{"n": -1}';
      for (const [first, status] of [
        [hostless, 400],
        [large, 413],
        [twoHosts, 400],
      ] as const) {
        const replies = parseReplies(await rawHttpText(gw.port('api'), first + rawPost('/text', { n: 1 }) + rawPost('/text', { n: 2 })));
        assert.deepEqual(
          replies.map((r) => [r.status, r.headers.connection]),
          [[status, 'close']],
        );
      }
      // Neither of those behind was published (before, both were, unanswered): the stream's next message is the one posted now.
      assert.equal((await post(gw.url('api', '/text'), { n: 3 })).status, 200);
      assert.deepEqual(await out.next(), { n: 3 });
    });

    it('refuses Content-Type lines that disagree (400): node took the first, publishing JSON as the string of text/plain; a repeated one passes', async () => {
      const out = await listen('/out/text');
      const twoTypes = (a: string, b: string, n: number) => `POST /text HTTP/1.1\r\nHost: gw\r\nContent-Type: ${a}\r\ncontent-type: ${b}\r\nContent-Length: ${String(n).length + 7}\r\n\r\n{"n": ${n}}`;
      const replies = parseReplies(
        await rawHttpText(
          gw.port('api'),
          twoTypes('text/plain', 'application/json', 1) +
            twoTypes('application/json', 'Application/JSON', 2) +
            // One media type spelled apart: the parameters parsed (spaces, quotes, case of the
            // charset's value), and a JSON type's missing charset its UTF-8 (before, each a 400).
            twoTypes('application/json', 'application/json; charset=utf-8', 4) +
            twoTypes('application/json;charset=UTF-8', 'application/json ; charset="utf-8"', 5) +
            twoTypes('application/json; charset=utf-8', 'application/json; charset=iso-8859-1', 6) +
            // The charset as the gateway reads the body: text/plain without one is read as UTF-8,
            // and utf8 (or us-ascii) reads as utf-8 does (before, each a 400 though either line alone passed).
            twoTypes('text/plain; charset=utf-8', 'text/plain', 7) +
            // Empty parameters (RFC 9110 §5.6.6 allows them; one such line alone is taken): before, a 400.
            twoTypes('application/json;', 'application/json; charset=utf-8;', 8) +
            twoTypes('application/json; charset=utf8', 'application/json; charset=utf-8', 9) +
            twoTypes('text/plain; charset=UTF8', 'text/plain; charset=us-ascii', 10) +
            twoTypes('text/plain; charset=utf-8', 'text/plain; charset=utf-16', 11) +
            rawPost('/text', { n: 3 }).replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n'),
        ),
      );
      assert.deepEqual(
        replies.map((r) => r.status),
        [400, 200, 200, 200, 400, 200, 200, 200, 200, 400, 200],
      );
      assert.equal(JSON.parse(replies[0]!.body).code, 'EG_BAD_REQUEST');
      assert.match(replies[0]!.body, /Content-Type headers that disagree \('text\/plain', 'application\/json'\)/);
      assert.match(replies[4]!.body, /disagree \('application\/json; charset=utf-8', 'application\/json; charset=iso-8859-1'\)/);
      assert.deepEqual(await out.next(), { n: 2 });
      assert.deepEqual(await out.next(), { n: 4 });
      assert.deepEqual(await out.next(), { n: 5 });
      assert.deepEqual(await out.next(), '{"n": 7}');
      assert.deepEqual(await out.next(), { n: 8 });
      assert.deepEqual(await out.next(), { n: 9 });
      assert.deepEqual(await out.next(), '{"n": 10}');
      assert.deepEqual(await out.next(), { n: 3 });
    });

    it('answers the requests pipelined before bytes that are no request first: after Connection: close nothing, after garbage its 400', async () => {
      const out = await listen('/out/text');
      const closing = rawPost('/text', { n: 11 }).replace('\r\n\r\n', '\r\nConnection: close\r\n\r\n');
      // Before, node's "Data after Connection: close" was answered 400 ahead of both answers: the
      // client read a 400 for n: 10 and nothing for n: 11, both published.
      const afterClose = parseReplies(await rawHttpText(gw.port('api'), rawPost('/text', { n: 10 }) + closing + rawPost('/text', { n: 12 })));
      assert.deepEqual(
        afterClose.map((r) => [r.status, r.headers.connection, r.status === 200 ? JSON.parse(r.body).deliveries.length : r.body]),
        [
          [200, 'keep-alive', 1],
          [200, 'close', 1],
        ],
      );
      const garbage = parseReplies(await rawHttpText(gw.port('api'), rawPost('/text', { n: 13 }) + rawPost('/text', { n: 14 }) + 'NOT HTTP\r\n\r\n'));
      assert.deepEqual(
        garbage.map((r) => [r.status, r.headers.connection]),
        [
          [200, 'keep-alive'],
          [200, 'keep-alive'],
          [400, 'close'],
        ],
      );
      assert.equal(garbage[2]!.headers['content-type'], 'application/problem+json');
      assert.equal((await post(gw.url('api', '/text'), { n: 15 })).status, 200);
      for (const n of [10, 11, 13, 14, 15]) assert.deepEqual(await out.next(), { n });
    });
    it('gives a request answered before its body arrived one answer when the body then breaks: no 400 after its 404 or 501', async () => {
      const chunked = (path: string, coding = 'chunked') => `POST ${path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: ${coding}\r\n\r\n`;
      // Before, each got a 400 after its answer, which a pipelining client takes for the answer to its next request.
      // A bad chunk in the bytes that brought the head (the 404 sent, not yet finished), then one after the answer.
      const sameRead = parseReplies(await rawHttpText(gw.port('api'), `${chunked('/nowhere')}ZZ\r\n`));
      assert.deepEqual(
        sameRead.map((r) => r.status),
        [404],
      );
      const later = await sendPastAnswer(gw.port('api'), chunked('/nowhere'), Buffer.from('ZZ\r\n'), 1);
      assert.equal(later.reply?.status, 404);
      assert.equal(JSON.parse(later.reply.body).code, 'EG_NOT_FOUND', later.reply.body);
      // A transfer coding without chunked: its 501, then node's parser refuses the framing.
      const coded = parseReplies(await rawHttpText(gw.port('api'), `${chunked('/text', 'gzip')}{"n": 16}`));
      assert.deepEqual(
        coded.map((r) => [r.status, JSON.parse(r.body).code]),
        [[501, 'EG_TRANSFER_CODING_UNSUPPORTED']],
      );
    });
    it('answers Expect: 100-continue with 100 only once the body is to be read: a refusal on the head alone comes first, and closes', async () => {
      const out = await listen('/out/text');
      // What the gateway sends before the client sends any body (curl waits 1 s for the 100, then sends it anyway).
      const beforeBody = (head: string) =>
        new Promise<string>((resolve, reject) => {
          const socket = connect(gw.port('api'), '127.0.0.1', () => socket.write(head));
          let received = '';
          socket.setEncoding('latin1').on('data', (d: string) => {
            received += d;
            if (/\r\n\r\n/.test(received) && (received.startsWith('HTTP/1.1 100') || /\r\n\r\n[\s\S]*\}$/.test(received))) {
              socket.destroy();
              resolve(received);
            }
          });
          socket.on('error', reject);
        });
      const head = (path: string, length: number, expect = '100-continue') =>
        `POST ${path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\nExpect: ${expect}\r\n\r\n`;
      // Before, each of these was a 100 (Continue) first: the client uploaded a body only to be refused.
      for (const [path, length, status] of [
        ['/text', 300, 413],
        ['/nowhere', 10, 404],
      ] as const) {
        const text = await beforeBody(head(path, length));
        assert.doesNotMatch(text, /^HTTP\/1\.1 100/, `${path}: a 100 (Continue) before the ${status}`);
        const reply = parseReplies(text);
        assert.deepEqual(
          reply.map((r) => [r.status, r.headers.connection]),
          [[status, 'close']],
        );
      }
      // Another expectation is a 417 problem (node's own had no body).
      const unmet = parseReplies(await beforeBody(head('/text', 8, 'something')));
      assert.deepEqual(
        unmet.map((r) => [r.status, r.headers['content-type'], JSON.parse(r.body).code]),
        [[417, 'application/problem+json', 'EG_EXPECTATION_FAILED']],
      );
      // A request the route takes gets its 100, then its answer.
      const accepted = await new Promise<string>((resolve, reject) => {
        const socket = connect(gw.port('api'), '127.0.0.1', () => socket.write(head('/text', 9)));
        let received = '';
        socket.setEncoding('latin1').on('data', (d: string) => {
          if (received === '' && d.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) socket.write('{"n": 20}');
          received += d;
          if (received.endsWith('}')) {
            socket.destroy();
            resolve(received);
          }
        });
        socket.on('error', reject);
      });
      assert.match(accepted, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
      assert.deepEqual(await out.next(), { n: 20 });
    });
  });

  describe('paths and methods', () => {
    it('answers 404 problem+json for an unknown path, whatever the method', async () => {
      assertProblem(await post(gw.url('api', '/nowhere'), {}), 404, 'EG_NOT_FOUND');
      const res = await fetch(gw.url('api', '/nowhere'));
      assert.equal(res.status, 404);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
    });

    it('answers 405 problem+json with Allow: POST for another method on a route path', async () => {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await fetch(gw.url('api', '/text'), { method });
        const body = await res.json();
        assertProblem({ status: res.status, headers: res.headers, body }, 405, 'EG_METHOD_NOT_ALLOWED');
        assert.equal(res.headers.get('allow'), 'POST');
      }
    });

    it("writes the heads of its answers byte for byte as before: its headers first, in their order and spelling, then node's", async () => {
      const body = '{"lumens":5}';
      // Two pipelined requests: a delivered answer, then a refusal whose Allow header was set before the answer's own.
      const raw = await rawHttpText(
        gw.port('api'),
        `POST /inline HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}` + 'GET /inline HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
      );
      const [delivered, refused] = [...raw.matchAll(/HTTP\/1\.1 [\s\S]*?\r\n\r\n/g)].map((m) => m[0].slice(0, -4).split('\r\n'));
      const date = /^Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/;
      assert.deepEqual(delivered!.slice(0, 3), [
        'HTTP/1.1 200 OK',
        'content-type: application/json',
        `content-length: ${'{"deliveries":[{"listener":"push","path":"/out/inline","clients":0}]}'.length}`,
      ]);
      assert.match(delivered![3]!, date);
      assert.deepEqual(delivered!.slice(4), ['Connection: keep-alive', 'Keep-Alive: timeout=65']);
      assert.deepEqual(refused!.slice(0, 3), ['HTTP/1.1 405 Method Not Allowed', 'allow: POST', 'content-type: application/problem+json']);
      assert.match(refused![3]!, /^content-length: \d+$/);
      assert.match(refused![4]!, date);
      assert.deepEqual(refused!.slice(5), ['Connection: close']);
    });

    it('matches a path parameter only on its own segment', async () => {
      assertProblem(await post(gw.url('api', '/rooms/kitchen'), { lumens: 1 }), 404, 'EG_NOT_FOUND');
    });
  });
});

describe('HTTP publish through a recursive JSON Schema', () => {
  // `"$ref": "#"` is the whole schema: a tree of any depth. Valid JSON Schema, so the config loads.
  const tree = JSON.stringify({
    type: 'object',
    required: ['name'],
    properties: { name: { type: 'string' }, children: { type: 'array', items: { $ref: '#' } } },
  });
  // The same tree across two files: forest.yaml refers to parts/grove.yaml, which refers back (point 322).
  const forest = "type: object\nrequired: [name]\nproperties:\n  name: {type: string}\n  grove: {$ref: 'parts/grove.yaml#/$defs/grove'}\n";
  const grove = (maxItems = 3) => `$defs:\n  grove:\n    type: array\n    maxItems: ${maxItems}\n    items: {$ref: '../forest.yaml'}\n`;
  const gw = useGateway(
    `
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: tree
    from: { listener: api, path: /tree }
    through:
      - validate: { schema: schemas/tree.json }
    to: { broker: local, topic: trees }
  - name: forest
    from: { listener: api, path: /forest }
    through:
      - validate: { schema: schemas/forest.yaml }
    to: { broker: local, topic: trees }
`,
    { files: { 'schemas/tree.json': tree, 'schemas/forest.yaml': forest, 'schemas/parts/grove.yaml': grove() } },
  );

  it('validates every level of the tree: a valid one is delivered, a bad grandchild is refused with its path', async () => {
    const ok = await post(gw.url('api', '/tree'), { name: 'root', children: [{ name: 'a', children: [{ name: 'b' }] }] });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.deliveries.length, 1);
    const bad = await post(gw.url('api', '/tree'), { name: 'root', children: [{ name: 'a', children: [{ name: 7 }] }] });
    assertProblem(bad, 400, 'EG_INVALID_MESSAGE');
    assert.deepEqual(bad.body.errors, ['/children/0/children/0/name: must be string']);
  });

  it('validates by a schema recursive across files, and follows an edit of the file it refers to (point 322)', async () => {
    const deep = { name: 'root', grove: [{ name: 'a', grove: [{ name: 'b' }, { name: 'c' }] }] };
    const ok = await post(gw.url('api', '/forest'), deep);
    assert.equal(ok.status, 200, ok.text);
    const bad = await post(gw.url('api', '/forest'), { name: 'root', grove: [{ name: 'a', grove: [{ name: 7 }] }] });
    assertProblem(bad, 400, 'EG_INVALID_MESSAGE');
    assert.deepEqual(bad.body.errors, ['/grove/0/grove/0/name: must be string']);
    const reload = await gw.reconfigure(grove(1), 'schemas/parts/grove.yaml');
    assert.equal(reload.msg, 'config reloaded');
    const now = await post(gw.url('api', '/forest'), deep);
    assertProblem(now, 400, 'EG_INVALID_MESSAGE');
    assert.deepEqual(now.body.errors, ['/grove/0/grove: must NOT have more than 1 items']);
  });
});

describe('A config written with YAML anchors and merge keys', () => {
  // Two listeners and two routes share their settings through `&anchor` / `<<: *anchor`, as docker-compose files do.
  const gw = useGateway(`
version: 1
brokers:
  local: { kind: memory }
listeners:
  public: &http { kind: http, port: 0, host: 127.0.0.1, maxBodyBytes: 64 }
  internal:
    <<: *http
    maxBodyBytes: 4096
routes:
  - &publish
    name: public-in
    from: { listener: public, path: /in }
    through: [{ validate: { schema: { type: object, required: [id] } } }]
    to: { broker: local, topic: events }
  - <<: *publish
    name: internal-in
    from: { listener: internal, path: /in }
`);

  it('serves every listener and route built from an anchor, each with its own overrides', async () => {
    const big = { id: 1, note: 'x'.repeat(100) };
    assert.equal((await post(gw.url('public', '/in'), { id: 1 })).status, 200);
    assert.equal((await post(gw.url('public', '/in'), big)).status, 413);
    assert.equal((await post(gw.url('internal', '/in'), big)).status, 200);
    // The merged route has the anchor's chain too.
    assertProblem(await post(gw.url('internal', '/in'), { note: 'no id' }), 400, 'EG_INVALID_MESSAGE');
  });
});
