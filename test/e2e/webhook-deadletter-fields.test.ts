import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { deadletterReason } from '../helpers/deadletter-reason.js';
import { useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * What a dead-letter copy says of a webhook's tries (`attempts`, `endpointStatus` in its
 * `_eventgate_error`), read from the dead-letter topic by a forward route's WebSocket clients, and
 * the webhook request counter per target, read from /metrics.
 */
describe('webhook failures: dead-letter fields and requests per target', () => {
  let hook: WebhookReceiver;
  /** Answers the receiver left open (the timeouts'), ended after the gateway stopped. */
  const hanging: ServerResponse[] = [];

  before(async () => {
    hook = await WebhookReceiver.start();
    // Per path: /refuse 422, /down 503, /hang never, /flaky 503 then never; others 200.
    let flaky = 0;
    hook.respond = (r, res) => {
      if (r.url === '/refuse') {
        res.statusCode = 422;
        res.end('no such customer');
      } else if (r.url === '/down') {
        res.statusCode = 503;
        res.end('overloaded');
      } else if (r.url === '/hang' || (r.url === '/flaky' && ++flaky > 1)) {
        hanging.push(res);
      } else if (r.url === '/flaky') {
        res.statusCode = 503;
        res.end();
      } else res.end('ok');
    };
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  # Holds one topic, read by \`full-reader\`: a publish to any other is refused (503) every time.
  full: { kind: memory, maxTopics: 1 }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: enqueue
    from: { listener: api, path: /enqueue/:to }
    to: { broker: local, topic: { expression: '"jobs-" & $path.to' } }
  - name: refuse
    from: { broker: local, topic: jobs-refuse }
    to: { http: { url: "${hook.url}/refuse", retry: { attempts: 3, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  - name: down
    from: { broker: local, topic: jobs-down }
    to: { http: { url: "${hook.url}/down", retry: { attempts: 3, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  - name: hang
    from: { broker: local, topic: jobs-hang }
    to: { http: { url: "${hook.url}/hang", timeoutMs: 300, retry: { attempts: 2, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  - name: flaky
    from: { broker: local, topic: jobs-flaky }
    to: { http: { url: "${hook.url}/flaky", timeoutMs: 300, retry: { attempts: 2, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  - name: invalid
    from: { broker: local, topic: jobs-invalid }
    to: { http: { url: "${hook.url}/invalid", headers: { x-name: name } } }
    deadletter: { broker: local, topic: dlq }
  - name: fill
    from: { listener: api, path: /fill }
    to: { broker: full, topic: taken }
  - name: full-reader
    from: { broker: full, topic: taken }
    to: { broker: local, topic: unused }
  - name: outage
    from: { broker: local, topic: jobs-outage }
    to: { broker: full, topic: other }
    deadletter: { broker: local, topic: dlq }
  - name: dlq-watch
    from: { broker: local, topic: dlq }
    to: { listener: ws, path: /dlq, format: envelope }
  - name: two
    from: { listener: api, path: /two }
    to:
      - { http: { url: "${hook.url}/fine" } }
      - { http: { url: "${hook.url}/down", retry: { attempts: 2, backoffMs: 10 } } }
`,
  );
  after(async () => {
    for (const res of hanging) res.destroy();
    await hook.stop();
  });

  const deadlettered = (to: string, body: unknown) => deadletterReason(gw, to, body);

  it('a refusal (422): one try, the status the endpoint answered', async () => {
    const error = await deadlettered('refuse', { n: 1 });
    assert.deepEqual([error.route, error.status, error.code, error.attempts, error.endpointStatus], ['refuse', 502, 'EG_WEBHOOK_REFUSED', 1, 422]);
    // The fields readers had before are still there, as they were.
    assert.deepEqual(Object.keys(error).slice(0, 6), ['ts', 'route', 'status', 'code', 'detail', 'errors']);
    assert.equal(error.detail, `${hook.url}/refuse answered 422: no such customer`);
  });

  it('retries exhausted on 503: every try counted, the last answer', async () => {
    const error = await deadlettered('down', { n: 2 });
    assert.deepEqual([error.code, error.attempts, error.endpointStatus], ['EG_WEBHOOK_FAILED', 3, 503]);
    assert.match(error.detail as string, /answered 503: overloaded \(after 3 tries\)$/);
  });

  it('a timeout on every try: the tries, and no endpointStatus (the endpoint never answered)', async () => {
    const error = await deadlettered('hang', { n: 3 });
    assert.deepEqual([error.status, error.code, error.attempts], [504, 'EG_WEBHOOK_TIMEOUT', 2]);
    assert.equal(Object.hasOwn(error, 'endpointStatus'), false, JSON.stringify(error));
  });

  it('503, then a timeout: endpointStatus is what the endpoint last answered, from the earlier try', async () => {
    const error = await deadlettered('flaky', { n: 4 });
    assert.deepEqual([error.status, error.code, error.attempts, error.endpointStatus], [504, 'EG_WEBHOOK_TIMEOUT', 2, 503]);
  });

  it('a message no request was made for (an invalid header): the route tried it once, no endpointStatus', async () => {
    const error = await deadlettered('invalid', { name: 'a\r\nx-injected: 1' });
    assert.deepEqual([error.status, error.code, error.attempts], [400, 'EG_INVALID_MESSAGE', 1]);
    assert.equal(Object.hasOwn(error, 'endpointStatus'), false);
  });

  it("a broker target that never takes it (503): the route's tries, no endpointStatus", async () => {
    const error = await deadlettered('outage', { n: 6 });
    assert.deepEqual([error.status, error.code, error.attempts], [503, 'EG_BROKER_UNAVAILABLE', 5]);
    assert.equal(Object.hasOwn(error, 'endpointStatus'), false);
  });

  it('eventgate_webhook_requests_total has a series per target: a failing target is told from the one that delivered', async () => {
    const res = await fetch(gw.url('api', '/two'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":5}' });
    assert.equal(res.status, 502);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const series = metrics.split('\n').filter((l) => l.startsWith('eventgate_webhook_requests_total{route="two"'));
    assert.ok(series.includes('eventgate_webhook_requests_total{route="two",target="0",result="2xx"} 1'), series.join('\n'));
    assert.ok(series.includes('eventgate_webhook_requests_total{route="two",target="0",result="5xx"} 0'), series.join('\n'));
    assert.ok(series.includes('eventgate_webhook_requests_total{route="two",target="1",result="5xx"} 2'), series.join('\n'));
    assert.ok(series.includes('eventgate_webhook_requests_total{route="two",target="1",result="2xx"} 0'), series.join('\n'));
    // A route with one webhook: its one target, 0.
    assert.match(metrics, /^eventgate_webhook_requests_total\{route="down",target="0",result="5xx"\} 3$/m);
  });
});

/**
 * A reload that takes a webhook away from a place in a route's `to` while that webhook's request is
 * still out (the retired route drains it): its answer, counted after the reload, does not bring
 * back the series of a target the route no longer has.
 */
describe('webhook requests per target across a reload that removes one', () => {
  let hook: WebhookReceiver;
  /** The answer of the request to /held, made once the reload is applied. */
  let held: ServerResponse | undefined;
  before(async () => {
    hook = await WebhookReceiver.start();
    hook.respond = (r, res) => {
      if (r.url === '/held') held = res;
      else res.end('ok');
    };
  });
  after(async () => {
    held?.destroy();
    await hook.stop();
  });
  const gw = useGateway();

  const config = (targets: string) => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: pair
    from: { listener: api, path: /pair }
    to:
${targets}
`;
  const fine = () => `      - { http: { url: "${hook.url}/fine" } }`;
  const series = async () => (await (await fetch(`${gw.adminUrl}/metrics`)).text()).split('\n').filter((l) => l.startsWith('eventgate_webhook_requests_total{route="pair"'));

  it("the retired target's answer after the reload adds no series at its old place", async () => {
    await gw.start(config(`${fine()}\n      - { http: { url: "${hook.url}/held", retry: { attempts: 1 } } }`));
    const answer = fetch(gw.url('api', '/pair'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
    await hook.received(2);
    const line = await gw.reconfigure(config(fine()), undefined, { whole: true });
    assert.equal(line.msg, 'config reloaded');
    assert.ok(!(await series()).some((l) => l.includes('target="1"')), (await series()).join('\n'));
    // The retired route's webhook at place 1 is answered now: it counts, and its request ends.
    assert.ok(held, 'the /held request arrived');
    held.statusCode = 503;
    held.end();
    assert.equal((await answer).status, 502);
    const after = await series();
    assert.ok(!after.some((l) => l.includes('target="1"')), after.join('\n'));
    assert.ok(after.includes('eventgate_webhook_requests_total{route="pair",target="0",result="2xx"} 1'), after.join('\n'));
  });
});
