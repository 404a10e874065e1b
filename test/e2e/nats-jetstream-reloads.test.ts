import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { delayNatsFrames, useNatsPeer } from '../helpers/peers.js';
import { scrape } from '../helpers/prometheus.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

// Reloads and rolling updates that change a JetStream route's startFrom or subject: nothing lost,
// nothing twice, across one instance's reload and across two instances sharing the route's
// consumer. Each case starts gateways of its own. (The kind's main cases are in nats.test.ts.)

describe("kind: nats, a reload or rolling update that changes a JetStream route's startFrom or subject", () => {
  const js = useNatsPeer();

  it('keeps a JetStream route consuming where it was when a reload changes its startFrom: nothing lost, none twice, no retry loop', async () => {
    const hook = await WebhookReceiver.start();
    const routeConfig = (startFrom: string) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${js.server.url}, ackWaitMs: 2000, streams: { MOVED: { subjects: ["moved.>"] } } }
routes:
  - name: moved
    from: { broker: nats, topic: moved.in, group: movers, startFrom: ${startFrom} }
    to: { http: { url: "${hook.url}/moved", concurrency: 1 } }
`;
    const gw2 = await startGateway(routeConfig('earliest'));
    try {
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'moved', 15000);
      for (let i = 0; i < 5; i++) await js.peer.jsPublish('moved.in', JSON.stringify({ i }));
      await hook.received(5, 15000);
      const from = gw2.logs.length;
      // Published while the reload replaces the route, and after: the durable consumer holds them.
      const reloading = gw2.reconfigure(routeConfig('latest'));
      for (let i = 5; i < 10; i++) await js.peer.jsPublish('moved.in', JSON.stringify({ i }));
      assert.equal((await reloading).msg, 'config reloaded');
      for (let i = 10; i < 15; i++) await js.peer.jsPublish('moved.in', JSON.stringify({ i }));
      await hook.received(15, 15000);
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'moved', 15000, from);
      assert.equal((await readyz(gw2)).status, 200);
      // Every message acknowledged and none left: nothing can come again, so the list is final.
      await eventually(async () => assert.deepEqual(await js.peer.consumerInfo('MOVED', 'movers').then((c) => [c.num_pending, c.num_ack_pending]), [0, 0]), 15000, 100);
      // A message the old route had pulled but not handled when the reload stopped it is given
      // back on the stop: the new route has it first, in order, never twice (docs/scaling.md).
      // In order because the webhook sends one at a time (`concurrency: 1`): at the default 16
      // the messages in hand go at once and may arrive in any order.
      assert.deepEqual(
        hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i),
        Array.from({ length: 15 }, (_, i) => i),
      );
      const retried = gw2.logs.slice(from).filter((l) => l.msg.startsWith('nats consumer stopped'));
      assert.deepEqual(retried, []);
      // Said once, so the operator knows the new setting is not the consumer's.
      assert.ok(
        gw2.logs.slice(from).some((l) => l.route === 'moved' && /startFrom/.test(l.msg)),
        JSON.stringify(gw2.logs.slice(from)),
      );
    } finally {
      await gw2.stop();
      await hook.stop();
    }
  });

  it('goes on after the last message it acknowledged when a reload changes a JetStream route subject, and back again: nothing lost, none twice, no wait', async () => {
    const hook = await WebhookReceiver.start();
    const routeConfig = (topic: string) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${js.server.url}, streams: { WIDENED: { subjects: ["widened.>"] } } }
routes:
  - name: widened
    from: { broker: nats, topic: "${topic}", group: wideners }
    to: { http: { url: "${hook.url}/widened", concurrency: 1 } }
`;
    const gw2 = await startGateway(routeConfig('widened.a'));
    try {
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'widened', 15000);
      for (let i = 0; i < 5; i++) await js.peer.jsPublish('widened.a', JSON.stringify({ i }));
      await hook.received(5, 15000);
      const from = gw2.logs.length;
      const reloading = gw2.reconfigure(routeConfig('widened.>'));
      for (let i = 5; i < 10; i++) await js.peer.jsPublish('widened.a', JSON.stringify({ i }));
      assert.equal((await reloading).msg, 'config reloaded');
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'widened', 15000, from);
      for (let i = 10; i < 15; i++) await js.peer.jsPublish(i % 2 ? 'widened.b' : 'widened.a', JSON.stringify({ i }));
      await hook.received(15, 15000);
      // The edit rolled back: the route reads its first subject again.
      const back = gw2.logs.length;
      assert.equal((await gw2.reconfigure(routeConfig('widened.a'))).msg, 'config reloaded');
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'widened', 15000, back);
      for (let i = 15; i < 20; i++) await js.peer.jsPublish('widened.a', JSON.stringify({ i }));
      await hook.received(20, 15000);
      // Every message acknowledged and none left: nothing can come again, so the list is final.
      await eventually(async () => assert.deepEqual(await js.peer.consumerInfo('WIDENED', 'wideners').then((c) => [c.num_pending, c.num_ack_pending]), [0, 0]), 15000, 100);
      // In order: the webhook sends one at a time (`concurrency: 1`; at the default 16, in any order).
      assert.deepEqual(
        hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i),
        Array.from({ length: 20 }, (_, i) => i),
      );
      // Each subject's route is a route of its own (1712): none took the other for another instance's reader, or waited for it.
      assert.deepEqual(
        gw2.logs.filter((l) => l.msg.startsWith("the group's consumer reads another subject")),
        [],
      );
    } finally {
      await gw2.stop();
      await hook.stop();
    }
  });

  it('a JetStream route whose subject a reload changes stops once nats-server applied its acknowledgements: the recreated consumer delivers none of them again', async () => {
    // The gateway's acknowledgements reach nats-server 3 s late (a proxy holds them), its other
    // requests at once: a server that applies acknowledgements after answering what came later.
    // Until the case has checked what came (`acksLate`): the gateway's stop waits as long too.
    let acksLate = true;
    const proxy = await TcpProxy.start(js.server.port, { toServer: () => delayNatsFrames('$JS.ACK.', () => (acksLate ? 3000 : undefined)) });
    const hook = await WebhookReceiver.start();
    const routeConfig = (topic: string) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: "nats://127.0.0.1:${proxy.port}", ackTimeoutMs: 15000, streams: { SLOWACK: { subjects: ["slowack.>"] } } }
routes:
  - name: slowack
    from: { broker: nats, topic: "${topic}", group: slowackers }
    to: { http: { url: "${hook.url}/slowack", concurrency: 1 } }
`;
    const gw2 = await startGateway(routeConfig('slowack.a'));
    try {
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'slowack', 15000);
      for (let i = 0; i < 5; i++) await js.peer.jsPublish('slowack.a', JSON.stringify({ i }));
      await hook.received(5, 15000);
      // At once: the route acknowledged 0-4, and nats-server has applied none of it yet.
      const from = gw2.logs.length;
      assert.equal((await gw2.reconfigure(routeConfig('slowack.>'))).msg, 'config reloaded');
      const recreated = await gw2.waitForLog((l) => l.msg.startsWith('the route reads another subject'), 15000, from);
      assert.equal(recreated.fromSeq, 6);
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'slowack', 15000, from);
      for (let i = 5; i < 10; i++) await js.peer.jsPublish(i % 2 ? 'slowack.b' : 'slowack.a', JSON.stringify({ i }));
      await hook.received(10, 15000);
      // Once the consumer has nothing left to deliver or to be acknowledged, whatever came twice has come.
      await eventually(async () => assert.deepEqual(await js.peer.consumerInfo('SLOWACK', 'slowackers').then((c) => [c.num_pending, c.num_ack_pending]), [0, 0]), 15000, 100);
      // In order: the webhook sends one at a time (`concurrency: 1`; at the default 16, in any order).
      assert.deepEqual(
        hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i),
        Array.from({ length: 10 }, (_, i) => i),
      );
      acksLate = false;
    } finally {
      await gw2.stop();
      await hook.stop();
      await proxy.stop();
    }
  });

  it("two instances of a rolling update that changes a JetStream route's subject (one group): the new one's consumer starts no later than where the stream ended when it started, and the old one leaves the consumer to it, so the new subject loses nothing; once the new one stops, the old one takes it back", async () => {
    const oldHook = await WebhookReceiver.start();
    const newHook = await WebhookReceiver.start();
    // The old instance's consumer deletes reach nats-server 1 s late, and the test deletes the
    // consumer meanwhile: as a third instance taking it back at the same moment would (2065).
    let deletedMeanwhile: Promise<unknown> | undefined;
    const proxy = await TcpProxy.start(js.server.port, {
      toServer: () => delayNatsFrames('$JS.API.CONSUMER.DELETE.', 1000, () => (deletedMeanwhile = js.peer.jsApi('$JS.API.CONSUMER.DELETE.ROLL.rollers', {}))),
    });
    // The new instance's look at the consumer, before it makes it again for its subject, waits
    // until the old instance has read on past messages of the new subject published meanwhile (2060).
    let releaseRecreation!: () => void;
    const recreationReleased = new Promise<void>((r) => (releaseRecreation = r));
    let recreationHeld!: () => void;
    const recreationWaits = new Promise<void>((r) => (recreationHeld = r));
    const newProxy = await TcpProxy.start(js.server.port, { toServer: () => delayNatsFrames('$JS.API.CONSUMER.INFO.', recreationReleased, () => recreationHeld()) });
    const routeConfig = (topic: string, url: string, server = js.server.url) => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: "${server}", streams: { ROLL: { subjects: ["roll.>"] } } }
routes:
  - name: rolled
    from: { broker: nats, topic: ${topic}, group: rollers }
    to: { http: { url: "${url}/rolled", concurrency: 1 } }
`;
    const idsOf = (hook: WebhookReceiver) => hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i);
    const before = await startGateway(routeConfig('roll.a', oldHook.url, `nats://127.0.0.1:${proxy.port}`));
    let after: RunningGateway | undefined;
    try {
      await before.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'rolled', 15000);
      for (let i = 0; i < 5; i++) await js.peer.jsPublish('roll.a', JSON.stringify({ i }));
      await oldHook.received(5, 15000);
      after = await startGateway(routeConfig('roll.b', newHook.url, `nats://127.0.0.1:${newProxy.port}`));
      await recreationWaits;
      // Published after the new instance started and before the old one's last acknowledgement:
      // the recreated consumer started after that, and these 5 were lost (2060).
      for (let i = 0; i < 5; i++) await js.peer.jsPublish('roll.b', JSON.stringify({ i }));
      let lastOld = 0;
      for (let i = 0; i < 5; i++) lastOld = (await js.peer.jsPublish('roll.a', JSON.stringify({ i: 90 + i }))).seq;
      await eventually(async () => assert.ok(((await js.peer.jsApi('$JS.API.CONSUMER.INFO.ROLL.rollers', {})) as { ack_floor: { stream_seq: number } }).ack_floor.stream_seq >= lastOld), 15000, 50);
      releaseRecreation();
      await after.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'rolled', 15000);
      // Both instances run, as in a rolling update, while messages come to both subjects.
      for (let i = 5; i < 45; i++) {
        await js.peer.jsPublish('roll.a', JSON.stringify({ i: 100 + i }));
        await js.peer.jsPublish('roll.b', JSON.stringify({ i }));
        await new Promise((r) => setTimeout(r, 20));
      }
      await newHook.received(45, 15000);
      await before.waitForLog((l) => l.msg.startsWith("the group's consumer reads another subject"), 15000);
      // Every message acknowledged and none left: nothing can come again, so the list is final.
      await eventually(async () => assert.deepEqual(await js.peer.consumerInfo('ROLL', 'rollers').then((c) => [c.num_pending, c.num_ack_pending]), [0, 0]), 15000, 100);
      // In order: the webhook sends one at a time (`concurrency: 1`; at the default 16, in any order).
      assert.deepEqual(
        idsOf(newHook),
        Array.from({ length: 45 }, (_, i) => i),
      );
      const recreations = (gw: RunningGateway) => gw.logs.filter((l) => l.msg.startsWith('the route reads another subject')).length;
      assert.deepEqual([recreations(before), recreations(after)], [0, 1]);
      // The rolling update stops: nobody reads the consumer any more, and the old instance reads its subject again.
      const from = before.logs.length;
      await after.stop();
      await before.waitForLog((l) => l.msg.startsWith('no instance reads the group'), 30000, from);
      await before.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'rolled', 15000, from);
      assert.equal(((await deletedMeanwhile) as { success: boolean }).success, true);
      assert.equal((await readyz(before)).status, 200);
      // The consumer made again by the new instance under the old one's read, and found gone by the
      // old one's take-back: each said as what it is (2061), neither a failure that waits out a
      // backoff, not ready meanwhile for a stale reason (2065).
      assert.equal(before.logs.filter((l) => l.msg.startsWith("the group's consumer reads another subject")).length, 1);
      assert.deepEqual(
        before.logs.filter((l) => l.msg.startsWith('nats consumer stopped')),
        [],
      );
      assert.equal((await scrape(before.adminUrl)).value('eventgate_nats_consumer_errors_total', { broker: 'nats', route: 'rolled' }) ?? 0, 0);
      const had = oldHook.requests.length;
      for (let i = 200; i < 205; i++) await js.peer.jsPublish('roll.a', JSON.stringify({ i }));
      await oldHook.received(had + 5, 15000);
      assert.deepEqual(idsOf(oldHook).slice(had), [200, 201, 202, 203, 204]);
    } finally {
      await after?.stop();
      await before.stop();
      await oldHook.stop();
      await newHook.stop();
      await proxy.stop();
      await newProxy.stop();
    }
  });

  it("an instance reloaded in a rolling update that changes a JetStream route's subject delivers its own publishes to the new subject made while its old route stopped (the stream's end read before the swap)", async () => {
    const oldHook = await WebhookReceiver.start();
    const newHook = await WebhookReceiver.start();
    // The reloading instance's old route holds a message at this webhook: the reload's swap is made
    // (the new publish path answers), and its new route waits for the old one to stop.
    const heldHook = await WebhookReceiver.start();
    let releaseHeld!: () => void;
    const heldReleased = new Promise<void>((r) => (releaseHeld = r));
    heldHook.respond = (_r, res) => void heldReleased.then(() => res.end('ok'));
    const routeConfig = (topic: string, url: string, publish = '') => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: "${js.server.url}", streams: { SWAP: { subjects: ["swap.>"] } } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: swapped
    from: { broker: nats, topic: ${topic}, group: swappers }
    to: { http: { url: "${url}/swapped" } }
${publish}`;
    const publishRoute = `  - name: publish-b
    from: { listener: api, path: /b }
    to: { broker: nats, topic: swap.b }
`;
    const idsOf = (hook: WebhookReceiver) => hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i);
    const reloading = await startGateway(routeConfig('swap.a', heldHook.url));
    let other: RunningGateway | undefined;
    try {
      await reloading.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'swapped', 15000);
      await js.peer.jsPublish('swap.a', JSON.stringify({ i: -1 }));
      await heldHook.received(1, 15000);
      other = await startGateway(routeConfig('swap.a', oldHook.url));
      await other.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'swapped', 15000);
      const applied = reloading.reconfigure(routeConfig('swap.b', newHook.url, publishRoute), undefined, { whole: true });
      // The swap is made once the new path answers; the new route starts once the old one stopped.
      const first = await eventually(async () => {
        const r = await post(reloading.url('api', '/b'), { i: 0 });
        assert.equal(r.status, 200, r.text);
        return r;
      }, 15000);
      assert.equal(first.status, 200);
      for (let i = 1; i < 5; i++) assert.equal((await post(reloading.url('api', '/b'), { i })).status, 200);
      // The instance still on the old subject acknowledges past them; the held message keeps the floor until it is let go.
      let lastOld = 0;
      for (let i = 0; i < 5; i++) lastOld = (await js.peer.jsPublish('swap.a', JSON.stringify({ i: 90 + i }))).seq;
      await oldHook.received(5, 15000);
      await eventually(
        async () => {
          const info = (await js.peer.jsApi('$JS.API.CONSUMER.INFO.SWAP.swappers', {})) as { delivered: { stream_seq: number }; num_ack_pending: number };
          assert.ok(info.delivered.stream_seq >= lastOld && info.num_ack_pending === 1, JSON.stringify(info));
        },
        15000,
        50,
      );
      releaseHeld();
      await applied;
      await reloading.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'swapped' && l.subject === 'swap.b', 15000);
      assert.equal((await post(reloading.url('api', '/b'), { i: 5 })).status, 200);
      await eventually(() => assert.ok(idsOf(newHook).includes(5), JSON.stringify(idsOf(newHook))), 15000);
      // Published after the swap and before the old instance's last acknowledgement: they were skipped (2162).
      assert.deepEqual(idsOf(newHook), [0, 1, 2, 3, 4, 5]);
    } finally {
      releaseHeld();
      await other?.stop();
      await reloading.stop();
      await oldHook.stop();
      await newHook.stop();
      await heldHook.stop();
    }
  });

  it("a route waiting for another instance's reader that finds the group's consumer gone reads the one another waiting instance makes again, not one of its own", async () => {
    const hook = await WebhookReceiver.start();
    // While `infoGate` is set, the gateway's consumer INFO requests wait for it: the test deletes
    // the consumer between the route's looks at it, as another waiting instance's take-back would.
    let infoGate: Promise<void> | undefined;
    let infoHeld: (() => void) | undefined;
    const proxy = await TcpProxy.start(js.server.port, {
      toServer: () =>
        delayNatsFrames(
          '$JS.API.CONSUMER.INFO.',
          () => infoGate,
          () => infoHeld?.(),
        ),
    });
    const gw2 = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: "nats://127.0.0.1:${proxy.port}", streams: { TAKE: { subjects: ["take.>"] } } }
routes:
  - name: taken
    from: { broker: nats, topic: take.a, group: takers }
    to: { http: { url: "${hook.url}/taken" } }
`);
    const makeConsumer = (subject: string, fromSeq: number) =>
      js.peer.jsApi('$JS.API.CONSUMER.DURABLE.CREATE.TAKE.takers', {
        stream_name: 'TAKE',
        config: { durable_name: 'takers', filter_subject: subject, ack_policy: 'explicit', deliver_policy: 'by_start_sequence', opt_start_seq: fromSeq },
      }) as Promise<{ error?: { description: string } }>;
    try {
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'taken', 15000);
      for (let i = 0; i < 3; i++) await js.peer.jsPublish('take.a', JSON.stringify({ i }));
      await hook.received(3, 15000);
      // An instance on another config makes the consumer again for its subject: the route waits.
      await js.peer.jsApi('$JS.API.CONSUMER.DELETE.TAKE.takers', {});
      assert.equal((await makeConsumer('take.b', 4)).error, undefined);
      await gw2.waitForLog((l) => l.msg.startsWith("the group's consumer reads another subject"), 15000);
      // Another waiting instance takes it back: its delete comes while the route looks, its add after.
      // Held at the proxy, not timed: the route's next look (after its wait; without the wait, the
      // read of the consumer it made itself at once) waits until that add is done, however slow
      // the machine (a 300 ms pause against the 1 s wait passed without the gone consumer seen,
      // or failed, as the machine's speed had it).
      let release!: () => void;
      infoGate = new Promise<void>((r) => (release = r));
      await new Promise<void>((r) => (infoHeld = r));
      let releaseNext!: () => void;
      infoGate = new Promise<void>((r) => (releaseNext = r));
      const nextLook = new Promise<void>((r) => (infoHeld = r));
      const from = gw2.logs.length;
      await js.peer.jsApi('$JS.API.CONSUMER.DELETE.TAKE.takers', {});
      release();
      await nextLook;
      infoGate = undefined;
      assert.equal((await makeConsumer('take.a', 4)).error, undefined);
      releaseNext();
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'taken', 15000, from);
      assert.deepEqual(
        gw2.logs.slice(from).filter((l) => l.msg.startsWith("the route's consumer was deleted on the server") || l.msg.startsWith('nats consumer stopped')),
        [],
      );
      for (let i = 3; i < 6; i++) await js.peer.jsPublish('take.a', JSON.stringify({ i }));
      await hook.received(6, 15000);
      await eventually(async () => assert.deepEqual(await js.peer.consumerInfo('TAKE', 'takers').then((c) => [c.num_pending, c.num_ack_pending]), [0, 0]), 15000, 100);
      assert.deepEqual(
        hook.requests.map((r) => (JSON.parse(r.body) as { i: number }).i),
        [0, 1, 2, 3, 4, 5],
      );
      // Waiting again, the route stops (SIGTERM) after finding the consumer gone: it makes none of
      // its own, which would have the other instance's add refused (it made one after its wait,
      // woken by the stop, or at its end).
      const again = gw2.logs.length;
      await js.peer.jsApi('$JS.API.CONSUMER.DELETE.TAKE.takers', {});
      assert.equal((await makeConsumer('take.b', 7)).error, undefined);
      await gw2.waitForLog((l) => l.msg.startsWith("the group's consumer reads another subject"), 15000, again);
      let releaseLast!: () => void;
      infoGate = new Promise<void>((r) => (releaseLast = r));
      await new Promise<void>((r) => (infoHeld = r));
      infoGate = undefined;
      await js.peer.jsApi('$JS.API.CONSUMER.DELETE.TAKE.takers', {});
      const exited = gw2.stop();
      await gw2.waitForLog((l) => l.msg.startsWith('shutting down'), 15000, again);
      releaseLast();
      assert.deepEqual(await exited, { code: 0, signal: null });
      const left = (await js.peer.jsApi('$JS.API.CONSUMER.INFO.TAKE.takers', {})) as { error?: { code: number } };
      assert.equal(left.error?.code, 404, JSON.stringify(left));
    } finally {
      await gw2.stop();
      await hook.stop();
      await proxy.stop();
    }
  });

  /**
   * A reload that drops a stream from `streams` while routes read and publish its subjects turns
   * them into core NATS: the route gets only what comes while it is subscribed, and a publish is
   * answered without the stream's acknowledgement, though the stream on the server still stores it.
   * Before, nothing said so: toggled back, the durable consumer sent the webhook again what the core
   * route had sent (spec-checklist 5071). Now each is warned of, naming the server's stream.
   */
  it('says that a route and a publish are core NATS where a stream the config no longer lists stores their subjects on the server', async () => {
    const hook = await WebhookReceiver.start();
    const config = (listed: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${js.server.url}
    streams:
      LISTED: { subjects: ["listed.>"] }
${listed ? '      DROPPED: { subjects: ["dropped.>"] }' : ''}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /dropped }
    to: { broker: nats, topic: dropped.in }
  - name: reads
    from: { broker: nats, topic: "dropped.>", group: readers }
    to: { http: { url: "${hook.url}/dropped" } }
`;
    const gw2 = await startGateway(config(true));
    try {
      await gw2.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'reads', 15000);
      const stored = await post(gw2.url('api', '/dropped'), { i: 1 });
      assert.equal(stored.body.deliveries[0].offset, '1', JSON.stringify(stored.body));
      await hook.received(1, 15000);
      const from = gw2.logs.length;
      assert.equal((await gw2.reconfigure(config(false), undefined, { whole: true })).msg, 'config reloaded');
      await eventually(async () => assert.equal((await readyz(gw2)).status, 200), 15000);
      // Core now: answered once the server read it (offset -1), though the server's stream stored it.
      const core = await post(gw2.url('api', '/dropped'), { i: 2 });
      assert.equal(core.body.deliveries[0].offset, '-1', JSON.stringify(core.body));
      await js.peer.storedAtLeast('DROPPED', 2, 15000);
      const reads = await gw2.waitForLog((l) => l.level === 'warn' && l.route === 'reads' && l.stream === 'DROPPED', 15000, from);
      assert.equal(
        reads.msg,
        "nats stream 'DROPPED' on the server stores 'dropped.>', which route reads reads as core NATS (at most once: no entry of streams holds it); list it under the broker's streams (declare: false) to read it through a durable consumer",
      );
      const publishes = await gw2.waitForLog((l) => l.level === 'warn' && l.subject === 'dropped.in' && l.stream === 'DROPPED', 15000, from);
      assert.equal(
        publishes.msg,
        "nats stream 'DROPPED' on the server stores 'dropped.in', which the gateway publishes to as core NATS (answered once the server read a message, not once the stream stored it); list it under the broker's streams (declare: false) to have the stream acknowledge each publish",
      );
      // Once per subject, and none for the subjects of a stream the config lists.
      await post(gw2.url('api', '/dropped'), { i: 3 });
      await hook.received(3, 15000);
      assert.equal(gw2.logs.slice(from).filter((l) => l.stream === 'DROPPED' && l.level === 'warn').length, 2);
      assert.equal(gw2.logs.filter((l) => l.stream === 'LISTED' && l.level === 'warn').length, 0);
    } finally {
      await gw2.stop();
      await hook.stop();
    }
  });
});
