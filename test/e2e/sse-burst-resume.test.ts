import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { prng } from '../helpers/prng.js';
import { follow } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

/**
 * Bursts (CloudEvents batches and concurrent single POSTs) while several clients drop their stream
 * at seeded points and reconnect with the `Last-Event-ID` of the last whole event they read: live
 * events of a turn go out in one write per client (write-batch.ts), and a reconnect lands anywhere
 * in a turn, during a replay or before the live events caught up with it. Across its connections
 * every client must see each topic's published sequence exactly: no gap, no duplicate, in order.
 */
describe('event streams under bursts while clients resume', () => {
  const config = ({ mixed = true, extra = '' } = {}) => `
version: 1
brokers:
  local: { kind: memory, retain: 5000 }
listeners:
  api: { kind: http, port: 0, events: { heartbeatMs: 100, maxBufferedBytes: 4194304 } }
routes:
  - name: publish-ticks
    from: { listener: api, path: /ticks }
    to: { broker: local, topic: ticks }
  - name: publish-tocks
    from: { listener: api, path: /tocks }
    to: { broker: local, topic: tocks }
  - name: ticks
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /ticks }
${
  mixed
    ? `  - name: mixed-ticks
    from: { broker: local, topic: ticks }
    to: { listener: api, path: /mixed }
  - name: mixed-tocks
    from: { broker: local, topic: tocks }
    to: { listener: api, path: /mixed }
`
    : ''
}${extra}`;
  const gw = useGateway(config());

  async function publishBatch(path: string, ns: number[]): Promise<{ n: number; offset: bigint }[]> {
    const ce = (n: number) => ({ specversion: '1.0', id: `e-${n}`, source: '/burst', type: 'tick', data: { n } });
    const res = await fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: JSON.stringify(ns.map(ce)) });
    assert.equal(res.status, 200, await res.clone().text());
    const { deliveries } = (await res.json()) as { deliveries: { offset: string }[] };
    assert.equal(deliveries.length, ns.length);
    return deliveries.map((d, i) => ({ n: ns[i]!, offset: BigInt(d.offset) }));
  }

  async function publishOne(path: string, n: number): Promise<{ n: number; offset: bigint }[]> {
    const res = await fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
    const { deliveries } = (await res.json()) as { deliveries: { offset: string }[] };
    return [{ n, offset: BigInt(deliveries[0]!.offset) }];
  }

  for (const seed of [16, 1603, 77777]) {
    it(`gives every client each topic's exact sequence across seeded reconnects during bursts (seed ${seed})`, async () => {
      const random = prng(seed);
      const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
      // The plan first (all draws from the seed), then the run.
      const rounds = Array.from({ length: 12 }, () => Array.from({ length: int(1, 4) }, () => ({ path: random() < 0.6 ? '/ticks' : '/tocks', size: random() < 0.7 ? int(2, 50) : 1 })));
      const total = { '/ticks': 0, '/tocks': 0 };
      for (const round of rounds) for (const p of round) total[p.path as '/ticks' | '/tocks'] += p.size;
      const dropsFor = (max: number) =>
        Array.from({ length: int(2, 6) }, () => int(1, max - 1))
          .sort((a, b) => a - b)
          .filter((x, i, all) => all.indexOf(x) === i);
      const clients = [
        ...Array.from({ length: 3 }, () => ({ path: '/ticks', drops: dropsFor(total['/ticks']) })),
        ...Array.from({ length: 3 }, () => ({ path: '/mixed', drops: dropsFor(total['/ticks'] + total['/tocks']) })),
        // Readers that never drop: the batch's shared writes.
        { path: '/ticks', drops: [] },
        { path: '/mixed', drops: [] },
      ];

      const started = clients.map((c) => follow(gw.url('api', c.path), c.drops));
      await Promise.all(started.map((s) => s.connected));
      const published: Record<string, { n: number; offset: bigint }[]> = { '/ticks': [], '/tocks': [] };
      let n = seed * 10_000;
      try {
        for (const round of rounds) {
          const sent = await Promise.all(
            round.map((p) => {
              const ns = Array.from({ length: p.size }, () => n++);
              return p.size === 1 ? publishOne(p.path, ns[0]!) : publishBatch(p.path, ns);
            }),
          );
          round.forEach((p, i) => published[p.path]!.push(...sent[i]!));
        }
        const order = (xs: { n: number; offset: bigint }[]) => [...xs].sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0)).map((x) => x.n);
        const ticks = order(published['/ticks']!);
        const tocks = order(published['/tocks']!);
        const tickSet = new Set(ticks);
        for (const [i, { follower }] of started.entries()) {
          const { path, drops } = clients[i]!;
          const want = path === '/ticks' ? ticks.length : ticks.length + tocks.length;
          await eventually(() => assert.ok(follower.events.length >= want, `client ${i} (${path}) read ${follower.events.length} of ${want}`), 15000);
          const got = follower.events.map((e) => (JSON.parse(e.data) as { n: number }).n);
          const label = `client ${i} on ${path}, drops after ${drops.join(',')}, ${follower.connections} connections`;
          assert.deepEqual(follower.notices, [], `${label}: no resume notice`);
          assert.equal(follower.events.length, want, `${label}: no duplicate`);
          assert.deepEqual(
            got.filter((x) => tickSet.has(x)),
            ticks,
            `${label}: ticks in order, no gap, no duplicate`,
          );
          if (path === '/mixed')
            assert.deepEqual(
              got.filter((x) => !tickSet.has(x)),
              tocks,
              `${label}: tocks in order, no gap, no duplicate`,
            );
          for (const e of follower.events) assert.ok(e.id, `${label}: every event has an id`);
        }
      } finally {
        for (const s of started) s.follower.stop();
        await Promise.all(started.map((s) => s.follower.done));
      }
    });
  }

  type Sent = { n: number; offset: bigint };
  const inOrder = (xs: Sent[]) => [...xs].sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0)).map((x) => x.n);

  /** Publishes seeded rounds of bursts until `until` settled, then two rounds more; what each topic took. */
  async function burstsDuring(seed: number, until: Promise<unknown>): Promise<{ ticks: number[]; tocks: number[] }> {
    const random = prng(seed);
    const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
    let settled = false;
    void until.then(
      () => (settled = true),
      () => (settled = true),
    );
    const published: Record<string, Sent[]> = { '/ticks': [], '/tocks': [] };
    let n = seed * 10_000;
    for (let after = 0; after < 2; ) {
      const round = Array.from({ length: int(1, 4) }, () => ({ path: random() < 0.6 ? '/ticks' : '/tocks', size: random() < 0.7 ? int(2, 50) : 1 }));
      const sent = await Promise.all(
        round.map((p) => {
          const ns = Array.from({ length: p.size }, () => n++);
          return p.size === 1 ? publishOne(p.path, ns[0]!) : publishBatch(p.path, ns);
        }),
      );
      round.forEach((p, i) => published[p.path]!.push(...sent[i]!));
      if (settled) after++;
    }
    return { ticks: inOrder(published['/ticks']!), tocks: inOrder(published['/tocks']!) };
  }

  const numbers = (events: { data: string }[]) => events.map((e) => (JSON.parse(e.data) as { n: number }).n);

  it('keeps every stream whole through a reload during a burst that keeps their routes', async () => {
    const started = [follow(gw.url('api', '/ticks'), []), follow(gw.url('api', '/ticks'), [40, 41, 300]), follow(gw.url('api', '/mixed'), []), follow(gw.url('api', '/mixed'), [25, 200, 201])];
    await Promise.all(started.map((s) => s.connected));
    try {
      // Wait for the publishing to be under way, so the reload lands in the middle of it.
      const reload = new Promise((resolve) => setImmediate(resolve)).then(() =>
        gw.reconfigure(
          config({
            extra: `  - name: unrelated
    from: { listener: api, path: /other }
    to: { broker: local, topic: other }
`,
          }),
        ),
      );
      const { ticks, tocks } = await burstsDuring(4711, reload);
      assert.equal((await reload).msg, 'config reloaded');
      const tickSet = new Set(ticks);
      for (const [i, { follower }] of started.entries()) {
        const mixed = i >= 2;
        const want = mixed ? ticks.length + tocks.length : ticks.length;
        await eventually(() => assert.ok(follower.events.length >= want, `client ${i} read ${follower.events.length} of ${want}`), 15000);
        const got = numbers(follower.events);
        assert.equal(follower.endedByServer, false, `client ${i}: its stream stayed open`);
        assert.deepEqual(follower.notices, [], `client ${i}: no resume notice`);
        assert.equal(got.length, want, `client ${i}: no duplicate`);
        assert.deepEqual(
          got.filter((x) => tickSet.has(x)),
          ticks,
          `client ${i}: ticks in order, no gap`,
        );
        if (mixed)
          assert.deepEqual(
            got.filter((x) => !tickSet.has(x)),
            tocks,
            `client ${i}: tocks in order, no gap`,
          );
      }
    } finally {
      for (const s of started) s.follower.stop();
      await Promise.all(started.map((s) => s.follower.done));
    }
  });

  it('ends the streams of a path a reload removes during a burst after a whole prefix of each topic, and keeps the others whole', async () => {
    const removed = [follow(gw.url('api', '/mixed'), []), follow(gw.url('api', '/mixed'), []), follow(gw.url('api', '/mixed'), [30])];
    const kept = follow(gw.url('api', '/ticks'), []);
    await Promise.all([...removed, kept].map((s) => s.connected));
    try {
      const reload = new Promise((resolve) => setImmediate(resolve)).then(() => gw.reconfigure(config({ mixed: false })));
      const { ticks, tocks } = await burstsDuring(815, reload);
      assert.equal((await reload).msg, 'config reloaded');
      const tickSet = new Set(ticks);
      for (const [i, { follower }] of removed.entries()) {
        await eventually(() => assert.ok(follower.endedByServer, `client ${i}: its stream ended`));
        const got = numbers(follower.events);
        // An eventgate.end may close it (a client reconnecting as the path went gets a 404 instead).
        assert.deepEqual(
          follower.notices.filter((n) => n.event !== 'eventgate.end'),
          [],
          `client ${i}: no resume notice`,
        );
        const seenTicks = got.filter((x) => tickSet.has(x));
        const seenTocks = got.filter((x) => !tickSet.has(x));
        assert.deepEqual(seenTicks, ticks.slice(0, seenTicks.length), `client ${i}: a prefix of the ticks, in order, no gap, no duplicate`);
        assert.deepEqual(seenTocks, tocks.slice(0, seenTocks.length), `client ${i}: a prefix of the tocks, in order, no gap, no duplicate`);
      }
      await eventually(() => assert.ok(kept.follower.events.length >= ticks.length), 15000);
      assert.equal(kept.follower.endedByServer, false);
      assert.deepEqual(numbers(kept.follower.events), ticks, 'the kept stream got every tick, once, in order');
    } finally {
      for (const s of [...removed, kept]) s.follower.stop();
      await Promise.all([...removed, kept].map((s) => s.follower.done));
      assert.equal((await gw.reconfigure(config())).msg, 'config reloaded');
    }
  });
});
