import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway, type LogLine } from '../helpers/gateway.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/** A JetStream API request from a raw client: its JSON answer. */
async function jsApi(peer: RawNats, subject: string, body: unknown): Promise<any> {
  const inbox = `_INBOX.api.${Math.random().toString(36).slice(2)}`;
  const sid = await peer.subscribe(inbox);
  peer.publish(subject, JSON.stringify(body), {}, inbox);
  const [reply] = await peer.take(sid, 1);
  return JSON.parse(reply!.payload);
}

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

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  nats:
    kind: nats
    servers: nats://127.0.0.1:${proxy.port}
    ackTimeoutMs: 1000
    streams:
      LATE: { subjects: [late.out] }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mem, topic: parked }
  - name: out
    from: { broker: mem, topic: parked }
    to: { broker: nats, topic: late.out }
`,
  );

  const post = (n: number) => fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
  const stored = async () => ((await jsApi(peer, '$JS.API.STREAM.INFO.LATE', {})) as { state: { messages: number } }).state.messages;
  const storedAtLeast = (count: number) =>
    eventually(async () => {
      const n = await stored();
      assert.ok(n >= count, `${n} of ${count} stored`);
    });

  it('waits for the late PubAck of its try: the message is stored once', async () => {
    assert.equal((await post(0)).status, 200);
    await storedAtLeast(1);
    const from = gw.logs.length;
    proxy.holdReplies();
    assert.equal((await post(1)).status, 200);
    // The publish reached the stream; its PubAck waits in the proxy past the 1 s deadline.
    await storedAtLeast(2);
    await gw.waitForLog((l: LogLine) => l.route === 'out' && l.msg === 'message failed', 10000, from);
    proxy.releaseReplies();
    // The route says its publish was taken late, or (as before the fix) a second copy is stored.
    const late = gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('a write answered after its ack deadline was taken'), 10000, from);
    const again = storedAtLeast(3);
    await Promise.race([late, again]);
    for (const p of [late, again]) p.catch(() => undefined);
    assert.equal((await post(2)).status, 200);
    await storedAtLeast(3);
    const count = await stored();
    const bodies: number[] = [];
    for (let seq = 1; seq <= count; seq++) {
      const got = (await jsApi(peer, '$JS.API.STREAM.MSG.GET.LATE', { seq })) as { message: { data: string } };
      bodies.push((JSON.parse(Buffer.from(got.message.data, 'base64').toString('utf8')) as { n: number }).n);
    }
    assert.deepEqual(bodies, [0, 1, 2], 'message 1 once: its first publish, acknowledged late');
  });
});
