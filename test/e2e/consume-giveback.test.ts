import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A consume route that a reload rebuilds while it is still retrying a message (its target keeps
 * failing) stops with the message in hand and gives it back (docs/architecture.md, "Retries and
 * dead-lettering"): the rebuilt route gets it, it is delivered once, and the give-back is not
 * reported as a consumer failure.
 */
describe('a consume route rebuilt while it retries a message', () => {
  let receiver: WebhookReceiver;
  before(async () => {
    receiver = await WebhookReceiver.start();
    // /down is an endpoint that is down; /up one that is back.
    receiver.respond = (r, res) => (r.url === '/down' ? res.writeHead(503).end('down') : res.end('ok'));
  });
  const config = (path: string) => `version: 1
admin: { port: 0 }
brokers: { local: { kind: memory } }
listeners: { api: { kind: http, port: 0, host: 127.0.0.1 } }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: orders }
  - name: out
    from: { broker: local, topic: orders }
    to: { http: { url: "${receiver.url}${path}", retry: { attempts: 1 } } }
`;
  const gw = useGateway(() => config('/down'));
  after(async () => {
    await receiver?.stop();
  });

  it('hands the message to the rebuilt route, which delivers it once; the give-back is no consumer error', async () => {
    assert.equal((await post(gw.url('api', '/in'), { n: 1 })).status, 200);
    // The route has it in hand and keeps retrying it (no deadletter target).
    await gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('message not consumed; retrying it until its targets accept it'), 20000);
    const from = gw.logs.length;
    const reload = await gw.reconfigure(config('/up'));
    assert.equal(reload.msg, 'config reloaded');

    const ups = () => receiver.requests.filter((r) => r.url === '/up');
    await receiver.received(receiver.requests.length + 1);
    // A sentinel published after the reload arrives next: the given-back message came once, before it.
    assert.equal((await post(gw.url('api', '/in'), { n: 2 })).status, 200);
    while (ups().length < 2) await receiver.received(receiver.requests.length + 1);
    assert.deepEqual(
      ups().map((r) => JSON.parse(r.body)),
      [{ n: 1 }, { n: 2 }],
    );

    // The broker handed it over without calling it a failure.
    const failures = gw.logs.slice(from).filter((l) => l.level === 'error' && /not consumed|given back/.test(l.msg) && l.route !== 'out');
    assert.deepEqual(failures, []);
    assert.equal((await gw.status()).lastReloadError, null);
  });
});
