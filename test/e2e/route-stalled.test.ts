import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { fetch } from '../helpers/http.js';

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

/**
 * A consumed message nothing can make pass (here: invalid, with `onInvalid: reject`) on a route
 * without a dead-letter target is dropped, with an error naming it and why: retrying it would stall
 * the topic behind it for ever. The route goes on with the next message.
 */
describe('a consume route without a dead-letter target, on a message that can never pass', () => {
  let hook: WebhookReceiver;
  before(async () => {
    hook = await WebhookReceiver.start();
  });
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
    through: [ { validate: { schema: { type: object, required: [job] }, onInvalid: reject } } ]
    to: { http: { url: "${hook.url}/job" } }
`,
  );
  after(async () => {
    await hook.stop();
  });

  it('logs the drop with the message, the route and the validation error, counts it invalid, and delivers the next message', async () => {
    assert.equal((await post(gw.url('api', '/enqueue'), { nojob: 1 })).status, 200, 'the publish route has no validation');
    assert.equal((await post(gw.url('api', '/enqueue'), { job: 2 })).status, 200);
    await hook.received(1);

    const dropped = await gw.waitForLog((l) => l.msg === 'message dropped: it cannot pass this route and the route has no deadletter target');
    assert.equal(dropped.level, 'error');
    assert.equal(dropped.route, 'deliver');
    assert.equal(dropped.topic, 'jobs');
    assert.equal(dropped.offset, '0', 'the first message, the invalid one');
    assert.equal(dropped.code, 'EG_INVALID_MESSAGE');
    assert.equal(dropped.detail, 'the message does not match its schema (1 error)');
    assert.deepEqual(dropped.errors, [": must have required property 'job'"], 'the line says which check failed: the message itself is gone');
    assert.ok(!JSON.stringify(dropped).includes('    at '), 'no stack trace');

    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const count = (outcome: string) => metrics.match(new RegExp(`^eventgate_route_messages_total\\{route="deliver",outcome="${outcome}"\\} (\\d+)$`, 'm'))?.[1];
    assert.equal(count('invalid'), '1');
    assert.equal(count('delivered'), '1');
    assert.equal(count('deadlettered'), '0');
    // Not retried: one try each, and nothing shown as stalled.
    assert.equal(count('received'), '2');
    const status = (await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { routes: RouteStatus[] };
    assert.deepEqual(status.routes.find((r) => r.name === 'deliver')!.stalled, []);
    // The valid message came once, and the dropped one never reached the target.
    assert.deepEqual(
      hook.requests.map((r) => JSON.parse(r.body)),
      [{ job: 2 }],
    );
    assert.equal(gw.logs.filter((l) => l.msg.startsWith('message dropped')).length, 1);
  });
});
