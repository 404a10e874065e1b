import assert from 'node:assert/strict';
import type { LogLine, RunningGateway } from './gateway.js';
import type { TcpProxy } from './tcp-proxy.js';

/**
 * The routes of a late-answer test: POST /in parks `{n}` on a memory topic, and the consume route
 * `out` publishes it to `topic` of `broker` (which the test reaches through a proxy).
 */
export function lateAnswerRoutes(broker: string, topic: string): string {
  return `listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mem, topic: parked }
  - name: out
    from: { broker: mem, topic: parked }
    to: { broker: ${broker}, topic: ${topic} }
`;
}

/**
 * A consume route whose publish is taken by the server while the proxy holds the answer past the
 * broker's `ackTimeoutMs` (1 s in these tests): the route's try fails at the deadline, and it must
 * wait for that late answer rather than publish the message again. `server.count` is how many
 * copies the server has; `server.bodies` the `n` of each, in order, read once at the end (it may
 * consume them): `[0, 1, 2]`, message 1 once.
 */
export async function storedOnceDespiteLateAnswer(gw: RunningGateway, proxy: TcpProxy, server: { count(): Promise<number>; bodies(): Promise<number[]> }): Promise<void> {
  const post = async (n: number) => {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
  };
  const storedAtLeast = async (count: number) => {
    const deadline = Date.now() + 10000;
    for (;;) {
      const now = await server.count();
      if (now >= count) return;
      if (Date.now() > deadline) throw new Error(`${now} of ${count} copies stored`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await post(0);
  await storedAtLeast(1);
  const from = gw.logs.length;
  proxy.holdReplies();
  await post(1);
  // The server took it; its answer waits in the proxy past the deadline.
  await storedAtLeast(2);
  await gw.waitForLog((l: LogLine) => l.route === 'out' && l.msg === 'message failed', 10000, from);
  proxy.releaseReplies();
  // The route says its publish was taken late, or (as before the fix) a second copy is stored.
  const late = gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('a write answered after its ack deadline was taken'), 10000, from);
  const again = storedAtLeast(3);
  await Promise.race([late, again]);
  for (const p of [late, again]) p.catch(() => undefined);
  await post(2);
  await storedAtLeast(3);
  assert.deepEqual(await server.bodies(), [0, 1, 2], 'message 1 once: its first publish, acknowledged late');
}
