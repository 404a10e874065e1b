import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { deadletterReason } from '../helpers/deadletter-reason.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const TOKEN = 'failed-target-token-1234';

/**
 * Which target of a route failed, and the failing webhook's tries and last answer: the `target`
 * field of a dead-letter copy's `_eventgate_error` (read from the dead-letter topic by a forward
 * route's WebSocket client), and `attempts`, `endpointStatus` and `target` in an HTTP publish
 * route's 502/504 problem answer, a WebSocket publish route's error frame and the tap's events.
 */
describe('the failed target named in dead letters and answers', () => {
  let hook: WebhookReceiver;
  /** Answers the receiver left open (the timeouts'), ended after the gateway stopped. */
  const hanging: ServerResponse[] = [];

  before(async () => {
    hook = await WebhookReceiver.start();
    // Per path: /down and /stuck 500 (retried), /hang never answers, /later 503 asking for ten minutes; others 200.
    hook.respond = (r, res) => {
      if (r.url === '/down' || r.url === '/stuck') {
        res.statusCode = 500;
        res.end('broken');
      } else if (r.url === '/hang') hanging.push(res);
      else if (r.url === '/later') res.writeHead(503, { 'retry-after': '600' }).end('later');
      else res.end('ok');
    };
  });
  /** The config; `laterBackoffMs` is publish-later's, which a reload changes to replace that route alone. */
  const config = (laterBackoffMs = 10) => `
version: 1
# drainTimeoutMs: the reload that cuts publish-later's wait, and the stop with \`stuck\` stalled,
# each wait it out (10 s by default); no case is about its length.
admin: { port: 0, token: ${TOKEN}, drainTimeoutMs: 1000 }
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
  - name: fan
    from: { broker: local, topic: jobs-fan }
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "${hook.url}/fine" } }
      - { http: { url: "${hook.url}/down", retry: { attempts: 2, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  - name: one
    from: { broker: local, topic: jobs-one }
    to: { http: { url: "${hook.url}/down", retry: { attempts: 3, backoffMs: 10 } } }
    deadletter: { broker: local, topic: dlq }
  # No deadletter: its message stalls, retried for as long as the route runs.
  - name: stuck
    from: { broker: local, topic: jobs-stuck }
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "${hook.url}/stuck", retry: { attempts: 1 } } }
  - name: fill
    from: { listener: api, path: /fill }
    to: { broker: full, topic: taken }
  - name: full-reader
    from: { broker: full, topic: taken }
    to: { broker: local, topic: unused }
  - name: outage
    from: { broker: local, topic: jobs-outage }
    to:
      - { broker: local, topic: fanned }
      - { broker: full, topic: other }
    deadletter: { broker: local, topic: dlq }
  - name: dlq-watch
    from: { broker: local, topic: dlq }
    to: { listener: ws, path: /dlq, format: envelope }
  - name: publish-two
    from: { listener: api, path: /two }
    to:
      - { http: { url: "${hook.url}/fine" } }
      - { http: { url: "${hook.url}/down", retry: { attempts: 2, backoffMs: 10 } } }
  - name: publish-hang
    from: { listener: api, path: /hang }
    to: { http: { url: "${hook.url}/hang", timeoutMs: 200, retry: { attempts: 2, backoffMs: 10 } } }
  - name: publish-broker
    from: { listener: api, path: /broker }
    to:
      - { broker: local, topic: fanned }
      - { broker: full, topic: other }
  - name: chat
    from: { listener: ws, path: /chat }
    ack: true
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "${hook.url}/down", retry: { attempts: 2, backoffMs: 10 } } }
  - name: publish-later
    from: { listener: api, path: /later }
    to:
      - { broker: local, topic: fanned }
      - { http: { url: "${hook.url}/later", retry: { attempts: 3, backoffMs: ${laterBackoffMs}, maxBackoffMs: 60000 } } }
`;
  const gw = useGateway(() => config());
  after(async () => {
    for (const res of hanging) res.destroy();
    await hook.stop();
  });

  const post = (path: string, body: unknown) => fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  const deadlettered = (to: string, body: unknown) => deadletterReason(gw, to, body);

  it("a fan-out's dead-letter copy names the webhook that failed by its place in `to`, after the fields it had", async () => {
    const error = await deadlettered('fan', { n: 1 });
    assert.deepEqual([error.route, error.status, error.code, error.attempts, error.endpointStatus, error.target], ['fan', 502, 'EG_WEBHOOK_FAILED', 2, 500, 2]);
    // The fields readers had are where they were; the new one comes last.
    assert.deepEqual(Object.keys(error), ['ts', 'route', 'status', 'code', 'detail', 'errors', 'attempts', 'endpointStatus', 'target']);
    // The place is the label of the webhook's series in /metrics.
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    assert.match(metrics, /^eventgate_webhook_requests_total\{route="fan",target="2",result="5xx"\} 2$/m);
  });

  it("a route with one target: its copy's target is 0", async () => {
    const error = await deadlettered('one', { n: 2 });
    assert.deepEqual([error.code, error.attempts, error.endpointStatus, error.target], ['EG_WEBHOOK_FAILED', 3, 500, 0]);
  });

  it("a broker target of a fan-out that never takes it: its place, and the route's tries", async () => {
    const error = await deadlettered('outage', { n: 3 });
    assert.deepEqual([error.status, error.code, error.attempts, error.target], [503, 'EG_BROKER_UNAVAILABLE', 5, 1]);
    assert.equal(Object.hasOwn(error, 'endpointStatus'), false);
  });

  it("an HTTP publish route's 502 says the failing webhook's tries, last answer and place", async () => {
    const res = await post('/two', { n: 4 });
    assert.equal(res.status, 502);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual([body.code, body.attempts, body.endpointStatus, body.target], ['EG_WEBHOOK_FAILED', 2, 500, 1]);
    // The contract's members first, as they were; the extension members after them.
    assert.deepEqual(Object.keys(body), ['type', 'title', 'status', 'detail', 'code', 'deliveries', 'attempts', 'endpointStatus', 'target']);
    assert.deepEqual(body.deliveries, [{ endpoint: `${hook.url}/fine`, status: 200, attempts: 1 }]);
  });

  it('a 504 (every try timed out): the tries and the place, no endpointStatus (the endpoint never answered)', async () => {
    const res = await post('/hang', { n: 5 });
    assert.equal(res.status, 504);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual([body.code, body.attempts, body.target], ['EG_WEBHOOK_TIMEOUT', 2, 0]);
    assert.equal(Object.hasOwn(body, 'endpointStatus'), false, JSON.stringify(body));
  });

  it("a broker target's 503: its place, no tries of its own", async () => {
    assert.equal((await post('/fill', { n: 0 })).status, 200);
    const res = await post('/broker', { n: 6 });
    assert.equal(res.status, 503);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual([body.code, body.target], ['EG_BROKER_UNAVAILABLE', 1]);
    assert.equal(Object.hasOwn(body, 'attempts'), false, JSON.stringify(body));
  });

  it("a WebSocket publish route's error frame carries the same members", async () => {
    const chat = await WsClient.connect(gw.url('ws', '/chat', 'ws'));
    try {
      chat.send({ n: 7 });
      const frame = (await chat.next()) as Record<string, unknown>;
      assert.deepEqual([frame.type, frame.frame, frame.status, frame.code], ['error', 1, 502, 'EG_WEBHOOK_FAILED']);
      assert.deepEqual([frame.attempts, frame.endpointStatus, frame.target], [2, 500, 1]);
      assert.equal((frame.deliveries as unknown[]).length, 1, JSON.stringify(frame));
    } finally {
      chat.close();
    }
  });

  it("a 503 for a retry a reload cut short: the webhook's tries, last answer and place, as a 502 says them", async () => {
    const from = hook.requests.length;
    const answer = post('/later', { n: 10 });
    // Its first try answered 503 with Retry-After (a minute, maxBackoffMs): the route waits; a reload
    // replaces it meanwhile, and its stop cuts the wait when the drain ends (drainTimeoutMs, 1 s here).
    await eventually(() => assert.equal(hook.requests.filter((r) => r.url === '/later').length, 1));
    assert.equal((await gw.reconfigure(config(11))).msg, 'config reloaded');
    const res = await answer;
    assert.equal(res.status, 503);
    const body = (await res.json()) as Record<string, unknown>;
    assert.deepEqual([body.code, body.attempts, body.endpointStatus, body.target], ['EG_SHUTTING_DOWN', 1, 503, 1], JSON.stringify(body));
    assert.match(String(body.detail), /^the route stopped while waiting to try http:\/\/127\.0\.0\.1:\d+\/later again: not delivered \(.*answered 503: later\)/);
    assert.equal(hook.requests.slice(from).filter((r) => r.url === '/later').length, 1, 'no try after the reload');
  });

  it("the tap's events: a publish route's failure, and a consume route's failed try then its dead letter", async () => {
    const tapUrl = (route: string) => `${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=${route}`;
    const two = await WsClient.connect(tapUrl('publish-two'), { headers: { authorization: `Bearer ${TOKEN}` } });
    try {
      assert.equal((await two.next()).type, 'hello');
      assert.equal((await post('/two', { n: 8 })).status, 502);
      const event = await two.next();
      assert.deepEqual([event.outcome, event.status], ['failed', 502]);
      assert.deepEqual([event.problem.code, event.problem.attempts, event.problem.endpointStatus, event.problem.target], ['EG_WEBHOOK_FAILED', 2, 500, 1]);
    } finally {
      two.close();
    }
    const outage = await WsClient.connect(tapUrl('outage'), { headers: { authorization: `Bearer ${TOKEN}` } });
    try {
      assert.equal((await outage.next()).type, 'hello');
      assert.equal((await post('/enqueue/outage', { n: 9 })).status, 200);
      // Each try's failure (a broker makes no tries of its own), then the dead letter with the route's.
      const events = [];
      for (let i = 0; i < 6; i++) events.push(await outage.next());
      assert.deepEqual(
        events.map((e) => [e.outcome, e.problem.target, e.problem.attempts]),
        [...Array(5).fill(['failed', 1, undefined]), ['deadlettered', 1, 5]],
      );
    } finally {
      outage.close();
    }
  });

  it("every target failure's log line names the target, a single target's too, and so does a stalled message in /admin/status", async () => {
    const from = gw.logs.length;
    const line = (route: string, msg: string) => gw.waitForLog((l) => l.route === route && String(l.msg).startsWith(msg), 20000, from);
    // A publish route's one target: `target` 0 (earlier releases named it only in a fan-out).
    assert.equal((await post('/hang', { n: 11 })).status, 504);
    const failed = await line('publish-hang', 'message failed');
    assert.deepEqual([failed.code, failed.target], ['EG_WEBHOOK_TIMEOUT', 0]);
    // A consume route's one target, dead-lettered.
    await deadlettered('one', { n: 12 });
    const deadletter = await line('one', 'message sent to the dead-letter topic');
    assert.deepEqual([deadletter.code, deadletter.target], ['EG_WEBHOOK_FAILED', 0]);
    // A consume route without a deadletter target: the stall's line and /admin/status name the webhook's place.
    assert.equal((await post('/enqueue/stuck', { n: 13 })).status, 200);
    const stalledLine = await line('stuck', 'message not consumed');
    assert.deepEqual([stalledLine.code, stalledLine.target], ['EG_WEBHOOK_FAILED', 1]);
    const status = (await (await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { routes: { name: string; stalled: Record<string, unknown>[] }[] };
    const stalled = status.routes.find((r) => r.name === 'stuck')!.stalled;
    assert.deepEqual(
      stalled.map((m) => [m.topic, m.code, m.target]),
      [['jobs-stuck', 'EG_WEBHOOK_FAILED', 1]],
    );
  });
});
