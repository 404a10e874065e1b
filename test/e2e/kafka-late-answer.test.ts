import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';

/**
 * A produce request the cluster answers only after `ackTimeoutMs`: the publish is answered 503,
 * and the request — which the cluster took as it arrived, so its record is written — is not sent
 * again. kafkajs' own timeout for the request is the ack timeout, and it used to retry it then,
 * writing the record once more per attempt after the publisher had been told it failed (a consume
 * route retrying it wrote it once more per try on top: docs/spec-checklist.md, point 50).
 */
describe('kafka: a produce answer later than ackTimeoutMs', () => {
  let kafka: KafkaCluster;
  let topic: string;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('late');
    await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { ackTimeoutMs: 1000 } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: late
    from: { listener: api, path: /late }
    to: { broker: kafka, topic: ${topic} }
`,
  );
  after(async () => {
    await kafka?.delayAnswers(1, 0).catch(() => {});
    await kafka?.stop();
  });

  const post = (n: number) => fetch(gw.url('api', '/late'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });

  it('answers 503 and does not send the request again: the record is written once', async () => {
    // The topic's partition and leader known: the next records go straight to it.
    assert.equal((await post(0)).status, 200);
    const sent = kafka.produceRequests();
    const from = gw.logs.length;
    await kafka.delayAnswers(1, 10000);
    const late = await post(1);
    assert.equal(late.status, 503);
    assert.equal(kafka.produceRequests(), sent + 1, 'the cluster took the request before the deadline');
    // kafkajs' own timeout for the request (the ack timeout) has passed too.
    await gw.waitForLog((l) => /Request Produce\(.*\) timed out/.test(l.msg), 10000, from);
    // Answers come at once again: a resend would be taken and answered now.
    await kafka.delayAnswers(1, 0);
    // The next record of the partition goes once the earlier request is given up or answered
    // (one produce request per partition at a time): after this 200 nothing of it is left.
    assert.equal((await post(2)).status, 200);
    const values = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => (JSON.parse(r.value!) as { n: number }).n);
    assert.deepEqual(values, [0, 1, 2], 'each record once, the late one included (the cluster wrote it)');
    assert.equal(kafka.produceRequests(), sent + 2);
    await gw.waitForLog((l) => l.msg.startsWith('every publish of a produce request was answered 503 at ackTimeoutMs'), 10000, from);
  });
});
