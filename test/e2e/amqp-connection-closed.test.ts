import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { consumersReady, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * An operator closes the gateway's connections on the server (`rabbitmqctl close_all_connections`,
 * `close_connection`: 320 CONNECTION_FORCED). They were lost as `unreachable`; now in the server's
 * words, and the publish connection closed alone is opened again without the consume routes'.
 * A file of its own: when these were `rabbitmqctl` runs (an Erlang VM each, 30-55 s on a loaded
 * machine), they took amqp-queue-deleted past the runner's 300 s timeout; now erl_call (rabbit.admin).
 */
describe('kind: amqp, connections an operator closes on the server', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await receiver?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    queues:
      orders: { bindings: ["orders.*"] }
routes:
  - { name: post-orders, from: { listener: api, path: /orders }, to: { broker: rabbit, topic: orders.new } }
  - { name: orders, from: { broker: rabbit, topic: orders }, to: { http: { url: "${receiver.url}/orders" } } }
  - { name: events, from: { broker: rabbit, topic: "events.*", group: closed-events }, to: { http: { url: "${receiver.url}/events" } } }
`,
  );

  const arrived = (path: string) => receiver.requests.filter((r) => r.url === path).map((r) => (JSON.parse(r.body) as { i: number }).i);

  it('the publish connection an operator closes alone (close_connection) is opened again; the consume routes keep their connection and channels', async () => {
    await consumersReady(gw, ['orders', 'events'], 60000);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const from = gw.logs.length;
    // Each connection by its pid, its vhost and the name the broker gives it (`eventgate <broker>[
    // publish]`). list_connections lists the node's: the other files on the run's node name brokers
    // `rabbit` too, so this file's is the one in its vhost. First in the file, so the gateway's
    // first pair is all there is there: one listing finds it.
    const listed = await rabbit.admin.listConnections();
    const publishing = listed.filter((c) => c.vhost === rabbit.vhost && c.name === 'eventgate rabbit publish');
    assert.equal(publishing.length, 1, JSON.stringify(listed));
    await rabbit.admin.closeConnection(publishing[0]!.pid, 'eventgate test: the publish connection');
    const lost = await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp publish connection lost; opening it again', 15000, from);
    assert.equal(lost.reason, 'closed by the server: 320 CONNECTION_FORCED - eventgate test: the publish connection (the publish connection)');
    await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp publish connection opened again', 15000, from);
    assert.equal((await post(gw.url('api', '/orders'), { i: 5050 })).status, 200);
    await eventually(() => assert.ok(arrived('/orders').includes(5050)), 15000, 100);
    // The consume routes' channels (and their messages in hand) were left be.
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.broker === 'rabbit' && (l.msg === 'amqp connection lost; reconnecting' || l.msg === 'consumer ready')),
      [],
    );
  });

  it("a connection an operator closes (320 CONNECTION_FORCED) is lost with the server's words, not as `unreachable`; the broker connects again", async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const from = gw.logs.length;
    await rabbit.admin.closeAllConnections(rabbit.vhost, 'eventgate test: closed on purpose');
    const lost = await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp connection lost; reconnecting', 15000, from);
    assert.equal(lost.reason, 'closed by the server: 320 CONNECTION_FORCED - eventgate test: closed on purpose');
    await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp connected', 15000, from);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    await consumersReady(gw, ['orders', 'events'], 30000, from);
  });
});
