import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually } from '../helpers/gateway.js';
import { prng } from '../helpers/prng.js';
import { follow, useSseKafka } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

/**
 * sse-burst-resume on a 3-partition Kafka topic: the route's consumer delivers behind the POST
 * answers, so a resume's replay often reads past the live events (the client is `ahead`), and live
 * events arrive while it is replayed (`held`) — the two ways a client takes events besides the
 * per-turn batch. Every client must see each partition's sequence exactly, across its reconnects.
 */
describe('SSE over Kafka: bursts while clients resume', () => {
  const { gw } = useSseKafka('sse-burst', 'sse-burst-stream');

  type Sent = { n: number; partition: number; offset: bigint };
  const post = async (body: unknown, batch: boolean): Promise<Sent[]> => {
    const res = await fetch(gw.url('api', '/ticks'), {
      method: 'POST',
      headers: { 'content-type': batch ? 'application/cloudevents-batch+json' : 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, await res.clone().text());
    const { deliveries } = (await res.json()) as { deliveries: { partition: number; offset: string }[] };
    const ns = batch ? (body as { data: { n: number } }[]).map((e) => e.data.n) : [(body as { n: number }).n];
    assert.equal(deliveries.length, ns.length);
    return deliveries.map((d, i) => ({ n: ns[i]!, partition: d.partition, offset: BigInt(d.offset) }));
  };

  for (const seed of [16, 4242]) {
    it(`gives every client each partition's exact sequence across seeded reconnects during bursts (seed ${seed})`, async () => {
      const random = prng(seed);
      const int = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
      const rounds = Array.from({ length: 8 }, () => Array.from({ length: int(1, 3) }, () => (random() < 0.7 ? int(2, 50) : 1)));
      const total = rounds.flat().reduce((a, b) => a + b, 0);
      const clients = [
        ...Array.from({ length: 4 }, () =>
          Array.from({ length: int(2, 6) }, () => int(1, total - 1))
            .sort((a, b) => a - b)
            .filter((x, i, all) => all.indexOf(x) === i),
        ),
        [],
      ];
      const started = clients.map((drops) => follow(gw.url('api', '/ticks'), drops));
      await Promise.all(started.map((s) => s.connected));
      const published: Sent[] = [];
      let n = seed * 10_000;
      try {
        for (const round of rounds) {
          const sent = await Promise.all(
            round.map((size) => {
              const one = () => ({ n: n++, room: `r${int(0, 5)}` });
              if (size === 1) return post(one(), false);
              return post(
                Array.from({ length: size }, () => {
                  const data = one();
                  return { specversion: '1.0', id: `e-${data.n}`, source: '/burst', type: 'tick', data };
                }),
                true,
              );
            }),
          );
          for (const s of sent) published.push(...s);
        }
        const partitionOf = new Map(published.map((p) => [p.n, p.partition]));
        const sequence = (ns: number[], p: number) => ns.filter((x) => partitionOf.get(x) === p);
        const want = [0, 1, 2].map((p) =>
          published
            .filter((x) => x.partition === p)
            .sort((a, b) => (a.offset < b.offset ? -1 : 1))
            .map((x) => x.n),
        );
        for (const [i, { follower }] of started.entries()) {
          await eventually(() => assert.ok(follower.events.length >= total, `client ${i} read ${follower.events.length} of ${total}`), 20000);
          const label = `client ${i}, drops after ${clients[i]!.join(',')}, ${follower.connections} connections`;
          assert.deepEqual(follower.notices, [], `${label}: no resume notice`);
          assert.equal(follower.events.length, total, `${label}: no duplicate`);
          const got = follower.events.map((e) => (JSON.parse(e.data) as { n: number }).n);
          for (const p of [0, 1, 2]) assert.deepEqual(sequence(got, p), want[p], `${label}: partition ${p} in order, no gap, no duplicate`);
          for (const e of follower.events) assert.match(e.id ?? '', /^[A-Za-z0-9_-]{4}~\d+:\d+(,\d+:\d+)*$/, `${label}: every event has an id`);
        }
      } finally {
        for (const s of started) s.follower.stop();
        await Promise.all(started.map((s) => s.follower.done));
      }
    });
  }
});
