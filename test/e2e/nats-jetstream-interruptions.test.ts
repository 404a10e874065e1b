import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, useGateway, type RunningGateway } from '../helpers/gateway.js';
import { delayNatsFrames, RawNats, useNatsPeer } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

// A JetStream route's messages while it is interrupted: its targets failing past ackWaitMs, the
// gateway stopped or the route rebuilt with messages in hand, a SIGTERM during its consumer's
// set-up, its connection lost with a pull in flight. Each case starts gateways of its own.
// (The kind's main cases are in nats.test.ts, reloads that change a route's startFrom or
// subject in nats-jetstream-reloads.test.ts.)

describe('kind: nats, a JetStream route interrupted (targets failing, a stop, a rebuild, a SIGTERM)', () => {
  const js = useNatsPeer();

  it('hands each JetStream message to the targets once while they fail longer than ackWaitMs: the copies redelivered behind the one in hand are acknowledged, not delivered again', async () => {
    const hook = await WebhookReceiver.start();
    let failing = true;
    const accepted: number[] = [];
    hook.respond = (r, res) => {
      res.statusCode = failing ? 500 : 200;
      if (!failing) accepted.push((JSON.parse(r.body) as { i: number }).i);
      res.end();
    };
    const slow = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${js.server.url}, ackWaitMs: 1000, prefetch: 5, streams: { FLAKY: { subjects: ["flaky.>"] } } }
routes:
  - name: flaky
    from: { broker: nats, topic: flaky.in }
    to: { http: { url: "${hook.url}/flaky", retry: { attempts: 2, backoffMs: 50 }, concurrency: 1 } }
`);
    try {
      await slow.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'flaky', 15000);
      for (let i = 0; i < 30; i++) js.peer.publish('flaky.in', JSON.stringify({ i }));
      await js.peer.ping();
      // Message 0 is in hand (kept alive by working()); 1-4 were pulled behind it and outlive their
      // ack wait. Once 0 passes, the client pulls again and JetStream redelivers 1-4 into the buffer
      // that still holds their first copies.
      await hook.received(1);
      const firstTry = Date.now();
      await eventually(() => assert.ok(Date.now() - firstTry >= 3000), 10000, 100);
      failing = false;
      await eventually(() => assert.equal(new Set(accepted).size, 30), 30000, 100);
      // Whatever is still buffered would have arrived by the time the last one did; wait out one ack wait more.
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(
        accepted,
        Array.from({ length: 30 }, (_, i) => i),
      );
    } finally {
      await slow.stop();
      await hook.stop();
    }
  });

  /**
   * A JetStream route (`orderBy`, `concurrency: 4`) whose endpoint answers 503 holds the first
   * message of each of 3 keys in hand, retrying, and the other 6 pulled behind them, past their
   * ack wait (1 s), when `interrupt` stops or replaces the route; the endpoint answers 200 from then
   * on. Each key's messages must then come in publish order, the ones given back first, none twice.
   */
  async function orderAcrossInterruption(stream: string, interrupt: (run: RunningGateway, yaml: (over?: string) => string) => Promise<RunningGateway>): Promise<void> {
    const hook = await WebhookReceiver.start();
    let failing = true;
    /** Each message the endpoint took (answered 200), as "key:n", in the order they came. */
    const delivered: string[] = [];
    hook.respond = (r, res) => {
      res.statusCode = failing ? 503 : 200;
      if (!failing) {
        const { k, n } = JSON.parse(r.body) as { k: string; n: number };
        delivered.push(`${k}:${n}`);
      }
      res.end();
    };
    const subject = `${stream.toLowerCase()}.in`;
    const yaml = (over = 'concurrency: 4') => `
version: 1
admin: { port: 0, drainTimeoutMs: 2000 }
brokers:
  nats: { kind: nats, servers: ${js.server.url}, ackWaitMs: 1000, streams: { ${stream}: { subjects: ["${subject}"] } } }
routes:
  - name: ordered
    from: { broker: nats, topic: ${subject} }
    to: { http: { url: "${hook.url}/in", orderBy: $headers.k, ${over}, retry: { attempts: 2, backoffMs: 50 } } }
`;
    const keys = ['k0', 'k1', 'k2'];
    let run = await startGateway(yaml());
    try {
      await run.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'ordered', 15000);
      for (let n = 0; n < 9; n++) await js.peer.jsPublish(subject, JSON.stringify({ k: keys[n % 3], n }), { k: keys[n % 3]! });
      await hook.received(3);
      const firstTry = Date.now();
      await eventually(() => assert.ok(Date.now() - firstTry >= 2500), 10000, 100);
      run = await interrupt(run, yaml);
      failing = false;
      await eventually(() => assert.equal(new Set(delivered).size, 9), 20000, 100);
      // A sentinel published last: by the time it came, a message the server delivered twice would have too.
      await js.peer.jsPublish(subject, JSON.stringify({ k: 'sentinel', n: 9 }), { k: 'sentinel' });
      await eventually(() => assert.ok(delivered.includes('sentinel:9')), 20000, 100);
      assert.equal(delivered.length, 10, `none twice: ${delivered.join(' ')}`);
      for (const [i, k] of keys.entries()) {
        assert.deepEqual(
          delivered.filter((d) => d.startsWith(`${k}:`)),
          [i, i + 3, i + 6].map((n) => `${k}:${n}`),
          `deliveries: ${delivered.join(' ')}`,
        );
      }
    } finally {
      await run.stop();
      await hook.stop();
    }
  }

  it('keeps order per key across a stop (SIGTERM) while messages retry: after the restart each key comes in publish order, the given-back one first', () =>
    orderAcrossInterruption('STOPORDER', async (run, yaml) => {
      assert.deepEqual(await run.stop(), { code: 0, signal: null });
      return startGateway(yaml());
    }));

  it('keeps order per key across a reload that rebuilds the route while messages retry (startFrom: the consumer read again)', () =>
    orderAcrossInterruption('REBUILTORDER', async (run, yaml) => {
      const from = run.logs.length;
      assert.equal((await run.reconfigure(yaml().replace('topic: rebuiltorder.in }', 'topic: rebuiltorder.in, startFrom: latest }'))).msg, 'config reloaded');
      await run.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'ordered', 15000, from);
      return run;
    }));

  it('exits on SIGTERM that comes while a JetStream route sets its consumer up', async () => {
    // The gateway's consumer INFO requests reach nats-server 3 s late: the SIGTERM comes while the
    // route waits for the first, and the route has its consumer's read open only after that.
    let infoHeld!: () => void;
    const held = new Promise<void>((r) => (infoHeld = r));
    const proxy = await TcpProxy.start(js.server.port, { toServer: () => delayNatsFrames('$JS.API.CONSUMER.INFO.', 3000, () => infoHeld()) });
    const gw2 = await startGateway(`
version: 1
admin: { port: 0, drainTimeoutMs: 500 }
brokers:
  nats: { kind: nats, servers: "nats://127.0.0.1:${proxy.port}", streams: { SETTINGUP: { subjects: ["settingup.>"] } } }
routes:
  - name: settingup
    from: { broker: nats, topic: settingup.a, group: setters }
    to: { http: { url: "http://127.0.0.1:9/never" } }
`);
    try {
      await held;
      // Not a measure of speed: a bound on a hang (the route's stop waited for ever).
      const exit = await Promise.race([gw2.stop('SIGTERM'), new Promise((r) => setTimeout(() => r('still running after 60 s'), 60000).unref())]);
      assert.deepEqual(exit, { code: 0, signal: null }, gw2.logs.map((l) => `${l.level} ${l.msg}`).join('; '));
    } finally {
      await gw2.stop('SIGKILL');
      await proxy.stop();
    }
  });
});

/**
 * A connection lost while the messages of the route's last pull were on their way: nats-server
 * counts them as delivered, unacknowledged until `ackWaitMs` passes. The route's consumer must
 * leave room for more than that, or the route takes nothing until they are redelivered.
 */
describe('kind: nats, a JetStream route whose connection was lost with a pull in flight', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  let target: WebhookReceiver;
  let peer: RawNats;
  before(async () => {
    nats = await startNats();
    proxy = await TcpProxy.start(nats.port);
    target = await WebhookReceiver.start();
  });
  // ackWaitMs 60 s: what the route receives within the test's waits is not a redelivery.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: nats://127.0.0.1:${proxy.port}
    reconnectTimeWaitMs: 200
    prefetch: 5
    ackWaitMs: 60000
    streams:
      WORK: { subjects: ["work.>"] }
routes:
  - name: work
    from: { broker: nats, topic: work.items }
    to: { http: { url: "${target.url}/work" } }
`,
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'work', 15000);
    peer = await RawNats.connect(nats);
  });
  after(async () => {
    peer?.close();
    await target?.stop();
    await proxy?.stop();
    await nats?.stop();
  });

  it('goes on with the messages after the lost ones at once, not after ackWaitMs', async () => {
    const seen = () => target.requests.map((r) => (JSON.parse(r.body) as { n: number }).n);
    await peer.jsPublish('work.items', JSON.stringify({ n: 0 }));
    await target.received(1);
    // The next pull (prefetch: 5) is sent to the route and lost on the way.
    proxy.holdReplies();
    for (let n = 1; n <= 5; n++) await peer.jsPublish('work.items', JSON.stringify({ n }));
    const pending = await eventually(async () => {
      const info = await peer.consumerInfo('WORK', 'eventgate-work');
      assert.equal(info.num_ack_pending, 5, JSON.stringify(info));
      return info;
    }, 10000);
    assert.equal(pending.num_pending, 0);
    proxy.cutAndHold();
    proxy.release();
    for (let n = 6; n <= 8; n++) await peer.jsPublish('work.items', JSON.stringify({ n }));
    // 6–8 arrive once the route has reconnected; 1–5 only when ackWaitMs (60 s) has passed.
    await eventually(() => assert.deepEqual(seen(), [0, 6, 7, 8]), 20000, 100);
  });

  it('hands the route a redelivered message of a stream made again, though the old stream had a message of that sequence the route handled', async () => {
    const seen = () => target.requests.map((r) => (JSON.parse(r.body) as { n: number }).n).filter((n) => n >= 100);
    // The old stream's sequences 1 and 7–9 were handled (the test before); deleted, the broker declares it again.
    const from = gw.logs.length;
    assert.equal((await peer.jsApi('$JS.API.STREAM.DELETE.WORK', {})).success, true);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'work', 20000, from);
    for (let n = 100; n <= 105; n++) await peer.jsPublish('work.items', JSON.stringify({ n }));
    await eventually(() => assert.deepEqual(seen(), [100, 101, 102, 103, 104, 105]), 10000, 100);
    // An operator shortens the consumer's ack wait to 1 s, so what a lost pull held comes back soon.
    const info = await peer.jsApi('$JS.API.CONSUMER.INFO.WORK.eventgate-work', {});
    const updated = await peer.jsApi('$JS.API.CONSUMER.DURABLE.CREATE.WORK.eventgate-work', { stream_name: 'WORK', config: { ...info.config, ack_wait: 1e9 } });
    assert.equal(updated.config?.ack_wait, 1e9, JSON.stringify(updated));
    // Sequences 7–11 of the new stream are sent to the route and lost on the way; JetStream sends them again.
    proxy.holdReplies();
    for (let n = 106; n <= 110; n++) await peer.jsPublish('work.items', JSON.stringify({ n }));
    await eventually(async () => assert.equal((await peer.consumerInfo('WORK', 'eventgate-work')).num_ack_pending, 5), 10000);
    proxy.cutAndHold();
    proxy.release();
    await eventually(() => assert.deepEqual(seen(), [100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110]), 20000, 100);
    await eventually(async () => assert.equal((await peer.consumerInfo('WORK', 'eventgate-work')).num_ack_pending, 0), 10000);
  });
});
