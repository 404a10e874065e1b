import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { REFUSAL_LOG_INTERVAL_MS } from '../../src/kinds/listeners/kafka/refusal-log.js';
import { eventually, useGateway, type LogLine } from '../helpers/gateway.js';
import { produceAnswers, produceRequest, recordBatch, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';

const SCHEMA = '{ type: object, required: [id], properties: { id: { type: integer } } }';

/** A Produce v3 request of one record to partition 0 of `topic`, size prefix included. */
const produceFrame = (correlationId: number, topic: string, value: string, acks: number) =>
  produceRequest({ correlationId, clientId: 'refusals', acks, topic, batch: recordBatch({ attributes: 0, key: null, value: Buffer.from(value) }) });

/**
 * A refused produce request leaves a warn line (route, topic, client address, reason), at most one
 * per route per interval with the count of requests refused since, so a producer that sends
 * nothing but invalid records cannot flood the log.
 */
describe('kafka listener: the log of refused produce requests', () => {
  let kafka: KafkaCluster;
  let orders: string;
  let payments: string;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    orders = kafka.topic('refused-orders');
    payments = kafka.topic('refused-payments');
    await kafka.createTopic(orders, 1);
    await kafka.createTopic(payments, 1);
  });
  const gw = useGateway(
    () => `
version: 1
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: orders-in
    from: { listener: kafka-in, topic: ${orders} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: payments-in
    from: { listener: kafka-in, topic: ${payments} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
`,
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  after(async () => {
    await kafka?.stop();
  });

  const refusals = (route: string): LogLine[] => gw.logs.filter((l) => l.msg === 'kafka produce request refused' && l.route === route);

  it('logs the first refusal of a route at once, then the count of those after it once per interval', async () => {
    // 150 refused requests the client is answered (INVALID_RECORD, 87), then 50 with acks 0 (no answer).
    const answered = 150;
    const socket = connect(gw.port('kafka-in'), '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const { codes: errorCodes } = produceAnswers(socket);
    const frames = Array.from({ length: 200 }, (_, i) => produceFrame(i, orders, `{"id":"not a number ${i}"}`, i < answered ? 1 : 0));
    socket.write(Buffer.concat(frames));
    await eventually(() => assert.equal(errorCodes.length, answered), 15000);
    assert.ok(
      errorCodes.every((c) => c === 87),
      'every request refused with INVALID_RECORD',
    );

    const [firstLine] = await eventually(() => {
      const lines = refusals('orders-in');
      assert.ok(lines.length >= 1);
      return lines;
    });
    assert.equal(firstLine!.level, 'warn');
    assert.equal(firstLine!.listener, 'kafka-in');
    assert.equal(firstLine!.topic, orders);
    assert.equal(firstLine!.partition, 0);
    assert.equal(firstLine!.remoteAddress, '127.0.0.1');
    assert.equal(firstLine!.error, '87 (INVALID_RECORD)');
    assert.equal(firstLine!.acks, 1);
    assert.equal(firstLine!.refused, 1);
    assert.match(String(firstLine!.reason), /^route 'orders-in' refused record 0: .*id/);

    // Another route's refusal is logged at once, whatever the first route's window.
    const kcat = await runProcess('kcat', ['-P', '-b', `127.0.0.1:${gw.port('kafka-in')}`, '-t', payments, '-X', 'message.send.max.retries=0'], '{"id":"x"}\n');
    assert.match(kcat.stderr, /Broker failed to validate record/);
    const payment = await eventually(() => {
      const lines = refusals('payments-in');
      assert.equal(lines.length, 1);
      return lines[0]!;
    });
    assert.equal(payment.refused, 1);
    assert.equal(payment.topic, payments);

    // The 199 other refusals of orders-in come in the interval's line (or lines, on a slow machine), the last one named.
    const lines = await eventually(
      () => {
        const lines = refusals('orders-in');
        assert.equal(
          lines.reduce((n, l) => n + (l.refused as number), 0),
          200,
        );
        return lines;
      },
      3 * REFUSAL_LOG_INTERVAL_MS,
      200,
    );
    assert.ok(lines.length <= 3, `${lines.length} lines for 200 refused requests`);
    assert.equal(lines.at(-1)!.acks, 0);
    assert.match(String(lines.at(-1)!.reason), /refused record 0: .*id/);
    socket.destroy();
  });
});
