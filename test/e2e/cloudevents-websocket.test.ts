import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { CloudEvent, HTTP, MQTT, MQTTMessageFactory } from 'cloudevents';
import WebSocket from 'ws';
import { parse } from 'yaml';
import { runCliInProcess } from '../helpers/cli.js';
import { WsClient } from '../helpers/clients.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver, type Received } from '../helpers/webhook-receiver.js';

/** The cloudevents SDK's view of a request the gateway sent (it throws on anything that is not a valid CloudEvent). */
function sdkEvent(r: Received): CloudEvent<unknown> {
  return HTTP.toEvent({ headers: r.headers as Record<string, string>, body: r.body }) as CloudEvent<unknown>;
}

/** An attribute of an SDK event by name (extensions included). */
const attr = (e: CloudEvent<unknown>, name: string) => (e as unknown as Record<string, unknown>)[name];

/** The structured JSON form of an event, as the SDK writes it: one frame. */
const frameOf = (e: CloudEvent<unknown>) => HTTP.structured(e).body as string;

/** An ack comes once every target took the frame's event (two webhooks and mosquitto): more than a frame's usual 5 s on a loaded machine. */
const ACK_MS = 15000;

const MISSING = ['specversion', 'id', 'source', 'type'].map((a) => `'${a}' is missing (a required CloudEvents attribute)`);

describe('WebSocket frames read as structured CloudEvents (from.cloudevents: structured)', () => {
  let mqtt: MessageServer;
  let binaryOut: WebhookReceiver;
  let structuredOut: WebhookReceiver;

  before(async () => {
    [mqtt, binaryOut, structuredOut] = await Promise.all([startMosquitto(), WebhookReceiver.start(), WebhookReceiver.start()]);
  });
  // Started once the peers it sends to are up.
  const gw = useGateway(
    () => `
version: 1
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-ws-ce-${process.pid} }
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: events-in
    from: { listener: ws, path: /events, cloudevents: structured }
    ack: true
    through:
      - cloudevent: { require: true, set: { subject: '$string(orderId)' } }
      - filter: $ce.type != "test.ignored"
    to:
      - { http: { url: "${binaryOut.url}/binary" } }
      - { http: { url: "${structuredOut.url}/structured", cloudevents: structured } }
      - { broker: devices, topic: ws/events }
  - name: plain-in
    from: { listener: ws, path: /plain }
    ack: true
    to: { http: { url: "${binaryOut.url}/plain" } }
`,
  );
  after(async () => {
    await Promise.all([mqtt?.stop(), binaryOut?.stop(), structuredOut?.stop()]);
  });

  it('reads each text frame as the event it holds: its attributes reach webhooks in binary mode (ce-* headers) and structured mode, and MQTT 5 as user properties (the SDK on every end)', async () => {
    const sub = await MosquittoSub.start(mqtt, 'ws/events');
    const ws = await WsClient.connect(gw.url('ws', '/events', 'ws'));
    try {
      const sent = new CloudEvent({
        id: 'w-1',
        source: '/shop',
        type: 'com.example.order.placed',
        time: '2026-12-01T17:00:00.000Z',
        dataschema: 'https://example.com/order.json',
        tenant: 'acme',
        comexampletenantregion: 'eu-west',
        data: { orderId: 1 },
      });
      const binaryBefore = binaryOut.requests.length;
      const structuredBefore = structuredOut.requests.length;
      ws.send(frameOf(sent));
      const ack = await ws.next(ACK_MS);
      assert.deepEqual([ack.type, ack.frame, ack.deliveries.length], ['ack', 1, 3]);
      const [binary] = (await binaryOut.received(binaryBefore + 1)).slice(binaryBefore);
      const [structured] = (await structuredOut.received(structuredBefore + 1)).slice(structuredBefore);
      // Binary mode: the attributes as ce-* headers, the data as the body.
      assert.equal(binary!.headers['ce-id'], 'w-1');
      assert.equal(binary!.headers['ce-tenant'], 'acme');
      assert.equal(binary!.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(binary!.body), { orderId: 1 });
      assert.equal(structured!.headers['content-type'], 'application/cloudevents+json');
      const [m] = await sub.take(1);
      // MQTT 5 binary mode (the CloudEvents MQTT binding): attributes as user properties of their own names.
      assert.equal(m!.userProperties.id, 'w-1');
      assert.equal(m!.contentType, 'application/json');
      const overMqtt = MQTT.toEvent(MQTTMessageFactory(m!.contentType!, m!.userProperties, JSON.parse(m!.payload))) as CloudEvent<unknown>;
      for (const got of [sdkEvent(binary!), sdkEvent(structured!), overMqtt]) {
        for (const name of ['specversion', 'id', 'source', 'type', 'time', 'dataschema', 'tenant', 'comexampletenantregion']) {
          assert.equal(String(attr(got, name)), String(attr(sent, name)), name);
        }
        // The cloudevent step's `set` read the event's data, as it does an HTTP client's event.
        assert.equal(got.subject, '1');
        assert.deepEqual(got.data, { orderId: 1 });
      }
      // `$ce` is the frame's event: a filter on its type.
      ws.send(frameOf(new CloudEvent({ id: 'w-2', source: '/shop', type: 'test.ignored', data: { orderId: 2 } })));
      assert.deepEqual(await ws.next(), { type: 'ack', frame: 2, deliveries: [], filtered: true });
    } finally {
      ws.close();
      sub.stop();
    }
  });

  it('takes binary data as data_base64: the bytes are a binary-mode webhook body, data_base64 again in structured mode', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/events', 'ws'));
    try {
      const bytes = Buffer.from([0x00, 0xff, 0x80, 0x41]);
      const binaryBefore = binaryOut.requests.length;
      const structuredBefore = structuredOut.requests.length;
      // The step's `set` finds no orderId in bytes: subject is left as it was (none).
      ws.send(frameOf(new CloudEvent({ id: 'b-1', source: '/cam', type: 'com.example.snapshot', datacontenttype: 'image/x-test', data: new Uint8Array(bytes) })));
      assert.equal((await ws.next(ACK_MS)).type, 'ack');
      const [binary] = (await binaryOut.received(binaryBefore + 1)).slice(binaryBefore);
      const [structured] = (await structuredOut.received(structuredBefore + 1)).slice(structuredBefore);
      assert.deepEqual([binary!.headers['ce-id'], binary!.headers['content-type']], ['b-1', 'image/x-test']);
      assert.deepEqual(binary!.bytes, bytes);
      assert.equal(JSON.parse(structured!.body).data_base64, bytes.toString('base64'));
      assert.deepEqual(Buffer.from(sdkEvent(structured!).data as Uint8Array), bytes);
    } finally {
      ws.close();
    }
  });

  it('answers a frame that is no valid event with an EG_CLOUDEVENT_INVALID error frame naming what is wrong, publishes nothing of it, and keeps the connection', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/events', 'ws'));
    try {
      const event = { specversion: '1.0', id: 'ok-1', source: '/shop', type: 'com.example.order.placed', data: { orderId: 9 } };
      const { specversion: _, ...noSpecversion } = event;
      const invalid: [string, unknown, string[]][] = [
        ['no specversion', noSpecversion, [MISSING[0]!]],
        ['an id that is a number', { ...event, id: 7 }, ["'id' must be a non-empty string"]],
        ['data_base64 that is not base64', { ...event, data: undefined, data_base64: 'not base64!' }, ["'data_base64' must be a base64 string (RFC 4648)"]],
        ['a batch', [event], ['a frame holds one structured CloudEvent, not a batch (a JSON array): send each event in a frame of its own']],
        ['a JSON string', 'hello', ['a structured CloudEvent must be a JSON object']],
        // Every member of the object is read as an attribute: a plain message's keys are named too.
        ['a plain message', { orderId: 9 }, [...MISSING, "'orderId' is not a valid attribute name (lower-case letters and digits only)"]],
      ];
      const binaryBefore = binaryOut.requests.length;
      for (const [, value] of invalid) ws.send(JSON.stringify(value));
      for (const [i, [what, , errors]] of invalid.entries()) {
        const refusal = await ws.next();
        assert.deepEqual(
          { type: refusal.type, frame: refusal.frame, status: refusal.status, code: refusal.code, errors: refusal.errors },
          { type: 'error', frame: i + 1, status: 400, code: 'EG_CLOUDEVENT_INVALID', errors },
          what,
        );
      }
      // A binary frame: the binding sends the JSON format in text frames (binary ones carry Avro or Protobuf events).
      ws.ws.send(Buffer.from(JSON.stringify(event)), { binary: true });
      const binaryRefusal = await ws.next();
      assert.deepEqual([binaryRefusal.frame, binaryRefusal.status, binaryRefusal.code], [invalid.length + 1, 415, 'EG_UNSUPPORTED_MEDIA_TYPE']);
      assert.match(binaryRefusal.detail, /send each CloudEvent in the JSON format, in a text frame/);
      // The connection is still open, and the next valid event is the first thing published since.
      ws.send(JSON.stringify(event));
      assert.deepEqual([(await ws.next(ACK_MS)).type, ws.closed], ['ack', undefined]);
      const published = (await binaryOut.received(binaryBefore + 1)).slice(binaryBefore);
      assert.deepEqual(
        published.map((r) => r.headers['ce-id']),
        ['ok-1'],
      );
    } finally {
      ws.close();
    }
  });

  it('leaves frames plain on a route without the key: the same JSON event is the value, with no attributes', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/plain', 'ws'));
    try {
      const event = { specversion: '1.0', id: 'p-1', source: '/shop', type: 'com.example.order.placed', data: { orderId: 3 } };
      const before = binaryOut.requests.length;
      ws.send(JSON.stringify(event));
      assert.equal((await ws.next(ACK_MS)).type, 'ack');
      const [r] = (await binaryOut.received(before + 1)).slice(before);
      assert.equal(r!.url, '/plain');
      assert.equal(r!.headers['ce-id'], undefined);
      assert.deepEqual(JSON.parse(r!.body), event);
    } finally {
      ws.close();
    }
  });

  it('still never agrees to the binding’s cloudevents.json subprotocol on such a route: acks and error frames are no events', async () => {
    const alsoPlain = new WebSocket(gw.url('ws', '/events', 'ws'), ['cloudevents.json', 'json']);
    await once(alsoPlain, 'open');
    assert.equal(alsoPlain.protocol, 'json');
    alsoPlain.close();
    const onlyEvents = new WebSocket(gw.url('ws', '/events', 'ws'), ['cloudevents.json']);
    const [err] = (await once(onlyEvents, 'error')) as [Error];
    assert.match(err.message, /Server sent no subprotocol/);
  });
});

/** A publish route on /events, reading frames as events or not, and a forward of what it publishes in envelopes (`ce`: the attributes). */
const toggled = (structured: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: events-in
    from: { listener: ws, path: /events${structured ? ', cloudevents: structured' : ''} }
    ack: true
    to: { broker: local, topic: events }
  - name: events-out
    from: { broker: local, topic: events }
    to: { listener: ws, path: /watch, format: envelope }
`;

describe('from.cloudevents on a websocket route across reloads', () => {
  const gw = useGateway();

  it('`plan` shows the route changed, and a reload turns the reading of frames as events on and off for a client that stays connected', async () => {
    const dir = tempFiles({ 'old.yaml': toggled(false), 'new.yaml': toggled(true) });
    const plan = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir });
    assert.equal(plan.code, 2, plan.stdout + plan.stderr);
    assert.deepEqual(JSON.parse(plan.stdout).routes, { add: [], change: ['events-in'], remove: [], keep: ['events-out'] });
    // The AsyncAPI export says what its clients send: events, whose data its messages describe.
    const exported = await runCliInProcess(['export', 'asyncapi', '-c', 'new.yaml'], { cwd: dir });
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(
      (parse(exported.stdout) as { operations: Record<string, { description: string }> }).operations['events-in']!.description,
      /^Clients send each message as a structured CloudEvent in the JSON format, one per text frame/,
    );

    await gw.start(toggled(false));
    const watcher = await WsClient.connect(gw.url('ws', '/watch', 'ws'));
    const client = await WsClient.connect(gw.url('ws', '/events', 'ws'));
    const event = (id: string) => ({ specversion: '1.0', id, source: '/shop', type: 'com.example.order.placed', data: { orderId: id } });
    const publish = async (id: string) => {
      client.send(event(id));
      assert.equal((await client.next()).type, 'ack', id);
      return watcher.next();
    };
    try {
      const plain = await publish('t-1');
      assert.deepEqual([plain.ce, plain.value], [undefined, event('t-1')]);
      assert.equal((await gw.reconfigure(toggled(true), undefined, { whole: true })).msg, 'config reloaded');
      const decoded = await publish('t-2');
      assert.deepEqual([decoded.ce, decoded.value], [{ specversion: '1.0', id: 't-2', source: '/shop', type: 'com.example.order.placed', datacontenttype: 'application/json' }, { orderId: 't-2' }]);
      assert.equal((await gw.reconfigure(toggled(false), undefined, { whole: true })).msg, 'config reloaded');
      const plainAgain = await publish('t-3');
      assert.deepEqual([plainAgain.ce, plainAgain.value], [undefined, event('t-3')]);
      assert.equal(client.closed, undefined, 'the client stayed connected through both reloads');
    } finally {
      client.close();
      watcher.close();
    }
  });
});

describe('from.cloudevents on listener routes: where it applies, and `eventgate test`', () => {
  it('refuses the key on an http or kafka listener source (their messages say themselves that they are events) and on forward targets, at file:line:col', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers: { local: { kind: memory }, cluster: { kind: kafka, brokers: [ "localhost:9092" ] } }',
        'listeners:',
        '  api: { kind: http, port: 0 }',
        '  ws: { kind: websocket, port: 0 }',
        '  kp: { kind: kafka, port: 0, upstream: cluster }',
        'routes:',
        '  - name: http-in',
        '    from: { listener: api, path: /in, cloudevents: structured }',
        '    to: { broker: local, topic: t }',
        '  - name: forward',
        '    from: { broker: local, topic: t }',
        '    to: { listener: ws, path: /out, cloudevents: structured }',
        '  - name: produced',
        '    from: { listener: kp, topic: orders, cloudevents: structured }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const out = r.stdout + r.stderr;
    assert.match(
      out,
      /gateway\.yaml:9:39: route 'http-in': 'cloudevents' \(the agreement that every message is a structured CloudEvent\) is for routes from a broker or a websocket listener; an http listener 'api' takes none: a request says itself that it is an event, with `ce-\*` headers \(binary mode\) or content-type application\/cloudevents\+json \(structured mode\)/,
    );
    assert.match(out, /gateway\.yaml:13:37: routes\[1\]\.to: 'cloudevents' belongs with broker targets; listener targets choose with 'format'/);
    assert.match(
      out,
      /gateway\.yaml:15:42: route 'produced': 'cloudevents' \(.*\) is for routes from a broker or a websocket listener; a kafka listener 'kp' takes none: a record is a CloudEvent by its own headers/,
    );
  });

  it('`eventgate test` reads a frame on such a route as the listener does: an event decoded, an invalid one refused', async () => {
    const config = (structured: boolean) =>
      [
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { ws: { kind: websocket, port: 0 } }',
        'routes:',
        '  - name: events-in',
        `    from: { listener: ws, path: /events${structured ? ', cloudevents: structured' : ''} }`,
        '    through: [ { cloudevent: { require: true } } ]',
        '    to: { broker: local, topic: events }',
        '',
      ].join('\n');
    const tests = [
      'tests:',
      '  - name: a frame holding an event is that event',
      '    route: events-in',
      "    input: { value: { specversion: '1.0', id: f-1, source: /shop, type: com.example.order.placed, data: { orderId: 1 } } }",
      '    expect:',
      '      outcome: delivered',
      '      to:',
      '        - { topic: events, headers: { ce_id: f-1, ce_type: com.example.order.placed, content-type: application/json }, value: { orderId: 1 } }',
      '  - name: an id that is no string is refused',
      '    route: events-in',
      "    input: { value: { specversion: '1.0', id: 7, source: /shop, type: com.example.order.placed } }",
      '    expect: { outcome: invalid, status: 400, error: "\'id\' must be a non-empty string" }',
      '  - name: a batch is refused',
      '    route: events-in',
      "    input: { value: [ { specversion: '1.0', id: f-2, source: /shop, type: t } ] }",
      '    expect: { outcome: invalid, status: 400, error: not a batch }',
      '',
    ].join('\n');
    const dir = tempFiles({ 'gateway.yaml': config(true), 'plain.yaml': config(false), 'gateway.tests.yaml': tests });
    const passed = await runCli(['test', '-c', 'gateway.yaml', 'gateway.tests.yaml'], { cwd: dir });
    assert.equal(passed.code, 0, passed.stdout + passed.stderr);
    assert.match(passed.stdout, /^3 tests passed$/m);
    // Without the key the frame is a plain message, which `require: true` refuses: the first test fails.
    const plain = await runCliInProcess(['test', '-c', 'plain.yaml', 'gateway.tests.yaml'], { cwd: dir });
    assert.equal(plain.code, 1, plain.stdout + plain.stderr);
    assert.match(plain.stdout, /a frame holding an event is that event/);
  });
});
