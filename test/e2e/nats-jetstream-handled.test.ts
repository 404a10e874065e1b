import assert from 'node:assert/strict';
import { cpSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { eventually, startGateway, type LogLine } from '../helpers/gateway.js';
import { delayNatsFrames, RawNats, useNatsPeer } from '../helpers/peers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

// A JetStream route's memory of the messages it handled (their stream sequences, which make a
// redelivered copy an acknowledgement) outlives a reload that swaps its broker: the next
// subscription of the same stream and durable consumer has it. Without it, a copy the server
// delivered again after the swap (an acknowledgement lost with a connection, a consumer state the
// server brought back older after a restart) went to the targets a second time.

/** The webhook's messages, by their `n`, in the order they came (answered 200). */
function numbers(hook: WebhookReceiver): number[] {
  return hook.requests.map((r) => (JSON.parse(r.body) as { n: number }).n);
}

/** Waits until the consumer acknowledged every message up to stream sequence `seq` and holds none unacknowledged: a copy delivered again has been answered by then. */
async function settledThrough(peer: RawNats, stream: string, consumer: string, seq: number): Promise<void> {
  await eventually(
    async () => {
      const info = (await peer.jsApi(`$JS.API.CONSUMER.INFO.${stream}.${consumer}`, {})) as { ack_floor: { stream_seq: number }; num_ack_pending: number; num_pending: number };
      assert.deepEqual([info.ack_floor.stream_seq, info.num_ack_pending, info.num_pending], [seq, 0, 0], JSON.stringify(info));
    },
    20000,
    100,
  );
}

describe('kind: nats, a JetStream route whose broker a reload swaps', () => {
  // The peer is connected again after each restart of the server (`js.peer`, which the fixture closes at the end).
  const js = useNatsPeer();

  it('acknowledges, not delivers again, a message whose acknowledgement was lost with the connection when a reload swapped the broker before the server redelivered it', async () => {
    const hook = await WebhookReceiver.start();
    // The gateway's acknowledgements pass, but the first one is held in the proxy while `holding`, and lost with the cut.
    let holding = true;
    let heldAck!: () => void;
    const ackHeld = new Promise<void>((r) => (heldAck = r));
    const never = new Promise<void>(() => undefined);
    const first = await TcpProxy.start(js.server.port, {
      toServer: () =>
        delayNatsFrames(
          '$JS.ACK.',
          () => (holding ? never : undefined),
          () => heldAck(),
        ),
    });
    const second = await TcpProxy.start(js.server.port);
    const yaml = (port: number) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: nats://127.0.0.1:${port}, reconnectTimeWaitMs: 200, ackWaitMs: 2000, streams: { LOSTACK: { subjects: ["lostack.>"] } } }
routes:
  - name: lostack
    from: { broker: nats, topic: lostack.in }
    to: { http: { url: "${hook.url}/in" } }
`;
    const gw = await startGateway(yaml(first.port));
    try {
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'lostack', 15000);
      await js.peer.jsPublish('lostack.in', JSON.stringify({ n: 1 }));
      // The webhook answered 200 and the gateway sent the acknowledgement, which the proxy holds: cut, it never reaches the server.
      await ackHeld;
      first.cutAndHold();
      holding = false;
      // The broker moved to another address while its connection is down: a new broker, a new subscription of the same consumer.
      const from = gw.logs.length;
      assert.equal((await gw.reconfigure(yaml(second.port))).msg, 'config reloaded');
      await gw.waitForLog((l: LogLine) => l.msg === 'consumer ready' && l.route === 'lostack', 15000, from);
      await js.peer.jsPublish('lostack.in', JSON.stringify({ n: 2 }));
      // Sequence 1 comes again once its ack wait is over (2 s): by the time the consumer has it acknowledged, the route answered the copy.
      await settledThrough(js.peer, 'LOSTACK', 'eventgate-lostack', 2);
      assert.deepEqual(numbers(hook), [1, 2], 'the message the webhook answered before the swap is not sent to it again');
    } finally {
      await gw.stop();
      first.release();
      await first.stop();
      await second.stop();
      await hook.stop();
    }
  });

  it("acknowledges, not delivers again, what the webhook answered before a swap when the server restarts with the consumer's state older than its acknowledgements", async () => {
    const hook = await WebhookReceiver.start();
    const yaml = (pingIntervalMs: number) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${js.server.url}, reconnectTimeWaitMs: 200, pingIntervalMs: ${pingIntervalMs}, streams: { OLDSTATE: { subjects: ["oldstate.>"] } } }
routes:
  - name: oldstate
    from: { broker: nats, topic: oldstate.in }
    to: { http: { url: "${hook.url}/in" } }
`;
    const gw = await startGateway(yaml(20000));
    /** The consumer's directory in the server's store (`$G`: the account of a server without accounts); its `o.dat` holds the delivered and acknowledged marks. */
    const consumerDir = join(js.server.dir, 'jetstream', 'jetstream', '$G', 'streams', 'OLDSTATE', 'obs', 'eventgate-oldstate');
    const saved = join(js.server.dir, 'saved-consumer');
    try {
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'oldstate', 15000);
      for (let n = 1; n <= 5; n++) await js.peer.jsPublish('oldstate.in', JSON.stringify({ n }));
      await settledThrough(js.peer, 'OLDSTATE', 'eventgate-oldstate', 5);
      // The consumer's state as of sequence 5, kept while the server is down.
      js.peer.close();
      await js.server.down();
      cpSync(consumerDir, saved, { recursive: true });
      await js.server.up();
      js.peer = await RawNats.connect(js.server);
      for (let n = 6; n <= 10; n++) await js.peer.jsPublish('oldstate.in', JSON.stringify({ n }));
      await settledThrough(js.peer, 'OLDSTATE', 'eventgate-oldstate', 10);
      // A reload that rebuilds the broker (as a creds rotation does): a new subscription of the same consumer.
      const from = gw.logs.length;
      assert.equal((await gw.reconfigure(yaml(15000))).msg, 'config reloaded');
      await gw.waitForLog((l: LogLine) => l.msg === 'consumer ready' && l.route === 'oldstate', 15000, from);
      // The server restarts with the state of sequence 5: it delivers 6-10 again.
      js.peer.close();
      await js.server.down();
      rmSync(consumerDir, { recursive: true, force: true });
      cpSync(saved, consumerDir, { recursive: true });
      await js.server.up();
      js.peer = await RawNats.connect(js.server);
      await js.peer.jsPublish('oldstate.in', JSON.stringify({ n: 11 }));
      await settledThrough(js.peer, 'OLDSTATE', 'eventgate-oldstate', 11);
      assert.deepEqual(
        numbers(hook),
        Array.from({ length: 11 }, (_, i) => i + 1),
        'what the webhook answered before the restart is not sent to it again',
      );
    } finally {
      await gw.stop();
      await hook.stop();
    }
  });

  it("hands a route re-added after a removal every message of a consumer deleted meanwhile again, as its startFrom says, not only those older than the removed route's memory", async () => {
    const hook = await WebhookReceiver.start();
    const broker = `nats: { kind: nats, servers: ${js.server.url}, reconnectTimeWaitMs: 200, streams: { READD: { subjects: ["readd.>"] } } }`;
    const withRoute = `
version: 1
admin: { port: 0 }
brokers:
  ${broker}
routes:
  - name: readd
    from: { broker: nats, topic: readd.in, startFrom: earliest }
    to: { http: { url: "${hook.url}/in" } }
`;
    const gw = await startGateway(withRoute);
    try {
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'readd', 15000);
      for (let n = 1; n <= 3; n++) await js.peer.jsPublish('readd.in', JSON.stringify({ n }));
      await settledThrough(js.peer, 'READD', 'eventgate-readd', 3);
      // The route removed, its consumer deleted by an operator who wants the stream read again, the route put back.
      assert.equal((await gw.reconfigure(`version: 1\nadmin: { port: 0 }\nbrokers:\n  ${broker}\n`)).msg, 'config reloaded');
      assert.equal((await js.peer.jsApi('$JS.API.CONSUMER.DELETE.READD.eventgate-readd', {})).success, true);
      const from = gw.logs.length;
      assert.equal((await gw.reconfigure(withRoute)).msg, 'config reloaded');
      await gw.waitForLog((l: LogLine) => l.msg === 'consumer ready' && l.route === 'readd', 15000, from);
      await settledThrough(js.peer, 'READD', 'eventgate-readd', 3);
      assert.deepEqual(numbers(hook), [1, 2, 3, 1, 2, 3], "the new consumer starts at the stream's first message, and the webhook gets each again");
    } finally {
      await gw.stop();
      await hook.stop();
    }
  });
});
