import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';

/**
 * Client data cannot make a regular expression hold the event loop (issue #13, docs/security.md):
 * regexes run on RE2 (linear time), and one call's input is bounded by expressions.maxRegexInput.
 */
describe('regular expressions in the time box', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
expressions: {timeoutMs: 1000, maxRegexInput: 4096}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
routes:
  - name: hostile
    from: {listener: api, path: /hostile}
    through: [{filter: '$contains(s, /^(a+)+$/)'}]
    to: {broker: local, topic: t}
  - name: hostile-loop
    from: {listener: api, path: /hostile-loop}
    through: [{filter: '($f := function($n){ $contains($$.s, /^(a+)+$/) ? true : $f($n + 1) }; $f(1))'}]
    to: {broker: local, topic: t}
  - name: other
    from: {listener: api, path: /other}
    to: {broker: local, topic: t}
`);

  it("answers the issue's attack — $contains(s, /^(a+)+$/) on a 32-byte body — with the filter's verdict (it took 10.8 s with a backtracking engine)", async () => {
    const body = JSON.stringify({ s: 'a'.repeat(23) + '!' });
    assert.equal(Buffer.byteLength(body), 32);
    const r = await post(gw.url('api', '/hostile'), body);
    assert.equal(r.status, 200);
    assert.equal(r.body.filtered, true);
    // The same shape on far more input than any backtracking engine survives: still linear.
    const long = await post(gw.url('api', '/hostile'), { s: 'a'.repeat(4000) + '!' });
    assert.equal(long.body.filtered, true);
    const match = await post(gw.url('api', '/hostile'), { s: 'a'.repeat(4000) });
    assert.equal(match.status, 200);
    assert.equal(match.body.filtered, undefined);
  });

  it('answers a request on another route while an expression full of hostile regex calls runs out its time box', async () => {
    let settled = false;
    const hostile = post(gw.url('api', '/hostile-loop'), { s: 'a'.repeat(30) + '!' }).finally(() => (settled = true));
    // The hostile message is inside its route once the admin API (same event loop) says so.
    for (;;) {
      const status = await gw.status();
      if (status.routes.find((r: { name: string }) => r.name === 'hostile-loop').inFlight === 1) break;
      assert.equal(settled, false, 'the hostile message was never seen in flight');
    }
    const other = await post(gw.url('api', '/other'), { n: 1 });
    assert.equal(other.status, 200);
    assert.equal(settled, false, 'the other route was answered while the hostile one was still running');
    const r = await hostile;
    assert.equal(r.status, 500);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.match(r.body.detail, /longer than 1000 ms/);
  });

  it('fails a regex call over maxRegexInput with 500 instead of searching it', async () => {
    const r = await post(gw.url('api', '/hostile'), { s: 'a'.repeat(5000) });
    assert.equal(r.status, 500);
    assert.equal(r.body.code, 'EG_EXPRESSION_FAILED');
    assert.match(r.body.detail, /at most 4096 are searched \(expressions.maxRegexInput\)/);
  });

  it('refuses a config whose regex needs backtracking (a backreference) at the literal', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: r
    from: {listener: api, path: /r}
    through: [{filter: '$contains(s, /(a)\\1/)'}]
    to: {broker: local, topic: t}
`,
    });
    const { code, stdout } = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(code, 1);
    // At the literal's opening `/` (column 38), not at its last character.
    assert.match(stdout, /^gateway\.yaml:9:38: .*cannot run in linear time/m);
  });
});
