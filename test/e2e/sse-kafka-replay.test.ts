import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually } from '../helpers/gateway.js';
import { testClient } from '../helpers/kafka.js';
import { openStream, type SseEvent, untagged, useSseKafka } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

/**
 * An event-stream resume reads the Kafka topic without a consumer group (ListOffsets and Fetch to
 * each partition's leader): it used to join a group of its own per resume, which waited for the
 * group to form (3 s on the mock, as on real Kafka) and left one group per reconnect on the cluster.
 */
describe('SSE resume from a Kafka topic without a consumer group', () => {
  const { kafka, topic, gw } = useSseKafka('sse-replay', 'sse-replay-stream');

  let n = 0;
  /** Publishes the next event, to room `r<n % 6>` (so to every partition, by key). */
  const publish = async () => {
    n++;
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: `r${n % 6}` }) });
    assert.equal(res.status, 200);
    return n;
  };
  const numbers = (events: SseEvent[]) => events.map((e) => JSON.parse(e.data).n as number).sort((a, b) => a - b);
  /**
   * Resumes after `lastId`; once the `missed` events came, one more is published live and must
   * come, and nothing else (no event twice). The stream's events.
   */
  const resume = async (lastId: string, missed: number[]) => {
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    await eventually(() => assert.deepEqual(numbers(resumed.events()), missed), 20000);
    const live = await publish();
    await eventually(() => assert.ok(numbers(resumed.events()).includes(live)), 15000);
    const events = resumed.events();
    resumed.close();
    assert.deepEqual(numbers(events), [...missed, live]);
    return events;
  };
  let lastId: string;

  it('replays what a client missed and creates no consumer group on the cluster', async () => {
    const first = await openStream(gw.url('api', '/ticks'));
    for (let i = 0; i < 6; i++) await publish();
    await eventually(() => assert.equal(first.events().length, 6), 15000);
    lastId = first.events().at(-1)!.id!;
    first.close();
    const groups = await kafka().groups();
    assert.deepEqual(groups, ['sse-replay-stream']);

    const missed = [await publish(), await publish(), await publish(), await publish()];
    const events = await resume(lastId, missed);
    assert.ok(
      events.every((e) => e.event === undefined),
      `no notice: ${JSON.stringify(events)}`,
    );
    lastId = events.at(-1)!.id!;
    // The mock logs a group as its first JoinGroup creates it; the replay's would have been created before it read a record.
    assert.deepEqual(await kafka().groups(), groups);
  });

  it('replays every partition when a leader moved since the last resume and the old leader is gone (fetching metadata again)', async () => {
    const admin = testClient(kafka().bootstrap).admin();
    await admin.connect();
    let leaders: Map<number, number>;
    try {
      const [meta] = (await admin.fetchTopicMetadata({ topics: [topic()] })).topics;
      leaders = new Map(meta!.partitions.map((p) => [p.partitionId, p.leader]));
    } finally {
      await admin.disconnect();
    }
    // The gateway's reader knows the old leaders from the resume before. Partition 1's leader and
    // every other partition it leads move to another broker, and the old leader goes down: the
    // reader's requests to it fail until it fetches the metadata again.
    const old = leaders.get(1)!;
    for (const [partition, leader] of leaders) if (leader === old) await kafka().moveLeader(topic(), partition, (old % 3) + 1);
    await kafka().down(old);
    const missed: number[] = [];
    for (let i = 0; i < 6; i++) missed.push(await publish());
    const events = await resume(lastId, missed);
    assert.ok(
      events.every((e) => e.event === undefined),
      `no notice: ${JSON.stringify(events)}`,
    );
    // The ids go forward on every partition: each event once.
    const offsets = new Map<number, number>();
    for (const e of events) {
      for (const pair of untagged(e.id).split(',')) {
        const [p, o] = pair.split(':').map(Number) as [number, number];
        assert.ok((offsets.get(p) ?? -1) <= o, `id ${e.id} goes back on partition ${p}`);
        offsets.set(p, o);
      }
    }
  });
});

/** Kafka's TOPIC_AUTHORIZATION_FAILED: an error the replay does not retry (an ACL that forbids reading the topic's offsets). */
const TOPIC_AUTHORIZATION_FAILED = 29;
const LIST_OFFSETS = 2;

/**
 * A resume whose replay the cluster refuses: the client is told at once that it was not resumed
 * (`eventgate.resume` with `resumed: false`), then gets the live events, on the same stream.
 */
describe('SSE resume from a Kafka topic the cluster will not replay', () => {
  const { kafka, gw } = useSseKafka('sse-no-replay');
  let n = 0;
  const publish = async () => {
    n++;
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: `r${n % 6}` }) });
    assert.equal(res.status, 200);
    return n;
  };

  it('sends eventgate.resume with resumed: false, logs why, then streams the live events; the next resume replays again', async () => {
    const first = await openStream(gw.url('api', '/ticks'));
    for (let i = 0; i < 3; i++) await publish();
    await eventually(() => assert.equal(first.events().length, 3), 15000);
    const lastId = first.events().at(-1)!.id!;
    first.close();
    // Missed: streamed live while the client was away (a watcher sees them go by), so they can only come back by a replay.
    const watcher = await openStream(gw.url('api', '/ticks'));
    const missed = [await publish(), await publish()];
    await eventually(() => assert.equal(watcher.events().length, 2), 15000);
    watcher.close();

    // The replay's ListOffsets requests (earliest and latest, one per partition leader: 3 brokers) are refused.
    await kafka().failRequests(LIST_OFFSETS, 6, TOPIC_AUTHORIZATION_FAILED);
    const from = gw.logs.length;
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    const notice = await eventually(() => {
      const [e] = resumed.events();
      assert.ok(e);
      return e;
    }, 15000);
    assert.equal(notice.event, 'eventgate.resume');
    assert.deepEqual(JSON.parse(notice.data), { resumed: false, reason: 'the broker could not replay retained events' });
    const warned = await gw.waitForLog((l) => l.msg === 'event stream could not be resumed; streaming from now', 5000, from);
    assert.equal(warned.level, 'warn');
    assert.equal(warned.route, 'stream');
    assert.match(String(warned.err), /authoriz/i);
    assert.ok(!String(warned.err).includes('    at '), 'no stack trace');

    const live = await publish();
    await eventually(() => assert.ok(resumed.events().some((e) => e.event === undefined && JSON.parse(e.data).n === live)), 15000);
    const events = resumed.events();
    resumed.close();
    // The notice, then the live event only: the missed ones are not sent (the notice said so), and nothing twice.
    assert.deepEqual(
      events.map((e) => (e.event === undefined ? JSON.parse(e.data).n : e.event)),
      ['eventgate.resume', live],
    );

    // The refusal passed: resuming from the same id replays what was missed, then the live event.
    const again = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    await eventually(
      () =>
        assert.deepEqual(
          again
            .events()
            .map((e) => JSON.parse(e.data).n as number)
            .sort((a, b) => a - b),
          [...missed, live],
        ),
      20000,
    );
    again.close();
  });
});
