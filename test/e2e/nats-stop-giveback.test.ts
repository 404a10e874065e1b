import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * A JetStream consume route stopped (SIGTERM) while messages are published steadily: every
 * message nats-server delivered to the stopping instance is acknowledged (its webhook took it),
 * before the instance lets go of the consumer, or given back at once, so the next reader of the
 * group's consumer gets it now, not `ackWaitMs` later after newer ones; none reaches the webhook twice. `ackWaitMs` is 60 s here, longer than this test waits for anything: a
 * message left unacknowledged cannot come in time (the test fails when the stop gives nothing back).
 */
describe('kind: nats, a JetStream route stopped while messages keep coming', () => {
  let nats: MessageServer;
  let peer: RawNats;
  let receiver: WebhookReceiver;
  const gateways: RunningGateway[] = [];

  before(async () => {
    nats = await startNats();
    peer = await RawNats.connect(nats);
    receiver = await WebhookReceiver.start();
  });
  after(async () => {
    await Promise.all(gateways.map((gw) => gw.stop('SIGKILL')));
    peer?.close();
    await receiver?.stop();
    await nats?.stop();
  });

  it('gives back every message it pulled and did not deliver: the other instance has them before newer ones', async () => {
    const yaml = (id: string) => `
version: 1
admin: { port: 0, shutdownDelayMs: 1000 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    prefetch: 20
    ackWaitMs: 60000
    streams:
      FEED: { subjects: ["feed.>"] }
routes:
  - name: relay
    from: { broker: nats, topic: feed.orders, group: orders }
    to: { http: { url: "${receiver.url}/${id}", timeoutMs: 10000, concurrency: 8 } }
`;
    gateways.push(...(await Promise.all(['a', 'b'].map((id) => startGateway(yaml(id), { env: { EVENTGATE_INSTANCE_ID: id } })))));
    await Promise.all(gateways.map((gw) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000)));
    // Every acknowledgement the instances send, as nats-server passes it on (`$JS.ACK.<stream>.<consumer>.<count>.<stream seq>...`).
    const acks = await peer.subscribe('$JS.ACK.FEED.>');
    let published = 0;
    let publishing = true;
    // The endpoint takes a while, so the route holds pulled messages behind those in hand.
    receiver.respond = (_r, res) => setTimeout(() => res.end('ok'), 30 + ((published * 7) % 40));
    // Steadily, faster than one instance's webhook takes them; stored by the stream without waiting for each answer.
    const publisher = (async () => {
      while (publishing) {
        for (let i = 0; i < 3; i++) peer.publish('feed.orders', JSON.stringify({ n: ++published }));
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const numbers = (path?: string) => receiver.requests.filter((r) => path === undefined || r.url === path).map((r) => (JSON.parse(r.body) as { n: number }).n);
    await receiver.received(100, 20000);
    const exit = await gateways[0]!.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    // What reached nats-server from `a` before it exited (the server passed it on before it saw the
    // connection close, so before the answer to this ping). One publisher, one subject: stream sequence n is message n.
    await peer.ping();
    const settledByA = new Map<number, string[]>();
    for (const m of peer.received(acks)) settledByA.set(Number(m.subject.split('.')[5]), [...(settledByA.get(Number(m.subject.split('.')[5])) ?? []), m.payload]);
    // The webhook answered every message `a` sent it, in time: each is acknowledged before `a` let go
    // of the consumer, none given back (the other instance would send it again at once).
    const deliveredByA = numbers('/a');
    assert.ok(deliveredByA.length > 0, 'the stopped instance delivered some');
    assert.deepEqual(
      deliveredByA.filter((n) => !settledByA.get(n)?.includes('+ACK') || settledByA.get(n)!.some((p) => p.startsWith('-NAK'))),
      [],
      'delivered by the stopped instance and not acknowledged by it before it exited, or given back',
    );
    const atExit = published;
    publishing = false;
    await publisher;
    // Given back, each comes at once to the other instance; left unacknowledged, only after ackWaitMs (60 s).
    const expected = Array.from({ length: atExit }, (_, i) => i + 1);
    const missing = () => {
      const got = new Set(numbers());
      return expected.filter((n) => !got.has(n));
    };
    await eventually(() => assert.deepEqual(missing(), [], `${missing().length} of the ${atExit} published before the stop not delivered`), 20000, 50);
    const twice = numbers().filter((n, i, all) => all.indexOf(n) !== i);
    assert.deepEqual(twice, [], 'delivered twice');
  });
});
