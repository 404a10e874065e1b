import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, pikaConsume, pikaDeclareQueue, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A 503 for a publish the server may have stored all the same must say so: its acknowledgement
 * deadline passed, or the connection went while the acknowledgement was awaited (a partition, a
 * server that dies after taking it). Both read as an outage only before — `no acknowledgement
 * within N ms`, `broker 'b' is not connected (unreachable: ...)`, `channel closed`, `Connection
 * closed` — the second as if nothing had been sent, and docs/errors.md called retrying safe: a
 * client that retried stored the message twice without being told it might (fault audit, point
 * 170). A publish refused before anything was sent still says only that the broker is not connected.
 */
const MAY = /may still have reached it \(sending it again may store it twice\)/;

interface Peer {
  /** Resolves once the server holds message `n` (read by a client of its own, not through the proxy). */
  has(n: number): Promise<void>;
  close(): void;
}

for (const kind of ['mqtt', 'nats', 'amqp'] as const) {
  describe(`kind: ${kind}, a 503 for a message sent and not acknowledged`, () => {
    let server: MessageServer;
    let proxy: TcpProxy;
    let peer: Peer;
    const topic = kind === 'mqtt' ? 'unacked/in' : 'unacked.in';

    before(async () => {
      server = kind === 'mqtt' ? await startMosquitto() : kind === 'nats' ? await startNats() : await sharedRabbit();
      proxy = await TcpProxy.start(server.port);
      if (kind === 'mqtt') {
        const sub = await MosquittoSub.start(server, topic, 1);
        peer = { has: async (n) => void (await sub.until((m) => JSON.parse(m.payload).n === n)), close: () => sub.stop() };
      } else if (kind === 'nats') {
        const nats = await RawNats.connect(server);
        const sid = await nats.subscribe(topic);
        const seen = (n: number) => nats.received(sid).some((m) => JSON.parse(m.payload).n === n);
        peer = { has: (n) => eventually(() => assert.ok(seen(n)), 15000), close: () => nats.close() };
      } else {
        await pikaDeclareQueue(server, 'unacked-seen', 'amq.topic', topic);
        const seen: number[] = [];
        peer = {
          has: (n) =>
            eventually(async () => {
              seen.push(...(await pikaConsume(server, 'unacked-seen', 1, 1)).map((m) => JSON.parse(m.body).n as number));
              assert.ok(seen.includes(n));
            }, 30000),
          close: () => undefined,
        };
      }
    });
    after(async () => {
      peer?.close();
      await proxy?.stop();
      await server?.stop();
    });

    const url = () => server.url.replace(`:${server.port}`, `:${proxy.port}`);
    const broker = (name: string, ackTimeoutMs: number) =>
      kind === 'nats'
        ? `${name}: { kind: nats, servers: "${url()}", ackTimeoutMs: ${ackTimeoutMs}, reconnectTimeWaitMs: 200, streams: { UNACKED_${name.toUpperCase()}: { subjects: ["${name}.>"] } } }`
        : `${name}: { kind: ${kind}, url: "${url()}", ackTimeoutMs: ${ackTimeoutMs} }`;
    // JetStream subjects per broker (a stream answers the PubAck); the peer reads the core subject each broker also publishes to.
    const to = (name: string) => (kind === 'nats' ? `[{ broker: ${name}, topic: ${name}.in }, { broker: ${name}, topic: ${topic} }]` : `{ broker: ${name}, topic: ${topic} }`);
    const gw = useGateway(
      () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  ${broker('late', 1000)}
  ${broker('lost', 60000)}
routes:
  - name: late
    from: { listener: api, path: /late }
    to: ${to('late')}
  - name: lost
    from: { listener: api, path: /lost }
    to: ${to('lost')}
`,
    );

    it('says the message may have reached the server; one refused before it was sent does not', async () => {
      for (const path of ['/late', '/lost']) await eventually(async () => assert.equal((await post(gw.url('api', path), { n: 0 })).status, 200), 30000, 100);
      // The server takes what is sent; its answers stay in the proxy.
      proxy.holdReplies();

      const late = await post(gw.url('api', '/late'), { n: 1 });
      assert.equal(late.status, 503, late.text);
      assert.match(late.body.detail, /no acknowledgement from broker 'late' within 1000 ms/);
      assert.match(late.body.detail, MAY);
      await peer.has(1);

      const lost = post(gw.url('api', '/lost'), { n: 2 });
      await peer.has(2);
      // The connections go with the answers in them; new ones wait.
      proxy.cutAndHold();
      const reply = await lost;
      assert.equal(reply.status, 503, reply.text);
      assert.match(reply.body.detail, MAY);

      // Nothing of this one is sent: the broker knows it is not connected.
      await gw.waitForLog((l) => l.broker === 'lost' && l.msg === `${kind} connection lost; reconnecting`, 30000);
      const refused = await post(gw.url('api', '/lost'), { n: 3 });
      assert.equal(refused.status, 503, refused.text);
      assert.match(refused.body.detail, /is not connected/);
      assert.doesNotMatch(refused.body.detail, MAY);

      proxy.release();
      await eventually(async () => assert.equal((await post(gw.url('api', '/lost'), { n: 4 })).status, 200), 30000, 100);
    });
  });
}
