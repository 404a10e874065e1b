import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { lateAnswerRoutes, storedOnceDespiteLateAnswer } from '../helpers/late-answer.js';
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
${lateAnswerRoutes('nats', 'late.out')}`,
  );

  it('waits for the late PubAck of its try: the message is stored once', () =>
    storedOnceDespiteLateAnswer(gw, proxy, {
      count: async () => ((await jsApi(peer, '$JS.API.STREAM.INFO.LATE', {})) as { state: { messages: number } }).state.messages,
      async bodies() {
        const { state } = (await jsApi(peer, '$JS.API.STREAM.INFO.LATE', {})) as { state: { messages: number } };
        const ns: number[] = [];
        for (let seq = 1; seq <= state.messages; seq++) {
          const got = (await jsApi(peer, '$JS.API.STREAM.MSG.GET.LATE', { seq })) as { message: { data: string } };
          ns.push((JSON.parse(Buffer.from(got.message.data, 'base64').toString('utf8')) as { n: number }).n);
        }
        return ns;
      },
    }));
});
