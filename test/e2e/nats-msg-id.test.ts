import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { RawNats, type NatsReceived } from '../helpers/peers.js';
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
 * A Kafka record a consume route writes to a JetStream stream, delivered to the route again: the
 * gateway is killed after the stream stored the record (its PubAck held in a proxy) and before the
 * record's offset was committed, so the next gateway reads it again. Its `Nats-Msg-Id` (the cluster,
 * topic, partition, offset and timestamp of the record, the route, the target) is the same both
 * times, and the stream's duplicate window keeps one copy. Before, the gateway sent no
 * `Nats-Msg-Id` and the stream kept two (docs/spec-checklist.md, point 84).
 */
describe('nats: a Kafka record a route writes to JetStream again after a redelivery', () => {
  let kafka: KafkaCluster;
  let nats: MessageServer;
  let proxy: TcpProxy;
  let peer: RawNats;
  let yaml: string;
  let src: string;
  const running: RunningGateway[] = [];

  before(async () => {
    [kafka, nats] = await Promise.all([startKafka(), startNats()]);
    proxy = await TcpProxy.start(nats.port);
    peer = await RawNats.connect(nats);
    src = kafka.topic('msgid-src');
    await kafka.createTopic(src, 1);
    yaml = `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    consumer: ${kafka.consumerYaml}
  nats:
    kind: nats
    servers: nats://127.0.0.1:${proxy.port}
    ackTimeoutMs: 1000
    streams:
      COPY: { subjects: [copy.out] }
routes:
  - name: copy
    from: { broker: kafka, topic: ${src}, group: ${kafka.topic('msgid-group')}, startFrom: earliest }
    to: { broker: nats, topic: copy.out }
`;
  });
  after(async () => {
    for (const gw of running) await gw.stop('SIGKILL');
    peer?.close();
    await Promise.all([proxy?.stop(), nats?.stop(), kafka?.stop()]);
  });

  const start = async () => {
    const gw = await startGateway(yaml);
    running.push(gw);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copy', 30000);
    return gw;
  };
  const stored = async () => ((await jsApi(peer, '$JS.API.STREAM.INFO.COPY', {})) as { state: { messages: number } }).state.messages;
  const storedAtLeast = (n: number) =>
    eventually(
      async () => {
        const c = await stored();
        assert.ok(c >= n, `${c} of ${n} stored`);
      },
      20000,
      100,
    );
  const produce = (n: number) => kcatProduce(kafka.bootstrap, src, [{ key: 'k', value: JSON.stringify({ n }) }]);
  const n = (m: NatsReceived) => (JSON.parse(m.payload) as { n: number }).n;

  it('the record delivered again is stored once: its second write has the same Nats-Msg-Id', async () => {
    // Every write to the subject, as the server takes it (the peer reads the server itself, not through the proxy).
    const sid = await peer.subscribe('copy.out');
    const first = await start();
    await produce(1);
    await storedAtLeast(1);
    // Record 2 is stored, its PubAck held: the route has not committed its offset when the gateway dies.
    proxy.holdReplies();
    await produce(2);
    await storedAtLeast(2);
    await first.waitForLog((l) => l.route === 'copy' && l.msg === 'message failed', 10000);
    await first.stop('SIGKILL');
    proxy.releaseReplies();

    await start();
    await produce(3);
    const writes = await eventually(
      () => {
        const got = peer.received(sid);
        assert.ok(
          got.some((m) => n(m) === 3),
          `writes so far: ${got.map(n).join(', ')}`,
        );
        return got;
      },
      30000,
      100,
    );
    // The redelivery happened: record 2 was written twice, both times with one id of its own.
    const twos = writes.filter((m) => n(m) === 2);
    assert.ok(twos.length >= 2, `record 2 written ${twos.length} times`);
    const ids = writes.map((m) => m.headers['Nats-Msg-Id']);
    assert.match(ids[0] ?? '', /^copy:kafka\/[^/]+\/[^/]+\/0\/\d+\/\d+:0:copy\.out$/);
    assert.equal(new Set(twos.map((m) => m.headers['Nats-Msg-Id'])).size, 1);
    assert.equal(new Set(ids).size, 3, 'one id per record');

    const bodies: number[] = [];
    for (let seq = 1; seq <= (await stored()); seq++) {
      const got = (await jsApi(peer, '$JS.API.STREAM.MSG.GET.COPY', { seq })) as { message: { data: string } };
      bodies.push((JSON.parse(Buffer.from(got.message.data, 'base64').toString('utf8')) as { n: number }).n);
    }
    assert.deepEqual(bodies, [1, 2, 3], 'each record once in the stream');
  });
});
