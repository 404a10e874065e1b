import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { listenerStatus, openStream, resumeFrom, type SseEvent, untagged } from '../helpers/sse.js';

/**
 * Live events that reach a client while it is being replayed wait behind the replay. Those the
 * replay sends itself (its read reaches them) are not held: held, they counted against the
 * client's send bound, and a client resuming while its route caught up on a backlog was cut off
 * while it read, and resumed again with the same id. A record of the source made again during
 * the replay is another record, numbered anew: it is held and sent, not taken for one the replay
 * sent because its offset is lower.
 */
const PAD = 'x'.repeat(40 * 1024);
/** 12 MB: far more than the loopback sockets take from a client that stops reading (a few MB), so its replay stays under way. */
const BACKLOG = 300;
const BOUND = 256 * 1024;
const big = (n: number) => ({ n, pad: PAD });

const ns = (events: SseEvent[]) => events.filter((e) => e.event === undefined).map((e) => (JSON.parse(e.data) as { n: number }).n);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('SSE: live events a lagging route delivers during a replay that sends them', () => {
  let target: HeldTarget;
  before(async () => {
    target = await HeldTarget.start();
  });
  after(() => target?.stop());
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory, retain: 1000, retainBytes: 100000000, maxBytes: 200000000 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, events: { maxBufferedBytes: ${BOUND} } }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: ticks }
  # The webhook holds the route: it has one message in hand, and the rest wait in the topic.
  - name: out
    from: { broker: local, topic: ticks }
    to: [{ listener: api, path: /out }, { http: { url: "${target.url}", concurrency: 1, timeoutMs: 120000 } }]
`,
  );

  /** The messages the route handed its webhook (each once: it waits for the answer longer than the case). */
  const taken = () => [...new Set(target.bodies.map((b) => (JSON.parse(b) as { n: number }).n))];

  it('are not held: the client is not cut off, and gets each event once', { timeout: 120_000 }, async () => {
    const probe = await openStream(gw.url('api', '/out'));
    assert.equal((await post(gw.url('api', '/in'), { n: 0 })).status, 200);
    await eventually(() => assert.deepEqual(ns(probe.events()), [0]), 10_000);
    const first = probe.events()[0]!.id!;
    probe.close();
    // The route has message 0 in hand (its webhook does not answer): these wait in the topic.
    for (let n = 1; n <= BACKLOG; n++) assert.equal((await post(gw.url('api', '/in'), big(n))).status, 200);
    assert.deepEqual(taken(), [0]);

    const client = await resumeFrom(gw.url('api', '/out'), first);
    try {
      // One event read, then nothing: the replay waits for the client.
      while (client.events.length === 0) await client.step();
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');
      // The route catches up: every message it delivers now is one the replay reads too.
      target.release();
      await eventually(() => assert.equal(taken().length, BACKLOG + 1), 60_000);
      const s = await listenerStatus(gw);
      assert.deepEqual([s.eventStreams, s.slowStreamsClosed], [1, 0], 'the client is not cut off for the events its replay sends');
      client.read();
      await eventually(() => assert.equal(ns(client.events).at(-1), BACKLOG), 60_000);
      assert.deepEqual(ns(client.events), range(1, BACKLOG), 'every message after its id, once, in order');
      assert.equal(client.events.at(-1)!.id!.endsWith(`~0:${BACKLOG}`), true, client.events.at(-1)!.id);
      // And the next goes out live.
      assert.equal((await post(gw.url('api', '/in'), { n: BACKLOG + 1 })).status, 200);
      await eventually(() => assert.deepEqual(ns(client.events).slice(-1), [BACKLOG + 1]), 10_000);
      assert.equal(ns(client.events).length, BACKLOG + 1);
    } finally {
      client.close();
    }
  });
});

describe('SSE over JetStream: a stream made again while a client is being replayed', () => {
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
  // Two routes feed /out: the client's replay reads route a (the stream made again below), then
  // route b's backlog, which keeps the replay under way while the client does not read.
  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams:
      REMADE: { subjects: ["remade.>"] }
      BIG: { subjects: ["big.>"] }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, events: { maxBufferedBytes: ${BOUND} } }
routes:
  - name: in-a
    from: { listener: api, path: /in/a }
    to: { broker: nats, topic: remade.x }
  - name: in-b
    from: { listener: api, path: /in/b }
    to: { broker: nats, topic: big.x }
  - name: a
    from: { broker: nats, topic: remade.x }
    to: { listener: api, path: /out }
  - name: b
    from: { broker: nats, topic: big.x }
    to: { listener: api, path: /out }
`,
  );
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));
  const publish = (route: 'a' | 'b', body: unknown) =>
    eventually(async () => {
      const r = await post(gw.url('api', `/in/${route}`), body);
      assert.equal(r.status, 200, r.text);
    }, 20_000);

  it("sends the new stream's messages that came during the replay, and the live ones after", { timeout: 120_000 }, async () => {
    // Delivered live to a probe first, so that the routes are done with them before the client resumes.
    const probe = await openStream(gw.url('api', '/out'));
    await publish('a', { n: 1 });
    await publish('b', big(1));
    await eventually(() => assert.equal(ns(probe.events()).length, 2), 20_000);
    const lastId = probe.events()[1]!.id!;
    assert.equal(untagged(lastId), 'a=0:1;b=0:1');
    for (let n = 2; n <= 5; n++) await publish('a', { n });
    for (let n = 2; n <= BACKLOG; n++) await publish('b', big(n));
    await eventually(() => assert.equal(ns(probe.events()).length, BACKLOG + 5), 60_000);
    probe.close();

    // The client reads only route a's replay (2-5); route b's waits for it to read.
    const client = await resumeFrom(gw.url('api', '/out'), lastId);
    try {
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');
      // Route a's part read from the old stream before it is deleted, taken by the client, which
      // then stops again (route b's backlog keeps the replay under way): a deletion sent sooner
      // than the replay's first read had 2-5 gone with the stream.
      while (ns(client.events).length < 4) await client.step();

      // Stream REMADE deleted; the broker declares it again, and route a reads the new one (sequences from 1).
      const watcher = await openStream(gw.url('api', '/out'));
      const from = gw.logs.length;
      assert.equal((await peer.jsApi('$JS.API.STREAM.DELETE.REMADE', {})).success, true);
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'a', 30_000, from);
      for (const n of [1001, 1002, 1003]) await publish('a', { n });
      await eventually(() => assert.deepEqual(ns(watcher.events()), [1001, 1002, 1003]), 20_000);
      watcher.close();
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, `they came while the replay was under way: ${JSON.stringify(gw.logs.filter((l) => l.level !== 'info' && l.level !== 'debug'))}`);

      client.read();
      await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreamReplays, 0, 'the replay is over'), 60_000);
      // Route b's next message marks the end of what the client was sent while it was replayed.
      await publish('b', { n: 2000 });
      await eventually(() => assert.equal(ns(client.events).at(-1), 2000), 20_000);
      assert.deepEqual(ns(client.events), [2, 3, 4, 5, ...range(2, BACKLOG), 1001, 1002, 1003, 2000], "the old stream's messages after the id, route b's, then the new stream's, once each");
      assert.deepEqual(
        client.events.slice(-4).map((e) => untagged(e.id)),
        [`a=0:1;b=0:${BACKLOG}`, `a=0:2;b=0:${BACKLOG}`, `a=0:3;b=0:${BACKLOG}`, `a=0:3;b=0:${BACKLOG + 1}`],
        "the new stream's messages have ids of their own sequences",
      );
      // The next live one is not taken for one the replay sent (its sequence is below the replay's).
      await publish('a', { n: 1004 });
      await eventually(() => assert.deepEqual(ns(client.events).slice(-1), [1004]), 20_000);
      assert.equal(untagged(client.events.at(-1)!.id), `a=0:4;b=0:${BACKLOG + 1}`);
    } finally {
      client.close();
    }
  });
});

describe('SSE over JetStream: a replay read that fails midway', () => {
  let nats: MessageServer;
  let peer: RawNats;
  let target: HeldTarget;
  before(async () => {
    nats = await startNats();
    peer = await RawNats.connect(nats);
    target = await HeldTarget.start();
    target.release();
  });
  afterGateways(async () => {
    peer?.close();
    await target?.stop();
    return nats?.stop();
  });
  // Two cases, a stream each (both deleted under a read): /in/s publishes to stream S, its route to /out/s.
  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams:
      KEPT: { subjects: ["kept.>"] }
      OVER: { subjects: ["over.>"] }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, events: { maxBufferedBytes: ${BOUND} } }
routes:
${['kept', 'over']
  .map(
    (s) => `  - name: in-${s}
    from: { listener: api, path: /in/${s} }
    to: { broker: nats, topic: ${s}.x }
  - name: out-${s}
    from: { broker: nats, topic: ${s}.x }
    to: [{ listener: api, path: /out/${s} }, { http: { url: "${target.url}", concurrency: 1, timeoutMs: 120000 } }]
`,
  )
  .join('')}`,
  );
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));
  const publish = (stream: string, body: unknown) =>
    eventually(async () => {
      const r = await post(gw.url('api', `/in/${stream}`), body);
      assert.equal(r.status, 200, r.text);
    }, 20_000);
  /** What the webhook was handed of `stream`'s messages (each once: it waits for the answer longer than the case). */
  const taken = (stream: string) => [
    ...new Set(
      target.bodies
        .map((b) => JSON.parse(b) as { n: number; s: string })
        .filter((b) => b.s === stream)
        .map((b) => b.n),
    ),
  ];
  /** Messages the route delivers while the client's read is stuck far behind them: the read's to send, until it fails. */
  const LIVE = range(BACKLOG + 2, BACKLOG + 9);

  /**
   * A client resumes from an old id (after 1: the route delivered 2-300 long before); its read
   * waits for it early in the backlog while the route delivers 302-309 (the read covers them, and
   * has not sent them), each `live` bytes of padding; then the stream is deleted under the read,
   * the client reads, and the read's next pull fails. The client's events and notices.
   */
  async function failMidway(stream: string, live: number): Promise<{ events: SseEvent[]; before: number[] }> {
    const probe = await openStream(gw.url('api', `/out/${stream}`));
    await publish(stream, { n: 1, s: stream });
    await eventually(() => assert.deepEqual(ns(probe.events()), [1]), 20_000);
    const old = probe.events()[0]!.id!;
    for (let n = 2; n <= BACKLOG; n++) await publish(stream, { ...big(n), s: stream });
    await eventually(() => assert.equal(taken(stream).length, BACKLOG), 60_000);
    probe.close();
    // The route takes 301 and waits for its webhook: 302-309 wait in the stream.
    target.hold();
    for (const n of [BACKLOG + 1, ...LIVE]) await publish(stream, { n, s: stream, pad: 'x'.repeat(live) });
    await eventually(() => assert.equal(taken(stream).at(-1), BACKLOG + 1), 20_000);

    const client = await resumeFrom(gw.url('api', `/out/${stream}`), old);
    try {
      while (client.events.length === 0) await client.step();
      assert.equal((await listenerStatus(gw)).eventStreamReplays, 1, 'its replay is under way');
      target.release();
      await eventually(() => assert.equal(taken(stream).length, BACKLOG + 1 + LIVE.length), 20_000);
      const from = gw.logs.length;
      assert.equal((await peer.jsApi(`$JS.API.STREAM.DELETE.${stream.toUpperCase()}`, {})).success, true);
      client.read();
      await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreamReplays, 0, 'the replay is over'), 60_000);
      // Ended by the deletion, seen from the pull's missed heartbeats, not by the pull's 30 s expiry
      // ("did not give back its messages ... within 30000 ms"): the client was not kept waiting.
      const failed = await gw.waitForLog((l) => String(l.msg).startsWith('event stream could not be resumed'), 20_000, from);
      assert.equal(failed.err, `stream '${stream.toUpperCase()}' was deleted while its events were being replayed`);
      const sent = ns(client.events).filter((n) => n <= BACKLOG);
      assert.deepEqual(sent, range(2, sent.at(-1)!), 'what the read sent before it failed, from the id on, once, in order');
      assert.ok(sent.at(-1)! < BACKLOG, `the read failed midway (it sent up to ${sent.at(-1)})`);
      return { events: client.events, before: sent };
    } finally {
      // Left open for the case to read what follows.
      setTimeout(() => client.close(), 20_000).unref();
    }
  }

  it('sends the live events it was to send after telling resumed: false, once, in order', { timeout: 120_000 }, async () => {
    const { events } = await failMidway('kept', 0);
    await eventually(() => assert.ok(events.some((e) => e.event === 'eventgate.resume')), 20_000);
    const notice = events.findIndex((e) => e.event === 'eventgate.resume');
    assert.deepEqual(JSON.parse(events[notice]!.data), { resumed: false, reason: 'the broker could not replay retained events' });
    await eventually(() => assert.deepEqual(ns(events.slice(notice + 1)), LIVE, 'the live events it covered, once, in order'), 20_000);
    assert.equal((await listenerStatus(gw)).slowStreamsClosed, 0);
  });

  it('over the send bound, disconnects the client instead of streaming on past what it was not sent', { timeout: 120_000 }, async () => {
    const from = gw.logs.length;
    // 8 × 40 KB: more than the bound (256 KB), so the kept events are let go.
    const { events } = await failMidway('over', PAD.length);
    await gw.waitForLog((l) => l.msg === 'event stream could not be resumed, and live events it was to send were let go; disconnecting so that it resumes again', 20_000, from);
    await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreams, 0, 'its stream is closed'), 20_000);
    assert.deepEqual(
      events.map((e) => e.event).filter((e) => e !== undefined),
      [],
      'no resumed: false, no stream from now',
    );
    assert.deepEqual(
      ns(events).filter((n) => n > BACKLOG),
      [],
      'no live event past the gap',
    );
    assert.equal((await listenerStatus(gw)).slowStreamsClosed, 0, 'not counted as a slow client');
  });
});
