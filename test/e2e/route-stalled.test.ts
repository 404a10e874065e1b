import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

interface RouteStatus {
  name: string;
  stalled?: { topic: string; partition: number | null; offset: string | null; attempts: number; code: string; detail: string; since: string }[];
}

/**
 * A consume route without a dead-letter target retries a message its target keeps refusing for as
 * long as it runs (never a silent drop). That wait must be visible: in /admin/status (which
 * message, why, since when) and as a gauge, and gone once the target takes the message.
 */
describe('a consume route stuck on a message its target keeps failing', () => {
  let hook: WebhookReceiver;
  let failing = true;

  before(async () => {
    hook = await WebhookReceiver.start();
    hook.respond = (_r, res) => {
      res.statusCode = failing ? 503 : 200;
      res.end();
    };
  });
  // Registered after the receiver's before(), so the config can name its URL; stopped before it.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: enqueue
    from: { listener: api, path: /enqueue }
    to: { broker: local, topic: jobs }
  - name: deliver
    from: { broker: local, topic: jobs }
    to: { http: { url: "${hook.url}/job", retry: { attempts: 1 } } }
`,
  );
  after(async () => {
    await hook.stop();
  });

  const status = async (): Promise<RouteStatus> => {
    const body = (await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { routes: RouteStatus[] };
    return body.routes.find((r) => r.name === 'deliver')!;
  };
  const gauge = async (): Promise<string | undefined> => (await (await fetch(`${gw.adminUrl}/metrics`)).text()).match(/^eventgate_route_stalled_messages\{route="deliver"\} (\d+)$/m)?.[1];

  it('shows the message, its last error and the retry count in /admin/status and the gauge, then clears both once the target accepts it', async () => {
    assert.deepEqual((await status()).stalled, [], 'nothing stalled before the first message');
    assert.equal(await gauge(), '0');
    assert.equal((await post(gw.url('api', '/enqueue'), { job: 1 })).status, 200);

    const stalled = await eventually(async () => {
      const s = (await status()).stalled!;
      assert.equal(s.length, 1);
      return s[0]!;
    }, 15000);
    assert.equal(stalled.topic, 'jobs');
    assert.equal(stalled.code, 'EG_WEBHOOK_FAILED');
    assert.match(stalled.detail, /503/);
    assert.ok(stalled.attempts >= 5, `stalled after the route's own attempts (${stalled.attempts})`);
    assert.ok(!Number.isNaN(Date.parse(stalled.since)));
    assert.equal(await gauge(), '1');

    const before = hook.requests.length;
    failing = false;
    await hook.received(before + 1);
    await eventually(async () => {
      assert.deepEqual((await status()).stalled, []);
      assert.equal(await gauge(), '0');
    }, 15000);
    assert.equal(JSON.parse(hook.requests.at(-1)!.body).job, 1, 'the stalled message itself was delivered, not dropped');
  });
});
