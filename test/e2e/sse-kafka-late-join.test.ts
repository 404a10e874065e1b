import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { ofPartition, openStream, produceTicks, resumeFrom, sseKafkaConfig, type Tick, ticks } from '../helpers/sse.js';

/**
 * A route's first start (as a process restarted with the default instance id): its group is new
 * and starts at the topic's end as it is when the group joins, which the mock's coordinator delays
 * 3 s. A client that resumes before that is replayed up to the end as it was then; the records
 * written between that and where the group starts never reach the route. The first live event of
 * a partition further on than the client has there makes the stream read the route again from
 * the client's positions first: every record once, in order, without a notice. Both where that
 * event comes live after the replay and where it comes during the replay, held behind it.
 */
const PARTITIONS = [0, 1];
const BOUND = 256 * 1024;

/**
 * `clients`: how many resume together with the same id (they share one catch-up read: the mock
 * sees one read's ListOffsets requests, not one per client).
 * `held`: the client reads nothing until the route's live records reached the path, so its replay
 * (of `history` records of each partition, `pad` each) is still under way when they come, and they
 * are held behind it; otherwise the replay is over before the group joins.
 */
function lateJoin(title: string, history: number, pad: string, held: boolean, clients = 1): void {
  describe(title, () => {
    let kafka: KafkaCluster;
    let topic = '';
    let n = 0;
    const made = (count: number) => PARTITIONS.flatMap((p) => Array.from({ length: count }, () => ({ n: ++n, p })));
    /** Produced before the gateway starts: the client's id names the first of each partition. */
    let before_: Tick[] = [];
    before(async () => {
      kafka = await startKafka({ brokers: 1 });
      topic = kafka.topic('sse-late-join');
      await kafka.createTopic(topic, PARTITIONS.length);
      before_ = made(history);
      await produceTicks(kafka.bootstrap, topic, before_, pad);
    });
    // Not waited for: the case resumes while the route's group is still joining.
    const gw = useGateway(() =>
      sseKafkaConfig(kafka, topic)
        .replace('version: 1', 'version: 1\nadmin: { port: 0 }')
        .replace('api: { kind: http, port: 0 }', `api: { kind: http, port: 0, events: { maxBufferedBytes: ${BOUND} } }`),
    );
    // After the gateway's own stop (registered first): its consumer commits and leaves while the
    // cluster still answers, rather than retrying against a stopped one until its drain runs out.
    after(async () => {
      await kafka?.stop();
    });
    const ready = () => gw.logs.some((l) => l.msg === 'consumer ready' && l.route === 'stream');

    it('reads again, before the first live event, what its group started after: every record once, in order, no notice', { timeout: 120_000 }, async () => {
      // An id of the old form (no tag): positions of the route's topic, after the first record of each partition.
      const resumed = [];
      for (let i = 0; i < clients; i++) resumed.push(await resumeFrom(gw.url('api', '/ticks'), PARTITIONS.map((p) => `${p}:0`).join(',')));
      const [client] = resumed as [(typeof resumed)[number]];
      try {
        const replayed = PARTITIONS.flatMap((p) => before_.filter((t) => t.p === p).slice(1));
        if (held) while (client.events.length === 0) await client.step();
        else
          for (const c of resumed) {
            c.read();
            await eventually(() => assert.equal(ticks(c.events).length, replayed.length), 20_000);
          }
        // Written after the replay listed its ends, before the route's group joined: the route never delivers them.
        const missed = made(4);
        await produceTicks(kafka.bootstrap, topic, missed);
        assert.equal(ready(), false, "the case ran before the route's group joined (the mock delays a first join 3 s)");
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20_000);
        // From here on the route's consumer lists no offsets (it has them all once it fetches): a read's are its two.
        const listed = kafka.requests('ListOffsets');
        // Live now: a stream opened after the join gets them.
        const probe = await openStream(gw.url('api', '/ticks'));
        const live = made(2);
        await produceTicks(kafka.bootstrap, topic, live);
        await eventually(() => {
          for (const p of PARTITIONS) assert.deepEqual(ofPartition(ticks(probe.events()), p), ofPartition(live, p));
        }, 20_000);
        probe.close();
        if (held) {
          const s = ((await gw.status()) as { listeners: { name: string; eventStreamReplays: number }[] }).listeners.find((l) => l.name === 'api')!;
          assert.equal(s.eventStreamReplays, 1, 'the live records came while its replay was under way');
          client.read();
        }

        const expected = [...replayed, ...missed, ...live];
        const written = [...before_, ...missed, ...live];
        for (const [i, c] of resumed.entries()) {
          // Until the last live record of each partition reached it (it comes live, with or without what was missed).
          await eventually(() => {
            for (const p of PARTITIONS) assert.equal(ofPartition(ticks(c.events), p).at(-1), ofPartition(live, p).at(-1));
          }, 30_000);
          const got = ticks(c.events);
          for (const p of PARTITIONS) assert.deepEqual(ofPartition(got, p), ofPartition(expected, p), `client ${i}, partition ${p}: every record after the id, once, in order`);
          assert.deepEqual(
            c.events.filter((e) => e.event !== undefined),
            [],
            'no notice: nothing was missed',
          );
          // The last id names the last record of each partition: a reconnect with it replays nothing.
          const last = c.events.at(-1)!.id!;
          assert.ok(last.endsWith(PARTITIONS.map((p) => `${p}:${ofPartition(written, p).length - 1}`).join(',')), last);
        }
        // One catch-up read for them all: its earliest and latest offsets (one broker), whatever the number of clients.
        assert.equal(kafka.requests('ListOffsets') - listed, 2, `one catch-up read for ${clients} client(s)`);
        // What the topic holds, read by another client: the same records.
        const stored = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => ({ ...(JSON.parse(r.value!) as Tick), p: r.partition }));
        for (const p of PARTITIONS) assert.deepEqual(ofPartition(stored, p), ofPartition(written, p), `partition ${p} of the topic`);
      } finally {
        for (const c of resumed) c.close();
      }
    });
  });
}

lateJoin("SSE over Kafka: a resume before the route's new group joined, its replay over", 3, '', false);
// 4 MB per partition (within the 5 MB the mock retains of one), far more than the loopback sockets take from a client that reads nothing.
lateJoin("SSE over Kafka: a resume before the route's new group joined, the live records held behind its replay", 100, 'x'.repeat(40 * 1024), true);
// As after a restart: every open page resumes before the new group joined, and they are short of the same records.
lateJoin("SSE over Kafka: five clients resuming together before the route's new group joined, one catch-up read for all", 3, '', false, 5);
