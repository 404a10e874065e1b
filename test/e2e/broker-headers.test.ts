import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { readyz } from '../helpers/outage.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';

/**
 * Headers a broker's protocol cannot carry: an MQTT 5 user property with a control character
 * (mosquitto drops the whole connection for it), a NATS header value with CR/LF or a name with a
 * space. Such a message is refused as invalid before it is sent, never answered 503 (as if a retry
 * could help) and never allowed to cut the connection other messages share.
 */
describe('headers a broker cannot carry', () => {
  let mqtt: MessageServer;
  let nats: MessageServer;
  let config: string;

  before(async () => {
    [mqtt, nats] = await Promise.all([startMosquitto(), startNats()]);
    config = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-headers-${process.pid}, reconnectPeriodMs: 200 }
  bus: { kind: nats, servers: ${nats.url}, reconnectTimeWaitMs: 200 }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: to-mqtt
    from: { listener: api, path: /mqtt }
    to: { broker: devices, topic: { expression: '"h/" & $query.t' } }
  - name: to-nats
    from: { listener: api, path: /nats }
    through:
      - headers: { set: { x-note: note } }
    to: { broker: bus, topic: h.out }
  - name: queue
    from: { listener: api, path: /queue }
    to: { broker: local, topic: queued }
  - name: relay
    from: { broker: local, topic: queued }
    through:
      - headers: { set: { x-note: note } }
    to: { broker: devices, topic: h/relayed }
    deadletter: { broker: local, topic: undeliverable }
  - name: queue-noted
    from: { listener: api, path: /queue-noted }
    through:
      - headers: { set: { x-note: note } }
    to: { broker: local, topic: noted }
  - name: doomed
    from: { broker: local, topic: noted }
    through:
      - transform: '$error("cannot handle " & n)'
    to: { broker: local, topic: handled }
    deadletter: { broker: devices, topic: h/dead }
  - name: undeliverable
    from: { broker: local, topic: undeliverable }
    to: { listener: ws, path: /undeliverable, format: envelope }
`;
  });
  const gw = useGateway(() => config);
  before(async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop()]);
  });

  it('refuses an MQTT user property with a control character with 400, and keeps the connection for the next message', async () => {
    const sub = await MosquittoSub.start(mqtt, 'h/#');
    try {
      const bad = await post(gw.url('api', '/mqtt?t=a'), { n: 1 }, { 'x-tab': 'a\tb' });
      assert.equal(bad.status, 400, bad.text);
      assert.equal(bad.body.code, 'EG_INVALID_MESSAGE');
      assert.deepEqual(bad.body.errors, ['header "x-tab": an MQTT 5 user property cannot hold the control character U+0009']);
      // The same connection publishes the next message at once: mosquitto never saw the bad one.
      const good = await post(gw.url('api', '/mqtt?t=b'), { n: 2 }, { 'x-ok': 'yes' });
      assert.equal(good.status, 200, good.text);
      const [got] = await sub.take(1);
      assert.equal(got!.topic, 'h/b');
      assert.equal(got!.userProperties['x-ok'], 'yes');
      // A computed topic with a control character (from the client's query) is refused the same way: the message is invalid, the expression did not fail.
      const topic = await post(gw.url('api', '/mqtt?t=%07'), { n: 3 });
      assert.equal(topic.status, 400, topic.text);
      assert.equal(topic.body.code, 'EG_INVALID_MESSAGE');
      assert.match(topic.body.detail, /^topic expression gave "h\/\\u0007", which is not a topic of broker 'devices': .*cannot hold the control character U\+0007/);
      assert.deepEqual(topic.body.errors, [topic.body.detail]);
      assert.equal((await post(gw.url('api', '/mqtt?t=c'), { n: 4 })).status, 200);
      assert.deepEqual(
        (await sub.take(2)).map((m) => m.topic),
        ['h/b', 'h/c'],
      );
    } finally {
      sub.stop();
    }
  });

  it("does not keep a NATS header value's leading and trailing spaces (MIME-style headers, as documented), and sends the rest as it is", async () => {
    const peer = await RawNats.connect(nats);
    try {
      const sid = await peer.subscribe('h.out');
      assert.equal((await post(gw.url('api', '/nats'), { note: '  padded\tin  ' })).status, 200);
      const [m] = await peer.take(sid, 1);
      assert.equal(m!.headers['x-note'], 'padded\tin');
    } finally {
      peer.close();
    }
  });

  it('refuses a NATS header value with CR/LF with 400 naming the header, not 503', async () => {
    const peer = await RawNats.connect(nats);
    try {
      const sid = await peer.subscribe('h.out');
      const bad = await post(gw.url('api', '/nats'), { note: 'a\r\nInjected: yes' });
      assert.equal(bad.status, 400, bad.text);
      assert.deepEqual(bad.body.errors, ['header "x-note": a NATS header value cannot hold CR or LF']);
      const good = await post(gw.url('api', '/nats'), { note: 'fine' });
      assert.equal(good.status, 200, good.text);
      const [m] = await peer.take(sid, 1);
      assert.equal(m!.headers['x-note'], 'fine');
      assert.equal(m!.headers.Injected ?? m!.headers.injected, undefined);
    } finally {
      peer.close();
    }
  });

  it('dead-letters a consumed message whose header MQTT cannot carry at once, and goes on with the next', async () => {
    const sub = await MosquittoSub.start(mqtt, 'h/relayed');
    const dl = await WsClient.connect(gw.url('ws', '/undeliverable', 'ws'));
    try {
      assert.equal((await post(gw.url('api', '/queue'), { note: 'line\nbreak' })).status, 200);
      assert.equal((await post(gw.url('api', '/queue'), { note: 'plain' })).status, 200);
      const dead = await dl.next();
      assert.deepEqual(dead.value, { note: 'line\nbreak' });
      const error = JSON.parse(dead.headers._eventgate_error);
      assert.equal(error.code, 'EG_INVALID_MESSAGE');
      assert.deepEqual(error.errors, ['header "x-note": an MQTT 5 user property cannot hold the control character U+000A']);
      const [got] = await sub.take(1);
      assert.deepEqual(JSON.parse(got!.payload), { note: 'plain' });
      // A user property longer than an MQTT string holds: it was a 503, retried before its dead-letter (for ever without one).
      assert.equal((await post(gw.url('api', '/queue'), { note: 'y'.repeat(70000) })).status, 200);
      const long = await dl.next();
      assert.deepEqual(JSON.parse(long.headers._eventgate_error).errors, [`header "x-note": an MQTT 5 user property's name and value are at most 65535 bytes each`]);
      // Dead-lettered on its first try: never retried as if the broker were away.
      assert.equal(gw.logs.filter((l) => l.route === 'relay' && l.code === 'EG_BROKER_UNAVAILABLE').length, 0);
    } finally {
      sub.stop();
      dl.close();
    }
  });

  it('dead-letters to MQTT a message with a header MQTT cannot carry, without that header, naming it', async () => {
    const sub = await MosquittoSub.start(mqtt, 'h/dead');
    try {
      assert.equal((await post(gw.url('api', '/queue-noted'), { n: 1, note: 'two\nlines' }, { 'x-trace-me': 'yes' })).status, 200);
      const [dead] = await sub.take(1);
      assert.deepEqual(JSON.parse(dead!.payload), { n: 1, note: 'two\nlines' });
      assert.equal(dead!.userProperties['x-trace-me'], 'yes');
      assert.equal(dead!.userProperties['x-note'], undefined);
      const error = JSON.parse(dead!.userProperties._eventgate_error!);
      assert.equal(error.detail, 'transform failed: cannot handle 1');
      assert.deepEqual(error.droppedHeaders, ['x-note']);
    } finally {
      sub.stop();
    }
  });
});
