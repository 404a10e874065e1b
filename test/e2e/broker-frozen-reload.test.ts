import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { mosquittoPub, pikaPublish } from '../helpers/peers.js';
import { startMosquitto, startRabbit, type MessageServer, type RabbitServer } from '../helpers/servers.js';
import { scrape } from '../helpers/prometheus.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { freezeProcess } from '../helpers/outage.js';

/**
 * A reload that stops consume routes (here: it replaces the broker) while the server has stopped
 * answering without closing its connections (frozen: `kill -STOP`, or a network path that drops
 * everything). The old route's stop waited for the server's side of the close — mosquitto's
 * close of the socket after DISCONNECT, RabbitMQ's channel.close-ok — which never came: the reload
 * never finished ("config reloaded" never logged, every later reload queued behind it) until the
 * client's keepalive or heartbeat gave up, 2 minutes later for RabbitMQ. A stop now waits at most
 * `connectTimeoutMs` for the close, then drops the connection.
 */
// The two kinds side by side (servers, receivers and gateways of their own; each freezes its own
// server's process group): the mqtt cases run while RabbitMQ boots. Each kind's cases one after another.
describe('a reload while the server does not answer', { concurrency: true }, () => {
  for (const kind of ['mqtt', 'amqp'] as const) {
    describe(`kind: ${kind}`, { concurrency: 1 }, () => {
      let server: MessageServer;
      let receiver: WebhookReceiver;
      let frozen = false;
      const freeze = async (on: boolean) => {
        frozen = on;
        if (on) await freezeProcess(server.pid()!);
        else process.kill(-server.pid()!, 'SIGCONT');
      };
      before(async () => {
        server = kind === 'mqtt' ? await startMosquitto() : await startRabbit();
        receiver = await WebhookReceiver.start();
      });
      after(async () => {
        if (frozen) await freeze(false);
        await receiver?.stop();
        await server?.stop();
      });

      const topic = kind === 'mqtt' ? 'frozen/orders' : 'frozen.orders';
      const config = (connectTimeoutMs: number, path = '/relay') => `
version: 1
admin: { port: 0 }
brokers:
  b:
    kind: ${kind}
    url: ${server.url}
    connectTimeoutMs: ${connectTimeoutMs}
routes:
  - name: relay
    from: { broker: b, topic: ${topic}, group: frozen }
    to: { http: { url: "${receiver.url}${path}" } }
`;
      const gw = useGateway(() => config(1000));
      const publish = (body: string) => (kind === 'mqtt' ? mosquittoPub(server, topic, body, { qos: 1 }) : pikaPublish(server, 'amq.topic', topic, [{ body }]));

      it('finishes the reload within connectTimeoutMs of the stops, and consumes again once the server answers', async () => {
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 60000);
        await publish('{"n":1}');
        await receiver.received(1);
        // Its acknowledgement out and taken before the server freezes: else the server still holds it
        // unacknowledged, and gives it again once the dropped connection is gone (at least once, but not this test's case).
        const inHand = async () =>
          (await scrape(gw.adminUrl))
            .series(`eventgate_${kind}_consumer_lag`)
            .filter((s) => s.labels.route === 'relay')
            .reduce((n, s) => n + s.value, 0);
        await eventually(async () => assert.equal(await inHand(), 0), 15000, 50);
        if (kind === 'amqp') {
          const rabbit = server as RabbitServer;
          await eventually(
            async () =>
              assert.deepEqual(
                (await rabbit.admin.listQueues(rabbit.vhost)).filter((q) => q.messagesUnacknowledged !== 0),
                [],
              ),
            15000,
            100,
          );
        }

        await freeze(true);
        const from = gw.logs.length;
        gw.write('gateway.yaml', config(1500));
        // Bounded wait, well past the new broker's connect wait (5 s) and the old one's stops (1 s each).
        await gw.waitForLog((l) => l.msg === 'config reloaded', 25000, from);
        const dropped = gw.logs.slice(from).filter((l) => / did not (answer|close).* within connectTimeoutMs; dropping/.test(l.msg));
        assert.ok(dropped.length > 0, 'the stop says it dropped the connection');
        // A second reload is not stuck behind the first.
        const second = gw.logs.length;
        gw.write('gateway.yaml', config(2000));
        await gw.waitForLog((l) => l.msg === 'config reloaded', 25000, second);

        await freeze(false);
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 60000, second);
        await publish('{"n":2}');
        const got = await receiver.received(2, 30000);
        assert.deepEqual(
          got.map((r) => JSON.parse(r.body)),
          [{ n: 1 }, { n: 2 }],
        );
      });

      it('finishes a reload that changes only the route (the broker kept), and the kept broker consumes for the new route once the server answers', async () => {
        // The broker settings this test keeps, in force and consuming before the server freezes.
        const start = gw.logs.length;
        gw.write('gateway.yaml', config(2500));
        await gw.waitForLog((l) => l.msg === 'config reloaded', 25000, start);
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 60000, start);
        const before = receiver.requests.length;
        await freeze(true);
        const from = gw.logs.length;
        gw.write('gateway.yaml', config(2500, '/relay-again'));
        await gw.waitForLog((l) => l.msg === 'config reloaded', 25000, from);

        await freeze(false);
        // The rebuilt route asks the same of the broker and takes its connection (mqtt) or channel
        // (amqp) over (point 128): nothing to close while the server is frozen, nor to subscribe again once it answers.
        assert.ok(gw.logs.slice(from).some((l) => l.msg === 'subscription handed over to the rebuilt route' && l.route === 'relay'));
        await publish('{"n":3}');
        const [third] = (await receiver.received(before + 1, 30000)).slice(before);
        assert.equal(third!.url, '/relay-again');
        assert.deepEqual(JSON.parse(third!.body), { n: 3 });
      });
    });
  }
});
