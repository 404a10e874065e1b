import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CloudEvent, MQTT, MQTTMessageFactory, type MQTTMessage } from 'cloudevents';
import { post, WsClient } from '../helpers/clients.js';
import { publishThroughOutage, readyz } from '../helpers/outage.js';
import { scrape } from '../helpers/prometheus.js';
import { eventually, startGateway, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { answerSideBySide, arrivedSideBySide, SlowEndpoint } from '../helpers/slow-endpoint.js';
import { MosquittoPubStream, MosquittoSub, mosquittoPub, type MqttReceived } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

// Long enough that no publish of the 1,800-request burst below is answered by its deadline on a loaded machine
// (its first QoS 2 publishes wait for a window of 20 behind hundreds of others), on both brokers: half of it goes through
// `legacy`, whose default 5 s some of its publishes outwaited there; e2e/mqtt-refusals tests the deadline.
const ACK_TIMEOUT_MS = 30_000;
const run = promisify(execFile);
/** Payloads a relay must not re-encode: bytes that are not UTF-8, and JSON that re-serialising would change. */
const NOT_UTF8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3]);
const SPACED_JSON = '{ "a" : 1.0 }';

describe('kind: mqtt (against mosquitto)', () => {
  let mqtt: MessageServer;
  let config: string;
  let configWith: (hookOptions: string) => string;
  /** The webhook of route `hooked` (several messages of its QoS 2 subscription in hand at once). */
  let hook: SlowEndpoint;
  const ORDERED = 'concurrency: 8, orderBy: k, retry: { attempts: 3, backoffMs: 10 }';

  before(async () => {
    [mqtt, hook] = await Promise.all([startMosquitto(), SlowEndpoint.start()]);
    configWith = (hookOptions: string) => `
version: 1
admin: { port: 0 }
brokers:
  devices:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-test-${process.pid}
    reconnectPeriodMs: 200
    ackTimeoutMs: ${ACK_TIMEOUT_MS}
    qosByTopic: { "qos/two": 2 }
  legacy:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-legacy-${process.pid}
    protocolVersion: 4
    ackTimeoutMs: ${ACK_TIMEOUT_MS}
    qosByTopic: { "qos/zero": 0, "qos/two": 2 }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: command
    from: { listener: api, path: /devices/:id/command }
    to: { broker: devices, topic: { expression: '"devices/" & $path.id & "/command"' } }
  - name: relay
    from: { broker: devices, topic: "sensors/+/temperature" }
    through:
      - transform: '{"sensor": $split($topic, "/")[1], "celsius": $, "unit": $headers.unit}'
    to: { broker: devices, topic: readings }
  - name: live
    from: { broker: devices, topic: "live/#" }
    to: { listener: ws, path: /live, format: envelope }
  - name: binary
    from: { listener: api, path: /binary }
    to: { broker: devices, topic: binary/out }
  - name: bytes
    from: { broker: devices, topic: "bytes/in" }
    to: { broker: devices, topic: bytes/out }
  - name: levels
    from: { listener: api, path: /qos/:level }
    to: { broker: legacy, topic: { expression: '"qos/" & $path.level' } }
  - name: levels5
    from: { listener: api, path: /qos5/:level }
    to: { broker: devices, topic: { expression: '"qos/" & $path.level' } }
  - name: shout
    from: { listener: api, path: /shout }
    through:
      - transform: '$uppercase(text)'
    to: { broker: devices, topic: shout }
  - name: server-topics
    from: { broker: devices, topic: "$gw/in/+" }
    to: { broker: devices, topic: { expression: '"server-topics/" & $split($topic, "/")[2]' } }
  - name: ce-in
    from: { broker: devices, topic: "ce/in/+" }
    to: { listener: ws, path: /ce, format: cloudevent }
  - name: ce-out
    from: { listener: api, path: /ce/out }
    to: { broker: devices, topic: ce/out }
  - name: ce-out-structured
    from: { listener: api, path: /ce/structured }
    to: { broker: devices, topic: ce/out, cloudevents: structured }
  - name: ce-legacy
    from: { listener: api, path: /ce/legacy }
    to: { broker: legacy, topic: ce/legacy, cloudevents: structured }
  - name: ce-legacy-in
    from: { broker: legacy, topic: ce/legacy/in, cloudevents: structured }
    to: { listener: ws, path: /ce-legacy, format: envelope }
  - name: hooked
    from: { broker: devices, topic: conc/in, qos: 2 }
    to: { http: { url: "${hook.url}/in", headers: { x-key: k }, ${hookOptions} } }
`;
    config = configWith(ORDERED);
  });
  // Registered after the before() that starts mosquitto, so the config can name it.
  const gw = useGateway(() => config);
  before(async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'live', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'bytes', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'ce-in', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'ce-legacy-in', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'server-topics', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hooked', 15000);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), hook?.stop()]);
  });

  it('answers 200 once mosquitto acknowledged the publish, with HTTP headers as MQTT 5 user properties and content-type as its Content Type', async () => {
    const sub = await MosquittoSub.start(mqtt, 'devices/#');
    try {
      const res = await post(gw.url('api', '/devices/d7/command'), { action: 'reboot' }, { 'x-request-id': 'r-1' });
      assert.equal(res.status, 200, res.text);
      assert.deepEqual(res.body.deliveries, [{ broker: 'devices', topic: 'devices/d7/command', partition: 0, offset: '-1' }]);
      const [got] = await sub.take(1);
      assert.equal(got!.topic, 'devices/d7/command');
      assert.deepEqual(JSON.parse(got!.payload), { action: 'reboot' });
      assert.equal(got!.qos, 1);
      assert.equal(got!.userProperties['x-request-id'], 'r-1');
      assert.equal(got!.contentType, 'application/json');
      assert.equal(got!.userProperties['content-type'], undefined);
    } finally {
      sub.stop();
    }
  });

  it('names a payload by what it is once a step changed its kind: a JSON request transformed to a string has Content Type text/plain', async () => {
    const sub = await MosquittoSub.start(mqtt, 'shout');
    try {
      const res = await post(gw.url('api', '/shout'), { text: 'hello' }, { 'content-type': 'application/json' });
      assert.equal(res.status, 200, res.text);
      const [got] = await sub.take(1);
      assert.equal(got!.payload, 'HELLO');
      assert.equal(got!.contentType, 'text/plain');
      assert.equal(got!.userProperties['content-type'], undefined);
    } finally {
      sub.stop();
    }
  });

  it('takes CloudEvents as MQTT 5 peers publish them: structured (Content Type application/cloudevents+json), and binary as the SDK writes it (MQTT.binary: unprefixed user properties)', async () => {
    const client = await WsClient.connect(gw.url('ws', '/ce', 'ws'));
    try {
      const structured = { specversion: '1.0', id: 's-1', source: '/peer', type: 'com.example.structured', datacontenttype: 'application/json', tenant: 'acme', data: { n: 1 } };
      await mosquittoPub(mqtt, 'ce/in/structured', JSON.stringify(structured), { contentType: 'application/cloudevents+json' });
      assert.deepEqual(await client.next(15000), structured);

      const event = new CloudEvent({ id: 'b-1', source: '/sdk', type: 'com.example.binary', datacontenttype: 'application/json', subject: 'order-7', tenant: 'acme', data: { n: 2 } });
      const message = MQTT.binary(event) as MQTTMessage<unknown>;
      const attributes = Object.fromEntries(Object.entries(message.headers).map(([k, v]) => [k, String(v)]));
      // Trace context and names that are no attribute names stay headers of the message, not extensions of the event.
      const userProperties = { ...attributes, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-origin': 'sdk' };
      await mosquittoPub(mqtt, 'ce/in/binary', JSON.stringify(message.body), { contentType: message.PUBLISH!['Content Type'], userProperties });
      assert.deepEqual(await client.next(15000), { ...attributes, data: { n: 2 } });
    } finally {
      client.close();
    }
  });

  it('publishes a CloudEvent in the MQTT binding’s binary mode (datacontenttype as the Content Type, attributes as unprefixed user properties) and structured mode, which the SDK’s MQTT.toEvent() reads', async () => {
    const sub = await MosquittoSub.start(mqtt, 'ce/out');
    try {
      const binary = await post(
        gw.url('api', '/ce/out'),
        { n: 1 },
        { 'ce-specversion': '1.0', 'ce-id': 'h-1', 'ce-source': '/http', 'ce-type': 'com.example.binary', 'ce-tenant': 'acme', 'x-request-id': 'r-9' },
      );
      assert.equal(binary.status, 200, binary.text);
      const structured = { specversion: '1.0', id: 'h-2', source: '/http', type: 'com.example.structured', datacontenttype: 'text/plain', time: '2026-12-03T17:00:00Z', data: 'hello' };
      const res = await post(gw.url('api', '/ce/out'), structured, { 'content-type': 'application/cloudevents+json' });
      assert.equal(res.status, 200, res.text);
      const asJson = await post(gw.url('api', '/ce/structured'), { ...structured, id: 'h-3' }, { 'content-type': 'application/cloudevents+json' });
      assert.equal(asJson.status, 200, asJson.text);
      const [first, second, third] = await sub.take(3);
      // The gateway's trace context goes as it does on any message (W3C names, no attributes).
      const properties = (m: MqttReceived) => {
        const { traceparent, ...rest } = m.userProperties;
        assert.match(traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
        return rest;
      };
      assert.equal(first!.contentType, 'application/json');
      assert.deepEqual(properties(first!), { specversion: '1.0', id: 'h-1', source: '/http', type: 'com.example.binary', tenant: 'acme', 'x-request-id': 'r-9' });
      assert.equal(second!.contentType, 'text/plain');
      assert.deepEqual(properties(second!), { specversion: '1.0', id: 'h-2', source: '/http', type: 'com.example.structured', time: '2026-12-03T17:00:00Z' });
      assert.equal(second!.payload, 'hello');

      // The SDK reads the attributes from the user properties and the data from the payload.
      const read = (m: MqttReceived, body: unknown) => MQTT.toEvent(MQTTMessageFactory(m.contentType!, m.userProperties, body)) as CloudEvent<unknown>;
      const one = read(first!, JSON.parse(first!.payload));
      assert.deepEqual([one.specversion, one.id, one.source, one.type, one.tenant, one.data], ['1.0', 'h-1', '/http', 'com.example.binary', 'acme', { n: 1 }]);
      const two = read(second!, second!.payload);
      assert.deepEqual([two.id, two.type, two.time, two.data], ['h-2', 'com.example.structured', '2026-12-03T17:00:00Z', 'hello']);
      // Structured mode (cloudevents: structured): the JSON event, Content Type application/cloudevents+json, no attributes beside it.
      assert.equal(third!.contentType, 'application/cloudevents+json');
      assert.deepEqual(properties(third!), {});
      assert.deepEqual(JSON.parse(third!.payload), { ...structured, id: 'h-3' });
      const three = read(third!, third!.payload);
      assert.deepEqual([three.id, three.datacontenttype, three.data], ['h-3', 'text/plain', 'hello']);
    } finally {
      sub.stop();
    }
  });

  it('carries a CloudEvent over MQTT 3.1.1, which has no properties, in structured mode (cloudevents: structured): the JSON event as the payload', async () => {
    const sub = await MosquittoSub.start(mqtt, 'ce/legacy');
    try {
      const res = await post(gw.url('api', '/ce/legacy'), { n: 3 }, { 'ce-specversion': '1.0', 'ce-id': 'l-1', 'ce-source': '/http', 'ce-type': 'com.example.legacy', 'ce-tenant': 'acme' });
      assert.equal(res.status, 200, res.text);
      const [got] = await sub.take(1);
      assert.equal(got!.contentType, undefined);
      assert.deepEqual(got!.userProperties, {});
      const event = { specversion: '1.0', id: 'l-1', source: '/http', type: 'com.example.legacy', tenant: 'acme', datacontenttype: 'application/json', data: { n: 3 } };
      assert.deepEqual(JSON.parse(got!.payload), event);
      // What a 3.1.1 receiver knows out of band (the binding: structured mode, the JSON format) is all the SDK needs.
      const read = MQTT.toEvent(MQTTMessageFactory('application/cloudevents+json', {}, got!.payload)) as CloudEvent<unknown>;
      assert.deepEqual([read.id, read.type, read.tenant, read.data], ['l-1', 'com.example.legacy', 'acme', { n: 3 }]);
    } finally {
      sub.stop();
    }
  });

  it('reads a structured event from an MQTT 3.1.1 publisher as the event it is, by the route’s agreement (from.cloudevents: structured); a plain payload stays plain', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/ce-legacy', 'ws'));
    try {
      const event = { specversion: '1.0', id: 'l-in-1', source: '/sensors', type: 'com.example.reading', tenant: 'acme', data: { celsius: 21.5 } };
      await mosquittoPub(mqtt, 'ce/legacy/in', JSON.stringify(event), { protocol: 'mqttv311' });
      await mosquittoPub(mqtt, 'ce/legacy/in', '{"celsius":3}', { protocol: 'mqttv311' });
      const got = await ws.next();
      assert.deepEqual(got.ce, { specversion: '1.0', id: 'l-in-1', source: '/sensors', type: 'com.example.reading', tenant: 'acme', datacontenttype: 'application/json' });
      assert.deepEqual(got.value, { celsius: 21.5 });
      const plain = await ws.next();
      assert.deepEqual([plain.ce, plain.value], [undefined, { celsius: 3 }]);
    } finally {
      ws.ws.close();
    }
  });

  it('consumes a wildcard filter, binds the concrete topic as $topic and user properties as $headers', async () => {
    const sub = await MosquittoSub.start(mqtt, 'readings');
    try {
      await mosquittoPub(mqtt, 'sensors/kitchen/temperature', '21.5', { userProperties: { unit: 'C' } });
      await mosquittoPub(mqtt, 'sensors/cellar/temperature', '12', { userProperties: { unit: 'C' } });
      const got = await sub.take(2);
      assert.deepEqual(
        got.map((m) => JSON.parse(m.payload)),
        [
          { sensor: 'kitchen', celsius: 21.5, unit: 'C' },
          { sensor: 'cellar', celsius: 12, unit: 'C' },
        ],
      );
    } finally {
      sub.stop();
    }
  });

  // mosquitto delivers no topic starting with `$` to a shared subscription: subscribed as
  // `$share/<group>/$gw/in/+`, the route was ready and never got a message (spec-checklist 396).
  it("consumes the server's own topics (a filter starting with $) through a plain subscription", async () => {
    const sub = await MosquittoSub.start(mqtt, 'server-topics/+');
    try {
      await mosquittoPub(mqtt, '$gw/in/a', '{"n":1}');
      const [got] = await sub.take(1);
      assert.equal(got!.topic, 'server-topics/a');
      assert.deepEqual(JSON.parse(got!.payload), { n: 1 });
    } finally {
      sub.stop();
    }
  });

  it('forwards to WebSocket clients with the topic and user properties in the envelope', async () => {
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    try {
      await mosquittoPub(mqtt, 'live/room1', '{"t":1}', { userProperties: { from: 'peer' } });
      const frame = await client.next(15000);
      assert.equal(frame.topic, 'live/room1');
      assert.deepEqual(frame.value, { t: 1 });
      assert.equal(frame.headers.from, 'peer');
    } finally {
      client.close();
    }
  });

  it('refuses a computed topic holding a wildcard instead of publishing to it', async () => {
    const res = await post(gw.url('api', '/devices/%2B/command'), { action: 'x' });
    assert.equal(res.status, 500, res.text);
    assert.equal(res.body.code, 'EG_EXPRESSION_FAILED');
    assert.match(res.body.detail, /wildcards/);
  });

  it('relays a consumed payload byte for byte: bytes that are not UTF-8, and JSON as it was written', async () => {
    const sub = await MosquittoSub.start(mqtt, 'bytes/out');
    try {
      await mosquittoPub(mqtt, 'bytes/in', NOT_UTF8);
      await mosquittoPub(mqtt, 'bytes/in', Buffer.from(SPACED_JSON));
      const got = await sub.take(2);
      assert.deepEqual(
        got.map((m) => m.bytes.toString('hex')),
        [NOT_UTF8.toString('hex'), Buffer.from(SPACED_JSON).toString('hex')],
      );
    } finally {
      sub.stop();
    }
  });

  it('publishes binary data (a CloudEvent’s data_base64) as its bytes, not as the JSON of a buffer', async () => {
    const sub = await MosquittoSub.start(mqtt, 'binary/out');
    try {
      const bytes = Buffer.from('not JSON, but bytes: \u00fc\u0001');
      const event = { specversion: '1.0', id: 'b-1', source: '/test', type: 'bytes', data_base64: bytes.toString('base64') };
      const res = await post(gw.url('api', '/binary'), event, { 'content-type': 'application/cloudevents+json' });
      assert.equal(res.status, 200, res.text);
      const [got] = await sub.take(1);
      assert.equal(got!.payload, bytes.toString('utf8'));
    } finally {
      sub.stop();
    }
  });

  it('publishes at QoS 0, 1 and 2 over MQTT 3.1.1 too, large and non-ASCII payloads intact, many at once each answered once acknowledged', async () => {
    const sub = await MosquittoSub.start(mqtt, 'qos/#', 2);
    try {
      // 200 KB: larger than one packet buffer, and a 3-byte remaining length.
      const big = { text: 'grüße ☃ '.repeat(20_000) };
      for (const level of ['zero', 'one', 'two']) {
        const res = await post(gw.url('api', `/qos/${level}`), big);
        assert.equal(res.status, 200, res.text);
      }
      const got = await sub.take(3);
      assert.deepEqual(
        got.map((m) => [m.topic, m.qos]),
        [
          ['qos/zero', 0],
          ['qos/one', 1],
          ['qos/two', 2],
        ],
      );
      for (const m of got) assert.deepEqual(JSON.parse(m.payload), big);
      // 300 concurrent publishes per level and protocol version, encoded into shared writes, each answered once acknowledged (QoS 0: written).
      // mosquitto takes 20 QoS 2 publishes of a client in flight (its Receive Maximum) and drops the rest, behind a PUBREC an MQTT 3.1.1
      // client cannot tell from success (MQTT 5: "Quota exceeded"): the gateway sends a QoS 2 publish only while the QoS 1 and 2 ones in flight leave room, and none is lost.
      // Counted by a QoS 1 subscriber: mosquitto 2.0 also drops part of such a burst on its way to a QoS 2 subscriber, whoever published it.
      const counter = await MosquittoSub.start(mqtt, 'qos/#', 1);
      try {
        const levels = ['zero', 'one', 'two'].flatMap((level) => [`qos/${level}`, `qos5/${level}`]);
        const answers = await Promise.all(levels.flatMap((path) => Array.from({ length: 300 }, (_, i) => post(gw.url('api', `/${path}`), { path, i }))));
        assert.deepEqual(
          answers.filter((a) => a.status !== 200).map((a) => a.text),
          [],
        );
        const burst = (await counter.take(6 * 300)).map((m) => JSON.parse(m.payload) as { path: string; i: number });
        for (const path of levels) {
          assert.deepEqual(
            burst
              .filter((m) => m.path === path)
              .map((m) => m.i)
              .sort((a, b) => a - b),
            Array.from({ length: 300 }, (_, i) => i),
            path,
          );
        }
      } finally {
        counter.stop();
      }
    } finally {
      sub.stop();
    }
  });

  it('says when another client keeps taking its client id (mosquitto closes the older connection without a reason), and recovers once it is gone', async () => {
    const from = gw.logs.length;
    // Another client with the legacy broker's publishing id: mosquitto_sub reconnects every second, as the gateway does.
    const rival = await MosquittoSub.start(mqtt, 'fight', 1, `eg-legacy-${process.pid}-pub`);
    try {
      const told = await gw.waitForLog((l) => l.msg.startsWith('the server keeps closing this mqtt connection right after accepting it'), 30000, from);
      assert.equal(told.clientId, `eg-legacy-${process.pid}-pub`);
      assert.equal(told.connection, 'publish');
    } finally {
      rival.stop();
    }
    await eventually(async () => assert.equal((await post(gw.url('api', '/qos/1'), { n: 1 })).status, 200), 15000);
  });

  it("has up to a webhook's `concurrency` QoS 2 messages in hand (orderBy: one per key, in order, a failed try retried first), each acknowledged; a reload to another concurrency keeps the connection and applies it", async () => {
    const keys = ['k0', 'k1', 'k2'];
    const total = 30;
    hook.reset();
    answerSideBySide(hook, keys, total / keys.length, 'k1');
    // One publisher, so mosquitto sends them in this order: keys interleaved.
    const pub = MosquittoPubStream.start(mqtt, 'conc/in', 2);
    pub.write(Array.from({ length: total }, (_, n) => JSON.stringify({ n, k: keys[n % keys.length] })));
    await pub.end();
    await arrivedSideBySide(hook, keys, total, 'k1');
    // Every one acknowledged (PUBREC, in the order they came): none left in hand.
    const acked = async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_mqtt_consumer_lag', { route: 'hooked', topic: 'conc/in', partition: '0' }), 0);
    await eventually(acked, 15000, 100);
    // Another concurrency, no orderBy: the rebuilt route takes the connection and subscription over.
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(configWith('concurrency: 2'))).msg, 'config reloaded');
    await gw.waitForLog((l) => l.route === 'hooked' && l.msg === 'subscription handed over to the rebuilt route', 15000, from);
    const ns = [100, 101, 102, 103, 104, 105];
    await hook.takesInWindowsOf(2, ns, async () => {
      const again = MosquittoPubStream.start(mqtt, 'conc/in', 2);
      again.write(ns.map((n) => JSON.stringify({ n, k: 'k0' })));
      await again.end();
    });
    await eventually(acked, 15000, 100);
    // The route stays at concurrency 2: the next test's reload hands it over to the file's config again.
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'mqtt connected'),
      [],
    );
  });

  it('keeps the connections and sessions of unchanged routes through a reload', async () => {
    const from = gw.logs.length;
    const reload = await gw.reconfigure(`${config}  - name: added
    from: { listener: api, path: /added }
    to: { broker: devices, topic: added }
`);
    assert.equal(reload.msg, 'config reloaded');
    const sub = await MosquittoSub.start(mqtt, 'readings');
    try {
      await mosquittoPub(mqtt, 'sensors/hall/temperature', '19', { userProperties: { unit: 'C' } });
      assert.deepEqual(JSON.parse((await sub.take(1))[0]!.payload), { sensor: 'hall', celsius: 19, unit: 'C' });
    } finally {
      sub.stop();
    }
    assert.equal((await post(gw.url('api', '/added'), { n: 1 })).status, 200);
    // Nothing reconnected or subscribed again: the broker and the consume routes were kept.
    const reopened = gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'mqtt connected');
    assert.deepEqual(reopened, []);
  });

  it('reports the message a route holds unacknowledged as eventgate_mqtt_consumer_lag, 0 once its target takes messages again', async () => {
    const target = await HeldTarget.start();
    const lagged = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  devices:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-lag-${process.pid}
routes:
  - name: slow
    from: { broker: devices, topic: slow/+ }
    to: { http: { url: "${target.url}", timeoutMs: 120000 } }
`);
    try {
      await lagged.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'slow', 15000);
      const lag = async () => (await scrape(lagged.adminUrl)).value('eventgate_mqtt_consumer_lag', { route: 'slow', topic: 'slow/+', partition: '0' });
      assert.equal(await lag(), 0);
      for (let i = 0; i < 5; i++) await mosquittoPub(mqtt, `slow/${i}`, JSON.stringify({ i }));
      // All five in hand, none acknowledged: the server sends up to its in-flight window (mosquitto's
      // 20) and the route takes them from mqtt.js while it holds the first (what the server queues
      // beyond that window an MQTT client cannot see).
      await eventually(async () => assert.equal(await lag(), 5), 15000, 100);
      target.release();
      await eventually(() => assert.equal(new Set(target.bodies).size, 5), 30000, 100);
      await eventually(async () => assert.equal(await lag(), 0), 15000, 100);
    } finally {
      await lagged.stop();
      await target.stop();
    }
  });

  it('with sharedSubscriptions: false, a consume route gets what was published to a restarted mosquitto while the route was offline', async () => {
    // mosquitto 2.0.11 restores a persistent session after a restart without its shared
    // subscriptions, so with them (the default) these messages have no subscriber and are dropped
    // (docs/scaling.md); a plain subscription is restored with the session.
    const target = await HeldTarget.start();
    const yaml = `
version: 1
admin: { port: 0 }
brokers:
  devices:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-restart-${process.pid}
    reconnectPeriodMs: 200
    sharedSubscriptions: false
routes:
  - name: queued
    from: { broker: devices, topic: queued/+ }
    to: { http: { url: "${target.url}" } }
`;
    target.release();
    try {
      const first = await startGateway(yaml);
      await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'queued', 15000);
      await first.stop();
      await mqtt.down();
      await mqtt.up();
      for (let i = 0; i < 3; i++) await mosquittoPub(mqtt, `queued/${i}`, JSON.stringify({ i }), { qos: 1 });
      const second = await startGateway(yaml);
      try {
        await eventually(() => assert.deepEqual([...target.bodies].map((b) => JSON.parse(b).i).sort(), [0, 1, 2]), 15000, 100);
      } finally {
        await second.stop();
      }
    } finally {
      await target.stop();
    }
  });

  it('answers 503 while mosquitto is down, reports it in /readyz, loses no acknowledged message, and resumes consuming', async () => {
    // A persistent verifier session: mosquitto queues for it what the gateway publishes, across the restart.
    await run('mosquitto_sub', ['-h', mqtt.host, '-p', String(mqtt.port), '-V', 'mqttv5', '-c', '-i', 'verifier', '-x', '600', '-q', '1', '-t', 'devices/+/command', '-E']);
    // Load from 4 concurrent clients; the server goes down part-way through.
    const load = await publishThroughOutage(
      (i) => post(gw.url('api', '/devices/load/command'), { i }),
      () => mqtt.down(),
    );
    const acked = load.acked.map((a) => a.i);
    const refused = load.refused;
    // Counted like Kafka's: eventgate_<kind>_producer_errors_total{broker}.
    assert.ok((await scrape(gw.adminUrl)).value('eventgate_mqtt_producer_errors_total', { broker: 'devices' })! >= refused);
    const down = await readyz(gw);
    assert.equal(down.status, 503);
    assert.ok(
      down.body.reasons.some((r: string) => r.startsWith('broker devices:')),
      JSON.stringify(down.body),
    );

    await mqtt.up();
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 20000, 100);
    const after = await post(gw.url('api', '/devices/load/command'), { i: 1000 });
    assert.equal(after.status, 200, after.text);
    acked.push(1000);

    // Every message answered 200 reached the server, and was kept for the offline verifier.
    const verifier = await MosquittoSub.start(mqtt, 'devices/+/command', 1, 'verifier');
    const received = await verifier.until((m) => (JSON.parse(m.payload) as { i: number }).i === 1000, 30000);
    verifier.stop();
    const seen = new Set(received.map((m) => (JSON.parse(m.payload) as { i: number }).i));
    const lost = acked.filter((i) => !seen.has(i));
    assert.deepEqual(lost, [], `acknowledged but not delivered: ${lost.join(', ')}`);

    // The consume route reconnected and resubscribed by itself.
    const sub = await MosquittoSub.start(mqtt, 'readings');
    try {
      await mosquittoPub(mqtt, 'sensors/attic/temperature', '30', { userProperties: { unit: 'C' } });
      const [got] = await sub.take(1, 20000);
      assert.deepEqual(JSON.parse(got!.payload), { sensor: 'attic', celsius: 30, unit: 'C' });
    } finally {
      sub.stop();
    }
  });
});
