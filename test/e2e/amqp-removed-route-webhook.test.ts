import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { consumersReady, eventually, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A reload that removes a consume route cuts its webhook tries still out 5 s after its stop began,
 * and gives their messages back. On MQTT a retiring route's session then ended with them (its
 * grace now starts once its leave is done, mqtt-removed-route-slow-server); an AMQP route takes
 * nothing after its stop began, and what it gives back stays in its group's queue, which the
 * reload keeps: the route put back reads it.
 */
describe('kind: amqp, a reload that removes a route whose webhook is still out', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  let receiver: WebhookReceiver;
  /** Requests to `/held` not answered yet. */
  const holding: ServerResponse[] = [];
  let hold = true;
  before(async () => {
    receiver = await WebhookReceiver.start();
    const respond = receiver.respond;
    receiver.respond = (r, res) => {
      if (r.url === '/held' && hold) holding.push(res);
      else respond(r, res);
    };
  });
  after(async () => {
    for (const res of holding) res.destroy();
    await receiver?.stop();
  });

  const config = (withRoute: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url} }
routes:
  - name: kept
    from: { broker: rabbit, topic: kept.x }
    to: { http: { url: "${receiver.url}/kept" } }
${withRoute ? `  - name: held\n    from: { broker: rabbit, topic: held.x }\n    to: { http: { url: "${receiver.url}/held", timeoutMs: 60000 } }\n` : ''}`;
  const gw = useGateway(() => config(true));

  it('gives the cut message back to the route queue, and the route put back delivers it', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        await consumersReady(gw, 'held', 60000);
        await pikaPublish(rabbit, 'amq.topic', 'held.x', [{ body: JSON.stringify({ i: 1 }) }]);
        await eventually(() => assert.equal(holding.length, 1), 15000, 50);
        const from = gw.logs.length;
        let line = await gw.reconfigure(config(false));
        assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
        const givenBack = await gw.waitForLog((l) => l.route === 'held' && String(l.msg).startsWith('message given back'), 15000, from);
        assert.equal(givenBack.code, 'EG_SHUTTING_DOWN');
        // Back in the group's queue, which the removed route leaves in place.
        await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, 'eventgate-held'), 1), 15000, 200);
        hold = false;
        line = await gw.reconfigure(config(true));
        assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
        await eventually(() => assert.equal(receiver.requests.filter((r) => r.url === '/held').length, 2), 15000, 50);
        assert.deepEqual(
          receiver.requests.filter((r) => r.url === '/held').map((r) => JSON.parse(r.body).i),
          [1, 1],
        );
      },
    ));
});
