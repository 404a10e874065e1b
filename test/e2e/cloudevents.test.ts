import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { CloudEvent, HTTP } from 'cloudevents';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { fetch } from '../helpers/http.js';

/** The cloudevents SDK's view of a request the gateway sent (it throws on anything that is not a valid CloudEvent). */
function sdkEvent(r: { headers: Record<string, unknown>; body: string }): CloudEvent<unknown> {
  return HTTP.toEvent({ headers: r.headers as Record<string, string>, body: r.body }) as CloudEvent<unknown>;
}

describe('CloudEvents over HTTP: binary, structured and batched in; binary and structured out', () => {
  let binaryOut: WebhookReceiver;
  let structuredOut: WebhookReceiver;

  before(async () => {
    binaryOut = await WebhookReceiver.start();
    structuredOut = await WebhookReceiver.start();
  });
  // Started once the receivers it calls are listening.
  const gw = useGateway(
    () => `
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: events-in
    from: { listener: api, path: /events }
    through:
      - filter: $ce.type != "test.ignored"
      - validate: { schema: { type: object, required: [orderId], properties: { orderId: { type: integer } } } }
    to: { broker: local, topic: events }
  - name: events-out
    from: { broker: local, topic: events }
    to:
      - { http: { url: "${binaryOut.url}/binary" } }
      - { http: { url: "${structuredOut.url}/structured", cloudevents: structured } }
      - { listener: ws, path: /watch, format: envelope }
  - name: pings
    from: { listener: api, path: /pings }
    to: { broker: local, topic: events }
  - name: wrap
    from: { listener: api, path: /plain }
    through:
      - cloudevent:
          source: /shop/orders
          type: com.example.order.placed
          set: { subject: $string(orderId), tenant: $headers."x-tenant" }
    to: { broker: local, topic: events }
  - name: events-only
    from: { listener: api, path: /events-only }
    through: [{ cloudevent: { require: true } }]
    to: { broker: local, topic: maybe-events }
  - name: events-only-ws
    from: { listener: ws, path: /events-only }
    through: [{ cloudevent: { require: true } }]
    to: { broker: local, topic: maybe-events }
  - name: any-message
    from: { listener: api, path: /any }
    to: { broker: local, topic: maybe-events }
  - name: events-only-consumed
    from: { broker: local, topic: maybe-events }
    through: [{ cloudevent: { require: true } }]
    to: { listener: ws, path: /events-only, format: cloudevent }
    deadletter: { broker: local, topic: not-events }
  - name: not-events
    from: { broker: local, topic: not-events }
    to: { listener: ws, path: /not-events, format: envelope }
`,
  );
  after(async () => {
    await binaryOut?.stop();
    await structuredOut?.stop();
  });

  it('keeps every attribute and extension of a binary-mode event, out in binary and structured mode (SDK on both ends)', async () => {
    const watcher = await WsClient.connect(gw.url('ws', '/watch', 'ws'));
    const sent = new CloudEvent({
      id: 'evt-1',
      source: '/shop',
      type: 'order.placed',
      subject: 'order-1',
      time: '2026-12-01T17:00:00.000Z',
      dataschema: 'https://example.com/order.json',
      tenant: 'acme',
      priority: '3',
      // Longer than the 20 characters names SHOULD NOT exceed, which the SDK sends: it was a 400.
      comexampletenantregion: 'eu-west',
      data: { orderId: 1 },
    });
    const { headers, body } = HTTP.binary(sent);
    const res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: headers as Record<string, string>, body: body as string });
    assert.equal(res.status, 200, await res.clone().text());
    const [binary] = await binaryOut.received(1);
    const [structured] = await structuredOut.received(1);
    assert.equal(structured!.headers['content-type'], 'application/cloudevents+json');
    for (const got of [sdkEvent(binary!), sdkEvent(structured!)]) {
      for (const attr of ['id', 'source', 'type', 'subject', 'time', 'dataschema', 'specversion', 'tenant', 'priority', 'comexampletenantregion'] as const) {
        assert.equal(String((got as unknown as Record<string, unknown>)[attr]), String((sent as unknown as Record<string, unknown>)[attr]), attr);
      }
      assert.deepEqual(got.data, { orderId: 1 });
    }
    const frame = (await watcher.next()) as { ce: Record<string, string>; headers: Record<string, string>; value: unknown };
    assert.equal(frame.ce.id, 'evt-1');
    assert.equal(frame.ce.tenant, 'acme');
    assert.equal(frame.headers.ce_type, 'order.placed');
    assert.deepEqual(frame.value, { orderId: 1 });
    watcher.close();
  });

  it('takes a binary-mode event without data (the SDK sends no body), as a structured one without data, and sends one without a body', async () => {
    const before = structuredOut.requests.length;
    const binaryBefore = binaryOut.requests.length;
    // Before, a 400 EG_BAD_JSON: the empty body was read as JSON.
    const ping = HTTP.binary(new CloudEvent({ id: 'ping-1', source: '/monitor', type: 'heartbeat' }));
    assert.equal(ping.body, undefined);
    const res = await fetch(gw.url('api', '/pings'), { method: 'POST', headers: ping.headers as Record<string, string> });
    assert.equal(res.status, 200, await res.clone().text());
    const [out] = (await structuredOut.received(before + 1)).slice(before);
    const event = JSON.parse(out!.body) as Record<string, unknown>;
    assert.deepEqual([event.id, event.source, event.type, event.data ?? null], ['ping-1', '/monitor', 'heartbeat', null]);
    // A structured event with a datacontenttype and no data.
    // Structured events with a datacontenttype and no data, and with neither.
    const typed = { specversion: '1.0', id: 'ping-2', source: '/monitor', type: 'heartbeat', datacontenttype: 'text/plain' };
    const bare = { specversion: '1.0', id: 'ping-3', source: '/monitor', type: 'heartbeat' };
    for (const e of [typed, bare]) {
      const r = await fetch(gw.url('api', '/pings'), { method: 'POST', headers: { 'content-type': 'application/cloudevents+json' }, body: JSON.stringify(e) });
      assert.equal(r.status, 200, await r.clone().text());
    }
    // In binary mode none has a body (HTTP binding §3.1.1: the body is the data, and there is
    // none); the content-type is each one's datacontenttype (the SDK sends its default JSON type
    // with no data), and none without one. Before, every body was `null`: the text "null" under
    // text/plain, and JSON null data under an application/json the third never had.
    const binary = (await binaryOut.received(binaryBefore + 3)).slice(binaryBefore);
    assert.deepEqual(
      binary.map((r) => [r.headers['ce-id'], r.headers['content-type'], r.headers['content-length'], r.body]),
      [
        ['ping-1', 'application/json; charset=utf-8', '0', ''],
        ['ping-2', 'text/plain', '0', ''],
        ['ping-3', undefined, '0', ''],
      ],
    );
    // Their structured copies too: the 200s came when the topic took the events, the copies go
    // out later, and the next case counts that endpoint's requests from where this one ends.
    const structured = (await structuredOut.received(before + 3)).slice(before);
    assert.deepEqual(
      structured.map((r) => (JSON.parse(r.body) as { id: string }).id),
      ['ping-1', 'ping-2', 'ping-3'],
    );
  });

  it('unquotes a double-quoted attribute header before percent-decoding it, as the HTTP binding says (§3.1.3.2)', async () => {
    const before = structuredOut.requests.length;
    const binaryBefore = binaryOut.requests.length;
    // Earlier versions of the binding quoted values with spaces; the quotes were kept as part of the attribute.
    const headers = { 'ce-specversion': '1.0', 'ce-id': 'q-1', 'ce-source': '/s', 'ce-type': 't', 'ce-subject': '"order 1 \\"big\\" caf%C3%A9"', 'content-type': 'application/json' };
    const res = await fetch(gw.url('api', '/events'), { method: 'POST', headers, body: '{"orderId":5}' });
    assert.equal(res.status, 200, await res.clone().text());
    const [out] = (await structuredOut.received(before + 1)).slice(before);
    assert.equal((JSON.parse(out!.body) as { subject: string }).subject, 'order 1 "big" café');
    // Its binary copy too, before the next test counts that endpoint's requests from here.
    const [binary] = (await binaryOut.received(binaryBefore + 1)).slice(binaryBefore);
    assert.equal(decodeURIComponent(binary!.headers['ce-subject'] as string), 'order 1 "big" café');
  });

  it('accepts structured mode, and batches as one request delivered in order', async () => {
    const before = binaryOut.requests.length;
    const structuredBefore = structuredOut.requests.length;
    const one = HTTP.structured(new CloudEvent({ id: 's-1', source: '/s', type: 'order.placed', data: { orderId: 2 } }));
    let res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: one.headers as Record<string, string>, body: one.body as string });
    assert.equal(res.status, 200, await res.clone().text());
    // An attribute given as null is unset (JSON format §2.2, whose examples have `"subject": null`, `"unsetextension": null`).
    const batch = [1, 2, 3].map((n) => ({ specversion: '1.0', id: `b-${n}`, source: '/batch', type: 'order.placed', subject: null, unsetextension: null, data: { orderId: 10 + n } }));
    res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: JSON.stringify(batch) });
    assert.equal(res.status, 200);
    const answer = (await res.json()) as { deliveries: unknown[] };
    assert.equal(answer.deliveries.length, 3);
    const got = await binaryOut.received(before + 4);
    assert.deepEqual(
      got.slice(before).map((r) => r.headers['ce-id']),
      ['s-1', 'b-1', 'b-2', 'b-3'],
    );
    assert.deepEqual(
      got.slice(before + 1).map((r) => [r.headers['ce-subject'], r.headers['ce-unsetextension']]),
      [
        [undefined, undefined],
        [undefined, undefined],
        [undefined, undefined],
      ],
    );
    const structured = (await structuredOut.received(structuredBefore + 4)).slice(structuredBefore);
    assert.deepEqual(
      structured.map((r) => (JSON.parse(r.body) as { id: string }).id),
      ['s-1', 'b-1', 'b-2', 'b-3'],
    );
    // A required attribute given as null is missing.
    res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: { 'content-type': 'application/cloudevents+json' }, body: JSON.stringify({ ...batch[0], id: null }) });
    assert.equal(res.status, 400);
    assert.deepEqual(((await res.json()) as { errors: string[] }).errors, ["'id' is missing (a required CloudEvents attribute)"]);
  });

  it('answers 400 naming the attribute that is missing or malformed', async () => {
    const cases: [Record<string, string>, string, string][] = [
      [{ 'ce-specversion': '1.0', 'ce-source': '/s', 'ce-type': 't', 'content-type': 'application/json' }, '{"orderId":1}', "'id' is missing"],
      [
        { 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-time': 'yesterday', 'content-type': 'application/json' },
        '{"orderId":1}',
        "'time' must be an RFC 3339 timestamp",
      ],
      // RFC 3339 (section 5.7) bounds each number: a date-time of that shape but no such day or hour is no timestamp.
      ...['2026-13-01T10:00:00Z', '2026-02-29T10:00:00Z', '2026-12-01T24:00:00Z', '2026-12-01T10:00:00+25:00'].map((time): [Record<string, string>, string, string] => [
        { 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-time': time, 'content-type': 'application/json' },
        '{"orderId":1}',
        "'time' must be an RFC 3339 timestamp",
      ]),
      [{ 'ce-specversion': '0.3', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'content-type': 'application/json' }, '{"orderId":1}', "'specversion' is '0.3'"],
      // A header value percent-encoded (CloudEvents HTTP binding §3.1.3.2) whose bytes stop mid-character, or are no escape at all.
      [
        { 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-subject': 'caf%C3', 'content-type': 'application/json' },
        '{"orderId":1}',
        "'subject' is not valid percent-encoded UTF-8",
      ],
      [
        { 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-region': '100%', 'content-type': 'application/json' },
        '{"orderId":1}',
        "'region' is not valid percent-encoded UTF-8",
      ],
      // Attribute names are lower-case letters and digits: one that a plain object would swallow is refused like any other.
      [{ 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-my_ext': 'v', 'content-type': 'application/json' }, '{"orderId":1}', "'my_ext' is not a valid attribute name"],
      [
        { 'ce-specversion': '1.0', 'ce-id': 'x', 'ce-source': '/s', 'ce-type': 't', 'ce-__proto__': 'v', 'content-type': 'application/json' },
        '{"orderId":1}',
        "'__proto__' is not a valid attribute name",
      ],
      [{ 'content-type': 'application/cloudevents+json' }, JSON.stringify({ specversion: '1.0', id: 'x', type: 't', data: {} }), "'source' is missing"],
      // JSON format §3.1.1: data of a type that is not JSON is a string (its text); an object went on as an XML body.
      [
        { 'content-type': 'application/cloudevents+json' },
        JSON.stringify({ specversion: '1.0', id: 'x', source: '/s', type: 't', datacontenttype: 'application/xml', data: { orderId: 1 } }),
        "'data' must be a string for a datacontenttype that is not JSON (application/xml)",
      ],
      [
        { 'content-type': 'application/cloudevents-batch+json' },
        JSON.stringify([
          { specversion: '1.0', id: 'a', source: '/s', type: 't' },
          { specversion: '1.0', source: '/s', type: 't' },
        ]),
        "[1] 'id' is missing",
      ],
    ];
    for (const [headers, body, expected] of cases) {
      const res = await fetch(gw.url('api', '/events'), { method: 'POST', headers, body });
      assert.equal(res.status, 400, expected);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      const p = (await res.json()) as { code: string; errors: string[] };
      assert.equal(p.code, 'EG_CLOUDEVENT_INVALID');
      assert.ok(
        p.errors.some((e) => e.includes(expected)),
        `${JSON.stringify(p.errors)} should include ${expected}`,
      );
    }
    // Each attribute is one header: node joined two `ce-id` lines into the id `a, b`, which neither gave (and two equal ones into `/s, /s`).
    const twice = await new Promise<{ status?: number; body: string }>((resolve, reject) => {
      const headers = { 'ce-specversion': '1.0', 'ce-id': ['a', 'b'], 'ce-source': ['/s', '/s'], 'ce-type': 't', 'content-type': 'application/json' };
      const req = request(gw.url('api', '/events'), { method: 'POST', headers }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      });
      req.on('error', reject).end('{"orderId":1}');
    });
    assert.equal(twice.status, 400);
    assert.deepEqual(JSON.parse(twice.body).errors.slice(0, 2), [
      "'id' is given in 2 ce-id headers; send each attribute in one header",
      "'source' is given in 2 ce-source headers; send each attribute in one header",
    ]);
  });

  it('filters on $ce and validates the data of an event, not its envelope', async () => {
    const ignored = HTTP.binary(new CloudEvent({ id: 'i-1', source: '/s', type: 'test.ignored', data: { orderId: 1 } }));
    let res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: ignored.headers as Record<string, string>, body: ignored.body as string });
    assert.deepEqual(await res.json(), { deliveries: [], filtered: true });
    const bad = HTTP.binary(new CloudEvent({ id: 'v-1', source: '/s', type: 'order.placed', data: { orderId: 'one' } }));
    res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: bad.headers as Record<string, string>, body: bad.body as string });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as { code: string }).code, 'EG_INVALID_MESSAGE');
  });

  it('refuses a plain message where the route requires a CloudEvent: 400 over HTTP, an error frame over WebSocket, dead-lettered when consumed', async () => {
    const out = await WsClient.connect(gw.url('ws', '/events-only', 'ws'));
    const dead = await WsClient.connect(gw.url('ws', '/not-events', 'ws'));
    const missing = ['specversion', 'id', 'source', 'type'].map((a) => `'${a}' is missing (a required CloudEvents attribute)`);
    // HTTP, by curl: plain JSON is a 400 naming what is missing; the SDK's binary and structured events pass.
    const curled = await new Promise<string>((resolve, reject) =>
      execFile('curl', ['-s', '-w', '\n%{http_code}', '-H', 'content-type: application/json', '--data-binary', '{"orderId":1}', gw.url('api', '/events-only')], (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    const [body, status] = curled.split('\n');
    assert.equal(status, '400');
    const p = JSON.parse(body!) as { code: string; detail: string; errors: string[] };
    assert.equal(p.code, 'EG_CLOUDEVENT_INVALID');
    assert.match(p.detail, /^this route takes CloudEvents only, and the message is none/);
    assert.deepEqual(p.errors, missing);
    for (const [mode, id] of [
      [HTTP.binary, 'req-1'],
      [HTTP.structured, 'req-2'],
    ] as const) {
      const m = mode(new CloudEvent({ id, source: '/s', type: 'order.placed', data: { orderId: 1 } }));
      const res = await fetch(gw.url('api', '/events-only'), { method: 'POST', headers: m.headers as Record<string, string>, body: m.body as string });
      assert.equal(res.status, 200, id);
    }
    // WebSocket: the listener's refusal frame, the connection kept.
    const ws = await WsClient.connect(gw.url('ws', '/events-only', 'ws'));
    ws.send({ orderId: 2 });
    const refusal = await ws.next();
    assert.deepEqual({ type: refusal.type, status: refusal.status, code: refusal.code, errors: refusal.errors }, { type: 'error', status: 400, code: 'EG_CLOUDEVENT_INVALID', errors: missing });
    // Consumed: a plain message goes to the route's dead-letter topic, an event on; the two events posted above first.
    assert.deepEqual([(await out.next()).id, (await out.next()).id], ['req-1', 'req-2']);
    assert.equal((await fetch(gw.url('api', '/any'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"orderId":3}' })).status, 200);
    const last = HTTP.binary(new CloudEvent({ id: 'req-3', source: '/s', type: 'order.placed', data: { orderId: 4 } }));
    assert.equal((await fetch(gw.url('api', '/any'), { method: 'POST', headers: last.headers as Record<string, string>, body: last.body as string })).status, 200);
    const letter = await dead.next();
    assert.deepEqual(letter.value, { orderId: 3 });
    const error = JSON.parse(letter.headers._eventgate_error) as { route: string; code: string; errors: string[] };
    assert.deepEqual({ route: error.route, code: error.code, errors: error.errors }, { route: 'events-only-consumed', code: 'EG_CLOUDEVENT_INVALID', errors: missing });
    assert.equal((await out.next()).id, 'req-3');
    for (const c of [out, dead, ws]) c.ws.close();
  });

  it('wraps plain JSON into a CloudEvent with a generated id, the configured source and type, and the time', async () => {
    const before = structuredOut.requests.length;
    const binaryBefore = binaryOut.requests.length;
    const res = await fetch(gw.url('api', '/plain'), { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant': 'globex' }, body: JSON.stringify({ orderId: 42 }) });
    assert.equal(res.status, 200);
    const [r] = (await structuredOut.received(before + 1)).slice(before);
    const ev = sdkEvent(r!);
    assert.equal(ev.source, '/shop/orders');
    assert.equal(ev.type, 'com.example.order.placed');
    assert.equal(ev.subject, '42');
    assert.equal((ev as unknown as Record<string, unknown>).tenant, 'globex');
    assert.match(ev.id, /^[0-9a-f-]{36}$/);
    assert.ok(Math.abs(Date.parse(ev.time!) - Date.now()) < 60_000);
    assert.deepEqual(ev.data, { orderId: 42 });
    // Its binary copy, the same event, so a case added after this one counts from here.
    const [binary] = (await binaryOut.received(binaryBefore + 1)).slice(binaryBefore);
    assert.equal(binary!.headers['ce-id'], ev.id);
  });
});

describe('CloudEvents with binary data (data_base64): structured in, bytes out in binary mode, data_base64 out in structured mode', () => {
  let binaryOut: WebhookReceiver;
  let structuredOut: WebhookReceiver;
  /** Bytes that are no UTF-8 and no JSON: they survive only as bytes. */
  const bytes = Buffer.from([0x00, 0x01, 0xfe, 0xff, 0x80, 0x7b, 0x22, 0x0a, 0xc3, 0x28]);

  before(async () => {
    binaryOut = await WebhookReceiver.start();
    structuredOut = await WebhookReceiver.start();
  });
  const gw = useGateway(
    () => `
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: blobs-in
    from: { listener: api, path: /blobs }
    to: { broker: local, topic: blobs }
  - name: blobs-out
    from: { broker: local, topic: blobs }
    to:
      - { http: { url: "${binaryOut.url}/binary" } }
      - { http: { url: "${structuredOut.url}/structured", cloudevents: structured } }
`,
  );
  after(async () => {
    await binaryOut?.stop();
    await structuredOut?.stop();
  });

  const post = (body: string) => fetch(gw.url('api', '/blobs'), { method: 'POST', headers: { 'content-type': 'application/cloudevents+json' }, body });

  it('decodes data_base64 to the bytes, sends them as the body in binary mode and as data_base64 in structured mode (SDK on both ends)', async () => {
    const sent = new CloudEvent({ id: 'blob-1', source: '/camera', type: 'image.taken', datacontenttype: 'image/x-raw', data: bytes });
    const { body } = HTTP.structured(sent);
    assert.equal(JSON.parse(body as string).data_base64, bytes.toString('base64'), 'the SDK sends binary data as data_base64');
    const res = await post(body as string);
    assert.equal(res.status, 200, await res.text());

    const [bin] = await binaryOut.received(1);
    assert.deepEqual(bin!.bytes, bytes, 'the body is the bytes, not their base64 or JSON');
    assert.equal(bin!.headers['content-type'], 'image/x-raw');
    assert.equal(bin!.headers['ce-id'], 'blob-1');

    const [structured] = await structuredOut.received(1);
    const ev = sdkEvent(structured!);
    assert.equal(ev.id, 'blob-1');
    assert.equal(ev.datacontenttype, 'image/x-raw');
    assert.equal(ev.data_base64, bytes.toString('base64'));
    assert.equal(JSON.parse(structured!.body).data, undefined, 'no data beside data_base64');
  });

  it('gives binary data without a datacontenttype application/octet-stream', async () => {
    const before = binaryOut.requests.length;
    const res = await post(JSON.stringify({ specversion: '1.0', id: 'blob-2', source: '/s', type: 't', data_base64: bytes.toString('base64') }));
    assert.equal(res.status, 200);
    const [bin] = (await binaryOut.received(before + 1)).slice(before);
    assert.deepEqual(bin!.bytes, bytes);
    assert.equal(bin!.headers['content-type'], 'application/octet-stream');
  });

  it('answers 400 naming the problem for data_base64 that is not base64, or given beside data', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ data_base64: 'not base64!' }, /'data_base64' must be a base64 string/],
      [{ data_base64: 42 }, /'data_base64' must be a base64 string/],
      [{ data_base64: 'AAEC', data: { a: 1 } }, /'data' and 'data_base64' are both given/],
    ];
    for (const [extra, expected] of cases) {
      const res = await post(JSON.stringify({ specversion: '1.0', id: 'bad', source: '/s', type: 't', ...extra }));
      assert.equal(res.status, 400);
      const p = (await res.json()) as { code: string; errors: string[] };
      assert.equal(p.code, 'EG_CLOUDEVENT_INVALID');
      assert.ok(
        p.errors.some((e) => expected.test(e)),
        `${JSON.stringify(p.errors)} should match ${expected}`,
      );
    }
  });
});
