import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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
  - name: evals
    from: {listener: api, path: /eval}
    through: [{transform: '$eval(code, $)'}]
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

  it("fails a client's text that $eval's itself once, with a short detail, and keeps serving", async () => {
    // Each level of $eval wrapped the failure of the one inside as JSON: the detail doubled per
    // level, and at the depth limit the gateway ran out of memory writing it (walk-expr3).
    const r = await post(gw.url('api', '/eval'), { code: '$$.code ~> $eval' });
    assert.equal(r.status, 500);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    // The text recurses until a limit stops it: the depth (500 levels) on a quiet machine, the
    // time box (2000 ms) first when the machine is loaded. Either way it is said once, in the
    // words it gets outside $eval; the old code wrapped it again at every level it had reached.
    const stopped = ['expression recursed deeper than 500 levels and was stopped', 'expression ran longer than 2000 ms and was stopped'];
    assert.ok(
      stopped.some((limit) => r.body.detail === `transform failed: the text given to $eval failed: ${limit}`),
      `a detail naming one limit, once: ${String(r.body.detail).slice(0, 300)}`,
    );
    assert.equal((await post(gw.url('api', '/eval'), { code: 'a + 1', a: 2 })).status, 200);
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

describe('expression limits on reload (spec §6)', () => {
  const gw = useGateway();
  const config = (maxDepth: number) => `version: 1
expressions: {maxDepth: ${maxDepth}}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: count-down
    from: {listener: api, path: /count}
    through: [{transform: '($f := function($n){ $n = 0 ? 0 : 1 + $f($n - 1) }; {"depth": $f(n)})'}]
    to: {broker: local, topic: t, key: '$string(n)'}
`;

  it('applies a changed expressions.maxDepth to the routes it did not otherwise change', async () => {
    await gw.start(config(500));
    assert.equal((await post(gw.url('api', '/count'), { n: 100 })).status, 200);
    const line = await gw.reconfigure(config(20));
    assert.equal(line.msg, 'config reloaded');
    // Before, the route was kept with the expressions compiled under the old limit: 200.
    const r = await post(gw.url('api', '/count'), { n: 100 });
    assert.equal(r.status, 500, r.text);
    assert.match(r.body.detail, /recursed deeper than 20 levels/);
  });
});

describe('expression results JSON cannot hold', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  push: {kind: websocket, port: 0}
routes:
  - name: huge
    from: {listener: api, path: /huge}
    through: [{transform: '$pad("", n, $exists(fill) ? fill : "x")'}]
    to: {broker: local, topic: out}
  - name: range
    from: {listener: api, path: /range}
    through: [{transform: '{"numbers": $count([first..$number($headers."x-last")])}'}]
    to: {broker: local, topic: out}
  - name: lambda
    from: {listener: api, path: /lambda}
    through: [{transform: '($twice := function($x){ $x * 2 }; $twice)'}]
    to: {broker: local, topic: out}
  - name: ratio
    from: {listener: api, path: /ratio}
    through: [{transform: '{"avg": total / count}'}]
    to: {broker: local, topic: out}
  - name: percent
    from: {listener: api, path: /percent}
    through: [{transform: '{"pct": total / count * 100}'}]
    to: {broker: local, topic: out}
  - name: formats
    from: {listener: api, path: /formats}
    through: [{transform: '{"at": $fromMillis(ts), "local": $fromMillis(ts, "[H01]:[m01]", tz), "n": $formatNumber(n, "#,##0.00"), "zone": $now("[Z]", tz)}'}]
    to: {broker: local, topic: out}
  - name: block
    from: {listener: api, path: /block}
    through:
      - transform: |
          {
            "id": id,
            "cents": price * 100
          }
    to: {broker: local, topic: out}
  - name: ratio-ws
    from: {listener: push, path: /ws/ratio}
    through: [{transform: '{"avg": total / count}'}]
    to: {broker: local, topic: out}
  - name: header
    from: {listener: api, path: /header}
    through: [{headers: {set: {x-name: '$uppercase'}}}]
    to: {broker: local, topic: out}
  - name: key
    from: {listener: api, path: /key}
    to: {broker: local, topic: out, key: '$lowercase'}
  - name: evals
    from: {listener: api, path: /eval}
    through: [{transform: '$eval(code, $)'}]
    to: {broker: local, topic: t}
  - name: jobs-in
    from: {listener: api, path: /jobs}
    to: {broker: local, topic: jobs}
  - name: averages
    from: {broker: local, topic: jobs}
    through: [{transform: '{"avg": total / count}'}]
    to: {broker: local, topic: out}
    deadletter: {broker: local, topic: dead}
  - name: out-watch
    from: {broker: local, topic: out}
    to: {listener: push, path: /ws/out, format: envelope}
  - name: dead-watch
    from: {broker: local, topic: dead}
    to: {listener: push, path: /ws/dead, format: envelope}
`);

  it('fails a transform that yields a function with 500 (it used to hang and crash the gateway)', async () => {
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const r = await post(gw.url('api', '/lambda'), { n: 1 });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.equal(r.body.detail, 'transform failed: the result is not JSON: it holds a function at /');
    assert.equal((await post(gw.url('api', '/ratio'), { total: 3, count: 2 })).status, 200);
    // Forwarded after the 200 (the topic's answer): taken here, not by the next test's client of /ws/out.
    assert.deepEqual((await out.next()).value, { avg: 1.5 });
    out.close();
  });

  it('fails a transform whose result is over expressions.maxResultBytes with 500 before it is sent, and keeps serving', async () => {
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    // $pad is refused before it makes the string: a 500-million-character one held the gateway for
    // minutes, and one padded with two characters to 10^8 ran its heap out (the process died).
    for (const [n, fill] of [
      [10_000_000, 'x'],
      [600_000_000, 'x'],
      [100_000_000, 'ab'],
    ] as const) {
      const r = await post(gw.url('api', '/huge'), { n, fill });
      assert.equal(r.status, 500, r.text);
      assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
      assert.equal(r.body.detail, `transform failed: $pad to a width of ${n} would make a string larger than expressions.maxResultBytes (16.0 MiB)`);
    }
    assert.equal((await post(gw.url('api', '/huge'), { n: 1000 })).status, 200);
    assert.equal((await out.next()).value, 'x'.repeat(1000));
    out.close();
  });

  it('fails a range whose end a header sets past expressions.maxResultBytes before making it, and sends the ones under it', async () => {
    // JSONata made [1..10000000] whole in one step of ~0.7 s and ~370 MB, which the time box cannot stop.
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    assert.equal((await post(gw.url('api', '/range'), { first: 1 }, { 'x-last': '1000' })).status, 200);
    const r = await post(gw.url('api', '/range'), { first: 1 }, { 'x-last': '10000000' });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.equal(r.body.detail, 'transform failed: the range [1..10000000] would make an array of 10000000 numbers (about 152.6 MiB) larger than expressions.maxResultBytes (16.0 MiB)');
    // The next request is answered, and [5..1] is empty, as in JSONata.
    assert.equal((await post(gw.url('api', '/range'), { first: 5 }, { 'x-last': '1' })).status, 200);
    assert.deepEqual((await out.next()).value, { numbers: 1000 });
    assert.deepEqual((await out.next()).value, { numbers: 0 });
    out.close();
  });

  it('fails a division by zero with 500 instead of sending null, over HTTP and WebSocket', async () => {
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const r = await post(gw.url('api', '/ratio'), { total: 3, count: 0 });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.detail, 'transform failed: the result is not JSON: it holds Infinity at /avg');
    // Arithmetic on it is JSONata's own error, which wrote the number as JSON does: "null".
    const p = await post(gw.url('api', '/percent'), { total: 3, count: 0 });
    assert.equal(p.status, 500, p.text);
    assert.equal(p.body.detail, 'transform failed: Number out of range: Infinity (a division by zero?)');
    const ws = await WsClient.connect(gw.url('push', '/ws/ratio', 'ws'));
    ws.send({ total: 0, count: 0 });
    const frame = await ws.next();
    assert.equal(frame.type, 'error');
    assert.equal(frame.status, 500);
    assert.equal(frame.detail, 'transform failed: the result is not JSON: it holds NaN at /avg');
    // The only message out is a good one: nothing was sent for the two above.
    assert.equal((await post(gw.url('api', '/ratio'), { total: 3, count: 2 })).status, 200);
    assert.deepEqual((await out.next()).value, { avg: 1.5 });
    ws.close();
    out.close();
  });

  it('fails $fromMillis and $formatNumber given what they cannot format with 500, naming the expression in the log, instead of sending junk', async () => {
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const from = gw.logs.length;
    // JSONata's own gave "0NaN-NaN-NaNTNaN:NaN:NaN.NaNZ", "NaN:NaN" and "1e+,300.00", and they were sent.
    const cases: [Record<string, unknown>, string][] = [
      [{ ts: 1e20, n: 1 }, '$fromMillis cannot format 100000000000000000000 milliseconds: a date lies within 8640000000000000 ms (about 273,790 years) of 1970'],
      // The transform's $now is given the same timezone: whichever of the two JSONata evaluates first fails it.
      [{ ts: 0, n: 1, tz: 'CET' }, '$*: the timezone "CET" is not ±HHMM (e.g. "+0530", "-0800")'],
      [{ ts: 0, n: 1e300 }, '$formatNumber cannot format 1e+300 with a picture without an exponent (it would write "1e+,300.00"): numbers of 1e21 or more need one, e.g. "0.00e0"'],
    ];
    for (const [body, detail] of cases) {
      const r = await post(gw.url('api', '/formats'), body);
      assert.equal(r.status, 500, r.text);
      if (detail.startsWith('$*')) assert.ok(/^transform failed: \$(fromMillis|now): /.test(r.body.detail) && r.body.detail.endsWith(detail.slice(2)), r.body.detail);
      else assert.equal(r.body.detail, `transform failed: ${detail}`);
    }
    const line = await gw.waitForLog((l) => l.route === 'formats' && typeof l.where === 'string', 10_000, from);
    assert.ok((line.where as string).startsWith('expression "{\\"at\\": $fromMillis(ts), '), String(line.where));
    assert.match(line.where as string, / at gateway\.yaml:\d+:\d+$/);
    // The only messages out are good ones.
    assert.equal((await post(gw.url('api', '/formats'), { ts: 86_400_000, n: 1234.5, tz: '+0130' })).status, 200);
    assert.deepEqual((await out.next()).value, { at: '1970-01-02T00:00:00.000Z', local: '01:30', n: '1,234.50', zone: '+01:30' });
    // JSONata read a zone behind UTC by hours and minutes an hour off: -0330 gave 19:30, and $now -04:30.
    assert.equal((await post(gw.url('api', '/formats'), { ts: 86_400_000, n: 1, tz: '-0330' })).status, 200);
    const late = (await out.next()).value as { local: string; zone: string };
    assert.deepEqual([late.local, late.zone], ['20:30', '-03:30']);
    out.close();
  });

  it('names in the log the line and column inside a block scalar where the expression failed, not the line of its key', async () => {
    const from = gw.logs.length;
    const r = await post(gw.url('api', '/block'), { id: 1, price: 'ten' });
    assert.equal(r.status, 500, r.text);
    assert.equal(r.body.detail, 'transform failed: The left side of the "*" operator must evaluate to a number');
    const line = await gw.waitForLog((l) => l.route === 'block' && typeof l.where === 'string', 10_000, from);
    // Where `*` is in the file: the line of `"cents": ...`, three below `transform: |`.
    const lines = readFileSync(join(gw.dir, 'gateway.yaml'), 'utf8').split('\n');
    const at = lines.findIndex((l) => l.includes('"cents": price * 100'));
    assert.match(lines[at - 3]!, /transform: \|$/);
    assert.match(line.where as string, /^expression "\{\\n {2}\\"id\\": id,/);
    assert.ok((line.where as string).endsWith(` at gateway.yaml:${at + 1}:${lines[at]!.indexOf('*') + 1}`), String(line.where));
  });

  it('fails a header or key expression that yields a function with 500', async () => {
    const h = await post(gw.url('api', '/header'), {});
    assert.equal(h.status, 500, h.text);
    assert.equal(h.body.detail, 'headers.set.x-name failed: the result is not JSON: it holds a function at /');
    const k = await post(gw.url('api', '/key'), {});
    assert.equal(k.status, 500, k.text);
    assert.equal(k.body.detail, 'key expression failed: the result is not JSON: it holds a function at /');
  });

  it('dead-letters a consumed message whose transform divides by zero', async () => {
    const dead = await WsClient.connect(gw.url('push', '/ws/dead', 'ws'));
    assert.equal((await post(gw.url('api', '/jobs'), { total: 1, count: 0 })).status, 200);
    const frame = await dead.next(10_000);
    assert.deepEqual(frame.value, { total: 1, count: 0 });
    const error = JSON.parse(frame.headers._eventgate_error);
    assert.equal(error.code, 'EG_EXPRESSION_FAILED');
    assert.equal(error.detail, 'transform failed: the result is not JSON: it holds Infinity at /avg');
    dead.close();
  });
});
