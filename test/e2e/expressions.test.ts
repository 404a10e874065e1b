import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

const RUNAWAY = '($f := function($n){ $f($n + 1) }; $f(1))';
const DEEP_RECURSION = '($f := function($n){ 1 + $f($n + 1) }; $f(1))';

describe('expression guardrails', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
expressions: {timeoutMs: 2000}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  deep: {kind: http, port: 0, maxJsonDepth: 100000}
  push: {kind: websocket, port: 0}
routes:
  - name: runaway
    from: {listener: api, path: /runaway}
    through: [{transform: '${RUNAWAY}'}]
    to: {broker: local, topic: t}
  - name: recursion
    from: {listener: api, path: /recursion}
    through: [{transform: '${DEEP_RECURSION}'}]
    to: {broker: local, topic: t}
  - name: fast
    from: {listener: api, path: /fast}
    through: [{transform: '{"doubled": n * 2}'}]
    to: {broker: local, topic: t}
  - name: overflow
    from: {listener: deep, path: /overflow}
    through: [{transform: '$string($)'}]
    to: {broker: local, topic: t}
  - name: jobs-in
    from: {listener: api, path: /jobs}
    to: {broker: local, topic: jobs}
  - name: consume-runaway
    from: {broker: local, topic: jobs}
    through: [{filter: '${RUNAWAY}'}]
    to: {broker: local, topic: done}
    deadletter: {broker: local, topic: dead}
  - name: dead-watch
    from: {broker: local, topic: dead}
    to: {listener: push, path: /ws/dead, format: envelope}
`);

  it('fails a runaway expression with 500 while another route keeps answering during it', async () => {
    let settled = false;
    const slow = post(gw.url('api', '/runaway'), { n: 1 }).finally(() => (settled = true));
    // The message is inside the runaway route once the admin API (itself served by the same
    // event loop) reports it; without cooperative evaluation this poll would get no answer
    // until the expression gave up, and would then see nothing in flight.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const status = await gw.status();
      if (status.routes.find((r: { name: string }) => r.name === 'runaway').inFlight === 1) break;
      assert.ok(Date.now() < deadline && !settled, 'the runaway message was never seen in flight');
    }
    const fast = await post(gw.url('api', '/fast'), { n: 21 });
    assert.equal(fast.status, 200);
    assert.equal(settled, false, 'the runaway expression should still have been running');
    const r = await slow;
    assert.equal(r.status, 500);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.match(r.body.detail, /longer than 2000 ms/);
  });

  it('fails a recursion deeper than maxDepth with 500', async () => {
    const r = await post(gw.url('api', '/recursion'), {});
    assert.equal(r.status, 500);
    assert.match(r.body.detail, /recursed deeper than 500 levels/);
  });

  it('turns a stack overflow inside an expression into a clean 500, and keeps serving', async () => {
    const depth = 50_000;
    const r = await post(gw.url('deep', '/overflow'), '['.repeat(depth) + ']'.repeat(depth));
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.equal((await post(gw.url('api', '/fast'), { n: 1 })).status, 200);
    assert.equal(gw.logs.filter((l) => /uncaught|unhandled/.test(l.msg)).length, 0);
  });

  it('dead-letters a consumed message whose expression runs away, and keeps consuming', async () => {
    const dead = await WsClient.connect(gw.url('push', '/ws/dead', 'ws'));
    assert.equal((await post(gw.url('api', '/jobs'), { job: 1 })).status, 200);
    const frame = await dead.next(10_000);
    assert.deepEqual(frame.value, { job: 1 });
    const error = JSON.parse(frame.headers._eventgate_error);
    assert.equal(error.code, 'EG_EXPRESSION_FAILED');
    assert.equal(error.route, 'consume-runaway');
    dead.close();
  });
});
