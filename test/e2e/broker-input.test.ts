import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { afterGateways, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, mosquittoPub, pikaConsume, pikaDeclareQueue, pikaPublish, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * What other publishers put on the MQTT and AMQP servers a consume route reads: input the gateway
 * does not control. Each message ends delivered, dead-lettered or dropped with a log line, never
 * retried for ever as if a target were down, and the messages behind it still go through.
 */
describe('hostile input from the MQTT and AMQP servers', () => {
  let mqtt: MessageServer;
  let rabbit: MessageServer;
  let nats: MessageServer;
  let hook: WebhookReceiver;

  before(async () => {
    [mqtt, rabbit, nats, hook] = await Promise.all([startMosquitto(), sharedRabbit(), startNats(), WebhookReceiver.start()]);
    await pikaDeclareQueue(rabbit, 'input-copied', 'amq.topic', 'copied');
    // An operator's stream that takes messages of 1 KiB at most, headers included (its max_msg_size).
    const peer = await RawNats.connect(nats);
    try {
      const made = await peer.jsApi('$JS.API.STREAM.CREATE.SIZED', { name: 'SIZED', subjects: ['sized.>'], max_msg_size: 1024, storage: 'file' });
      assert.equal(made.error, undefined, JSON.stringify(made));
    } finally {
      peer.close();
    }
  });
  afterGateways(async () => {
    await Promise.all([mqtt?.stop(), rabbit?.stop(), nats?.stop(), hook?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-input-${process.pid}, reconnectPeriodMs: 200 }
  rabbit: { kind: amqp, url: ${rabbit.url} }
  bus: { kind: nats, servers: ${nats.url}, streams: { SIZED: { subjects: ["sized.>"], declare: false } } }
routes:
  - name: deep-kept
    from: { broker: devices, topic: deep/kept }
    through:
      - transform: '$merge([$, {"seen": true}])'
    to: { http: { url: "${hook.url}/kept" } }
    deadletter: { broker: devices, topic: dead/deep }
  - name: deep-dropped
    from: { broker: devices, topic: deep/dropped }
    through:
      - transform: '$merge([$, {"seen": true}])'
    to: { http: { url: "${hook.url}/dropped" } }
  - name: deep-watched
    from: { broker: devices, topic: deep/watched }
    to: { http: { url: "${hook.url}/watched" } }
  - name: big
    from: { broker: devices, topic: big/in }
    to: { broker: bus, topic: big.out }
  - name: sized
    from: { broker: devices, topic: sized/in }
    to: { broker: bus, topic: sized.out }
  - name: copy
    from: { broker: rabbit, topic: "cp.#" }
    to: { broker: rabbit, topic: copied }
  - name: typed
    from: { broker: rabbit, topic: "typed.#" }
    through:
      - transform: '$headers'
    to: { http: { url: "${hook.url}/typed" } }
`,
  );

  /** Waits until `route` has subscribed: the servers drop what no subscription or binding takes. */
  const ready = (route: string) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);

  /** JSON nested far deeper than JSON.stringify's stack allows: JSON.parse reads it without recursing. */
  const deep = `{"d":${'['.repeat(20000)}${']'.repeat(20000)}}`;

  it('dead-letters at once, as invalid, a payload nested too deeply to be written as JSON, and delivers the next', async () => {
    await ready('deep-kept');
    const dead = await MosquittoSub.start(mqtt, 'dead/deep');
    try {
      await mosquittoPub(mqtt, 'deep/kept', deep);
      await mosquittoPub(mqtt, 'deep/kept', '{"d":1}');
      const [letter] = await dead.take(1);
      const error = JSON.parse(letter!.userProperties._eventgate_error!) as { code: string; status: number; detail: string };
      assert.equal(error.code, 'EG_INVALID_MESSAGE');
      assert.equal(error.status, 400);
      assert.match(error.detail, /nested too deeply/);
      // Byte for byte: the dead-letter copy is the payload as it came, not re-encoded.
      assert.equal(letter!.bytes.toString(), deep);
      await eventuallyRequest(hook, '/kept', (body) => body === '{"d":1,"seen":true}');
      // Not retried first as an outage: the one attempt failed, and nothing was logged as a broker failure.
      assert.equal(gw.logs.filter((l) => l.route === 'deep-kept' && l.code === 'EG_BROKER_UNAVAILABLE').length, 0);
    } finally {
      dead.stop();
    }
  });

  it('drops with an error line such a payload on a route without a dead-letter target, instead of retrying it for ever', async () => {
    await ready('deep-dropped');
    await mosquittoPub(mqtt, 'deep/dropped', deep);
    await mosquittoPub(mqtt, 'deep/dropped', '{"d":2}');
    await eventuallyRequest(hook, '/dropped', (body) => body === '{"d":2,"seen":true}');
    const line = await gw.waitForLog((l) => l.route === 'deep-dropped' && /message dropped/.test(l.msg));
    assert.equal(line.code, 'EG_INVALID_MESSAGE');
  });

  it('delivers such a payload once while the live tap watches the route, showing a note for its value', async () => {
    await ready('deep-watched');
    const tap = await WsClient.connect(`${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=deep-watched`);
    try {
      assert.equal((await tap.next()).type, 'hello');
      await mosquittoPub(mqtt, 'deep/watched', deep);
      const frame = await tap.next(15000);
      assert.equal(frame.outcome, 'delivered');
      assert.match(frame.message.value, /cannot be shown/);
      assert.equal(await eventuallyRequest(hook, '/watched', () => true), deep);
      // The tap's failure to write it made the route give the delivered message back, for the server to send again.
      assert.equal(gw.logs.filter((l) => l.route === 'deep-watched' && /given back/.test(l.msg)).length, 0);
    } finally {
      tap.close();
    }
  });

  it("drops, as too large (413), a message over the NATS server's max_payload, instead of retrying it for ever, and delivers the next", async () => {
    await ready('big');
    const peer = await RawNats.connect(nats);
    try {
      const sid = await peer.subscribe('big.out');
      await mosquittoPub(mqtt, 'big/in', Buffer.alloc(2 * 1024 * 1024, 0x78));
      await mosquittoPub(mqtt, 'big/in', '{"small":true}');
      const [got] = await peer.take(sid, 1);
      assert.equal(got!.payload, '{"small":true}');
      const line = await gw.waitForLog((l) => l.route === 'big' && /message dropped/.test(l.msg));
      assert.equal(line.code, 'EG_PAYLOAD_TOO_LARGE');
      assert.match(String(line.detail), /max_payload 1048576/);
    } finally {
      peer.close();
    }
  });

  // nats-server answers such a publish `message size exceeds maximum allowed` (err_code 10054):
  // taken for an outage (503), the route retried it for ever and nothing behind it went through.
  it("drops, as too large (413), a message over its JetStream stream's max_msg_size, instead of retrying it for ever, and stores the next", async () => {
    await ready('sized');
    const peer = await RawNats.connect(nats);
    try {
      await mosquittoPub(mqtt, 'sized/in', JSON.stringify({ pad: 'x'.repeat(2000) }));
      await mosquittoPub(mqtt, 'sized/in', '{"small":true}');
      await peer.storedAtLeast('SIZED', 1, 15000);
      assert.equal((await peer.storedMessage('SIZED', 1))?.data, '{"small":true}');
      const line = await gw.waitForLog((l) => l.route === 'sized' && /message dropped/.test(l.msg));
      assert.equal(line.code, 'EG_PAYLOAD_TOO_LARGE');
      assert.match(String(line.detail), /larger than its stream takes \(max_msg_size: message size exceeds maximum allowed\)/);
      assert.equal(gw.logs.filter((l) => l.route === 'sized' && l.code === 'EG_BROKER_UNAVAILABLE').length, 0, 'not retried as an outage');
    } finally {
      peer.close();
    }
  });

  it('copies an AMQP message whose timestamp property is past any date, giving it the time it was received, and the next one after it', async () => {
    await ready('copy');
    const before = Math.floor(Date.now() / 1000);
    await pikaPublish(rabbit, 'amq.topic', 'cp.time', [
      { body: '{"n":1}', timestamp: '18446744073709551615' },
      { body: '{"n":2}', timestamp: 1700000000 },
    ]);
    const got = await pikaConsume(rabbit, 'input-copied', 2, 10);
    assert.deepEqual(
      got.map((m) => m.body),
      ['{"n":1}', '{"n":2}'],
    );
    const first = got[0]!.properties.timestamp!;
    assert.ok(first >= before && first <= Math.ceil(Date.now() / 1000), `timestamp ${first} is the time it was received`);
    assert.equal(got[1]!.properties.timestamp, 1700000000);
  });

  it('keeps every AMQP header field type whole: arrays, nested tables, decimals, timestamps, byte arrays', async () => {
    await ready('typed');
    await pikaPublish(rabbit, 'amq.topic', 'typed.one', [
      {
        body: '{}',
        headers: {
          list: ['a', 'b', 3],
          price: { $decimal: '3.14' },
          small: { $decimal: '0.005' },
          at: { $timestamp: 1577934245 },
          raw: { $bytes: Buffer.from('raw').toString('base64') },
          nested: { x: { y: [1, { $bytes: Buffer.from('hi').toString('base64') }, true] }, d: { $decimal: '1.5' }, t: { $timestamp: 1 } },
          flag: true,
          count: 7,
        },
      },
    ]);
    const r = await eventuallyRequest(hook, '/typed', () => true);
    const headers = JSON.parse(r) as Record<string, string>;
    assert.equal(headers.list, '["a","b",3]');
    assert.equal(headers.price, '3.14');
    assert.equal(headers.small, '0.005');
    assert.equal(headers.at, '1577934245');
    assert.equal(headers.raw, 'raw');
    assert.equal(headers.nested, '{"x":{"y":[1,"aGk=",true]},"d":"1.5","t":1}');
    assert.equal(headers.flag, 'true');
    assert.equal(headers.count, '7');
  });

  it("reads a header of a field type amqplib does not know (RabbitMQ's unsigned 64-bit 'L'), where the broker's connection failed on it for ever", async () => {
    await ready('typed');
    await pikaPublish(rabbit, 'amq.topic', 'typed.two', [{ body: '{}', headers: { big: { $uint64: '18446744073709551615' }, inner: [{ $uint64: '5' }], after: 'kept' } }]);
    const headers = JSON.parse(await eventuallyRequest(hook, '/typed', (body) => body.includes('"big"'))) as Record<string, string>;
    assert.equal(headers.big, '18446744073709551615');
    assert.equal(headers.inner, '["5"]');
    assert.equal(headers.after, 'kept');
    // The connection held: the broker never reconnected over it.
    assert.equal(gw.logs.filter((l) => l.msg === 'amqp connection error').length, 0);
  });
});

/** The body of the first request to `path` that `pred` accepts, waiting for it. */
async function eventuallyRequest(hook: WebhookReceiver, path: string, pred: (body: string) => boolean, timeoutMs = 15000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = hook.requests.find((q) => q.url === path && pred(q.body));
    if (r) return r.body;
    if (Date.now() > deadline) throw new Error(`no request to ${path} as expected; got ${JSON.stringify(hook.requests.filter((q) => q.url === path).map((q) => q.body.slice(0, 100)))}`);
    await new Promise((res) => setTimeout(res, 50));
  }
}
