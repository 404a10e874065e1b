import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { type KafkaCluster, kcatConsume, kcatConsumeAll, kcatProduce, kcatProduceLines, produceRaw, recordBatch, startKafka } from '../helpers/kafka.js';
import { RawNats } from '../helpers/peers.js';
import { type MessageServer, startNats } from '../helpers/servers.js';

const INVALID_RECORD = 87;
const SCHEMA = '{ type: object, required: [id], properties: { id: { type: integer } } }';
const WHY = 'readers differ on which value they take, so names must be unique (RFC 7493)';

/**
 * A JSON value that gives a member name twice (`{"id":"x","id":1}`), written by independent
 * producers (kcat onto librdkafka's mock cluster, the NATS protocol by hand, kcat through the
 * kafka listener). JSON.parse keeps the last value, and a validate step passed it; but the
 * message goes on as its bytes, to readers that may keep the first (`"x"`, which the schema
 * refuses). A validate step now fails it as invalid, naming the name and its object's pointer,
 * and does as its `onInvalid` says; the same names in different objects pass.
 */
describe('a consumed or proxied JSON value that repeats a member name, through a validate step', () => {
  let nats: MessageServer;
  let kafka: KafkaCluster;
  let proxy: string;
  const t = { rejected: '', tagged: '' };

  before(async () => {
    [nats, kafka] = await Promise.all([startNats(), startKafka({ brokers: 1 })]);
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(`names-${k}`);
      await kafka.createTopic(t[k], 1);
    }
  });

  const gw = useGateway(
    () => `
version: 1
listeners:
  kafka-in: { kind: kafka, upstream: log, host: 127.0.0.1, port: 0 }
brokers:
  bus: { kind: nats, servers: ${nats.url} }
  log: { kind: kafka, brokers: ["${kafka.bootstrap}"], producer: { lingerMs: 1 } }
routes:
  - name: n-checked
    from: { broker: bus, topic: names.n }
    through: [ { validate: { schema: ${SCHEMA} } } ]
    to: { broker: bus, topic: names.copy }
    deadletter: { broker: bus, topic: names.dead }
  - name: n-tagged
    from: { broker: bus, topic: names.t }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: tag } } ]
    to: { broker: bus, topic: names.tcopy }
  - name: k-checked
    from: { broker: log, topic: names-k, group: k-checked }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: deadletter } } ]
    to: { broker: log, topic: names-copy }
    deadletter: { broker: log, topic: names-dead }
  - name: rejected-in
    from: { listener: kafka-in, topic: ${t.rejected} }
    through: [ { validate: { schema: { type: object, required: [id], properties: { id: { type: integer }, a: { type: array } } }, onInvalid: reject } } ]
  - name: tagged-in
    from: { listener: kafka-in, topic: ${t.tagged} }
    through: [ { validate: { schema: { type: object, required: [id], properties: { id: { type: integer } } }, onInvalid: tag } } ]
`,
  );
  // After the gateway's own stop (registered first): its consumers commit and leave while the
  // servers still answer, rather than retrying against stopped ones until its drain runs out.
  after(async () => {
    await Promise.all([nats?.stop(), kafka?.stop()]);
  });
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });
  const ready = (...routes: string[]) => Promise.all(routes.map((route) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 60000)));
  const reason = (header: string | undefined) => {
    assert.ok(header, 'no _eventgate_error header');
    const why = JSON.parse(header) as { route: string; status: number; code: string; detail: string; errors: string[] };
    return { route: why.route, status: why.status, code: why.code, detail: why.detail, errors: why.errors };
  };
  const tagOf = (header: string | undefined) => {
    assert.ok(header, 'no _asyncapi_eg_validation_error header');
    return (JSON.parse(header) as { errors: string[] }).errors;
  };

  it('nats: dead-lettered as invalid (reject), naming the name and its object, as it came; tagged (tag); the message after it and names repeated across objects go on', async () => {
    await ready('n-checked', 'n-tagged');
    const c = await RawNats.connect(nats);
    try {
      const dead = await c.subscribe('names.dead');
      const copy = await c.subscribe('names.copy');
      const tcopy = await c.subscribe('names.tcopy');
      const twice = '{"id":"x","id":1}';
      const deep = '{"id":2,"a":[0,{"k":1,"k":2}]}';
      const across = '{"id":3,"a":[{"k":1},{"k":2}],"b":{"id":"x"}}';
      c.publish('names.n', twice);
      c.publish('names.n', deep);
      c.publish('names.n', across);
      c.publish('names.t', twice);
      c.publish('names.t', '{"id":4}');
      await c.ping();
      assert.deepEqual(
        (await c.take(copy, 1)).map((m) => m.bytes.toString()),
        [across],
      );
      const letters = await c.take(dead, 2);
      assert.deepEqual(
        letters.map((l) => [l.bytes.toString(), reason(l.headers._eventgate_error)]),
        [
          [
            twice,
            {
              route: 'n-checked',
              status: 400,
              code: 'EG_INVALID_MESSAGE',
              detail: `the message gives the name "id" twice in one object: ${WHY}`,
              errors: [`: must not give the name "id" twice (${WHY})`],
            },
          ],
          [
            deep,
            {
              route: 'n-checked',
              status: 400,
              code: 'EG_INVALID_MESSAGE',
              detail: `the message gives the name "k" twice in one object (in the object at /a/1): ${WHY}`,
              errors: [`/a/1: must not give the name "k" twice (${WHY})`],
            },
          ],
        ],
      );
      const tagged = await c.take(tcopy, 2);
      assert.equal(tagged[0]!.bytes.toString(), twice);
      assert.deepEqual(tagOf(tagged[0]!.headers._asyncapi_eg_validation_error), [`: must not give the name "id" twice (${WHY})`]);
      assert.equal(tagged[1]!.bytes.toString(), '{"id":4}');
      assert.equal(tagged[1]!.headers._asyncapi_eg_validation_error, undefined);
    } finally {
      c.close();
    }
  });

  it('kafka consume route: dead-lettered (onInvalid: deadletter) as it came, an escaped spelling of the name found too; the record after it copied', async () => {
    await ready('k-checked');
    // One key: one partition, so the copy keeps their order.
    await kcatProduce(kafka.bootstrap, 'names-k', [
      { key: 'k', value: '{"id":"x","\\u0069d":1}' },
      { key: 'k', value: '{"id":5}' },
    ]);
    const [letter] = await kcatConsume(kafka.bootstrap, 'names-dead', 1, 30000);
    assert.deepEqual(reason(letter!.headers._eventgate_error), {
      route: 'k-checked',
      status: 400,
      code: 'EG_INVALID_MESSAGE',
      detail: `the message gives the name "id" twice in one object: ${WHY}`,
      errors: [`: must not give the name "id" twice (${WHY})`],
    });
    assert.equal(letter!.value, '{"id":"x","\\u0069d":1}');
    assert.deepEqual(
      (await kcatConsume(kafka.bootstrap, 'names-copy', 1, 30000)).map((r) => r.value),
      ['{"id":5}'],
    );
  });

  it("kafka listener: a record with a repeated name refuses its request (reject), naming it in Produce v8's error_message", async () => {
    const r = await kcatProduceLines(proxy, t.rejected, ['{"id":"x","id":1}']);
    assert.match(r.stderr, /Broker: Broker failed to validate record/);
    const answer = await produceRaw(proxy, {
      version: 8,
      transactionalId: null,
      topic: t.rejected,
      partition: 0,
      batch: recordBatch({ attributes: 0, key: null, value: Buffer.from('{"id":1,"a":[{"n":1,"n":"x"}]}') }),
    });
    assert.deepEqual(answer, {
      errorCode: INVALID_RECORD,
      errorMessage: `route 'rejected-in' refused record 0: the message gives the name "n" twice in one object (in the object at /a/0): ${WHY}: /a/0: must not give the name "n" twice (${WHY})`,
    });
    const ok = await kcatProduceLines(proxy, t.rejected, ['{"id":6,"a":[{"n":1},{"n":2}]}']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, t.rejected)).map((r) => r.value),
      ['{"id":6,"a":[{"n":1},{"n":2}]}'],
    );
  });

  it('kafka listener: tagged (tag) and sent upstream as it came, beside a valid record of the same batch', async () => {
    const r = await kcatProduceLines(proxy, t.tagged, ['{"id":"x","id":1}', '{"id":7}']);
    assert.equal(r.code, 0, r.stderr);
    const got = await kcatConsumeAll(kafka.bootstrap, t.tagged);
    assert.deepEqual(
      got.map((g) => g.value),
      ['{"id":"x","id":1}', '{"id":7}'],
    );
    assert.deepEqual(tagOf(got[0]!.headers._asyncapi_eg_validation_error), [`: must not give the name "id" twice (${WHY})`]);
    assert.equal(got[1]!.headers._asyncapi_eg_validation_error, undefined);
  });
});
