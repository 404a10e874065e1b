import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

/** How long one answer may take before the gateway counts as unresponsive (a bound, not a timing). */
const ANSWER_BOUND_MS = 10_000;

describe('memory topics that routes feed in a cycle', () => {
  // `echo` reads topic a and writes every message back to it: once one message is in, the cycle
  // never ends. The gateway must keep answering and stop on SIGTERM all the same.
  const gw = useGateway(`
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: a }
  - name: echo
    from: { broker: local, topic: a }
    to: { broker: local, topic: a }
`);

  it("says at start-up, as a config warning at the route's to line, that the route feeds the topic it reads", () => {
    const warning = gw.logs.find((l) => l.msg === 'config warning' && l.code === 'EG_CONFIG_FEEDBACK_LOOP');
    assert.ok(warning, JSON.stringify(gw.logs.map((l) => l.msg)));
    assert.match(String(warning.diagnostic), /gateway\.yaml:\d+:\d+: route 'echo' writes topic 'a' of broker 'local', the topic it reads/);
  });

  it('keeps answering HTTP, the admin API and SIGTERM while a message goes round', async () => {
    const publish = (body: string) => fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(ANSWER_BOUND_MS) });
    assert.equal((await publish('1')).status, 200);
    const delivered = async () => {
      const text = await (await fetch(`${gw.adminUrl}/metrics`, { signal: AbortSignal.timeout(ANSWER_BOUND_MS) })).text();
      return Number(/eventgate_route_messages_total\{route="echo",outcome="delivered"\} (\d+)/.exec(text)?.[1]);
    };
    // The cycle runs: many more deliveries than one turn of the event loop hands out.
    await eventually(async () => assert.ok((await delivered()) > 5000));
    const health = await fetch(`${gw.adminUrl}/healthz`, { signal: AbortSignal.timeout(ANSWER_BOUND_MS) });
    assert.equal(health.status, 200);
    assert.equal((await publish('2')).status, 200);
    assert.deepEqual(await gw.stop(), { code: 0, signal: null });
  });
});
