import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A reload applied while nats-server is away: the routes it adds or rebuilds subscribe while the
 * client is reconnecting. They must consume once the server is back, as the unchanged ones do,
 * instead of waiting for a connection that already happened (spec §6: the new config serves).
 */
describe('kind: nats, consume routes a reload adds or rebuilds while the server is down', () => {
  let nats: MessageServer;
  let receiver: WebhookReceiver;
  before(async () => {
    nats = await startNats();
    receiver = await WebhookReceiver.start();
    // A stream made elsewhere that takes one consumer: the server refuses a second group's.
    const peer = await RawNats.connect(nats);
    try {
      const made = await peer.jsApi('$JS.API.STREAM.CREATE.LIMITED', { name: 'LIMITED', subjects: ['limited.>'], max_consumers: 1 });
      assert.equal(made.error, undefined, JSON.stringify(made));
    } finally {
      peer.close();
    }
  });
  after(async () => {
    await receiver?.stop();
    await nats?.stop();
  });

  /** `limited`: the routes reading the stream that takes one consumer, each in a group of its own. */
  const config = (changed: boolean, limited = ['first']) => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    reconnectTimeWaitMs: 200
    ackTimeoutMs: 1000
    streams:
      EVENTS: { subjects: ["events.>"] }
      LIMITED: { subjects: ["limited.>"], declare: false }
routes:
${limited.map((name) => `  - { name: ${name}, from: { broker: nats, topic: limited.a, group: lim-${name} }, to: { http: { url: "${receiver.url}/${name}" } } }\n`).join('')}  - name: kept
    from: { broker: nats, topic: events.kept }
    to: { http: { url: "${receiver.url}/kept" } }
  - name: rebuilt
    from: { broker: nats, topic: events.rebuilt }
    ${changed ? `through: [{ transform: '$merge([$, {"config": "new"}])' }]` : ''}
    to: { http: { url: "${receiver.url}/rebuilt" } }
${
  changed
    ? `  - name: added
    from: { broker: nats, topic: events.added }
    to: { http: { url: "${receiver.url}/added" } }
`
    : ''
}`;
  const gw = useGateway(() => config(false));

  it('consumes on every route once the server is back: kept, rebuilt and added alike', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'kept', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'rebuilt', 15000);

    await nats.down();
    await gw.waitForLog((l) => l.msg === 'nats connection lost; reconnecting', 15000);
    const reloadFrom = gw.logs.length;
    const reload = await gw.reconfigure(config(true));
    assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
    // Only its steps changed: the rebuilt route takes the subscription over while the server is away.
    assert.ok(gw.logs.slice(reloadFrom).some((l) => l.msg === 'subscription handed over to the rebuilt route' && l.route === 'rebuilt'));
    const from = gw.logs.length;
    await nats.up();
    await gw.waitForLog((l) => l.msg === 'nats reconnected', 20000, from);

    const peer = await RawNats.connect(nats);
    try {
      for (const subject of ['kept', 'rebuilt', 'added']) await peer.jsPublish(`events.${subject}`, JSON.stringify({ subject }));
    } finally {
      peer.close();
    }
    // A JetStream consumer that could not be made while the server was away is made again with backoff (at most 5 s apart).
    const got = await receiver.received(3, 30000);
    assert.deepEqual(got.map((r) => r.url).sort(), ['/added', '/kept', '/rebuilt']);
    assert.deepEqual(JSON.parse(got.find((r) => r.url === '/rebuilt')!.body), { subject: 'rebuilt', config: 'new' });
    // The added route's tries while the server was away failed for the outage, which the broker
    // reports: no consumer the server refused (an error line, and a reason of the route's own).
    assert.deepEqual(
      gw.logs.slice(reloadFrom).filter((l) => l.msg === 'nats consumer could not start; retrying'),
      [],
    );
  });

  it('a route a reload adds whose consumer the server refuses is not ready, saying why in /readyz, /admin/status and the log, and consumes once the server takes it', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'first', 30000);
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(config(true, ['first', 'second']), undefined, { whole: true })).msg, 'config reloaded');
    const refused = await gw.waitForLog((l) => l.msg === 'nats consumer could not start; retrying' && l.route === 'second', 15000, from);
    assert.equal(refused.level, 'error');
    assert.match(String(refused.err), /maximum consumers limit reached/);
    // Before, the route said ready (and /readyz 200) while it consumed nothing.
    const status = await gw.status();
    assert.deepEqual(status.routes.find((r: { name: string }) => r.name === 'second').consumer, { ready: false, detail: `consumer could not start, retrying: ${refused.err}` });
    assert.equal(status.routes.find((r: { name: string }) => r.name === 'first').consumer.ready, true);
    const ready = await fetch(`${gw.adminUrl}/readyz`);
    assert.equal(ready.status, 503);
    assert.deepEqual((await ready.json()).reasons, ['route second: consumer could not start, retrying']);

    // The first group's consumer deleted (its route removed): the second's is made, and it reads.
    assert.equal((await gw.reconfigure(config(true, ['second']), undefined, { whole: true })).msg, 'config reloaded');
    const peer = await RawNats.connect(nats);
    try {
      const deleted = await peer.jsApi('$JS.API.CONSUMER.DELETE.LIMITED.lim-first', {});
      assert.equal(deleted.success, true, JSON.stringify(deleted));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'second', 15000, from);
      await peer.jsPublish('limited.a', JSON.stringify({ n: 1 }));
    } finally {
      peer.close();
    }
    await eventually(
      () =>
        assert.deepEqual(
          receiver.requests.filter((r) => r.url === '/second').map((r) => r.body),
          ['{"n":1}'],
        ),
      15000,
      50,
    );
    assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);
  });
});
