import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { type KafkaCluster, kcatConsume, kcatProduce, startKafka } from '../helpers/kafka.js';
import { MosquittoSub, mosquittoPub, RawNats } from '../helpers/peers.js';
import { type MessageServer, startMosquitto, startNats } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A consumed JSON payload with a number beyond a double (`1e400`, which JSON.parse reads as
 * Infinity), written by independent producers (mosquitto_pub, the NATS protocol by hand, kcat):
 * a route that reads the value refuses it as invalid, naming the number's place, as the HTTP
 * listener refuses such a body; a route that only copies it writes its bytes as they came.
 */
describe('a consumed number beyond a double', () => {
  let mqtt: MessageServer;
  let nats: MessageServer;
  let kafka: KafkaCluster;
  let hook: WebhookReceiver;

  before(async () => {
    [mqtt, nats, kafka, hook] = await Promise.all([startMosquitto(), startNats(), startKafka(), WebhookReceiver.start()]);
  });

  // `{"v": $, ...}` is evaluated by JSONata itself, `{"w": v, ...}` by the fast path (expr/fast-path.ts).
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  ws: { kind: websocket, port: 0 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-huge-${process.pid} }
  bus: { kind: nats, servers: ${nats.url} }
  log: { kind: kafka, brokers: ["${kafka.bootstrap}"], producer: { lingerMs: 1 } }
routes:
  - name: m-read
    from: { broker: devices, topic: huge/m }
    through:
      - transform: '{"v": $, "t": $topic}'
    to: { http: { url: "${hook.url}/m" } }
    deadletter: { broker: devices, topic: huge/dead }
  - name: m-fast
    from: { broker: devices, topic: huge/m }
    through:
      - transform: '{"w": v, "id": id}'
    to: { http: { url: "${hook.url}/m-fast" } }
    deadletter: { broker: devices, topic: huge/dead }
  - name: m-copy
    from: { broker: devices, topic: huge/m }
    to: { broker: devices, topic: huge/copy }
  - name: m-hooked
    from: { broker: devices, topic: huge/h }
    to: { http: { url: "${hook.url}/m-hooked", headers: { x-v: v } } }
    deadletter: { broker: devices, topic: huge/hdead }
  - name: m-lanes
    from: { broker: devices, topic: huge/h }
    to: { http: { url: "${hook.url}/m-lanes", concurrency: 2, orderBy: v } }
    deadletter: { broker: devices, topic: huge/hdead }
  - name: n-read
    from: { broker: bus, topic: huge.n }
    through:
      - transform: '{"v": $, "t": $topic}'
    to: { http: { url: "${hook.url}/n" } }
    deadletter: { broker: bus, topic: huge.dead }
  - name: n-copy
    from: { broker: bus, topic: huge.n }
    to: { broker: bus, topic: huge.copy }
  - name: n-clients
    from: { broker: bus, topic: huge.w }
    to: { listener: ws, path: /w }
  - name: k-read
    from: { broker: log, topic: huge-k, group: k-read }
    through:
      - transform: '{"v": $, "t": $topic}'
    to: { http: { url: "${hook.url}/k" } }
    deadletter: { broker: log, topic: huge-dead }
  - name: k-copy
    from: { broker: log, topic: huge-k, group: k-copy }
    to: { broker: log, topic: huge-copy }
  - name: k-keyed
    from: { broker: log, topic: huge-kk, group: k-keyed }
    to: { broker: log, topic: huge-keyed, key: v }
    deadletter: { broker: log, topic: huge-keyed-dead }
`,
  );
  // After the gateway's own stop (registered first): its consumers commit and leave while the
  // servers still answer, rather than retrying against stopped ones until its drain runs out.
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop(), kafka?.stop(), hook?.stop()]);
  });
  const ready = (...routes: string[]) => Promise.all(routes.map((route) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 60000)));
  const bodies = async (path: string, lastId: string): Promise<unknown[]> => {
    const deadline = Date.now() + 30000;
    const at = () => hook.requests.filter((r) => r.url === path).map((r) => JSON.parse(r.body) as unknown);
    while (!JSON.stringify(at()).includes(`"id":"${lastId}"`)) {
      if (Date.now() > deadline) assert.fail(`${lastId} never reached ${path}: ${JSON.stringify(at())}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return at();
  };
  const reason = (header: string | undefined) => {
    assert.ok(header, 'no _eventgate_error header');
    const why = JSON.parse(header) as { route: string; status: number; code: string; detail: string };
    return { route: why.route, status: why.status, code: why.code, detail: why.detail };
  };

  it('mqtt: refused as invalid where a step reads it (dead-lettered naming /v, as it came), copied byte for byte where nothing does', async () => {
    await ready('m-read', 'm-fast', 'm-copy');
    const dead = await MosquittoSub.start(mqtt, 'huge/dead');
    const copy = await MosquittoSub.start(mqtt, 'huge/copy');
    try {
      await mosquittoPub(mqtt, 'huge/m', '{"id":"big","v":1e400}');
      await mosquittoPub(mqtt, 'huge/m', '{"id":"ok","v":1}');
      assert.deepEqual(await bodies('/m', 'ok'), [{ v: { id: 'ok', v: 1 }, t: 'huge/m' }]);
      // The fast path passed Infinity on, and JSON wrote it as null: {"w":null,"id":"big"}.
      assert.deepEqual(await bodies('/m-fast', 'ok'), [{ w: 1, id: 'ok' }]);
      const letters = await dead.take(2);
      const detail = 'the message has a number too large to represent (over ±1.8e308) at /v';
      assert.deepEqual(
        letters.map((l) => reason(l.userProperties._eventgate_error)).sort((a, b) => a.route.localeCompare(b.route)),
        [
          { route: 'm-fast', status: 400, code: 'EG_INVALID_MESSAGE', detail },
          { route: 'm-read', status: 400, code: 'EG_INVALID_MESSAGE', detail },
        ],
      );
      for (const l of letters) assert.equal(l.bytes.toString(), '{"id":"big","v":1e400}');
      const copied = await copy.take(2);
      assert.deepEqual(
        copied.map((m) => m.bytes.toString()),
        ['{"id":"big","v":1e400}', '{"id":"ok","v":1}'],
      );
    } finally {
      dead.stop();
      copy.stop();
    }
  });

  it('mqtt: a copy to a webhook whose header or orderBy expression reads such a number fails with the expression\'s words (the header was "null"), dead-lettered as it came', async () => {
    await ready('m-hooked', 'm-lanes');
    const dead = await MosquittoSub.start(mqtt, 'huge/hdead');
    try {
      await mosquittoPub(mqtt, 'huge/h', '{"id":"big","v":1e400}');
      await mosquittoPub(mqtt, 'huge/h', '{"id":"ok","v":3}');
      await bodies('/m-hooked', 'ok');
      assert.deepEqual(
        hook.requests.filter((r) => r.url === '/m-hooked').map((r) => [r.headers['x-v'], r.body]),
        [['3', '{"id":"ok","v":3}']],
      );
      assert.deepEqual(await bodies('/m-lanes', 'ok'), [{ id: 'ok', v: 3 }]);
      const letters = await dead.take(2);
      const too = 'the result has a number too large to represent (over ±1.8e308)';
      assert.deepEqual(
        letters.map((l) => reason(l.userProperties._eventgate_error)).sort((a, b) => a.route.localeCompare(b.route)),
        [
          { route: 'm-hooked', status: 500, code: 'EG_EXPRESSION_FAILED', detail: `headers.x-v expression failed: ${too}` },
          { route: 'm-lanes', status: 500, code: 'EG_EXPRESSION_FAILED', detail: `orderBy expression failed: ${too}` },
        ],
      );
      for (const l of letters) assert.equal(l.bytes.toString(), '{"id":"big","v":1e400}');
    } finally {
      dead.stop();
    }
  });

  it('nats: the same, a negative one deep inside named by its JSON pointer', async () => {
    await ready('n-read', 'n-copy');
    const c = await RawNats.connect(nats);
    try {
      const dead = await c.subscribe('huge.dead');
      const copy = await c.subscribe('huge.copy');
      const big = '{"id":"big","a":[1,{"b/c":-1e400}]}';
      c.publish('huge.n', big);
      c.publish('huge.n', '{"id":"ok","a":[]}');
      await c.ping();
      assert.deepEqual(await bodies('/n', 'ok'), [{ v: { id: 'ok', a: [] }, t: 'huge.n' }]);
      const [letter] = await c.take(dead, 1);
      assert.deepEqual(reason(letter!.headers._eventgate_error), {
        route: 'n-read',
        status: 400,
        code: 'EG_INVALID_MESSAGE',
        detail: 'the message has a number too large to represent (over ±1.8e308) at /a/1/b~1c',
      });
      assert.equal(letter!.bytes.toString(), big);
      assert.deepEqual(
        (await c.take(copy, 2)).map((m) => m.bytes.toString()),
        [big, '{"id":"ok","a":[]}'],
      );
    } finally {
      c.close();
    }
  });

  it('nats to WebSocket clients, no steps: refused too (JSON would have sent the number as null), the message after it delivered', async () => {
    await ready('n-clients');
    const client = await WsClient.connect(gw.url('ws', '/w', 'ws'));
    const c = await RawNats.connect(nats);
    try {
      c.publish('huge.w', '{"id":"big","v":1e400}');
      c.publish('huge.w', '{"id":"ok","v":2}');
      await c.ping();
      // Before: {"id":"big","v":null} came first.
      assert.deepEqual(await client.next(), { id: 'ok', v: 2 });
      const refused = await gw.waitForLog((l) => l.route === 'n-clients' && l.code === 'EG_INVALID_MESSAGE', 15000);
      assert.equal(refused.detail, 'the message has a number too large to represent (over ±1.8e308) at /v');
    } finally {
      c.close();
      client.close();
    }
  });

  it('kafka: the same, a whole value that is such a number', async () => {
    await ready('k-read', 'k-copy');
    // One key: one partition, so the copy keeps their order.
    await kcatProduce(kafka.bootstrap, 'huge-k', [
      { key: 'k', value: '1e400' },
      { key: 'k', value: '{"id":"ok"}' },
    ]);
    assert.deepEqual(await bodies('/k', 'ok'), [{ v: { id: 'ok' }, t: 'huge-k' }]);
    const [letter] = await kcatConsume(kafka.bootstrap, 'huge-dead', 1, 30000);
    assert.deepEqual(reason(letter!.headers._eventgate_error), {
      route: 'k-read',
      status: 400,
      code: 'EG_INVALID_MESSAGE',
      detail: 'the message has a number too large to represent (over ±1.8e308)',
    });
    assert.equal(letter!.value, '1e400');
    assert.deepEqual(
      (await kcatConsume(kafka.bootstrap, 'huge-copy', 2, 30000)).map((r) => r.value),
      ['1e400', '{"id":"ok"}'],
    );
  });

  it('kafka: a copy whose key expression reads such a number fails with the expression\'s words (its key was "null"), dead-lettered as it came', async () => {
    await ready('k-keyed');
    await kcatProduce(kafka.bootstrap, 'huge-kk', [
      { key: 'k', value: '{"id":"big","v":1e400}' },
      { key: 'k', value: '{"id":"ok","v":3}' },
    ]);
    const [letter] = await kcatConsume(kafka.bootstrap, 'huge-keyed-dead', 1, 30000);
    assert.deepEqual(reason(letter!.headers._eventgate_error), {
      route: 'k-keyed',
      status: 500,
      code: 'EG_EXPRESSION_FAILED',
      detail: 'key expression failed: the result has a number too large to represent (over ±1.8e308)',
    });
    assert.equal(letter!.value, '{"id":"big","v":1e400}');
    assert.deepEqual(
      (await kcatConsume(kafka.bootstrap, 'huge-keyed', 1, 30000)).map((r) => [r.key, r.value]),
      [['3', '{"id":"ok","v":3}']],
    );
  });
});
