import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, withLogsOnFailure, type RunningGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { committedOffsets, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { readyz } from '../helpers/outage.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A SIGTERM while a Kafka consume route still waits for its group's rebalance (on the mock
 * cluster, a gateway restarted right after another left waits the session timeout less a second,
 * docs/scaling.md "Rejoining") holds the drain to `drainTimeoutMs` and exits 0. The warning then
 * said "its message in hand stays uncommitted and will be delivered again", of a route that had
 * never held a message: an operator looked for a redelivery that could not come.
 */
describe('SIGTERM while a Kafka consume route is still joining its group, or handing its consumer over', () => {
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

  // 1863 (e2e/shutdown) on a memory topic, here with Kafka's commit (spec-checklist 1864): a SIGTERM
  // while a reload hands the route over, its old route's webhook try held. The try is cut at the
  // drain's deadline (not at the hand-over's own 5 s wait), the record stays uncommitted, and the
  // next gateway delivers it once more.
  it('on SIGTERM while a reload hands a route over, cuts the held webhook try at drainTimeoutMs, leaves its record uncommitted, and the next run delivers it', async () => {
    const target = await HeldTarget.start();
    const handed = kafka.topic('handed');
    await kafka.createTopic(handed, 1);
    const handing = (drainTimeoutMs: number, step = '') => `version: 1
admin: { port: 0, drainTimeoutMs: ${drainTimeoutMs} }
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml} }
routes:
  - name: handed
    from: { broker: kafka, topic: ${handed} }
${step}    to: { http: { url: "${target.url}", timeoutMs: 60000 } }
`;
    try {
      const first = await startGateway(handing(1000));
      gateways.push(first);
      await withLogsOnFailure(
        () => gateways,
        async () => {
          await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'handed', 30000);
          await kcatProduce(kafka.bootstrap, handed, [{ value: '{"n":1}' }]);
          await eventually(() => assert.equal(target.bodies.length, 1), 20000);
          const from = first.logs.length;
          // A step added: the route is rebuilt and takes the consumer over; 10 s of drain make its wait for the held try 5 s.
          first.write('gateway.yaml', handing(10000, "    through:\n      - transform: '$'\n"));
          const handOver = await first.waitForLog((l) => l.msg === 'subscription handed over to the rebuilt route', 20000, from);
          assert.equal((await first.stop('SIGTERM')).code, 0);
          // The hand-over's own wait (5 s) would end at this; the running config's 1 s budget, from the signal, well before it.
          const handOverEnds = Date.parse(String(handOver.time)) + 5000;
          assert.ok(Date.now() < handOverEnds, `exited ${Date.now() - handOverEnds} ms after the hand-over's wait would end`);
          assert.ok(
            first.logs.slice(from).some((l) => l.msg.startsWith('message given back uncommitted')),
            first.logs
              .slice(from)
              .map((l) => l.msg)
              .join('; '),
          );
          // Not committed: the group holds no offset past the record.
          assert.ok(!(Number((await committedOffsets(kafka.bootstrap, 'eventgate-handed', handed))[0] ?? -1) > 0), 'the held record was not committed');

          // The next run delivers it once more, then commits it.
          target.release();
          const second = await startGateway(handing(1000));
          gateways.push(second);
          await eventually(() => assert.equal(target.bodies.length, 2), 30000);
          assert.deepEqual(target.bodies, ['{"n":1}', '{"n":1}']);
          await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-handed', handed))[0], '1'), 20000);
          assert.equal((await second.stop('SIGTERM')).code, 0);
          assert.equal(target.bodies.length, 2, 'delivered once more, not again');
        },
      );
    } finally {
      await target.stop();
    }
  });
});
