import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { join } from 'node:path';
import { eventually, repoRoot, useGateway } from '../helpers/gateway.js';
import { appendCommitMarker, committedOffsets, endOffsets, kcatProduce, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { openStream, splitId, sseKafkaConfig, untagged, useSseKafka, assertOtherSourceNotice } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

/** Commits a group's offset without joining it (kafka-python). */
const PYTHON_CLIENT = join(repoRoot, 'test', 'kafka', 'python-client.py');

describe('Server-Sent Events from a Kafka topic', () => {
  const { gw, kafka, topic } = useSseKafka('sse');

  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: `r${n % 5}` }) });
    assert.equal(res.status, 200);
  };

  it('resumes after Last-Event-ID from Kafka offsets (every partition), with no gap and no duplicate', async () => {
    const first = await openStream(gw.url('api', '/ticks'));
    for (let n = 1; n <= 6; n++) await publish(n);
    await eventually(() => assert.equal(first.events().length, 6), 15000);
    const lastId = first.events().at(-1)!.id!;
    assert.match(untagged(lastId), /^\d+:\d+(,\d+:\d+)*$/);
    first.close();

    for (let n = 7; n <= 10; n++) await publish(n);
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    await eventually(() => assert.equal(resumed.events().length, 4), 20000);
    await publish(11);
    await eventually(() => assert.equal(resumed.events().length, 5), 15000);
    const ns = resumed.events().map((e) => JSON.parse(e.data).n as number);
    // Order holds within a partition (a room), not across them.
    assert.deepEqual(
      [...ns].sort((a, b) => a - b),
      [7, 8, 9, 10, 11],
    );
    assert.equal(ns.at(-1), 11);
    resumed.close();
  });
  it('tells a client whose Last-Event-ID is past the end of the topic (created again since), and replays it from the oldest retained; a partition the topic lacks leaves its ids', async () => {
    // Partition 7: the topic has 3 (an id of another topic); it stayed in every id the client got.
    const ahead = await openStream(gw.url('api', '/ticks'), { 'last-event-id': '0:9000,1:9000,2:9000,7:3' });
    // The 11 events the test before published, all of them, after the notice.
    await eventually(() => assert.equal(ahead.events().length, 12), 20000);
    const [notice, ...replayed] = ahead.events();
    assert.equal(notice!.event, 'eventgate.resume');
    assert.match((JSON.parse(notice!.data) as { reason: string }).reason, /past the end of the topic/);
    assert.deepEqual(
      replayed.map((e) => JSON.parse(e.data).n as number).sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    await publish(12);
    await eventually(() => assert.equal(ahead.events().length, 13), 15000);
    for (const e of ahead.events().slice(1)) assert.match(untagged(e.id), /^[0-2]:\d+(,[0-2]:\d+)*$/);
    ahead.close();
  });
  it("tells a client whose Last-Event-ID names none of the topic's partitions (an id of another topic), and replays it from the oldest retained", async () => {
    // Before, the topic was replayed from its oldest record without a word, as if it were a resume.
    const foreign = await openStream(gw.url('api', '/ticks'), { 'last-event-id': '7:3' });
    // The 12 events the tests before published, all of them, after the notice.
    await eventually(() => assert.equal(foreign.events().length, 13), 20000);
    const [notice, ...replayed] = foreign.events();
    assert.equal(notice!.event, 'eventgate.resume');
    assert.match((JSON.parse(notice!.data) as { reason: string }).reason, /^Last-Event-ID names no partition of this topic/);
    assert.deepEqual(
      replayed.map((e) => JSON.parse(e.data).n as number).sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
    );
    foreign.close();
  });
  it('replays records written in every codec Kafka has (gzip, snappy, lz4, zstd), as the live route reads them', async () => {
    // The id of a client that saw everything the topic holds now (earlier tests' records included).
    const ends = await endOffsets(kafka().bootstrap, topic());
    const seen = Object.entries(ends)
      .filter(([, end]) => BigInt(end) > 0n)
      .map(([p, end]) => `${p}:${BigInt(end) - 1n}`)
      .join(',');
    const codecs = ['gzip', 'snappy', 'lz4', 'zstd'];
    for (const [i, codec] of codecs.entries()) {
      const records = [0, 1, 2].map((j) => ({ key: `r${j}`, value: JSON.stringify({ codec, n: i * 3 + j }) }));
      await kcatProduce(kafka().bootstrap, topic(), records, { compression: codec });
    }
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': seen });
    // The ids in the message: a record sent twice repeats its id, a record written twice (a producer's retry) has two.
    const seenIds = () => JSON.stringify(resumed.events().map((e) => [e.id, e.data]));
    const codecEvents = () => resumed.events().filter((e) => e.event === undefined && 'codec' in JSON.parse(e.data));
    await eventually(() => assert.ok(codecEvents().length >= 12), 20000);
    // A live event produced after them: the live route has delivered them by the time it comes, so a second copy of any would be here.
    await publish(100);
    await eventually(() => assert.ok(resumed.events().some((e) => e.data.includes('"n":100'))), 20000);
    resumed.close();
    assert.equal(codecEvents().length, 12, seenIds());
    assert.deepEqual(
      resumed.events().filter((e) => e.event !== undefined),
      [],
      'no notice: nothing is left out',
    );
    assert.deepEqual(
      codecEvents()
        .map((e) => JSON.parse(e.data).n as number)
        .sort((a, b) => a - b),
      Array.from({ length: 12 }, (_, n) => n),
    );
  });
  it("reads an id of the topic a reload moved the route from as another source's: the new topic from its oldest record, said so (1331)", async () => {
    const old = await openStream(gw.url('api', '/ticks'));
    // One event per room: the old topic's id names partition 0 (and the others the rooms' keys reach).
    for (let n = 13; n < 18; n++) await publish(n);
    await eventually(() => assert.equal(old.events().length, 5), 15000);
    old.close();
    const oldId = old.events()[4]!.id!;
    assert.match(untagged(oldId), /^0:\d+(,[12]:\d+)*$/);
    // The route moves to a topic of one partition, which then holds more records than the old id's offset on partition 0.
    const moved = kafka().topic('sse-moved');
    await kafka().createTopic(moved, 1);
    assert.equal((await gw.reconfigure(sseKafkaConfig(kafka(), moved))).msg, 'config reloaded');
    const oldOffset = Number(/^0:(\d+)/.exec(untagged(oldId))![1]);
    const ns = Array.from({ length: oldOffset + 3 }, (_, i) => 100 + i);
    for (const n of ns) await publish(n);
    // Read as positions of the new topic, the id skipped its records up to that offset without a word.
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': oldId });
    try {
      await eventually(() => assert.equal(resumed.events().length, 1 + ns.length), 20000);
      const [notice, ...replayed] = resumed.events();
      assertOtherSourceNotice(notice);
      assert.deepEqual(
        replayed.map((e) => JSON.parse(e.data).n),
        ns,
      );
      // Ids of the new topic's one partition, with its tag.
      const [newTag] = splitId(replayed[0]!.id).tags;
      assert.notEqual(newTag, splitId(oldId).tags[0]);
      assert.deepEqual(
        replayed.map((e) => e.id),
        ns.map((_, i) => `${newTag}~0:${i}`),
      );
    } finally {
      resumed.close();
    }
  });
});

describe('Server-Sent Events from a Kafka topic written by a transactional producer', () => {
  let kafka: KafkaCluster;
  let topic: string;

  before(async () => {
    // One broker: the transaction marker is sent straight to the partition's leader.
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('sse-txn');
    await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(
    () => `
version: 1
brokers:
  kafka: { kind: kafka, brokers: ["${kafka.bootstrap}"], consumer: ${kafka.consumerYaml} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /orders }
    to: { broker: kafka, topic: ${topic} }
  - name: stream
    from: { broker: kafka, topic: ${topic} }
    to: { listener: api, path: /orders }
`,
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });

  it('resumes after Last-Event-ID when the partition ends with a transaction marker: the missed event, and never the marker', async () => {
    const publish = async (n: number) => assert.equal((await fetch(gw.url('api', '/orders'), { method: 'POST', body: JSON.stringify({ n }) })).status, 200);
    const first = await openStream(gw.url('api', '/orders'));
    await publish(1);
    await eventually(() => assert.equal(first.events().length, 1), 15000);
    const lastId = first.events()[0]!.id!;
    first.close();
    await publish(2);
    // The transaction's commit marker takes the partition's last offset (2); consumers skip it.
    await appendCommitMarker(kafka.bootstrap, topic, 0);
    assert.deepEqual(await endOffsets(kafka.bootstrap, topic), { 0: '3' });
    const resumed = await openStream(gw.url('api', '/orders'), { 'last-event-id': lastId });
    // The replay reads to the end offset (3), which the marker's offset leads to, though the marker itself never arrives as a record.
    await eventually(() => assert.equal(resumed.events().length, 1), 60000);
    const [missed] = resumed.events();
    assert.deepEqual(JSON.parse(missed!.data), { n: 2 });
    assert.equal(untagged(missed!.id), '0:1');
    await publish(3);
    await eventually(() => assert.equal(resumed.events().length, 2), 15000);
    assert.deepEqual(JSON.parse(resumed.events()[1]!.data), { n: 3 });
    resumed.close();
  });
});

/**
 * A route that reads records again which the stream already sent: its consumer after a rejoin (a
 * member dropped at a broker's bounce, a crash) reads from its group's last commit, and here, as
 * the deterministic stand-in, a reload moves the route to a new group that starts at the earliest
 * offset. The stream may get those events again (at least once), but their ids never name an
 * earlier position than one the client was sent, or a resume with the last id would replay what
 * the client saw.
 */
describe('Server-Sent Events from a Kafka topic whose route reads records again', () => {
  let kafka: KafkaCluster;
  let topic: string;
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('sse-again');
    await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(() => sseKafkaConfig(kafka, topic, 'sse-first'));
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });
  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: 'r' }) });
    assert.equal(res.status, 200);
  };

  it('keeps the ids of events sent again at the position the client reached: a resume with the last id replays nothing it was sent', async () => {
    const stream = await openStream(gw.url('api', '/ticks'));
    for (let n = 0; n < 3; n++) await publish(n);
    await eventually(() => assert.equal(stream.events().length, 3), 15000);
    const from = gw.logs.length;
    const again = sseKafkaConfig(kafka, topic, 'sse-second').replace(`group: sse-second }`, `group: sse-second, startFrom: earliest }`);
    assert.notEqual(again, sseKafkaConfig(kafka, topic, 'sse-second'));
    assert.equal((await gw.reconfigure(again)).msg, 'config reloaded');
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000, from);
    await publish(3);
    await eventually(() => assert.ok(stream.events().some((e) => JSON.parse(e.data).n === 3)), 20000);
    const ns = stream.events().map((e) => JSON.parse(e.data).n as number);
    assert.deepEqual(ns, [0, 1, 2, 0, 1, 2, 3], 'the records read again reach the stream again (at least once)');
    const offsets = stream.events().map((e) => untagged(e.id));
    assert.deepEqual(offsets, ['0:0', '0:1', '0:2', '0:2', '0:2', '0:2', '0:3'], 'event ids never go back');
    const lastId = stream.events().at(-1)!.id!;
    stream.close();
    await publish(4);
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
    await eventually(() => assert.ok(resumed.events().length >= 1), 15000);
    await publish(5);
    await eventually(() => assert.ok(resumed.events().some((e) => JSON.parse(e.data).n === 5)), 15000);
    assert.deepEqual(
      resumed.events().map((e) => JSON.parse(e.data).n),
      [4, 5],
      'the resume replays only what came after the last id',
    );
    resumed.close();
  });
});

describe('Server-Sent Events from a Kafka topic made again under a running route', () => {
  let kafka: KafkaCluster;
  let topic: string;
  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('sse-made-again');
    await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(() => sseKafkaConfig(kafka, topic, 'sse-again'));
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 20000);
  });
  after(async () => {
    await kafka?.stop();
  });
  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room: 'r' }) });
    assert.equal(res.status, 200);
  };

  it('numbers the records of the topic made again by their own offsets: a client resuming with an id of them is sent every record after it once', async (t) => {
    if (!kafka.canInjectOutages) return t.diagnostic('KAFKA_BROKERS is set: a topic cannot be deleted and made again under the route there');
    // The old topic: records 0-5 read by the route (the path's position 0:5), no client connected.
    for (let n = 0; n < 6; n++) await publish(n);
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'sse-again', topic))[0], '6'), 20000);
    // The mock can neither delete a topic nor take a group's commits back: the topic made again
    // is the route reading, after the topic was missing, records below the path's position, with
    // a group committed at 3 (kafka-python, before any member joined it) that a reload moves it to.
    const set = await runProcess('/usr/bin/python3', [PYTHON_CLIENT, 'commit', kafka.bootstrap, topic, 'sse-new', '0', '3'], '', 30000);
    assert.equal(set.stdout.trim(), 'ok', set.stderr);
    // Deleted, as far as the mock can (its Metadata lacks the topic, fetches answer
    // UNKNOWN_TOPIC_OR_PARTITION): the route leaves its group and waits for the topic.
    const from = gw.logs.length;
    await kafka.hideTopic(topic);
    await kafka.failRequests(1, 1000, 3);
    try {
      await gw.waitForLog((l) => l.msg === 'consumer waits for its topic to exist; looking again' && l.route === 'stream', 20000, from);
      assert.equal((await gw.reconfigure(sseKafkaConfig(kafka, topic, 'sse-new'))).msg, 'config reloaded');
      await gw.waitForLog((l) => l.msg === 'consumer waits for its topic to exist; looking again' && l.route === 'stream' && l.group === 'sse-new', 20000, from);
    } finally {
      await kafka.clearFailures(1);
    }
    const stream = await openStream(gw.url('api', '/ticks'));
    await kafka.revealTopic(topic);
    await eventually(() => assert.equal(stream.events().length, 3), 30000);
    assert.deepEqual(
      stream.events().map((e) => JSON.parse(e.data).n),
      [3, 4, 5],
    );
    assert.deepEqual(
      stream.events().map((e) => untagged(e.id)),
      ['0:3', '0:4', '0:5'],
      "the ids follow the topic made again, not the old topic's position",
    );
    // A client that lost its connection after record 3: 4 and 5 came while it was away, 6 after.
    const afterFirst = stream.events()[0]!.id!;
    stream.close();
    await publish(6);
    const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': afterFirst });
    await eventually(() => assert.ok(resumed.events().some((e) => JSON.parse(e.data).n === 6)), 20000);
    await publish(7);
    await eventually(() => assert.ok(resumed.events().some((e) => JSON.parse(e.data).n === 7)), 20000);
    assert.deepEqual(
      resumed.events().map((e) => JSON.parse(e.data).n),
      [4, 5, 6, 7],
      'every record after the last id, once',
    );
    resumed.close();
  });
});
