import assert from 'node:assert/strict';
import { connect, createServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { eventually, repoRoot, startGateway, useGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { kcatConsumeAll, kcatProduce, kcatProduceLines, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { reloaded } from '../helpers/pipeline.js';
import { scrape } from '../helpers/prometheus.js';

const { Kafka, logLevel, CompressionTypes } = kafkajs;

const ORDER_SCHEMA = '{ type: object, required: [id, total], properties: { id: { type: integer }, total: { type: number } } }';
/** A discriminated oneOf whose branches are $refs: an invalid Dog's errors are the Dog branch's only (spec-checklist 2423, 2687). */
const PET_SCHEMA =
  '{ discriminator: petType, oneOf: [{ $ref: "#/$defs/Cat" }, { $ref: "#/$defs/Dog" }], $defs: { Cat: { type: object, required: [petType, meows], properties: { petType: { const: Cat }, meows: { type: boolean } } }, Dog: { type: object, required: [petType], properties: { petType: { const: Dog }, barks: { type: integer, minimum: 0 } } } } }';
const VALID = (id: number) => JSON.stringify({ id, total: 12.5 });
const INVALID = (id: number) => JSON.stringify({ id, total: 'lots' });

const run = (cmd: string, args: string[], input = '', timeoutMs = 30000) => runProcess(cmd, args, input, timeoutMs);

const PYTHON_CLIENT = join(repoRoot, 'test', 'kafka', 'python-client.py');

async function pythonProduce(bootstrap: string, topic: string, values: string[], compression = 'none'): Promise<{ ok: boolean; error?: string }[]> {
  const r = await run('/usr/bin/python3', [PYTHON_CLIENT, 'produce', bootstrap, topic, compression], values.map((v) => `${v}\n`).join(''), 60000);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
}

async function pythonConsume(bootstrap: string, topic: string, group: string, count: number): Promise<string[]> {
  const r = await run('/usr/bin/python3', [PYTHON_CLIENT, 'consume', bootstrap, topic, group, String(count)], '', 60000);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.trim()) as string[];
}

/** Whether `port` can be listened on at 127.0.0.1 now (released at once). */
async function canListen(port: number): Promise<boolean> {
  const server = createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (ok) await new Promise((resolve) => server.close(resolve));
  return ok;
}

const values = async (bootstrap: string, topic: string) => (await kcatConsumeAll(bootstrap, topic)).map((r) => r.value);

describe('kafka listener: Kafka clients produce and consume through the gateway', () => {
  let kafka: KafkaCluster;
  let proxy: string;
  const t = { orders: '', tagged: '', taggedThen: '', free: '', idem: '', reload: '', shaped: '', stream: '', big: '', pets: '' };

  const config = (reloadMode: 'reject' | 'tag') => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: orders-in
    from: { listener: kafka-in, topic: ${t.orders} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: reject } } ]
  - name: big-in
    from: { listener: kafka-in, topic: ${t.big} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: reject } } ]
  - name: tagged-in
    from: { listener: kafka-in, topic: ${t.tagged} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: tag } } ]
  - name: tagged-then-in
    from: { listener: kafka-in, topic: ${t.taggedThen} }
    through:
      - validate: { schema: ${ORDER_SCHEMA}, onInvalid: tag }
      # No fast path: the chain awaits JSONata for each record, the next records' chains begun meanwhile.
      - transform: '$merge([$, {"checked": true}])'
  - name: pets-in
    from: { listener: kafka-in, topic: ${t.pets} }
    through: [ { validate: { schema: ${PET_SCHEMA}, onInvalid: tag } } ]
  - name: idempotent-in
    from: { listener: kafka-in, topic: ${t.idem} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: tag } } ]
  - name: shaped-in
    from: { listener: kafka-in, topic: ${t.shaped} }
    through:
      - transform: '{ "id": id, "total": total, "currency": "EUR" }'
      - headers: { set: { shaped-by: '"eventgate"' }, remove: [secret] }
  - name: reload-in
    from: { listener: kafka-in, topic: ${t.reload} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: ${reloadMode} } } ]
`;

  before(async () => {
    kafka = await startKafka({ brokers: 3 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], k === 'idem' || k === 'taggedThen' ? 1 : 3);
    }
  });
  // Registered after the before() that starts the cluster, so the config can name its topics.
  const gw = useGateway(
    () => config('reject'),
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });

  after(async () => {
    await kafka?.stop();
  });

  describe('kcat (librdkafka)', () => {
    it('produces valid records that the cluster has', async () => {
      await kcatProduce(proxy, t.orders, [
        { key: 'a', value: VALID(1) },
        { key: 'b', value: VALID(2) },
      ]);
      const got = await values(kafka.bootstrap, t.orders);
      assert.ok(got.includes(VALID(1)) && got.includes(VALID(2)), `cluster has ${got}`);
    });

    it('is told INVALID_RECORD for an invalid record, which the cluster never gets', async () => {
      const r = await kcatProduceLines(proxy, t.orders, [INVALID(101)]);
      // librdkafka's text for error 87 (INVALID_RECORD).
      assert.match(r.stderr, /Broker: Broker failed to validate record/);
      assert.ok(!(await values(kafka.bootstrap, t.orders)).includes(INVALID(101)));
    });

    it('judges records as ajv judges their decoded values, whether or not they can be judged from their bytes', async () => {
      // Plain records are judged from their bytes; escaped and repeated names, and odd numbers, are decoded first.
      // A repeated name is invalid whichever value passes (JSON.parse keeps the last, other readers the first).
      const valid = ['{"id":30,"total":1}', '{"i\\u0064":31,"total":1}', '{"id":32.0,"total":1e2}', ' {"id":34,"total":-0}\t'];
      const r = await kcatProduceLines(proxy, t.orders, valid);
      assert.equal(r.code, 0, r.stderr);
      for (const invalid of ['{"id":"x","id":33,"total":1}', '{"id":35,"id":"x","total":1}', '{"id":36,"total":1}\u00a0', '{"id":37,"total":1', '{"id":38,"total":1,"total":"x"}']) {
        const refused = await kcatProduceLines(proxy, t.orders, [invalid]);
        assert.match(refused.stderr, /Broker: Broker failed to validate record/, invalid);
      }
      const got = await values(kafka.bootstrap, t.orders);
      // The valid ones as their producer wrote them, byte for byte; none of the refused ones.
      for (const v of valid) assert.ok(got.includes(v), `cluster lacks ${v}`);
      for (const id of [33, 35, 36, 37, 38]) assert.ok(!got.some((v) => v?.includes(`"id":${id}`)), `cluster has record ${id}`);
    });

    it('passes a topic no route names through whole: requests far larger than one read, acks=1 and acks=0', async () => {
      // Produce requests to one ungoverned topic go upstream as their bytes arrive (streamed, not read whole).
      const topic = t.stream;
      const many = Array.from({ length: 30000 }, (_, i) => JSON.stringify({ i, pad: 'x'.repeat(80 + (i % 40)) }));
      const r = await kcatProduceLines(proxy, topic, many, ['linger.ms=50', 'batch.size=1000000']);
      assert.equal(r.code, 0, r.stderr);
      const r0 = await kcatProduceLines(proxy, topic, ['acks0-a', 'acks0-b'], ['acks=0']);
      assert.equal(r0.code, 0, r0.stderr);
      // acks=0 gets no answer: a sentinel produced after them says when to look.
      assert.equal((await kcatProduceLines(proxy, topic, ['sentinel'])).code, 0);
      const got = await eventually(async () => {
        const all = await values(kafka.bootstrap, topic);
        assert.ok(all.includes('sentinel'));
        return all;
      });
      const sent = [...many, 'acks0-a', 'acks0-b', 'sentinel'];
      assert.equal(got.length, sent.length, 'every record once');
      assert.deepEqual([...got].sort(), [...sent].sort());
    });

    it('checks produce requests far larger than one read, one after another, and passes each on as its producer wrote it', async () => {
      // A governed request is read whole into memory of its own, which holds a later request once this one is written upstream.
      const many = Array.from({ length: 12000 }, (_, i) => JSON.stringify({ id: i, total: i / 4, note: String.fromCharCode(97 + (i % 26)).repeat(100 + (i % 50)) }));
      const r = await kcatProduceLines(proxy, t.big, many, ['linger.ms=20', 'batch.size=200000']);
      assert.equal(r.code, 0, r.stderr);
      const got = await values(kafka.bootstrap, t.big);
      assert.equal(got.length, many.length, 'every record once');
      assert.deepEqual([...got].sort(), [...many].sort());
    });

    it('consumes in a group through the proxy', async () => {
      const topic = t.free;
      await kcatProduce(kafka.bootstrap, topic, [{ value: 'g1' }, { value: 'g2' }, { value: 'g3' }]);
      const r = await run('kcat', ['-b', proxy, '-G', `kcat-${topic}`, '-X', 'auto.offset.reset=earliest', '-c', '3', '-q', '-f', '%s\n', topic], '', 60000);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n').sort(), ['g1', 'g2', 'g3']);
    });

    for (const codec of ['gzip', 'snappy', 'lz4', 'zstd']) {
      it(`sends ${codec} batches that a tagging route rebuilds in ${codec}`, async () => {
        // librdkafka sends a batch uncompressed when compressing does not make it smaller: these compress well.
        const padding = 'x'.repeat(200);
        const valid200 = JSON.stringify({ id: 200, total: 1, note: `${codec} ${padding}` });
        const invalid201 = JSON.stringify({ id: 201, total: 'lots', note: `${codec} ${padding}` });
        const r = await kcatProduceLines(proxy, t.tagged, [valid200, invalid201, valid200], [`compression.codec=${codec}`, 'linger.ms=50']);
        assert.equal(r.code, 0, r.stderr);
        const got = await kcatConsumeAll(kafka.bootstrap, t.tagged);
        const valid = got.find((g) => g.value === valid200);
        const invalid = got.find((g) => g.value === invalid201);
        assert.ok(valid && invalid, `cluster has ${got.map((g) => g.value)}`);
        assert.equal(valid.headers._asyncapi_eg_validation_error, undefined);
        const tag = JSON.parse(invalid.headers._asyncapi_eg_validation_error!) as { ts: string; errors: string[] };
        assert.match(tag.errors.join(), /total/);
      });
    }

    it('keeps an idempotent producer working through a route that rebuilds its batches', async () => {
      const records = Array.from({ length: 200 }, (_, i) => (i % 7 === 3 ? INVALID(i) : VALID(i)));
      const r = await kcatProduceLines(proxy, t.idem, records, ['enable.idempotence=true', 'linger.ms=20', 'batch.num.messages=25']);
      assert.equal(r.code, 0, r.stderr);
      const got = await kcatConsumeAll(kafka.bootstrap, t.idem);
      // One partition: every record once, in the order produced.
      assert.deepEqual(
        got.map((g) => g.value),
        records,
      );
      assert.equal(got.filter((g) => g.headers._asyncapi_eg_validation_error !== undefined).length, records.filter((v) => v.includes('lots')).length);
    });

    it("drops a producer's own _asyncapi_eg_validation_error from the records of a batch it rebuilds, and rebuilds a batch that passes whole for it (1363)", async () => {
      const forged = { _asyncapi_eg_validation_error: '{"errors":["forged"]}', _ASYNCAPI_EG_VALIDATION_ERROR: 'forged too' };
      const tags = (headers: Record<string, string>) => Object.keys(headers).filter((name) => /^_asyncapi_eg_validation_error$/i.test(name));
      // One key, one partition; one batch (linger) with an invalid record: rebuilt to tag it.
      await kcatProduce(
        proxy,
        t.tagged,
        [VALID(220), INVALID(221), VALID(222)].map((value) => ({ key: 'forged', value, headers: forged })),
        { lingerMs: 50 },
      );
      await kcatProduce(proxy, t.tagged, [{ key: 'whole', value: VALID(223), headers: forged }]);
      const got = await kcatConsumeAll(kafka.bootstrap, t.tagged);
      const at = (value: string) => got.find((g) => g.value === value)!.headers;
      assert.deepEqual(tags(at(VALID(220))), []);
      assert.deepEqual(tags(at(VALID(222))), []);
      assert.deepEqual(tags(at(INVALID(221))), ['_asyncapi_eg_validation_error']);
      assert.match(JSON.parse(at(INVALID(221))._asyncapi_eg_validation_error!).errors.join(), /total/);
      // A batch whose records all pass is rebuilt for it too (1363); it went on as the client wrote it.
      assert.deepEqual(tags(at(VALID(223))), []);
    });

    it('keeps the tag of each invalid record of a batch when a later step of the chain awaits (a context per record)', async () => {
      // One partition, one batch (linger): invalid records before and between valid ones.
      const sent = [INVALID(230), VALID(231), INVALID(232), VALID(233)];
      const r = await kcatProduceLines(proxy, t.taggedThen, sent, ['linger.ms=50']);
      assert.equal(r.code, 0, r.stderr);
      const got = await kcatConsumeAll(kafka.bootstrap, t.taggedThen);
      assert.deepEqual(
        got.map((g) => [JSON.parse(g.value!).id, JSON.parse(g.value!).checked, g.headers._asyncapi_eg_validation_error !== undefined]),
        [
          [230, true, true],
          [231, true, false],
          [232, true, true],
          [233, true, false],
        ],
      );
      assert.deepEqual(JSON.parse(got[0]!.headers._asyncapi_eg_validation_error!).errors, ['/total: must be number']);
    });

    it("tags a record with its discriminated oneOf's tagged branch's errors only, the branches being $refs (spec-checklist 2427, 2687)", async () => {
      const dog = JSON.stringify({ petType: 'Dog', barks: -1 });
      const cat = JSON.stringify({ petType: 'Cat', meows: true });
      const r = await kcatProduceLines(proxy, t.pets, [dog, cat], ['linger.ms=50']);
      assert.equal(r.code, 0, r.stderr);
      const got = await kcatConsumeAll(kafka.bootstrap, t.pets);
      const at = (value: string) => got.find((g) => g.value === value)!.headers;
      assert.deepEqual(JSON.parse(at(dog)._asyncapi_eg_validation_error!).errors, ['/barks: must be >= 0']);
      assert.equal(at(cat)._asyncapi_eg_validation_error, undefined);
    });
  });

  describe('kafkajs 2.2.4', () => {
    const client = () => new Kafka({ clientId: 'kafkajs-through-proxy', brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 100 } });

    it('produces valid records, and gets INVALID_RECORD for an invalid one', async () => {
      const producer = client().producer();
      await producer.connect();
      try {
        await producer.send({ topic: t.orders, messages: [{ value: VALID(300) }] });
        const err = await producer.send({ topic: t.orders, messages: [{ value: INVALID(301) }] }).then(
          () => undefined,
          (e: { type?: string }) => e,
        );
        assert.equal(err?.type, 'INVALID_RECORD');
        await producer.send({ topic: t.orders, compression: CompressionTypes.GZIP, messages: [{ value: VALID(302) }, { value: VALID(303) }] });
      } finally {
        await producer.disconnect();
      }
      const got = await values(kafka.bootstrap, t.orders);
      assert.ok(got.includes(VALID(300)) && got.includes(VALID(302)) && got.includes(VALID(303)));
      assert.ok(!got.includes(INVALID(301)));
    });

    it('gets no response to acks=0 requests, refused or not, and the connection goes on', async () => {
      const closedByProxy = async () => (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').closedByProxy as number;
      const closedBefore = await closedByProxy();
      const producer = client().producer();
      await producer.connect();
      try {
        await producer.send({ topic: t.orders, acks: 0, messages: [{ value: INVALID(800) }] });
        await producer.send({ topic: t.orders, acks: 0, messages: [{ value: VALID(801) }] });
        // Same connection, acks=all: its response is matched to its own request.
        const [ack] = await producer.send({ topic: t.orders, acks: -1, messages: [{ value: VALID(802) }] });
        assert.equal(ack!.errorCode, 0);
      } finally {
        await producer.disconnect();
      }
      // librdkafka's mock cluster answers acks=0 requests (Kafka does not): the answer is dropped, the connection kept.
      assert.equal(await closedByProxy(), closedBefore);
      const got = await eventually(async () => {
        const all = await values(kafka.bootstrap, t.orders);
        assert.ok(all.includes(VALID(801)) && all.includes(VALID(802)));
        return all;
      }, 15000);
      assert.ok(!got.includes(INVALID(800)));
    });

    it('has its records transformed and their headers edited in a rebuilt batch', async () => {
      const producer = client().producer();
      await producer.connect();
      try {
        await producer.send({
          topic: t.shaped,
          compression: CompressionTypes.GZIP,
          messages: [{ key: 'k', value: VALID(700), headers: { secret: 's3cret', keep: 'me' } }, { value: 'not json at all' }],
        });
      } finally {
        await producer.disconnect();
      }
      const got = await kcatConsumeAll(kafka.bootstrap, t.shaped);
      const first = got.find((g) => g.key === 'k')!;
      assert.deepEqual(JSON.parse(first.value!), { id: 700, total: 12.5, currency: 'EUR' });
      assert.deepEqual(first.headers, { keep: 'me', 'shaped-by': 'eventgate' });
      assert.equal(got.length, 2);
    });

    it('consumes in a group through the proxy', async () => {
      const topic = kafka.topic('kafkajs-group');
      await kafka.createTopic(topic, 3);
      await kcatProduce(kafka.bootstrap, topic, [{ value: 'k1' }, { value: 'k2' }]);
      const consumer = client().consumer({ groupId: `kafkajs-${topic}`, sessionTimeout: 6000, rebalanceTimeout: 6000, maxWaitTimeInMs: 100 });
      await consumer.connect();
      const got: string[] = [];
      try {
        await consumer.subscribe({ topic, fromBeginning: true });
        await new Promise<void>((resolve) => {
          void consumer.run({
            eachMessage: async ({ message }) => {
              got.push(message.value!.toString());
              if (got.length === 2) resolve();
            },
          });
        });
      } finally {
        await consumer.disconnect();
      }
      assert.deepEqual(got.sort(), ['k1', 'k2']);
    });
  });

  describe("Debian's python3-kafka", () => {
    it('produces valid records (plain and gzip), and an invalid one fails without reaching the cluster', async () => {
      const plain = await pythonProduce(proxy, t.orders, [VALID(400), INVALID(401)]);
      assert.equal(plain[0]!.ok, true);
      // kafka-python 2.0.2 predates error 87 and names it UnknownError; it does not retry it.
      assert.equal(plain[1]!.ok, false);
      assert.match(plain[1]!.error!, /UnknownError|InvalidRecord/);
      const zipped = await pythonProduce(proxy, t.tagged, [VALID(402), INVALID(403)], 'gzip');
      assert.deepEqual(
        zipped.map((z) => z.ok),
        [true, true],
      );
      const orders = await values(kafka.bootstrap, t.orders);
      assert.ok(orders.includes(VALID(400)) && !orders.includes(INVALID(401)));
      const tagged = await kcatConsumeAll(kafka.bootstrap, t.tagged);
      assert.ok(tagged.find((g) => g.value === INVALID(403))?.headers._asyncapi_eg_validation_error);
    });

    it('consumes in a group through the proxy', async () => {
      const topic = kafka.topic('python-group');
      await kafka.createTopic(topic, 3);
      await kcatProduce(kafka.bootstrap, topic, [{ value: 'p1' }, { value: 'p2' }]);
      assert.deepEqual((await pythonConsume(proxy, topic, `python-${topic}`, 2)).sort(), ['p1', 'p2']);
    });
  });

  it('closes a client that sends garbage without disturbing a good client on the same listener, and counts both in /metrics', async () => {
    const before = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').closedByProxy as number;
    const closedTotal = 'eventgate_kafka_listener_closed_connections_total';
    const scrapedBefore = await scrape(gw.adminUrl);
    assert.equal(scrapedBefore.types.get(closedTotal), 'counter');
    const producer = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    // The producer's connections stay open until it disconnects: the gauge counts them.
    const open = await scrape(gw.adminUrl);
    assert.equal(open.types.get('eventgate_kafka_listener_connections'), 'gauge');
    assert.ok((open.value('eventgate_kafka_listener_connections', { listener: 'kafka-in' }) ?? 0) >= 1, open.text);
    const [host, port] = proxy.split(':');
    const garbage = connect(Number(port), host!);
    const closed = new Promise<void>((resolve) => garbage.on('close', () => resolve()));
    garbage.on('error', () => {});
    garbage.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4])); // a 2 GiB frame
    await closed;
    const bad = connect(Number(port), host!);
    bad.on('error', () => {});
    const badClosed = new Promise<void>((resolve) => bad.on('close', () => resolve()));
    bad.write(Buffer.from([0, 0, 0, 3, 0xde, 0xad, 0xbe])); // too short for a request header
    await badClosed;
    await producer.send({ topic: t.orders, messages: [{ value: VALID(500) }] });
    await producer.disconnect();
    assert.ok((await values(kafka.bootstrap, t.orders)).includes(VALID(500)));
    const status = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
    assert.equal(status.closedByProxy, before + 2);
    // Named as the setting a user would change, not as a frame's size and limit.
    await gw.waitForLog((l) => l.msg === 'kafka client connection closed: bad request' && l.reason === "a request of 2147483647 bytes, over the listener's maxRequestBytes (104857600)");
    // By reason, a fixed set (the log line has the detail): both bad requests, no upstream problem.
    const after = await scrape(gw.adminUrl);
    const closedBy = (s: typeof after, reason: string) => s.value(closedTotal, { listener: 'kafka-in', reason });
    assert.equal(closedBy(after, 'bad_request'), closedBy(scrapedBefore, 'bad_request')! + 2, after.text);
    assert.equal(closedBy(after, 'upstream'), closedBy(scrapedBefore, 'upstream'));
    assert.deepEqual(
      after
        .series(closedTotal)
        .map((x) => x.labels.reason)
        .sort(),
      ['bad_request', 'upstream'],
    );
  });

  it('names TLS and HTTP when a client speaks them to the (plaintext) listener, rather than a frame size', async () => {
    const [host, port] = proxy.split(':');
    // A client set to security.protocol=ssl: its ClientHello, read as Kafka, is a 369 MB frame.
    const tlsClient = tlsConnect({ host, port: Number(port), rejectUnauthorized: false });
    const handshake = await new Promise<string>((resolve) => {
      tlsClient.once('secureConnect', () => resolve('secure'));
      tlsClient.once('error', (err) => resolve(err.message));
    });
    tlsClient.destroy();
    assert.notEqual(handshake, 'secure');
    const tlsLine = await gw.waitForLog((l) => l.msg === 'kafka client connection closed: bad request' && /speaks TLS/.test(String(l.reason)));
    assert.match(String(tlsLine.reason), /this listener has no `tls`: connect with security.protocol=plaintext/);
    const http = await fetch(`http://${proxy}/`).then(
      (r) => `status ${r.status}`,
      (err: Error) => err.message,
    );
    assert.equal(http, 'fetch failed');
    await gw.waitForLog((l) => l.msg === 'kafka client connection closed: bad request' && /speaks HTTP, not the Kafka protocol/.test(String(l.reason)));
  });

  it('shows its port for every broker and its connections in /admin/status', async () => {
    const status = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
    assert.equal(status.kind, 'kafka');
    assert.equal(status.ports.length, 3);
    assert.deepEqual(
      status.ports.map((p: { nodeId: number }) => p.nodeId),
      [1, 2, 3],
    );
    // The cluster's addresses came from the environment (KAFKA_BOOTSTRAP): status redacts them like any secret.
    for (const p of status.ports) assert.equal(p.upstream, '[redacted]');
    assert.equal(new Set(status.ports.map((p: { port: number }) => p.port)).size, 3);
    assert.ok(!JSON.stringify(status).includes(kafka.bootstrap.split(',')[0]!));
    assert.equal(typeof status.connections, 'number');
  });

  it('skips a broker port another listener holds (port + 1 + n) rather than naming it in metadata', async () => {
    // The gateway's own http listener on the kafka listener's port + 1, where broker 1's port would be.
    let port = 0;
    for (let tries = 0; tries < 20 && port === 0; tries++) {
      const p = await freePort();
      if (await canListen(p + 1)) port = p;
    }
    assert.ok(port > 0, 'no free pair of ports');
    const other = await startGateway(
      `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  web: { kind: http, host: 127.0.0.1, port: ${port + 1} }
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: ${port} }
routes:
  - name: orders-in
    from: { listener: kafka-in, topic: ${t.orders} }
    through: [ { validate: { schema: ${ORDER_SCHEMA}, onInvalid: reject } } ]
`,
      { env: { KAFKA_BOOTSTRAP: kafka.bootstrap } },
    );
    try {
      const meta = await run('kcat', ['-L', '-b', `127.0.0.1:${port}`, '-t', t.orders]);
      assert.equal(meta.code, 0, meta.stderr);
      const advertised = [...meta.stdout.matchAll(/broker \d+ at 127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
      assert.equal(advertised.length, 3, meta.stdout);
      assert.ok(!advertised.includes(port + 1), `metadata names the http listener's port ${port + 1}: ${meta.stdout}`);
      const status = (await other.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
      assert.deepEqual(
        status.ports.filter((p: { error?: string }) => p.error),
        [],
      );
      assert.deepEqual(status.ports.map((p: { port: number }) => p.port).sort(), [...advertised].sort());
      // Every port metadata names is the proxy's: producing and consuming through it work.
      await kcatProduce(`127.0.0.1:${port}`, t.orders, [{ key: 'skip', value: VALID(404) }]);
      assert.ok((await values(`127.0.0.1:${port}`, t.orders)).includes(VALID(404)));
      assert.equal(other.logs.filter((l) => l.level === 'error').length, 0, JSON.stringify(other.logs.filter((l) => l.level === 'error')));
    } finally {
      await other.stop();
    }
  });

  it('counts records per route and outcome in /metrics', async () => {
    const s = await scrape(gw.adminUrl);
    const count = (route: string, outcome: string) => s.value('eventgate_route_messages_total', { route, outcome }) ?? 0;
    assert.ok(count('orders-in', 'delivered') >= 2, 'valid records counted');
    assert.ok(count('orders-in', 'invalid') >= 1, 'refused records counted');
    assert.ok(count('tagged-in', 'tagged') >= 1, 'tagged records counted');
  });

  it('applies a route change to the next request of a client that stays connected', async () => {
    const producer = new Kafka({ brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).producer();
    await producer.connect();
    try {
      const refused = await producer.send({ topic: t.reload, messages: [{ value: INVALID(600) }] }).then(
        () => undefined,
        (e: { type?: string }) => e,
      );
      assert.equal(refused?.type, 'INVALID_RECORD');
      const connectionsBefore = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').connections as number;
      const line = await gw.reconfigure(config('tag'));
      assert.ok(reloaded(line), JSON.stringify(line));
      await producer.send({ topic: t.reload, messages: [{ value: INVALID(601) }] });
      const status = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
      assert.ok(status.connections >= connectionsBefore, 'no client connection was dropped by the reload');
    } finally {
      await producer.disconnect();
    }
    const got = await eventually(async () => {
      const all = await kcatConsumeAll(kafka.bootstrap, t.reload);
      assert.ok(all.some((g) => g.value === INVALID(601)));
      return all;
    }, 15000);
    assert.ok(!got.some((g) => g.value === INVALID(600)));
    assert.ok(got.find((g) => g.value === INVALID(601))!.headers._asyncapi_eg_validation_error);
  });
});
