import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, produceAnswers, produceRequest, recordBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';

/** Kafka's NOT_ENOUGH_REPLICAS: retriable, both for kafkajs (which retries) and for the listener's client. */
const NOT_ENOUGH_REPLICAS = 19;
/** A value whose request frame is past 64 KB: the size the listener reads into memory it may recycle (frames.ts). */
const VALUE_BYTES = 70_000;
/** The target's ackTimeoutMs, and how long the cluster takes to answer the produce request that fails. */
const ACK_MS = 5000;
const DELAY_MS = 2500;

/**
 * A route with `to` keeps each record's bytes as its message's original, a view of its batch's
 * records copied once (govern.ts): a Kafka target may encode the record again (a retry) after the
 * listener answered the client, and the client's next request is read by then. Today the memory of
 * a request whose records such a route took is never used again (the connection recycles only
 * frames it forwarded unchanged, and copies every frame out of its read buffer), so this test fails
 * only where both change: the copy taken out and such frames recycled once answered.
 */
describe('kafka listener: a route with `to` keeps the bytes of a record its target still holds', () => {
  let kafka: KafkaCluster;
  // Names of one length: the two large requests below are then of one size, each byte in the same place.
  const t = { slow: '', fast: '', kept: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
  });
  // Produce requests of two records each: two publishes made 4.5 s apart share one request, so it
  // still holds a publish nobody answered once the first one's ackTimeoutMs passed. (kafkajs builds
  // each retry's request again; the producer stops a retry only when every publish of it was
  // answered. An idempotent producer would retry in any case, but the mock cluster names no
  // controller, which kafkajs asks for a producer id.)
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
  pairs: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}", producer: { ackTimeoutMs: ${ACK_MS}, maxBatchRecords: 2, lingerMs: 60000 } }
  local: { kind: memory }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: slow
    from: { listener: kafka-in, topic: ${t.slow} }
    to: { broker: pairs, topic: ${t.kept} }
  - name: fast
    from: { listener: kafka-in, topic: ${t.fast} }
    to: { broker: local, topic: fast }
`,
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  after(async () => {
    await kafka?.stop();
  });

  /** A client connection to the listener: `produce` sends one record batch, `answer` waits for the next answer's error code. */
  const client = () => {
    const socket = connect(gw.port('kafka-in'), '127.0.0.1');
    let correlationId = 0;
    const produce = (topic: string, value: Buffer | Buffer[]) => socket.write(produceRequest({ topic, correlationId: ++correlationId, batch: recordBatch({ attributes: 0, key: null, value }) }));
    const answers = produceAnswers(socket);
    return { socket, produce, answer: answers.next };
  };

  it("a record its Kafka target sends again after the client was answered is written with its own bytes, not the connection's next request's", async () => {
    const first = client();
    const second = client();
    try {
      // The target's producer connects and learns the topic's partitions while the cluster answers
      // at once (until it has connected, a publish is refused with a retriable error).
      await eventually(
        async () => {
          first.produce(t.slow, [Buffer.from('warm-1'), Buffer.from('warm-2')]);
          assert.equal(await first.answer(), 0);
        },
        15000,
        200,
      );
      const sentBefore = kafka.produceRequests();
      // The next produce request is answered DELAY_MS after it arrives, with a retriable error
      // (nothing of it written): kafkajs then sends it again, at once answered.
      await kafka.delayAnswers(1, DELAY_MS);
      await kafka.failRequests(0, 1, NOT_ENOUGH_REPLICAS);
      const own = Buffer.alloc(VALUE_BYTES, 'a');
      first.produce(t.slow, own);
      // The second publish fills the request: it leaves now, and its error comes 2 s after the
      // first publish's ackTimeoutMs, 2.5 s before the second's (margins for a loaded machine).
      await sleep(ACK_MS - DELAY_MS + 2000);
      second.produce(t.slow, Buffer.from('second'));
      assert.equal(await first.answer(), NOT_ENOUGH_REPLICAS, 'answered at its ackTimeoutMs, while the target still holds the record');
      // The connection's next request, of the same size, to a route that answers at once: read
      // while the target holds the first one, before its retry is built.
      first.produce(t.fast, Buffer.alloc(VALUE_BYTES, 'b'));
      assert.equal(await first.answer(), 0);
      assert.equal(kafka.produceRequests() - sentBefore, 1, 'the retry was sent before the next request was read: the machine was too slow for this schedule');
      await kafka.delayAnswers(1, 0);
      assert.equal(await second.answer(), 0, 'the retry wrote the request');
      // Read back by kcat, a client of its own.
      const kept = await eventually(async () => {
        const all = await kcatConsumeAll(kafka.bootstrap, t.kept);
        assert.equal(all.length, 4);
        return all;
      }, 20000);
      assert.deepEqual(
        kept.map((r) => r.value?.length),
        [6, 6, VALUE_BYTES, 6],
      );
      assert.deepEqual([kept[0]!.value, kept[1]!.value, kept[3]!.value], ['warm-1', 'warm-2', 'second']);
      assert.ok(kafka.produceRequests() - sentBefore >= 2, 'the target sent the record again');
      const value = kept[2]!.value!;
      assert.ok(value === own.toString(), `the record was written with other bytes: ${value.slice(0, 8)}…${value.slice(-8)}`);
    } finally {
      first.socket.destroy();
      second.socket.destroy();
    }
  });
});
