import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, withLogsOnFailure, type RunningGateway } from '../helpers/gateway.js';
import { startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { readyz } from '../helpers/outage.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A SIGTERM while a Kafka consume route still waits for its group's rebalance (on the mock
 * cluster, a gateway restarted right after another left waits the session timeout less a second,
 * docs/scaling.md "Rejoining") holds the drain to `drainTimeoutMs` and exits 0. The warning then
 * said "its message in hand stays uncommitted and will be delivered again", of a route that had
 * never held a message: an operator looked for a redelivery that could not come.
 */
describe('SIGTERM while a Kafka consume route is still joining its group', () => {
  let kafka: KafkaCluster;
  let webhook: WebhookReceiver;
  let topic: string;
  const gateways: RunningGateway[] = [];
  before(async () => {
    [kafka, webhook] = await Promise.all([startKafka(), WebhookReceiver.start()]);
    topic = kafka.topic('joining');
    await kafka.createTopic(topic, 2);
  });
  after(async () => {
    await Promise.all(gateways.map((g) => g.stop()));
    await Promise.all([kafka?.stop(), webhook?.stop()]);
  });

  // The default session (30 s): the mock keeps the group joining for 29 s after the first gateway leaves.
  const config = () => `version: 1
admin: { port: 0, drainTimeoutMs: 1500 }
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: { heartbeatIntervalMs: 1000, maxWaitMs: 100 } }
routes:
  - name: joining
    from: { broker: kafka, topic: ${topic} }
    to: { http: { url: "${webhook.url}/joining" } }
`;

  it('says the route is joining in /admin/status (/readyz 200), exits 0 at the drain bound and says no message was in hand', async () => {
    const first = await startGateway(config());
    gateways.push(first);
    await withLogsOnFailure(
      () => gateways,
      async () => {
        await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'joining', 30000);
        assert.equal((await first.stop('SIGTERM')).code, 0);
        assert.ok(first.logs.some((l) => l.msg === 'consumer stopped; offsets committed'));

        const joins = kafka.joinRequests();
        const second = await startGateway(config());
        gateways.push(second);
        // Its member has asked to join (the mock holds the answer for the session timeout less a second).
        await eventually(() => assert.ok(kafka.joinRequests() > joins, 'the second gateway sent its JoinGroup'), 20000);
        // Meanwhile /admin/status says the route's consumer is joining; /readyz stays 200 (a rebalance takes no instance out of rotation).
        const consumer = (await second.status()).routes.find((r: { name: string }) => r.name === 'joining').consumer;
        assert.deepEqual(consumer, { ready: true, detail: "joining consumer group 'eventgate-joining': consuming once the group gives this member its partitions" });
        assert.equal((await readyz(second)).status, 200);
        assert.ok(!second.logs.some((l) => l.msg === 'consumer ready'), 'still joining when the SIGTERM comes');
        assert.equal((await second.stop('SIGTERM')).code, 0);
        const late = second.logs.filter((l) => /did not stop within drainTimeoutMs/.test(l.msg));
        assert.equal(late.length, 1, 'the drain bound was reached');
        assert.doesNotMatch(late[0]!.msg, /message in hand stays uncommitted/);
        assert.match(late[0]!.msg, /no message in hand/);
        assert.equal(webhook.requests.length, 0);
      },
    );
  });
});
