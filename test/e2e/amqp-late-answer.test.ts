import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { pikaConsume, pikaDeclareQueue, pikaQueueDepth } from '../helpers/peers.js';
import { startRabbit, type RabbitServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A consume route (memory → amqp) whose publisher confirm comes after `ackTimeoutMs`: RabbitMQ
 * routed the message to its queue, the proxy holds the basic.ack. The route's try fails at the
 * deadline and the route waits for that confirm (amqplib still delivers it) before trying again:
 * it comes once the proxy lets it through, so the message is delivered and not published a second
 * time. Before, the route published it again 100 ms after the deadline: two copies in the queue
 * (docs/spec-checklist.md, point 62).
 */
describe('amqp: a consume route whose confirm comes late', () => {
  let rabbit: RabbitServer;
  let proxy: TcpProxy;

  before(async () => {
    rabbit = await startRabbit();
    await pikaDeclareQueue(rabbit, 'late-seen', 'amq.topic', 'late.out');
    proxy = await TcpProxy.start(rabbit.port);
  });
  after(async () => {
    await proxy?.stop();
    await rabbit?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  rabbit: { kind: amqp, url: "${rabbit.url.replace(`:${rabbit.port}`, `:${proxy.port}`)}", ackTimeoutMs: 1000 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mem, topic: parked }
  - name: out
    from: { broker: mem, topic: parked }
    to: { broker: rabbit, topic: late.out }
`,
  );

  const post = (n: number) => fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
  const depthAtLeast = (n: number) =>
    eventually(
      async () => {
        const depth = await pikaQueueDepth(rabbit, 'late-seen');
        assert.ok(depth >= n, `${depth} messages in the queue`);
      },
      10000,
      100,
    );

  it('waits for the late confirm of its try: the message is published once', async () => {
    assert.equal((await post(0)).status, 200);
    await depthAtLeast(1);
    const from = gw.logs.length;
    proxy.holdReplies();
    assert.equal((await post(1)).status, 200);
    // RabbitMQ routed it; its confirm waits in the proxy past the 1 s deadline.
    await depthAtLeast(2);
    await gw.waitForLog((l) => l.route === 'out' && l.msg === 'message failed', 10000, from);
    proxy.releaseReplies();
    // The route says its publish was taken late, or (as before the fix) a second copy arrives.
    const late = gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('a write answered after its ack deadline was taken'), 10000, from);
    const again = depthAtLeast(3);
    await Promise.race([late, again]);
    for (const p of [late, again]) p.catch(() => undefined);
    assert.equal((await post(2)).status, 200);
    await depthAtLeast(3);
    // Everything in the queue, until none came for 2 s.
    const bodies = await pikaConsume(rabbit, 'late-seen', 10, 2);
    assert.deepEqual(
      bodies.map((b) => (JSON.parse(b.body) as { n: number }).n),
      [0, 1, 2],
      'message 1 once: its first publish, confirmed late',
    );
  });
});
