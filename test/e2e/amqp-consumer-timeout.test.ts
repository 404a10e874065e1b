import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { scrape } from '../helpers/prometheus.js';
import { startRabbit, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

// Not in amqp.test.ts: this RabbitMQ runs with settings of its own, and booting a second one there
// would take that file past the runner's time limit.
// A RabbitMQ of its own: its consumer_timeout (30 min by default) cut to 3 s, checked every second.
describe('kind: amqp, a consume channel the server closes while the connection lives', () => {
  let rabbit: MessageServer;
  let hook: WebhookReceiver;
  let failing = true;
  /** The message numbers the webhook answered 200 for, in order. */
  const accepted: number[] = [];

  before(async () => {
    rabbit = await startRabbit({ advancedConfig: '[{rabbit, [{consumer_timeout, 3000}, {channel_tick_interval, 1000}]}].\n' });
    hook = await WebhookReceiver.start();
    hook.respond = (r, res) => {
      res.statusCode = failing ? 500 : 200;
      if (!failing) accepted.push((JSON.parse(r.body) as { i: number }).i);
      res.end();
    };
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    queues:
      work: { bindings: [work] }
routes:
  - name: work
    from: { broker: rabbit, topic: work }
    to: { http: { url: "${hook.url}/work", retry: { attempts: 2, backoffMs: 50 } } }
`,
  );
  after(async () => {
    await hook?.stop();
    await rabbit?.stop();
  });

  it('opens another channel when a message held past consumer_timeout (its target failing) closes it: the route consumes on, nothing lost, only the message in hand twice', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'work', 30000);
    const publish = (from: number) =>
      pikaPublish(
        rabbit,
        'amq.topic',
        'work',
        Array.from({ length: 5 }, (_, k) => ({ body: JSON.stringify({ i: from + k }) })),
      );
    await publish(0);
    // The webhook refuses message 0 past the timeout: RabbitMQ closes the channel (requeueing 0-4).
    await gw.waitForLog((l) => l.msg === 'amqp consume channel error' && /PRECONDITION_FAILED/.test(String(l.err)), 30000);
    failing = false;
    await publish(5);
    await eventually(
      () =>
        assert.deepEqual(
          [...new Set(accepted)].sort((a, b) => a - b),
          [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        ),
      60000,
      100,
    );
    await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, 'work'), 0), 15000, 200);
    // Message 0 was in hand when the channel closed: delivered by the route that held it (its ack
    // went nowhere) and again from the queue. The others the closed channel held are not handled
    // from it, so each arrives once.
    const twice = accepted.filter((i, k) => accepted.indexOf(i) !== k);
    assert.ok(
      twice.every((i) => i === 0),
      `repeated: ${twice.join(', ')}`,
    );
    assert.ok(gw.logs.some((l) => l.msg === 'amqp consume channel closed while the connection lives; opening another'));
    assert.equal((await scrape(gw.adminUrl)).value('eventgate_amqp_consumer_crashes_total', { broker: 'rabbit', route: 'work' })! >= 1, true);
  });
});
