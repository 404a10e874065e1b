import assert from 'node:assert/strict';
import { request } from 'node:http';
import { before, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { WsClient } from '../helpers/clients.js';
import { afterGateways, useGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { MosquittoSub, mosquittoPub, pikaConsume, pikaDeclareQueue, pikaPublish, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver, type Received } from '../helpers/webhook-receiver.js';

/**
 * Headers and properties carried exactly from one kind to another, as independent clients write
 * and read them (mosquitto_pub/sub, pika, the NATS text protocol, kcat): a header named
 * `__proto__`, an AMQP content_encoding, AMQP 64-bit integers and timestamps past 2^53.
 */
describe('headers and properties carried exactly across broker kinds', () => {
  let mqtt: MessageServer;
  let rabbit: MessageServer;
  let nats: MessageServer;
  let kafka: KafkaCluster;
  let hook: WebhookReceiver;
  let kafkaIn = '';
  let kafkaRepeated = '';

  before(async () => {
    [mqtt, rabbit, nats, kafka, hook] = await Promise.all([startMosquitto(), sharedRabbit(), startNats(), startKafka(), WebhookReceiver.start()]);
    kafkaIn = kafka.topic('fid-in');
    await kafka.createTopic(kafkaIn, 1);
    kafkaRepeated = kafka.topic('fid-repeated');
    await kafka.createTopic(kafkaRepeated, 1);
    await Promise.all([
      pikaDeclareQueue(rabbit, 'fid-in', 'amq.topic', 'fid.in'),
      pikaDeclareQueue(rabbit, 'fid-ce-out', 'amq.topic', 'ce.out'),
      pikaDeclareQueue(rabbit, 'fid-ce-changed', 'amq.topic', 'ce.changed'),
      pikaDeclareQueue(rabbit, 'fid-http-gz', 'amq.topic', 'http.gz'),
    ]);
  });
  afterGateways(async () => {
    await Promise.all([mqtt?.stop(), rabbit?.stop(), nats?.stop(), kafka?.stop(), hook?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-fid-${process.pid}, reconnectPeriodMs: 200 }
  rabbit: { kind: amqp, url: ${rabbit.url} }
  bus: { kind: nats, servers: ${nats.url} }
  kafka:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
routes:
  - name: in
    from: { listener: api, path: /in }
    to:
      - { broker: devices, topic: fid/in }
      - { broker: rabbit, topic: fid.in }
      - { broker: bus, topic: fid.in }
      - { broker: kafka, topic: ${kafkaIn} }
  - name: mqtt-out
    from: { broker: devices, topic: fid/in }
    to: { listener: ws, path: /mqtt, format: envelope }
  - name: amqp-out
    from: { broker: rabbit, topic: fid.in }
    to: [{ listener: ws, path: /amqp, format: envelope }, { broker: bus, topic: fid.copied }]
  - name: nats-out
    from: { broker: bus, topic: fid.in }
    to: { listener: ws, path: /nats, format: envelope }
  - name: mqtt-repeated
    from: { broker: devices, topic: fid/repeated }
    to: { broker: kafka, topic: ${kafkaRepeated} }
  - name: nats-repeated
    from: { broker: bus, topic: fid.repeated }
    to: { broker: kafka, topic: ${kafkaRepeated} }
  - name: kafka-out
    from: { broker: kafka, topic: ${kafkaIn}, fromBeginning: true }
    to: [{ listener: ws, path: /kafka, format: envelope }, { http: { url: "${hook.url}/kafka", headers: { x-city: $headers.city } } }]
  - name: ce
    from: { broker: rabbit, topic: ce.in }
    to:
      - { broker: rabbit, topic: ce.out }
      - { broker: devices, topic: ce/out }
      - { broker: bus, topic: ce.out }
      - { http: { url: "${hook.url}/ce" } }
  - name: ce-changed
    from: { broker: rabbit, topic: ce.t }
    through:
      - transform: '{"changed": true}'
    to:
      - { broker: rabbit, topic: ce.changed }
      - { http: { url: "${hook.url}/ce-changed" } }
  - name: http-gz
    from: { listener: api, path: /gz }
    to: [{ broker: rabbit, topic: http.gz }, { http: { url: "${hook.url}/gz" } }]
  - name: typed
    from: { broker: rabbit, topic: typed.in }
    through:
      - transform: '$headers'
    to: { http: { url: "${hook.url}/typed" } }
`,
  );
  before(async () => {
    const routes = ['mqtt-out', 'amqp-out', 'nats-out', 'kafka-out', 'ce', 'ce-changed', 'typed', 'mqtt-repeated', 'nats-repeated'];
    await Promise.all(routes.map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 30000)));
  });

  /** The own `__proto__` property of a parsed or built header object (a plain read would give the prototype when it is missing). */
  const proto = (headers: object | undefined) => (headers === undefined ? undefined : Object.getOwnPropertyDescriptor(headers, '__proto__')?.value);

  /** A WebSocket client on each forward path, connected before anything is published. */
  async function forwards(): Promise<Record<'mqtt' | 'amqp' | 'nats' | 'kafka', WsClient>> {
    const [m, a, n, k] = await Promise.all(['mqtt', 'amqp', 'nats', 'kafka'].map((p) => WsClient.connect(gw.url('ws', `/${p}`).replace('http', 'ws'))));
    return { mqtt: m!, amqp: a!, nats: n!, kafka: k! };
  }

  /** POSTs raw bytes with `headers` given as name/value pairs (a `__proto__` name cannot be an object key of a literal). */
  function postRaw(path: string, body: Buffer, headers: [string, string][]): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const url = new URL(gw.url('api', path));
      const req = request(url, { method: 'POST', headers: ['host', url.host, ...headers.flat(), 'content-length', String(body.length)] });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode!, text }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  async function webhookRequest(path: string, timeoutMs = 15000, header?: string): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = hook.requests.find((q) => q.url === path && (header === undefined || q.headers[header] !== undefined));
      if (r) return r;
      if (Date.now() > deadline) throw new Error(`no webhook request to ${path}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  }

  it('keeps a header named __proto__ from an HTTP request to MQTT, AMQP, NATS and Kafka, their consume routes and a WebSocket envelope', async () => {
    const ws = await forwards();
    const sub = await MosquittoSub.start(mqtt, 'fid/in');
    const peer = await RawNats.connect(nats);
    try {
      const natsIn = await peer.subscribe('fid.in');
      const copied = await peer.subscribe('fid.copied');
      const r = await postRaw('/in', Buffer.from('{"n":1}'), [
        ['content-type', 'application/json'],
        ['__proto__', 'from-http'],
        ['x-plain', 'yes'],
      ]);
      assert.equal(r.status, 200, r.text);
      // What each kind's own clients read.
      const [m] = await sub.take(1);
      assert.equal(proto(m!.userProperties), 'from-http');
      const [a] = await pikaConsume(rabbit, 'fid-in', 1);
      assert.equal(proto(a!.headers), 'from-http');
      const [n] = await peer.take(natsIn, 1);
      assert.equal(proto(n!.headers), 'from-http');
      const [k] = await kcatConsume(kafka.bootstrap, kafkaIn, 1);
      assert.equal(proto(k!.headers), 'from-http');
      // What each kind's consume route read, in the envelope a WebSocket client gets, and an AMQP → NATS copy.
      for (const client of Object.values(ws)) {
        const frame = await client.next(15000);
        assert.equal(proto(frame.headers), 'from-http', JSON.stringify(frame));
        assert.equal(frame.headers['x-plain'], 'yes');
        // Nothing polluted: the envelope's headers are a plain object, with no prototype but Object's.
        assert.equal(frame.headers.polluted, undefined);
      }
      const [c] = await peer.take(copied, 1);
      assert.equal(proto(c!.headers), 'from-http');
      assert.equal(({} as { polluted?: unknown }).polluted, undefined);
    } finally {
      for (const c of Object.values(ws)) c.close();
      sub.stop();
      peer.close();
    }
  });

  it("sends a Kafka header's value beyond ASCII to a webhook as its UTF-8 bytes, as the producer wrote it, one within Latin-1 too", async () => {
    // kcat writes the header's UTF-8 bytes; a computed header copying it went as Latin-1 (`fc` for `ü`).
    await kcatProduce(kafka.bootstrap, kafkaIn, [{ value: '{"n":"city"}', headers: { city: 'Zürich' } }]);
    const h = await webhookRequest('/kafka', 15000, 'x-city');
    // node's parser gives a header's bytes as latin1 characters.
    assert.equal(Buffer.from(h.headers['x-city'] as string, 'latin1').toString('hex'), Buffer.from('Zürich').toString('hex'));
  });

  it('writes every value of a repeated MQTT user property or NATS header to a Kafka target, as a Kafka → Kafka copy does', async () => {
    await mosquittoPub(mqtt, 'fid/repeated', '{"from":"mqtt"}', { userProperties: { dup: ['one', 'two'], single: 's' } });
    const peer = await RawNats.connect(nats);
    try {
      peer.publish('fid.repeated', '{"from":"nats"}', { Dup: ['one', 'two', 'three'], Single: 's' });
      await peer.ping();
    } finally {
      peer.close();
    }
    const records = await kcatConsume(kafka.bootstrap, kafkaRepeated, 2);
    const list = (from: string) => records.find((r) => r.value === `{"from":"${from}"}`)!.headerList.filter(([name]) => name !== 'traceparent');
    assert.deepEqual(list('mqtt'), [
      ['dup', 'one'],
      ['dup', 'two'],
      ['single', 's'],
    ]);
    assert.deepEqual(list('nats'), [
      ['Dup', 'one'],
      ['Dup', 'two'],
      ['Dup', 'three'],
      ['Single', 's'],
    ]);
  });

  it("reads a NATS publisher's Content-Type and Content-Encoding in any case, as Go's client writes them", async () => {
    const ws = await forwards();
    const peer = await RawNats.connect(nats);
    try {
      const gz = gzipSync('{"compressed":"nats"}');
      peer.publish('fid.in', gz, { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip', 'X-Kept': 'As-Sent' });
      await peer.ping();
      const frame = await ws.nats.next(15000);
      // As the same message with lower-case names: bytes (base64 in an envelope), not text with U+FFFD in it.
      const { traceparent: _started, ...headers } = frame.headers;
      assert.deepEqual(headers, { 'content-type': 'application/json', 'content-encoding': 'gzip', 'X-Kept': 'As-Sent' }, JSON.stringify(frame));
      assert.equal(gunzipSync(Buffer.from(frame.value, 'base64')).toString(), '{"compressed":"nats"}', JSON.stringify(frame));
    } finally {
      for (const c of Object.values(ws)) c.close();
      peer.close();
    }
  });

  it('keeps a header named __proto__ that other publishers put on each server', async () => {
    const ws = await forwards();
    const peer = await RawNats.connect(nats);
    try {
      await mosquittoPub(mqtt, 'fid/in', '{"from":"mosquitto_pub"}', { userProperties: { ['__proto__']: 'mqtt-p' } });
      await pikaPublish(rabbit, 'amq.topic', 'fid.in', [{ body: '{"from":"pika"}', headers: Object.fromEntries([['__proto__', 'amqp-p']]) }]);
      peer.publish('fid.in', '{"from":"raw nats"}', Object.fromEntries([['__proto__', 'nats-p']]));
      await peer.ping();
      await kcatProduce(kafka.bootstrap, kafkaIn, [{ value: '{"from":"kcat"}', headers: Object.fromEntries([['__proto__', 'kafka-p']]) }]);
      const expected = { mqtt: 'mqtt-p', amqp: 'amqp-p', nats: 'nats-p', kafka: 'kafka-p' };
      for (const [path, value] of Object.entries(expected)) {
        // The Kafka route reads from the beginning: the record of the test before comes first.
        let frame = await ws[path as keyof typeof ws].next(15000);
        while (frame.value.from === undefined) frame = await ws[path as keyof typeof ws].next(15000);
        assert.equal(proto(frame.headers), value, `${path}: ${JSON.stringify(frame)}`);
      }
    } finally {
      for (const c of Object.values(ws)) c.close();
      peer.close();
    }
  });

  it("carries an AMQP message's content_encoding to AMQP, MQTT, NATS and webhooks with its bytes, and drops it once a step changed the body", async () => {
    const sub = await MosquittoSub.start(mqtt, 'ce/out');
    const peer = await RawNats.connect(nats);
    try {
      const natsOut = await peer.subscribe('ce.out');
      const gz = gzipSync('{"compressed":true}');
      await pikaPublish(rabbit, 'amq.topic', 'ce.in', [{ body: gz, contentType: 'application/json', contentEncoding: 'gzip' }]);
      await pikaPublish(rabbit, 'amq.topic', 'ce.t', [{ body: gz, contentType: 'application/json', contentEncoding: 'gzip' }]);
      const [a] = await pikaConsume(rabbit, 'fid-ce-out', 1);
      assert.equal(a!.properties.contentEncoding, 'gzip');
      assert.equal(a!.headers['content-encoding'], undefined, 'a property, not also a header');
      assert.deepEqual(a!.bytes, gz);
      const [m] = await sub.take(1);
      assert.equal(m!.userProperties['content-encoding'], 'gzip');
      assert.deepEqual(m!.bytes, gz);
      const [n] = await peer.take(natsOut, 1);
      assert.equal(n!.headers['content-encoding'], 'gzip');
      assert.deepEqual(n!.bytes, gz);
      const h = await webhookRequest('/ce');
      assert.equal(h.headers['content-encoding'], 'gzip');
      assert.deepEqual(gunzipSync(h.bytes).toString(), '{"compressed":true}');
      // A transform wrote a new body: nothing may claim it is gzip.
      const [changed] = await pikaConsume(rabbit, 'fid-ce-changed', 1);
      assert.equal(changed!.body, '{"changed":true}');
      assert.equal(changed!.properties.contentEncoding, null);
      assert.equal(changed!.headers['content-encoding'], undefined);
      const hc = await webhookRequest('/ce-changed');
      assert.equal(hc.body, '{"changed":true}');
      assert.equal(hc.headers['content-encoding'], undefined);
    } finally {
      sub.stop();
      peer.close();
    }
  });

  it('passes on no Content-Encoding for an HTTP body the listener decoded', async () => {
    const r = await postRaw('/gz', gzipSync('{"gz":1}'), [
      ['content-type', 'application/json'],
      ['content-encoding', 'gzip'],
    ]);
    assert.equal(r.status, 200, r.text);
    const [a] = await pikaConsume(rabbit, 'fid-http-gz', 1);
    assert.equal(a!.body, '{"gz":1}');
    assert.equal(a!.properties.contentEncoding, null);
    assert.equal(a!.headers['content-encoding'], undefined);
    const h = await webhookRequest('/gz');
    assert.equal(h.body, '{"gz":1}');
    assert.equal(h.headers['content-encoding'], undefined);
  });

  it('reads AMQP 64-bit integers and timestamps past 2^53 exactly, as decimal strings', async () => {
    await pikaPublish(rabbit, 'amq.topic', 'typed.in', [
      {
        body: '{}',
        headers: {
          big: { $int64: '4611686018427387905' },
          neg: { $int64: '-4611686018427387905' },
          small: 4294967296,
          ts: { $rawTimestamp: '9007199254740993' },
          nested: { x: { $int64: '9007199254740993' }, at: { $rawTimestamp: '9007199254740993' }, ok: 5 },
        },
      },
    ]);
    const h = await webhookRequest('/typed');
    const headers = JSON.parse(h.body) as Record<string, string>;
    assert.equal(headers.small, '4294967296');
    assert.equal(headers.big, '4611686018427387905');
    assert.equal(headers.neg, '-4611686018427387905');
    assert.equal(headers.ts, '9007199254740993');
    assert.equal(headers.nested, '{"x":"9007199254740993","at":"9007199254740993","ok":5}');
  });
});
