import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { mosquittoPub, MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A consume route with a dead-letter target stops (SIGTERM) while its webhook endpoint has not
 * answered: after a grace period the try is cut, and the message must be given back, unacknowledged,
 * for the next run — not dead-lettered, since nothing failed but the gateway's own stop
 * (spec §7: consumed messages not finished are delivered again, not lost or set aside). The grace
 * period is within `drainTimeoutMs`: it used to be a fixed 5 s, so a gateway told to drain for
 * 500 ms took more than 5 s to exit (past a short Kubernetes grace period, a SIGKILL).
 */
describe('webhook targets of a consume route stopped while the endpoint holds a message', () => {
  let mqtt: MessageServer;
  let receiver: WebhookReceiver;
  let dlq: MosquittoSub;
  let gw: RunningGateway | undefined;
  /** While set, the endpoint answers nothing. */
  let held: ServerResponse[] | undefined = [];

  before(async () => {
    mqtt = await startMosquitto();
    receiver = await WebhookReceiver.start();
    receiver.respond = (_r, res) => (held ? held.push(res) : res.end('ok'));
    dlq = await MosquittoSub.start(mqtt, 'undeliverable', 1);
  });
  after(async () => {
    for (const res of held ?? []) res.end('ok');
    await gw?.stop('SIGKILL');
    dlq?.stop();
    await receiver?.stop();
    await mqtt?.stop();
  });

  const config = () => `
version: 1
admin: { port: 0, drainTimeoutMs: 500 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-giveback-${process.pid}, reconnectPeriodMs: 200 }
routes:
  - name: relay
    from: { broker: devices, topic: orders/# }
    to: { http: { url: "${receiver.url}/orders", timeoutMs: 60000 } }
    deadletter: { broker: devices, topic: undeliverable }
`;

  it('gives the message back within drainTimeoutMs instead of dead-lettering it, and the next run delivers it', async () => {
    gw = await startGateway(config());
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000);
    await mosquittoPub(mqtt, 'orders/1', '{"order":1}', { qos: 1 });
    await receiver.received(1, 20000);

    // The route waits for the endpoint until its stop grace period (the drain timeout) ends, then cuts the try.
    const stopping = Date.now();
    const exit = await gw.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    // A bound, not a wait: 500 ms of drain plus the broker's goodbye, far below the old 5 s.
    assert.ok(Date.now() - stopping < 4000, `exited ${Date.now() - stopping} ms after SIGTERM`);
    assert.deepEqual(
      gw.logs.filter((l) => l.msg === 'message sent to the dead-letter topic'),
      [],
    );
    // Said as what it is (info), not as a failure (warn): nothing is lost, the next run has it.
    assert.deepEqual(
      gw.logs.filter((l) => l.msg === 'message failed'),
      [],
    );
    const givenBack = gw.logs.filter((l) => l.msg === 'message given back uncommitted: the route stopped before its targets accepted it');
    assert.equal(givenBack.length, 1, JSON.stringify(gw.logs.slice(-8)));
    assert.equal(givenBack[0]!.level, 'info');
    assert.equal(givenBack[0]!.route, 'relay');
    // Nothing reached the dead-letter topic: a sentinel published after the exit is the first there.
    await mosquittoPub(mqtt, 'undeliverable', '{"sentinel":true}', { qos: 1 });
    const seen = await dlq.until((m) => m.payload === '{"sentinel":true}', 20000);
    assert.deepEqual(
      seen.map((m) => m.payload),
      ['{"sentinel":true}'],
    );

    // The server kept it for the route's session: the next run delivers it.
    for (const res of held ?? []) res.end('ok');
    held = undefined;
    gw = await startGateway(config());
    const got = await receiver.received(2, 20000);
    assert.deepEqual(
      got.map((r) => JSON.parse(r.body)),
      [{ order: 1 }, { order: 1 }],
    );
    assert.deepEqual(await gw.stop(), { code: 0, signal: null });
    gw = undefined;
  });
});
