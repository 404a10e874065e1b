import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { openStream, splitId, type SseEvent, untagged, assertOtherSourceNotice } from '../helpers/sse.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { RawNats } from '../helpers/peers.js';

/**
 * An event stream fed from a JetStream subject gives its events ids (`0:<stream sequence>`), so a
 * browser reconnects with one as Last-Event-ID. Before, the gateway read nothing back for it (only
 * memory and Kafka topics could be read again): the events stored while the client was away were
 * skipped without a notice. Now the stream is read again after that sequence, on the route's filter.
 */
describe('event streams from JetStream resume after Last-Event-ID', () => {
  let nats: MessageServer;
  before(async () => {
    nats = await startNats();
    // An operator's stream whose limits refuse new messages (discard: new) rather than remove old ones.
    const peer = await RawNats.connect(nats);
    try {
      const made = await peer.jsApi('$JS.API.STREAM.CREATE.REFUSING', { name: 'REFUSING', subjects: ['refusing.>'], storage: 'file', max_msgs: 100, max_bytes: 1_000_000, discard: 'new' });
      assert.equal(made.error, undefined, JSON.stringify(made.error));
    } finally {
      peer.close();
    }
  });
  afterGateways(() => nats?.stop());

  const config = () => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams:
      EVENTS: { subjects: ["ev.>"] }
      PURGED: { subjects: ["purged.>"] }
      CAPPED: { subjects: ["capped.>"], maxMessages: 3 }
      REFUSING: { subjects: ["refusing.>"], declare: false }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in/:kind }
    to: { broker: nats, topic: { expression: '"ev.a." & $path.kind' } }
  - name: made
    from: { broker: nats, topic: "ev.*.made" }
    to: [{ listener: api, path: /made }, { listener: api, path: /mixed }]
  - name: live
    from: { listener: api, path: /live }
    to: { broker: nats, topic: core.live }
  - name: core
    from: { broker: nats, topic: "core.>" }
    to: { listener: api, path: /mixed }
  - name: core-only
    from: { broker: nats, topic: "core.>" }
    to: { listener: api, path: /core }
  - name: purged
    from: { broker: nats, topic: purged.x }
    to: { listener: api, path: /purged }
  - name: capped
    from: { broker: nats, topic: capped.x }
    to: { listener: api, path: /capped }
  - name: refusing
    from: { broker: nats, topic: refusing.x }
    to: { listener: api, path: /refusing }
`;
  const gw = useGateway(config);

  // The gateway is ready before its brokers are: a publish meanwhile is a 503 (the stream not declared yet).
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));

  const publish = async (kind: string, n: number): Promise<string> => {
    const r = await post(gw.url('api', `/in/${kind}`), { n });
    assert.equal(r.status, 200, r.text);
    return (JSON.parse(r.text) as { deliveries: { offset: string }[] }).deliveries[0]!.offset;
  };
  const values = (events: SseEvent[]) => events.filter((e) => e.event === undefined).map((e) => [untagged(e.id), JSON.parse(e.data) as { n: number }]);

  it('replays what the stream stored on the route subject after the id, then goes live', { timeout: 60_000 }, async () => {
    const first = await openStream(gw.url('api', '/made'));
    const seq1 = await publish('made', 1);
    const seq2 = await publish('made', 2);
    await eventually(() => assert.equal(first.events().length, 2), 10_000);
    assert.deepEqual(values(first.events()), [
      [`0:${seq1}`, { n: 1 }],
      [`0:${seq2}`, { n: 2 }],
    ]);
    first.close();

    // Stored while the client is away: two on the route's subject, one the route does not read.
    const seq3 = await publish('made', 3);
    await publish('other', 99);
    const seq4 = await publish('made', 4);

    const resumed = await openStream(gw.url('api', '/made'), { 'last-event-id': `0:${seq2}` });
    await eventually(() => assert.equal(resumed.events().length, 2), 10_000);
    const seq5 = await publish('made', 5);
    await eventually(() => assert.equal(resumed.events().length, 3), 10_000);
    resumed.close();
    assert.deepEqual(values(resumed.events()), [
      [`0:${seq3}`, { n: 3 }],
      [`0:${seq4}`, { n: 4 }],
      [`0:${seq5}`, { n: 5 }],
    ]);
    assert.equal(
      resumed.events().find((e) => e.event !== undefined),
      undefined,
      'nothing was missed: no notice',
    );
  });

  it("says a purge of a stream without limits as such, not as the stream's limits", { timeout: 60_000 }, async () => {
    const peer = await RawNats.connect(nats);
    try {
      for (let n = 1; n <= 5; n++) {
        await peer.jsPublish('purged.x', JSON.stringify({ n }));
        await peer.jsPublish('capped.x', JSON.stringify({ n }));
        await peer.jsPublish('refusing.x', JSON.stringify({ n }));
      }
      // An operator's purge keeping 2 of 5; the capped stream's limit keeps 3 of 5. REFUSING has
      // limits too, but with discard: new they refuse publishes, never remove one: only a purge did.
      assert.equal((await peer.jsApi('$JS.API.STREAM.PURGE.PURGED', { keep: 2 })).success, true);
      assert.equal((await peer.jsApi('$JS.API.STREAM.PURGE.REFUSING', { keep: 2 })).success, true);
      const reasons: Record<string, { events: number[]; notice: unknown }> = {};
      for (const path of ['purged', 'capped', 'refusing']) {
        const stream = await openStream(gw.url('api', `/${path}`), { 'last-event-id': '0:1' });
        await eventually(() => assert.ok(stream.events().some((e) => e.event === undefined && JSON.parse(e.data).n === 5)), 10_000);
        stream.close();
        const [notice, ...events] = stream.events();
        reasons[path] = { notice: notice?.event === 'eventgate.resume' ? JSON.parse(notice.data) : notice, events: events.map((e) => (JSON.parse(e.data) as { n: number }).n) };
      }
      // Before, both said `may no longer be retained by stream 'S' (its limits)`.
      assert.deepEqual(reasons, {
        purged: {
          notice: {
            resumed: true,
            gap: true,
            reason:
              "some events after Last-Event-ID are no longer in stream 'PURGED' (purged or deleted: it has no limits that remove messages), or are more than 10000 messages back; resuming from the oldest retained event",
          },
          events: [4, 5],
        },
        capped: {
          notice: {
            resumed: true,
            gap: true,
            reason:
              "some events after Last-Event-ID may no longer be retained by stream 'CAPPED' (its limits, or a purge), or are more than 10000 messages back; resuming from the oldest retained event",
          },
          events: [3, 4, 5],
        },
        // Before, `may no longer be retained by stream 'REFUSING' (its limits, or a purge)`.
        refusing: {
          notice: {
            resumed: true,
            gap: true,
            reason:
              "some events after Last-Event-ID are no longer in stream 'REFUSING' (purged or deleted: it has no limits that remove messages), or are more than 10000 messages back; resuming from the oldest retained event",
          },
          events: [4, 5],
        },
      });
    } finally {
      peer.close();
    }
  });

  it('says so and starts at the oldest stored event when the id is past the end of the stream', { timeout: 60_000 }, async () => {
    const seq = Number(await publish('made', 6));
    const stream = await openStream(gw.url('api', '/made'), { 'last-event-id': `0:${seq + 1000}` });
    await eventually(() => assert.ok(stream.events().some((e) => e.event === undefined && JSON.parse(e.data).n === 6)), 10_000);
    stream.close();
    const [notice, ...events] = stream.events();
    assert.equal(notice?.event, 'eventgate.resume');
    assert.deepEqual(JSON.parse(notice!.data), {
      resumed: true,
      gap: true,
      reason: "Last-Event-ID is past the end of stream 'EVENTS' (it was made again since); resuming from the oldest retained event",
    });
    assert.deepEqual(
      events.map((e) => (JSON.parse(e.data) as { n: number }).n),
      [1, 2, 3, 4, 5, 6],
    );
  });

  it('says so and starts at the oldest stored event when the id names no partition of the stream (an id of another topic)', { timeout: 60_000 }, async () => {
    // Before, the stream was read from its oldest event without a word, as if it were a resume.
    const stream = await openStream(gw.url('api', '/made'), { 'last-event-id': '7:3' });
    await eventually(() => assert.ok(stream.events().some((e) => e.event === undefined && JSON.parse(e.data).n === 6)), 10_000);
    stream.close();
    const [notice, ...events] = stream.events();
    assert.equal(notice?.event, 'eventgate.resume');
    assert.match(JSON.parse(notice!.data).reason, /^Last-Event-ID names no partition of this topic/);
    assert.deepEqual(
      events.map((e) => (JSON.parse(e.data) as { n: number }).n),
      [1, 2, 3, 4, 5, 6],
    );
  });

  it('on a path a core subject feeds too, replays the stream and says that the core route keeps nothing to read back', { timeout: 60_000 }, async () => {
    const first = await openStream(gw.url('api', '/mixed'));
    await publish('made', 7);
    const live = await post(gw.url('api', '/live'), { core: 1 });
    assert.equal(live.status, 200, live.text);
    await eventually(() => assert.equal(first.events().length, 2), 10_000);
    first.close();
    const lastId = first.events().findLast((e) => e.id !== undefined)!.id!;
    assert.match(untagged(lastId), /^made=0:\d+$/);
    await publish('made', 8);
    const resumed = await openStream(gw.url('api', '/mixed'), { 'last-event-id': lastId });
    await eventually(() => assert.equal(resumed.events().length, 2), 10_000);
    resumed.close();
    const [replayed, notice] = resumed.events();
    assert.equal(JSON.parse(replayed!.data).n, 8);
    assert.equal(notice?.event, 'eventgate.resume');
    assert.deepEqual(JSON.parse(notice!.data), {
      resumed: true,
      gap: true,
      reason: "route core: core NATS subject 'core.>' keeps no messages to read back: what it delivered while the client was away is not replayed",
    });
  });

  it('tells a client with an id of a stream, on a path a core subject alone feeds, only that the subject keeps nothing to read back', { timeout: 60_000 }, async () => {
    // As after a reload that moved the route from a JetStream subject to a core one: the id is the stream's.
    const first = await openStream(gw.url('api', '/made'));
    await publish('made', 10);
    await eventually(() => assert.equal(first.events().length, 1), 10_000);
    first.close();
    const resumed = await openStream(gw.url('api', '/core'), { 'last-event-id': first.events()[0]!.id! });
    try {
      const live = await post(gw.url('api', '/live'), { core: 2 });
      assert.equal(live.status, 200, live.text);
      await eventually(() => assert.equal(resumed.events().length, 2), 10_000);
      const [notice, event] = resumed.events();
      assert.equal(notice?.event, 'eventgate.resume');
      // It said it resumed "from the oldest retained event" too, of a subject that retains none.
      assert.deepEqual(JSON.parse(notice!.data), {
        resumed: true,
        gap: true,
        reason: "core NATS subject 'core.>' keeps no messages to read back: what it delivered while the client was away is not replayed",
      });
      assert.deepEqual([event!.event, event!.id, JSON.parse(event!.data)], [undefined, undefined, { core: 2 }]);
    } finally {
      resumed.close();
    }
  });

  it('replays more than one pull of the stream (100 messages a pull) whole and in order, then goes live', { timeout: 120_000 }, async () => {
    const first = await openStream(gw.url('api', '/made'));
    await publish('made', 1000);
    await eventually(() => assert.equal(first.events().length, 1), 10_000);
    first.close();
    const lastId = first.events()[0]!.id!;
    // Stored while the client is away, with messages of another subject between them: the filter's sequences have holes.
    const seqs: string[] = [];
    for (let n = 1001; n <= 1300; n++) {
      seqs.push(await publish('made', n));
      if (n % 7 === 0) await publish('other', n);
    }
    const resumed = await openStream(gw.url('api', '/made'), { 'last-event-id': lastId });
    try {
      await eventually(() => assert.equal(resumed.events().length, 300), 20_000);
      const liveSeq = await publish('made', 1301);
      await eventually(() => assert.equal(resumed.events().length, 301), 10_000);
      assert.deepEqual(
        values(resumed.events()),
        [...seqs, liveSeq].map((seq, i) => [`0:${seq}`, { n: 1001 + i }]),
        'every message once, in order, no notice',
      );
    } finally {
      resumed.close();
    }
  });

  it("reads an id of the subject a reload moved the route from as another source's: the new subject from its oldest stored event, said so", { timeout: 60_000 }, async () => {
    // Stored on the subject the route will read: before the client's id in the stream's sequence.
    const movedSeqs = [await publish('moved', 1), await publish('moved', 2)];
    const first = await openStream(gw.url('api', '/made'));
    await publish('made', 9);
    await eventually(() => assert.equal(first.events().length, 1), 10_000);
    first.close();
    const madeId = first.events()[0]!.id!;
    assert.equal((await gw.reconfigure(config().replace('topic: "ev.*.made"', 'topic: "ev.*.moved"'))).msg, 'config reloaded');
    // Read as a sequence of the new subject's, the id skipped both without a word.
    const resumed = await openStream(gw.url('api', '/made'), { 'last-event-id': madeId });
    try {
      await eventually(() => assert.equal(resumed.events().length, 3), 10_000);
      const [notice, ...replayed] = resumed.events();
      assertOtherSourceNotice(notice);
      const [movedTag] = splitId(replayed[0]!.id).tags;
      assert.notEqual(movedTag, splitId(madeId).tags[0]);
      assert.deepEqual(
        replayed.map((e) => [e.id, JSON.parse(e.data).n]),
        movedSeqs.map((seq, i) => [`${movedTag}~0:${seq}`, i + 1]),
      );
    } finally {
      resumed.close();
    }
  });
});

describe('event streams from a JetStream stream made again under the running route', () => {
  let nats: MessageServer;
  let peer: RawNats;
  before(async () => {
    nats = await startNats();
    peer = await RawNats.connect(nats);
  });
  afterGateways(() => {
    peer?.close();
    return nats?.stop();
  });
  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams:
      AGAIN: { subjects: ["again.>"] }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: nats, topic: again.x }
  - name: out
    from: { broker: nats, topic: "again.x" }
    to: { listener: api, path: /out }
`,
  );
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));
  const publish = (n: number) =>
    eventually(async () => {
      const r = await post(gw.url('api', '/in'), { n });
      assert.equal(r.status, 200, r.text);
    }, 20_000);
  const ns = (events: SseEvent[]) => events.filter((e) => e.event === undefined).map((e) => (JSON.parse(e.data) as { n: number }).n);

  it("numbers the made-again stream's messages by their own sequences: a client resuming with an id of them is sent every message after it once", { timeout: 90_000 }, async () => {
    const stream = await openStream(gw.url('api', '/out'));
    for (let n = 1; n <= 5; n++) await publish(n);
    await eventually(() => assert.deepEqual(ns(stream.events()), [1, 2, 3, 4, 5]), 10_000);
    // Deleted; the broker declares it again, and the route reads the new one (sequences from 1).
    const from = gw.logs.length;
    assert.equal((await peer.jsApi('$JS.API.STREAM.DELETE.AGAIN', {})).success, true);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'out', 30_000, from);
    for (let n = 6; n <= 8; n++) await publish(n);
    await eventually(() => assert.deepEqual(ns(stream.events()), [1, 2, 3, 4, 5, 6, 7, 8]), 20_000);
    assert.deepEqual(
      stream
        .events()
        .slice(5)
        .map((e) => untagged(e.id)),
      ['0:1', '0:2', '0:3'],
      "the ids follow the stream made again, not the old stream's position",
    );
    // A client that lost its connection after message 6: 7 and 8 came while it was away, 9 after.
    const afterFirst = stream.events()[5]!.id!;
    stream.close();
    await publish(9);
    const resumed = await openStream(gw.url('api', '/out'), { 'last-event-id': afterFirst });
    await eventually(() => assert.ok(ns(resumed.events()).includes(9)), 20_000);
    await publish(10);
    await eventually(() => assert.ok(ns(resumed.events()).includes(10)), 20_000);
    assert.deepEqual(ns(resumed.events()), [7, 8, 9, 10], 'every message after the last id, once');
    resumed.close();
  });
});
