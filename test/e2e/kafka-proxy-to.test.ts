import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { WsClient } from '../helpers/clients.js';
import { eventually, repoRoot, useGateway } from '../helpers/gateway.js';
import {
  claimingHeaders,
  encodedBatch,
  kcatConsumeAll,
  kcatProduce,
  kcatProduceLines,
  producePartitions,
  produceRaw,
  recordBatch,
  runProcess,
  startKafka,
  type KafkaCluster,
} from '../helpers/kafka.js';
import { reloaded } from '../helpers/pipeline.js';
import { scrape } from '../helpers/prometheus.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const { Kafka, logLevel } = kafkajs;

const ORDER_SCHEMA = '{ type: object, required: [id, total], properties: { id: { type: integer }, total: { type: number } } }';
const ORDER = (id: number) => JSON.stringify({ id, total: 12.5 });

const PYTHON_CLIENT = join(repoRoot, 'test', 'kafka', 'python-client.py');

/** What a kafkajs send failed with: the broker's error, also when kafkajs retried it first. */
const failure = (e: { type?: string; retriable?: boolean; cause?: { type?: string; retriable?: boolean } }) => e.cause ?? e;

const values = async (bootstrap: string, topic: string) => (await kcatConsumeAll(bootstrap, topic)).map((r) => r.value);

describe('kafka listener: a route with `to` delivers its topic to its targets instead of upstream', () => {
  let kafka: KafkaCluster;
  let hook: WebhookReceiver;
  let proxy: string;
  const t = { orders: '', copy: '', free: '', beside: '', kept: '', hooked: '', fanned: '', fannedCopy: '', picky: '', picked: '', dlq: '', txn: '', strict: '', raw: '', rawCopy: '' };
  const HOOK_TOKEN = 'tok-5f1d2a9c7e';

  const config = (ordersTo: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
  # Nothing listens there: every publish to it fails after its ack timeout.
  nowhere: { kind: kafka, brokers: ["127.0.0.1:1"], connectionTimeoutMs: 200, producer: { ackTimeoutMs: 200 } }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
  ws: { kind: websocket, host: 127.0.0.1, port: 0 }
routes:
  - name: orders-out
    from: { listener: kafka-in, topic: ${t.orders} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: reject } } ]
${ordersTo ? `    to: [ { broker: cluster, topic: ${t.copy} }, { listener: ws, path: /orders } ]` : ''}
  - name: hooked
    from: { listener: kafka-in, topic: ${t.hooked} }
    to: { http: { url: "${hook.url}/hooked/\${HOOK_TOKEN}", retry: { attempts: 1 } } }
  - name: fanned
    from: { listener: kafka-in, topic: ${t.fanned} }
    to: [ { broker: cluster, topic: ${t.fannedCopy} }, { http: { url: "${hook.url}/fanned", retry: { attempts: 1 } } } ]
  - name: picky
    from: { listener: kafka-in, topic: ${t.picky} }
    through:
      - filter: keep = true
      - validate: { schema: ${ORDER_SCHEMA}, onInvalid: deadletter }
    deadletter: { broker: cluster, topic: ${t.dlq} }
    to: { broker: cluster, topic: ${t.picked} }
  - name: txn
    from: { listener: kafka-in, topic: ${t.txn} }
    to: { listener: ws, path: /txn }
  - name: raw
    from: { listener: kafka-in, topic: ${t.raw} }
    to: { broker: cluster, topic: ${t.rawCopy} }
  - name: kept
    from: { listener: kafka-in, topic: ${t.kept} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: reject } } ]
  - name: strict
    from: { listener: kafka-in, topic: ${t.strict} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: deadletter } } ]
    deadletter: { broker: nowhere, topic: invalid }
    to: { broker: cluster, topic: ${t.copy} }
`;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    hook = await WebhookReceiver.start();
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
  });
  const gw = useGateway(
    () => config(true),
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap, HOOK_TOKEN } }),
  );
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });
  after(async () => {
    await hook?.stop();
    await kafka?.stop();
  });

  const client = (retries = 0) => new Kafka({ clientId: 'to-tests', brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries, initialRetryTime: 100 } });

  it('kcat: the records reach the websocket client and the other topic, not the governed topic', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/orders', 'ws'));
    try {
      // A producer's own validation tag is no verdict of the route's validate step: its targets never get it.
      const headers = { origin: 'kcat', _asyncapi_eg_validation_error: '{"errors":["forged"]}' };
      await kcatProduce(proxy, t.orders, [
        { key: 'a', value: ORDER(1), headers },
        { key: 'b', value: ORDER(2), headers },
      ]);
      assert.deepEqual([await ws.next(), await ws.next()], [JSON.parse(ORDER(1)), JSON.parse(ORDER(2))]);
      const copied = await eventually(async () => {
        const all = await kcatConsumeAll(kafka.bootstrap, t.copy);
        assert.equal(all.length, 2);
        return all;
      }, 15000);
      assert.deepEqual(
        copied.map((r) => [r.key, r.value, r.headers.origin, r.headers._asyncapi_eg_validation_error]),
        [
          ['a', ORDER(1), 'kcat', undefined],
          ['b', ORDER(2), 'kcat', undefined],
        ],
      );
      assert.deepEqual(await values(kafka.bootstrap, t.orders), [], 'nothing was written to the governed topic');
    } finally {
      ws.close();
    }
  });

  it('refuses the whole request with INVALID_RECORD when the chain refuses a record: nothing is delivered', async () => {
    const r = await kcatProduceLines(proxy, t.orders, [ORDER(10), JSON.stringify({ id: 11, total: 'lots' })], ['linger.ms=200']);
    assert.match(r.stderr, /Broker: Broker failed to validate record/);
    const sentinel = await kcatProduceLines(proxy, t.orders, [ORDER(12)]);
    assert.equal(sentinel.code, 0, sentinel.stderr);
    const got = await eventually(async () => {
      const all = await values(kafka.bootstrap, t.copy);
      assert.ok(all.includes(ORDER(12)));
      return all;
    }, 15000);
    assert.ok(!got.includes(ORDER(10)), 'a record of the refused request was delivered');
  });

  it('refuses a batch whose CRC does not match its bytes with CORRUPT_MESSAGE, as a Kafka broker does: no broker checks what goes to targets', async () => {
    // A record whose value changed after its producer computed the batch's CRC (in memory, on the
    // way): a Kafka broker refuses it; the records of a route with `to` reach no broker as sent.
    const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from(ORDER(13)) });
    const corrupted = Buffer.from(batch);
    corrupted.write('7', corrupted.indexOf(ORDER(13)) + ORDER(13).indexOf('13') + 1);
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch: corrupted });
    // CORRUPT_MESSAGE (2), which clients retry (the bytes may have been damaged on the way); earlier releases answered INVALID_RECORD (87).
    assert.equal(answer.errorCode, 2, JSON.stringify(answer));
    assert.match(answer.errorMessage ?? '', /^route 'orders-out' cannot read these records: record batch CRC mismatch \([0-9a-f]{1,8} stored, [0-9a-f]{1,8} computed\)$/);
    // The same batch as its producer wrote it is delivered: only the corrupted one was refused.
    assert.equal((await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch })).errorCode, 0);
    const got = await values(kafka.bootstrap, t.copy);
    assert.ok(got.includes(ORDER(13)), `copy has ${got}`);
    assert.ok(!got.includes(ORDER(17)), 'the corrupted record was delivered');
  });

  it('refuses a record whose header count is below 0 with INVALID_RECORD, as a Kafka broker does, rather than read it as no headers', async () => {
    // Written with the gateway's own codec: a headers list whose length claims -1 and holds none.
    const batch = await encodedBatch([{ attributes: 0, timestampDelta: 0, offsetDelta: 0, key: null, value: Buffer.from(ORDER(14)), headers: claimingHeaders(-1) }]);
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch });
    assert.equal(answer.errorCode, 87, JSON.stringify(answer));
    assert.match(answer.errorMessage ?? '', /route 'orders-out' refused record 0: cannot read the batch: record 0 has a header count of -1/);
    assert.ok(!(await values(kafka.bootstrap, t.copy)).includes(ORDER(14)), 'the record was delivered');
  });

  it('passes the CRC check with every codec librdkafka (kcat) compresses with: the CRC covers the compressed bytes as the producer wrote them', async () => {
    const codecs = ['none', 'gzip', 'snappy', 'lz4', 'zstd'];
    for (const [i, codec] of codecs.entries()) {
      const r = await kcatProduceLines(proxy, t.orders, [ORDER(1000 + 2 * i), ORDER(1001 + 2 * i)], [`compression.codec=${codec}`, 'linger.ms=50']);
      assert.equal(r.code, 0, `${codec}: ${r.stderr}`);
    }
    const got = await values(kafka.bootstrap, t.copy);
    for (let i = 0; i < codecs.length * 2; i++) assert.ok(got.includes(ORDER(1000 + i)), `copy lacks ${ORDER(1000 + i)}`);
  });

  it('refuses acks other than -1, 0 and 1 with INVALID_RECORD, naming them, delivering nothing', async () => {
    const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from(ORDER(15)) });
    const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch, acks: 2 });
    assert.equal(answer.errorCode, 87, JSON.stringify(answer));
    assert.equal(answer.errorMessage, 'acks must be -1 (all), 0 or 1, not 2');
    assert.equal(
      (await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch: recordBatch({ attributes: 0, key: null, value: Buffer.from(ORDER(16)) }) })).errorCode,
      0,
    );
    const got = await values(kafka.bootstrap, t.copy);
    assert.ok(got.includes(ORDER(16)) && !got.includes(ORDER(15)), `copy has ${got}`);
  });

  it('refuses a request naming a partition twice with INVALID_RECORD, delivering nothing: the last entry was delivered twice and the first lost', async () => {
    // No client sends this; a hand-made one may. Kafka keeps the last entry of a partition only.
    const batch = (id: number) => recordBatch({ attributes: 0, key: null, value: Buffer.from(ORDER(id)) });
    /** Partition 0 of `topic` twice in one topic entry; v7 when the request goes upstream (the mock cluster takes Produce up to v7). */
    const twiceInOneEntry = (topic: string, version: number, ids: [number, number]) =>
      producePartitions(proxy, { version, topics: [{ name: topic, partitions: ids.map((id) => ({ index: 0, batch: batch(id) })) }] });
    // v8: the reason in error_message.
    const once = await twiceInOneEntry(t.orders, 8, [18, 19]);
    assert.deepEqual(
      once.map((p) => p.errorCode),
      [87, 87],
      JSON.stringify(once),
    );
    for (const p of once) assert.match(p.errorMessage ?? '', new RegExp(`partition 0 of topic '${t.orders}' appears more than once in this produce request`));
    // In two entries of the topic, beside a topic no route names, which goes upstream all the same.
    const twice = await producePartitions(proxy, {
      version: 7,
      topics: [
        { name: t.orders, partitions: [{ index: 0, batch: batch(20) }] },
        { name: t.beside, partitions: [{ index: 0, batch: batch(22) }] },
        { name: t.orders, partitions: [{ index: 0, batch: batch(21) }] },
      ],
    });
    assert.deepEqual(
      twice.map((p) => [p.topic === t.orders ? 'orders' : 'beside', p.errorCode]),
      [
        ['beside', 0],
        ['orders', 87],
        ['orders', 87],
      ],
    );
    const sentinel = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.orders, partition: 0, batch: batch(23) });
    assert.equal(sentinel.errorCode, 0, JSON.stringify(sentinel));
    const got = await values(kafka.bootstrap, t.copy);
    assert.ok(got.includes(ORDER(23)), `copy has ${got}`);
    for (const id of [18, 19, 20, 21]) assert.ok(!got.includes(ORDER(id)), `record ${id} was delivered: copy has ${got}`);
    assert.deepEqual(await values(kafka.bootstrap, t.beside), [ORDER(22)]);
    // A route without `to` as well: the cluster would keep the last entry and drop the first.
    const upstream = await twiceInOneEntry(t.kept, 7, [24, 25]);
    assert.deepEqual(
      upstream.map((p) => p.errorCode),
      [87, 87],
      JSON.stringify(upstream),
    );
    assert.deepEqual(await values(kafka.bootstrap, t.kept), []);
  });

  it('kafka-python: success with offset -1 (the record is in no partition of the cluster)', async () => {
    const r = await runProcess('/usr/bin/python3', [PYTHON_CLIENT, 'produce', proxy, t.orders, 'none'], `${ORDER(20)}\n${ORDER(21)}\n`, 60000);
    assert.equal(r.code, 0, r.stderr);
    const results = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(results, [
      { ok: true, partition: 0, offset: -1 },
      { ok: true, partition: 0, offset: -1 },
    ]);
    await eventually(async () => {
      const all = await values(kafka.bootstrap, t.copy);
      assert.ok(all.includes(ORDER(20)) && all.includes(ORDER(21)));
    }, 15000);
    assert.deepEqual(await values(kafka.bootstrap, t.orders), []);
  });

  it('kafkajs: a batch to a delivered topic and an ungoverned one gets one answer; the ungoverned records go upstream byte for byte', async () => {
    const ws = await WsClient.connect(gw.url('ws', '/orders', 'ws'));
    const producer = client().producer();
    await producer.connect();
    try {
      const result = await producer.sendBatch({
        topicMessages: [
          { topic: t.orders, messages: [{ key: 'k30', value: ORDER(30) }] },
          { topic: t.free, messages: [{ key: 'free-1', value: 'not json at all', headers: { h: Buffer.from([0xff, 0x00, 0x01]) } }, { value: null as unknown as string }] },
        ],
      });
      const byTopic = Object.fromEntries(result.map((r) => [r.topicName, r]));
      assert.equal(byTopic[t.orders]!.errorCode, 0);
      assert.equal(byTopic[t.orders]!.baseOffset, '-1');
      assert.equal(byTopic[t.free]!.errorCode, 0);
      assert.equal(byTopic[t.free]!.baseOffset, '0');
      assert.deepEqual(await ws.next(), JSON.parse(ORDER(30)));
    } finally {
      await producer.disconnect();
      ws.close();
    }
    const free = await kcatConsumeAll(kafka.bootstrap, t.free);
    assert.equal(free.length, 2);
    assert.equal(free[0]!.key, 'free-1');
    assert.equal(free[0]!.value, 'not json at all');
    assert.equal(free[1]!.value, null);
    // A consumer that reads raw bytes sees the header exactly as sent (kcat shows it as text).
    const consumer = new Kafka({ brokers: kafka.bootstrap.split(','), logLevel: logLevel.NOTHING }).consumer({ groupId: `raw-${t.free}` });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: t.free, fromBeginning: true });
      const header = await new Promise<Buffer>((resolve) => {
        void consumer.run({ eachMessage: async ({ message }) => (message.headers?.h ? resolve(message.headers.h as Buffer) : undefined) });
      });
      assert.deepEqual([...header], [0xff, 0x00, 0x01]);
    } finally {
      await consumer.disconnect();
    }
    await eventually(async () => assert.ok((await values(kafka.bootstrap, t.copy)).includes(ORDER(30))), 15000);
    assert.deepEqual(await values(kafka.bootstrap, t.orders), []);
  });

  it("copies each record's own bytes where no step changed them: binary values, JSON as its producer spelled it, repeated and binary headers", async () => {
    const producer = client().producer();
    await producer.connect();
    const sent = [
      { key: Buffer.from([0xc3, 0x28]), value: Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]), headers: { bin: Buffer.from([0xff, 0xfe]), seen: [Buffer.from('a'), Buffer.from('b')] } },
      { key: null, value: Buffer.from('{ "id" : 7, "total" : 12.50, "big": 12345678901234567890 }'), headers: {} },
    ];
    try {
      await producer.send({ topic: t.raw, acks: -1, messages: sent });
    } finally {
      await producer.disconnect();
    }
    // Read as bytes by a consumer of its own: kcat would show them as text.
    const consumer = new Kafka({ brokers: kafka.bootstrap.split(','), logLevel: logLevel.NOTHING }).consumer({ groupId: `raw-${t.rawCopy}` });
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: t.rawCopy, fromBeginning: true });
      const got: kafkajs.KafkaMessage[] = [];
      await new Promise<void>((resolve) => {
        void consumer.run({ eachMessage: async ({ message }) => void (got.push(message) === sent.length && resolve()) });
      });
      assert.deepEqual(
        got.map((m) => [m.key && [...m.key], m.value && [...m.value]]),
        sent.map((m) => [m.key && [...m.key], [...m.value]]),
      );
      // Before, each was written again from its decoded text: U+FFFD for every byte that is no UTF-8, and the JSON respelled (12.5, the big number rounded).
      const headers = got[0]!.headers!;
      assert.deepEqual([...(headers.bin as Buffer)], [0xff, 0xfe]);
      assert.deepEqual((headers.seen as Buffer[]).map(String), ['a', 'b']);
    } finally {
      await consumer.disconnect();
    }
  });

  it('kafkajs acks=0: no answer, the records are still delivered', async () => {
    const producer = client().producer();
    await producer.connect();
    try {
      await producer.send({ topic: t.orders, acks: 0, messages: [{ value: ORDER(40) }] });
      // The next request on the connection is answered after it: the connection goes on.
      await producer.send({ topic: t.orders, messages: [{ value: ORDER(41) }] });
    } finally {
      await producer.disconnect();
    }
    await eventually(async () => {
      const all = await values(kafka.bootstrap, t.copy);
      assert.ok(all.includes(ORDER(40)) && all.includes(ORDER(41)));
    }, 15000);
  });

  it('answers only once the target answered, and a failing target makes the client see a retriable error', async () => {
    const held: ServerResponse[] = [];
    hook.respond = (_r, res) => held.push(res);
    const producer = client().producer();
    await producer.connect();
    try {
      let settled = false;
      const before = hook.requests.length;
      const sent = producer.send({ topic: t.hooked, messages: [{ value: ORDER(50) }] }).finally(() => (settled = true));
      await hook.received(before + 1);
      assert.equal(settled, false, 'the client was answered before the webhook answered');
      for (const res of held.splice(0)) res.writeHead(500).end('no');
      const err = await sent.then(
        () => undefined,
        (e) => failure(e),
      );
      assert.equal(err?.type, 'NOT_ENOUGH_REPLICAS', String(err));
      assert.equal(err?.retriable, true);
      // kcat (librdkafka) is told the same.
      hook.respond = (_r, res) => res.writeHead(500).end('no');
      const r = await kcatProduceLines(proxy, t.hooked, [ORDER(51)]);
      assert.match(r.stderr, /Not enough in-sync replicas/);
      // With the endpoint back, a retry succeeds.
      hook.respond = (_r, res) => res.end('ok');
      await producer.send({ topic: t.hooked, messages: [{ value: ORDER(52) }] });
      assert.equal(hook.requests.at(-1)!.body, ORDER(52));
    } finally {
      hook.respond = (_r, res) => res.end('ok');
      await producer.disconnect();
    }
    assert.deepEqual(await values(kafka.bootstrap, t.hooked), []);
  });

  it("says in Produce v8's error_message why the target failed, with the config's secrets redacted", async () => {
    hook.respond = (_r, res) => res.writeHead(500).end('no');
    try {
      const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from(ORDER(53)) });
      const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.hooked, partition: 0, batch });
      assert.equal(answer.errorCode, 19, JSON.stringify(answer)); // NOT_ENOUGH_REPLICAS
      assert.match(answer.errorMessage ?? '', /route 'hooked': .*answered 500/);
      assert.ok(!answer.errorMessage!.includes(HOOK_TOKEN), answer.errorMessage!);
    } finally {
      hook.respond = (_r, res) => res.end('ok');
    }
  });

  it('a record a target refuses for good is answered as Kafka answers it, which no client retries: MESSAGE_TOO_LARGE, INVALID_RECORD', async () => {
    // The cluster refuses the route's copy as over its message.max.bytes (413 to an HTTP client).
    await kafka.failRequests(0, 5, 10);
    try {
      const batch = recordBatch({ attributes: 0, key: null, value: Buffer.from(JSON.stringify({ keep: true, id: 60, total: 1 })) });
      const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.picky, partition: 0, batch });
      assert.equal(answer.errorCode, 10, JSON.stringify(answer)); // MESSAGE_TOO_LARGE, as Kafka answers it
      assert.match(answer.errorMessage ?? '', /^route 'picky': the Kafka cluster refused the record as larger than it accepts/);
    } finally {
      await kafka.clearFailures(0);
    }
    // A webhook that refuses the record (a 4xx): refused for good, so a client with retries sends it once.
    hook.respond = (_r, res) => res.writeHead(422).end('not an order we take');
    const producer = client(3).producer();
    await producer.connect();
    try {
      const before = hook.requests.length;
      const err = await producer.send({ topic: t.hooked, messages: [{ value: ORDER(61) }] }).then(
        () => undefined,
        (e) => failure(e),
      );
      assert.equal(err?.type, 'INVALID_RECORD', String(err));
      assert.equal(err?.retriable, false);
      assert.equal(hook.requests.length - before, 1, 'the client sent the refused record again');
    } finally {
      hook.respond = (_r, res) => res.end('ok');
      await producer.disconnect();
    }
    // Beside a record the webhook took: the client reports both failed, so the answer says it was delivered.
    hook.respond = (r, res) => (r.body.includes('"id":63') ? res.writeHead(422).end('not an order we take') : res.end('ok'));
    try {
      const batch = recordBatch({ attributes: 0, key: null, value: [Buffer.from(ORDER(62)), Buffer.from(ORDER(63))] });
      const answer = await produceRaw(proxy, { version: 8, transactionalId: null, topic: t.hooked, partition: 0, batch });
      assert.equal(answer.errorCode, 87, JSON.stringify(answer)); // INVALID_RECORD
      assert.match(answer.errorMessage ?? '', /; records the targets took are delivered all the same \(sending them again delivers them again\)$/);
    } finally {
      hook.respond = (_r, res) => res.end('ok');
    }
  });

  it('a record whose dead-letter topic does not acknowledge makes the request retriable, not refused for good', async () => {
    const r = await kcatProduceLines(proxy, t.strict, [ORDER(56), JSON.stringify({ id: 57, total: 'lots' })], ['linger.ms=200']);
    assert.match(r.stderr, /Not enough in-sync replicas/);
    // A request with only valid records goes through.
    assert.equal((await kcatProduceLines(proxy, t.strict, [ORDER(58)])).code, 0);
    await eventually(async () => assert.ok((await values(kafka.bootstrap, t.copy)).includes(ORDER(58))), 15000);
    assert.ok(!(await values(kafka.bootstrap, t.copy)).includes(ORDER(56)), 'a record of the refused request was delivered');
  });

  it('a batch to a failing target and an ungoverned topic: the ungoverned records are written, the others get the retriable error', async () => {
    hook.respond = (_r, res) => res.writeHead(500).end('no');
    const from = gw.logs.length;
    const producer = client().producer();
    await producer.connect();
    try {
      const err = await producer
        .sendBatch({
          topicMessages: [
            {
              topic: t.hooked,
              messages: [
                { key: 'one-partition', value: ORDER(55) },
                { key: 'one-partition', value: ORDER(54) },
              ],
            },
            { topic: t.free, messages: [{ value: 'beside a failing target' }] },
          ],
        })
        .then(
          () => undefined,
          (e) => failure(e),
        );
      assert.equal(err?.type, 'NOT_ENOUGH_REPLICAS', String(err));
    } finally {
      hook.respond = (_r, res) => res.end('ok');
      await producer.disconnect();
    }
    assert.ok((await values(kafka.bootstrap, t.free)).includes('beside a failing target'));
    assert.deepEqual(await values(kafka.bootstrap, t.hooked), []);
    // One log line per attempt for the two records the target failed alike, not one per record.
    const failed = gw.logs.slice(from).filter((l) => l.route === 'hooked' && l.msg === 'message failed');
    assert.ok(failed.length > 0);
    for (const l of failed) assert.equal(l.records, 2, JSON.stringify(l));
  });

  it('a batch with an invalid record and an ungoverned topic: the ungoverned records are written, the governed ones refused', async () => {
    // kafkajs sends one request per broker with every topic of the batch (one broker here). Before,
    // the invalid record refused the whole request, the topic no route names with it (spec §2:
    // other topics pass through unchanged).
    const producer = client().producer();
    await producer.connect();
    try {
      const err = await producer
        .sendBatch({
          topicMessages: [
            { topic: t.orders, messages: [{ value: ORDER(61) }, { value: JSON.stringify({ id: 62, total: 'lots' }) }] },
            { topic: t.free, messages: [{ value: 'beside an invalid record' }] },
          ],
        })
        .then(
          () => undefined,
          (e) => failure(e),
        );
      assert.equal(err?.type, 'INVALID_RECORD', String(err));
    } finally {
      await producer.disconnect();
    }
    assert.ok((await values(kafka.bootstrap, t.free)).includes('beside an invalid record'), 'the record of the topic no route names was not written');
    for (const topic of [t.copy, t.orders]) assert.ok(!(await values(kafka.bootstrap, topic)).includes(ORDER(61)), `a record of the refused topic is in ${topic}`);
  });

  it('a fan-out that one target failed is a retriable error that says the others took the record', async () => {
    hook.respond = (_r, res) => res.writeHead(503).end('busy');
    const producer = client().producer();
    await producer.connect();
    try {
      const err = await producer.send({ topic: t.fanned, messages: [{ value: ORDER(60) }] }).then(
        () => undefined,
        (e) => failure(e),
      );
      assert.equal(err?.type, 'NOT_ENOUGH_REPLICAS_AFTER_APPEND', String(err));
      assert.equal(err?.retriable, true);
    } finally {
      hook.respond = (_r, res) => res.end('ok');
      await producer.disconnect();
    }
    // The broker target took it (as an HTTP fan-out's 503 says); a client retry would send it there again.
    await eventually(async () => assert.deepEqual(await values(kafka.bootstrap, t.fannedCopy), [ORDER(60)]), 15000);
    await gw.waitForLog((l) => l.route === 'fanned' && l.msg === 'message failed');
  });

  it('filters and dead-letters records of a route with `to`; the client is told NONE for all of them', async () => {
    const keep = JSON.stringify({ keep: true, id: 70, total: 1 });
    const drop = JSON.stringify({ keep: false, id: 71, total: 1 });
    const invalid = JSON.stringify({ keep: true, id: 72, total: 'lots' });
    const r = await kcatProduceLines(proxy, t.picky, [keep, drop, invalid], ['linger.ms=200']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => assert.deepEqual(await values(kafka.bootstrap, t.picked), [keep]), 15000);
    const dead = await eventually(async () => {
      const all = await kcatConsumeAll(kafka.bootstrap, t.dlq);
      assert.equal(all.length, 1);
      return all;
    }, 15000);
    assert.equal(dead[0]!.value, invalid);
    assert.ok(dead[0]!.headers._eventgate_error);
    assert.deepEqual(await values(kafka.bootstrap, t.picky), []);
  });

  it('refuses transactional produce to a topic whose route has `to` with INVALID_RECORD, and logs why', async () => {
    // kafkajs cannot start a transaction against the mock cluster (its InitProducerId names broker
    // 0), and neither kcat nor kafka-python writes transactions: a transactional producer's Produce
    // request (v8, transactional batch) is framed here, as such a producer sends it.
    const batch = recordBatch({ attributes: 0x10, key: null, value: Buffer.from(ORDER(80)), producerId: 7n, producerEpoch: 0, baseSequence: 0 });
    // The bootstrap port reaches the one broker, which leads every partition.
    const answer = await produceRaw(proxy, { version: 8, transactionalId: `tx-${t.txn}`, topic: t.txn, partition: 0, batch });
    assert.equal(answer.errorCode, 87, JSON.stringify(answer));
    assert.match(answer.errorMessage ?? '', /route 'txn' .* not when a transaction commits/);
    const line = await gw.waitForLog((l) => l.msg === 'transactional produce refused: a route with to delivers records at once, not at commit');
    assert.deepEqual(line.routes, ['txn']);
  });

  it('an idempotent producer (kcat) produces to a route with `to`', async () => {
    const r = await kcatProduceLines(proxy, t.orders, [ORDER(90), ORDER(91)], ['enable.idempotence=true']);
    assert.equal(r.code, 0, r.stderr);
    await eventually(async () => {
      const all = await values(kafka.bootstrap, t.copy);
      assert.ok(all.includes(ORDER(90)) && all.includes(ORDER(91)));
    }, 15000);
  });

  it('counts each record once by what its delivery did in /metrics', async () => {
    const s = await scrape(gw.adminUrl);
    const count = (route: string, outcome: string) => s.value('eventgate_route_messages_total', { route, outcome }) ?? 0;
    assert.ok(count('orders-out', 'delivered') >= 8, 'delivered records counted');
    assert.ok(count('orders-out', 'invalid') >= 1, 'the refused record counted');
    assert.ok(count('hooked', 'failed') >= 2, 'records a target failed counted');
    assert.equal(count('picky', 'filtered'), 1);
    assert.equal(count('picky', 'deadlettered'), 1);
    assert.equal(count('picky', 'delivered'), 1);
  });

  it('removing `to` is a reload of the route: the same client connection then writes to the topic upstream', async () => {
    const producer = client().producer();
    await producer.connect();
    try {
      await producer.send({ topic: t.orders, messages: [{ value: ORDER(100) }] });
      const connections = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').connections as number;
      const line = await gw.reconfigure(config(false));
      assert.ok(reloaded(line), JSON.stringify(line));
      const [meta] = await producer.send({ topic: t.orders, messages: [{ value: ORDER(101) }] });
      assert.equal(meta!.baseOffset, '0', 'written to the topic upstream');
      assert.equal((await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').connections, connections, 'the reload kept the client connections');
      const back = await gw.reconfigure(config(true));
      assert.ok(reloaded(back), JSON.stringify(back));
      const [again] = await producer.send({ topic: t.orders, messages: [{ value: ORDER(102) }] });
      assert.equal(again!.baseOffset, '-1', 'delivered to the targets again');
    } finally {
      await producer.disconnect();
    }
    assert.deepEqual(await values(kafka.bootstrap, t.orders), [ORDER(101)]);
    await eventually(async () => {
      const all = await values(kafka.bootstrap, t.copy);
      assert.ok(all.includes(ORDER(100)) && all.includes(ORDER(102)) && !all.includes(ORDER(101)));
    }, 15000);
  });
});
