import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { useGateway } from '../helpers/gateway.js';
import { type KafkaCluster, kcatProduce, runProcess, startKafka } from '../helpers/kafka.js';
import { mosquittoPub, pikaDeclareQueue, pikaPublish, RawNats } from '../helpers/peers.js';
import { prng } from '../helpers/prng.js';
import { type MessageServer, startMosquitto, startNats } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const SEED = Number(process.env.FUZZ_SEED ?? 28);

function payloads(rand: () => number): (string | Buffer)[] {
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const out: (string | Buffer)[] = [
    Buffer.from([0xff, 0xfe, 0x80, 0xc0]),
    '',
    'null',
    '"\\ud800"',
    '1e400',
    '-0',
    '{"__proto__":{"a":1}}',
    '{"constructor":{"prototype":{"x":1}}}',
    '['.repeat(5000) + ']'.repeat(5000),
    '{"specversion":1,"id":{},"source":[],"type":null,"data":1}',
    '{"specversion":"1.0","id":"x","source":"s","type":"t","data_base64":"!!"}',
    '{"specversion":"1.0","id":"x","source":"s","type":"t","time":"yesterday","data":1}',
    gzipSync(Buffer.from('{"a":1}')).subarray(0, 12),
    Buffer.from('1f8b0800', 'hex'),
  ];
  for (let i = 0; i < 10; i++) {
    const n = Math.floor(rand() * 40);
    const b = Buffer.alloc(n);
    for (let j = 0; j < n; j++) b[j] = Math.floor(rand() * 256);
    out.push(pick([b, b.toString('latin1'), JSON.stringify({ v: b.toString('latin1'), n: rand() * 1e308 })]));
  }
  return out;
}

describe('fuzzed messages consumed from every broker kind', () => {
  let mqtt: MessageServer;
  let rabbit: MessageServer;
  let nats: MessageServer;
  let kafka: KafkaCluster;
  let hook: WebhookReceiver;

  before(async () => {
    [mqtt, rabbit, nats, kafka, hook] = await Promise.all([startMosquitto(), sharedRabbit(), startNats(), startKafka(), WebhookReceiver.start()]);
    await pikaDeclareQueue(rabbit, 'fz-out-n', 'amq.topic', 'fzout.n');
    await pikaDeclareQueue(rabbit, 'fza-dead', 'amq.topic', 'fza-dead');
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), rabbit?.stop(), nats?.stop(), kafka?.stop(), hook?.stop()]);
  });

  const steps = `
    through:
      - filter: '$not($exists(drop))'
      - transform: '{"v": $, "h": $headers, "ce": $ce, "t": $topic}'
      - validate: { schema: { type: object }, onInvalid: deadletter }`;
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  ws: { kind: websocket, port: 0 }
  api: { kind: http, port: 0 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-fz-${process.pid}, reconnectPeriodMs: 200 }
  rabbit: { kind: amqp, url: ${rabbit.url} }
  bus: { kind: nats, servers: ${nats.url} }
  log: { kind: kafka, brokers: ["${kafka.bootstrap}"], producer: { lingerMs: 1 } }
routes:
  - name: fz-mqtt
    from: { broker: devices, topic: fz/m }${steps}
    to: [ { broker: bus, topic: fz.out.m }, { http: { url: "${hook.url}/m" } }, { listener: ws, path: /m }, { listener: api, path: /m } ]
    deadletter: { broker: devices, topic: fz/dead }
  - name: fz-amqp
    from: { broker: rabbit, topic: "fza.#" }${steps}
    to: [ { broker: log, topic: fz-out-a }, { http: { url: "${hook.url}/a" } }, { listener: ws, path: /a } ]
    deadletter: { broker: rabbit, topic: fza-dead }
  - name: fz-nats
    from: { broker: bus, topic: fz.n }${steps}
    to: [ { broker: rabbit, topic: fzout.n }, { http: { url: "${hook.url}/n" } } ]
    deadletter: { broker: bus, topic: fz.dead }
  - name: fz-kafka
    from: { broker: log, topic: fz-k }${steps}
    to: [ { broker: devices, topic: fz/out/k }, { http: { url: "${hook.url}/k" } }, { listener: api, path: /k } ]
    deadletter: { broker: log, topic: fz-dead }
`,
  );
  const ready = (route: string) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 60000);

  const sentinel = async (path: string, mark: string) => {
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      if (hook.requests.some((r) => r.url === path && r.body.includes(mark))) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(
      `${mark} never reached ${path}; logs:\n${gw.logs
        .slice(-30)
        .map((l) => JSON.stringify(l))
        .join('\n')}`,
    );
  };
  const noCrash = () => {
    const bad = gw.logs.filter((l) => /TypeError|RangeError|ReferenceError|\n\s+at /.test(JSON.stringify(l)));
    assert.deepEqual(bad, []);
    assert.doesNotMatch(gw.stderr(), /TypeError|\n\s+at /);
  };

  it('mqtt', async () => {
    await ready('fz-mqtt');
    const rand = prng(SEED);
    for (const p of payloads(rand)) {
      const userProperties: Record<string, string> = {};
      const names = ['specversion', 'id', 'source', 'type', 'ce_specversion', 'ce_id', 'content-encoding', 'time', 'datacontenttype', 'traceparent', 'x-ü', '__proto__', 'constructor'];
      for (let i = 0; i < 4; i++) userProperties[names[Math.floor(rand() * names.length)]!] = ['1.0', ' ', 'gzip', 'ü', '0.3', 'x'.repeat(300), '{}'][Math.floor(rand() * 7)]!;
      const contentType = ['application/cloudevents+json', 'application/json', 'text/plain; charset=latin1', 'x/y', undefined][Math.floor(rand() * 5)];
      await mosquittoPub(mqtt, 'fz/m', p, { userProperties, ...(contentType === undefined ? {} : { contentType }) });
    }
    // MQTT 5 properties mosquittoPub does not set: a payload format indicator of 1 (UTF-8) on bytes that are not, a response topic, correlation data.
    for (const [props, payload] of [
      [['payload-format-indicator', '1'], Buffer.from([0xc3, 0x28, 0xff])],
      [['response-topic', 'fz/reply'], Buffer.from('{"a":1}')],
      [['correlation-data', 'ü'], Buffer.from('[]')],
      [['message-expiry-interval', '1'], Buffer.from('1')],
    ] as const) {
      // Bytes through printf, as runProcess writes its input as UTF-8.
      const bytes = [...payload].map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');
      const r = await runProcess('bash', ['-c', `printf '${bytes}' | mosquitto_pub -h ${mqtt.host} -p ${mqtt.port} -V mqttv5 -t fz/m -q 1 -s -D publish ${props[0]} '${props[1]}'`]);
      assert.equal(r.code, 0, r.stderr);
    }
    await mosquittoPub(mqtt, 'fz/m', '{"mark":"m-done"}');
    await sentinel('/m', 'm-done');
    noCrash();
  });

  it('amqp', async () => {
    await ready('fz-amqp');
    const rand = prng(SEED + 1);
    const msgs = payloads(rand).map((body, i) => ({
      body,
      headers: [
        { specversion: '1.0', id: { a: [1, { b: 2 }] }, source: { $bytes: 'AAEC' }, type: { $decimal: '3.14' } },
        { ce_specversion: '1.0', ce_id: [1, 2], ce_source: { $timestamp: 12 }, ce_type: 't', ce_time: { $uint64: '18446744073709551615' } },
        { 'content-encoding': 'gzip', '': 'empty', ['x'.repeat(250)]: { $rawTimestamp: '18446744073709551615' } },
        { nested: { deep: { deeper: [[[]]] } }, n: null, b: true, __proto__x: 1 },
      ][i % 4],
      contentType: ['application/cloudevents+json', 'application/json', 'text/plain', undefined][i % 4],
      contentEncoding: i % 3 === 0 ? 'gzip' : undefined,
      timestamp: i % 5 === 0 ? '18446744073709551615' : undefined,
    }));
    await pikaPublish(rabbit, 'amq.topic', 'fza.x', msgs as never);
    await pikaPublish(rabbit, 'amq.topic', 'fza.x', [{ body: '{"mark":"a-done"}' }]);
    await sentinel('/a', 'a-done');
    noCrash();
  });

  it('nats', async () => {
    await ready('fz-nats');
    const rand = prng(SEED + 2);
    const c = await RawNats.connect(nats);
    const raw = (subject: string, head: string, body: Buffer) => {
      const h = Buffer.from(head);
      (c as any).socket.write(`HPUB ${subject} ${h.length} ${h.length + body.length}\r\n`);
      (c as any).socket.write(Buffer.concat([h, body, Buffer.from('\r\n')]));
    };
    const heads = [
      'NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n',
      'NATS/1.0\r\nX:\r\n\r\n',
      'NATS/1.0 503\r\n\r\n',
      'NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 1\r\n\r\n',
      'NATS/1.0\r\nÜ-ä: é\r\n\r\n',
      'NATS/1.0\r\nce_specversion: 1.0\r\nce_id:\r\nce_source: \r\nce_type: t\r\nce_time: nope\r\n\r\n',
      'NATS/1.0\r\nspecversion: 2.0\r\nContent-Type: application/cloudevents+json\r\n\r\n',
      'NATS/1.0\r\ncontent-encoding: gzip\r\n\r\n',
      'NATS/1.0\r\n__proto__: x\r\nconstructor: y\r\n\r\n',
      'NATS/1.0\r\nNats-Msg-Id:\r\nnats-msg-id: a\r\n\r\n',
      'NATS/1.0\r\n\r\n',
      'NATS/1.0\r\nnocolon\r\n\r\n',
    ];
    let i = 0;
    for (const p of payloads(rand)) raw('fz.n', heads[i++ % heads.length]!, Buffer.from(p));
    await c.ping();
    c.publish('fz.n', '{"mark":"n-done"}');
    await c.ping();
    await sentinel('/n', 'n-done');
    noCrash();
  });

  it('kafka', async () => {
    await ready('fz-kafka');
    const rand = prng(SEED + 3);
    const records = payloads(rand).map((p, i) => ({
      value: Buffer.from(p)
        .toString('latin1')
        .replace(/[\n\t]/g, ' '),
      ...(i % 2 ? {} : { key: 'k' }),
      headers: [{ ce_specversion: '1.0', ce_id: '', ce_source: 's', ce_type: 't' }, { 'content-type': 'application/cloudevents+json' }, { 'content-encoding': 'gzip' }, { ü: 'é', e: '' }, {}][
        i % 5
      ] as Record<string, string>,
    }));
    await kcatProduce(kafka.bootstrap, 'fz-k', records, { compression: 'gzip' });
    await kcatProduce(kafka.bootstrap, 'fz-k', [{ value: '{"mark":"k-done"}' }]);
    await sentinel('/k', 'k-done');
    noCrash();
  });
});
