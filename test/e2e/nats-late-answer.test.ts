import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { useGateway } from '../helpers/gateway.js';
import { lateAnswerRoutes, pastDeadline, routeCounts, storedOnceDespiteLateAnswer } from '../helpers/late-answer.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

/**
 * A consume route (memory → a JetStream stream) whose PubAck comes after `ackTimeoutMs`: the
 * stream stored the message, the proxy holds the answer. The route's try fails at the deadline and
 * the route waits for that publish's PubAck before trying again: it comes once the proxy lets it
 * through, so the message is stored once. Before, the route published it again 100 ms after the
 * deadline and the stream kept two copies (docs/spec-checklist.md, point 84).
 */
describe('nats: a consume route whose JetStream PubAck comes late', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  let peer: RawNats;

  before(async () => {
    nats = await startNats();
    proxy = await TcpProxy.start(nats.port);
    peer = await RawNats.connect(nats);
  });
  after(async () => {
    peer?.close();
    await Promise.all([proxy?.stop(), nats?.stop()]);
  });

  const config = (messageIds?: false) => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  nats:
    kind: nats
    servers: nats://127.0.0.1:${proxy.port}
    ackTimeoutMs: 1000
    reconnectTimeWaitMs: 200
    ${messageIds === false ? 'messageIds: false' : ''}
    streams:
      LATE: { subjects: [late.out] }
${lateAnswerRoutes('nats', 'late.out')}`;
  const count = () => peer.streamMessages('LATE');
  const bodiesFrom = async (first: number) => {
    const ns: number[] = [];
    for (let seq = first; seq <= (await count()); seq++) ns.push((JSON.parse((await peer.storedMessage('LATE', seq))!.data) as { n: number }).n);
    return ns;
  };

  describe('without message ids', () => {
    // Without a Nats-Msg-Id the stream would keep a second copy: what keeps the message once here
    // is the route's wait for its late PubAck alone.
    const gw = useGateway(() => config(false));

    it('waits for the late PubAck of its try: the message is stored once', () => storedOnceDespiteLateAnswer(gw, proxy, 'nats', { count, bodies: () => bodiesFrom(1) }));
  });

  describe('with message ids (the default)', () => {
    const gw = useGateway(() => config());

    it('a PubAck lost with the connection: the route publishes the message again once reconnected, with the same Nats-Msg-Id, and the stream keeps one copy', async () => {
      const countAtLeast = (n: number) => peer.storedAtLeast('LATE', n, 15000);
      const post = async (n: number) => {
        const res = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
        assert.equal(res.status, 200);
      };
      // Every publish to the subject, as the server takes it (the peer reads the server itself, not through the proxy).
      const sid = await peer.subscribe('late.out');
      const before = await count();
      const settled = await routeCounts(gw, 'out', 0);
      const from = gw.logs.length;
      // Connected through the proxy, its stream declared: holding the proxy's replies holds the PubAck only.
      await gw.waitForLog((l) => l.msg === 'nats connected' && l.broker === 'nats', 30000);
      proxy.holdReplies();
      await post(11);
      await countAtLeast(before + 1);
      await gw.waitForLog((l) => pastDeadline(l, 'out'), 10000, from);
      // The held PubAck dies with the connection: the route's wait ends at the loss, not at its
      // 31 s backstop, and it publishes message 11 again (its outcome unknown), with the same id.
      proxy.cutAndHold();
      proxy.release();
      const [first, again] = await peer.take(sid, 2);
      assert.deepEqual(
        [JSON.parse(first!.payload), JSON.parse(again!.payload)],
        [
          { n: 11, routed: true },
          { n: 11, routed: true },
        ],
      );
      assert.match(first!.headers['Nats-Msg-Id'] ?? '', /^eventgate:out:memory\/.+:0:late\.out$/);
      assert.equal(again!.headers['Nats-Msg-Id'], first!.headers['Nats-Msg-Id']);
      // 12 goes after 11 is done with: within 15 s only if the wait ended at the loss.
      await post(12);
      await countAtLeast(before + 2);
      const [, , twelve] = await peer.take(sid, 3);
      assert.notEqual(twelve!.headers['Nats-Msg-Id'], first!.headers['Nats-Msg-Id'], 'another message, another id');
      assert.deepEqual(await bodiesFrom(before + 1), [11, 12], 'message 11 once: the stream dropped the copy written again');
      assert.equal(gw.logs.slice(from).filter((l) => l.msg.startsWith('a write answered after its ack deadline was taken')).length, 0);
      // The try whose PubAck was lost failed (its outcome unknown, so the route could not take the
      // message yet), and so may a retry before the reconnect; the last one delivered it. Each failed
      // try is a consumer error and a `message failed` line.
      const now = await routeCounts(gw, 'out', settled.delivered + settled.failed + 3);
      const [received, delivered, failed, consumerErrors] = [
        now.received - settled.received,
        now.delivered - settled.delivered,
        now.failed - settled.failed,
        now.consumerErrors - settled.consumerErrors,
      ];
      assert.equal(delivered, 2, 'messages 11 and 12 delivered');
      assert.ok(failed >= 1, 'the try whose PubAck was lost failed');
      assert.deepEqual({ received, consumerErrors }, { received: delivered + failed, consumerErrors: failed });
      assert.equal(gw.logs.slice(from).filter((l) => l.route === 'out' && l.msg === 'message failed').length, failed, 'each failed try is logged failed');
    });
  });
});
