import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { MemoryBroker } from '../../src/kinds/brokers/memory.js';
import { ORIGINAL, offsetText, payloadOriginal, SOURCE_INCARNATION, type Message } from '../../src/core/message.js';
import { BrokerStats } from '../../src/telemetry/metrics.js';
import type { Retained } from '../../src/kinds/contracts.js';

function broker(retain?: number): { broker: MemoryBroker; warnings: string[] } {
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line).msg) });
  return { broker: new MemoryBroker('mem', { kind: 'memory', retain }, { logger }), warnings };
}

const msg = (value: unknown): Message => ({ value, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 });

/** A handler that records values and resolves `done` after `count` of them. */
function collector(count: number) {
  const values: unknown[] = [];
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  return {
    values,
    finished,
    handler: async (m: Message) => {
      values.push(m.value);
      if (values.length === count) done();
    },
  };
}

describe('memory broker', () => {
  it('hands a subscription over (a rebuilt route): the message in hand finishes with the old handler, one it gives back and every later one go to the new, in order, once', async () => {
    const { broker: b } = broker();
    const spec = { topic: 'handover', group: 'g', route: 'r' };
    const old: unknown[] = [];
    let release!: (ok: boolean) => void;
    const sub = b.subscribe(spec, (m) => {
      old.push(m.value);
      // Holds message 1 until told whether it was taken or given back.
      return new Promise<void>((resolve, reject) => (release = (ok) => (ok ? resolve() : reject(new Error('route stopped')))));
    });
    for (const v of [1, 2]) b.publishNow('handover', msg(v));
    assert.deepEqual(old, [1]);
    const next = collector(3);
    let settled = false;
    const handedOver = sub.handOver!(spec, next.handler).then(() => (settled = true));
    b.publishNow('handover', msg(3));
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'waits for the message the old handler holds');
    assert.deepEqual(next.values, [], 'nothing overtakes the message in hand');
    release(false);
    await handedOver;
    await next.finished;
    assert.deepEqual(old, [1]);
    assert.deepEqual(next.values, [1, 2, 3]);
    // The subscription is the new handler's now: its stop stops that one.
    await sub.stop();
    b.publishNow('handover', msg(4));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(next.values, [1, 2, 3]);
  });

  it('hands a subscription over to a route with another webhook concurrency (inFlight): the new window applies from the hand-over', async () => {
    const { broker: b } = broker();
    const before = collector(1);
    const sub = b.subscribe({ topic: 'wider', group: 'g', route: 'r', inFlight: 1 }, before.handler);
    b.publishNow('wider', msg(0));
    await before.finished;
    // The rebuilt route holds each message: how many it has in hand at once is the window's capacity.
    const held: unknown[] = [];
    const releases: (() => void)[] = [];
    await sub.handOver!({ topic: 'wider', group: 'g', route: 'r', inFlight: 3 }, (m) => {
      held.push(m.value);
      return new Promise<void>((r) => releases.push(r));
    });
    for (const v of [1, 2, 3, 4]) b.publishNow('wider', msg(v));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(held, [1, 2, 3], 'three in hand at once, as the new concurrency says');
    for (const r of releases.splice(0)) r();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(held, [1, 2, 3, 4]);
  });

  it('hands a subscription over to a route that adds an orderBy: none of its messages overtakes one the old route still holds', async () => {
    const { broker: b } = broker();
    let release!: () => void;
    const old: unknown[] = [];
    const sub = b.subscribe({ topic: 'keyed', group: 'g', route: 'r', inFlight: 2 }, (m) => {
      old.push(m.value);
      return new Promise<void>((r) => (release = r));
    });
    b.publishNow('keyed', msg(1));
    assert.deepEqual(old, [1]);
    const next = collector(2);
    const handedOver = sub.handOver!({ topic: 'keyed', group: 'g', route: 'r', inFlight: 2, orderKeys: () => Promise.resolve(['same']) }, next.handler);
    for (const v of [2, 3]) b.publishNow('keyed', msg(v));
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(next.values, [], 'message 2 (same key) waits for message 1, still in hand');
    release();
    await handedOver;
    await next.finished;
    assert.deepEqual(next.values, [2, 3]);
  });

  it('acknowledges a publish with the topic, partition 0 and increasing offsets', async () => {
    const { broker: b } = broker();
    assert.deepEqual(await b.publish('t', msg(1)), { broker: 'mem', topic: 't', partition: 0, offset: '0' });
    assert.deepEqual(await b.publish('t', msg(2)), { broker: 'mem', topic: 't', partition: 0, offset: '1' });
    assert.deepEqual(await b.publish('other', msg(3)), { broker: 'mem', topic: 'other', partition: 0, offset: '0' });
  });

  it('delivers a message whose order keys cannot be computed, in no order, and goes on with the rest', async () => {
    const { broker: b, warnings } = broker();
    const got = collector(4);
    b.subscribe(
      {
        topic: 't',
        group: 'g',
        route: 'r',
        inFlight: 2,
        orderKeys: (m) => {
          if (m.value === 2) throw new Error('no key for 2');
          return Promise.resolve([String(m.value)]);
        },
      },
      got.handler,
    );
    for (const v of [1, 2, 3, 4]) b.publishNow('t', msg(v));
    await got.finished;
    assert.deepEqual([...got.values].sort(), [1, 2, 3, 4]);
    assert.deepEqual(warnings, ['order keys of a message could not be computed; it is delivered in no order']);
  });

  it('writes offsets as String() would, without its number-to-string cache, for every safe integer', () => {
    for (const n of [0, 1, 9, 10, 99, 100, 1234567, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1e15, 1e15 + 1, Number.MAX_SAFE_INTEGER]) assert.equal(offsetText(n), String(n));
  });

  it("retains a message's bytes while its value is still the one decoded from them: a buffer of its own as it is, a slice of a larger one copied", async () => {
    const { broker: b } = broker();
    // Buffer.alloc, not Buffer.from: a small Buffer.from is a slice of node's shared 8 KiB pool.
    const own = Buffer.alloc(11);
    own.write('{ "a" : 1 }');
    const read = Buffer.alloc(64 * 1024, 0x20);
    read.write('{ "b" : 2 }', 100);
    const slice = read.subarray(100, 111);
    const unchanged = (payload: Buffer, value: unknown): Message => ({ ...msg(value), [ORIGINAL]: payloadOriginal(payload, value, {}) });
    const transformed: Message = { ...unchanged(own, { a: 1 }), value: { a: 2 } };
    for (const m of [unchanged(own, { a: 1 }), unchanged(slice, { b: 2 }), transformed]) await b.publish('bytes', m);
    const [a, s, t] = await retainedMessages(b.retained('bytes', new Map()));
    assert.equal(a![ORIGINAL]!.value, own, 'kept as it is');
    assert.equal(s![ORIGINAL]!.value!.toString(), '{ "b" : 2 }');
    assert.notEqual(s![ORIGINAL]!.value!.buffer, read.buffer, 'copied off the 64 KiB read');
    assert.equal(t![ORIGINAL], undefined, 'no field is made of those bytes any more');
  });

  it("does not hand the writing route's source incarnation to the route reading the topic: its offsets are the topic's own", async () => {
    // A route reading a Kafka topic or JetStream stream it saw made again stamps its records
    // (SOURCE_INCARNATION); kept here, an event stream fed from this topic took the stamp for this
    // topic made again: its position was set to the record's offset (back, for a group reading from
    // the earliest) and its resuming clients' read-ahead dropped.
    const { broker: b } = broker();
    const got: Message[] = [];
    let done!: () => void;
    const delivered = new Promise<void>((r) => (done = r));
    b.subscribe({ topic: 'fed', group: 'g', route: 'reader' }, async (m) => {
      got.push(m);
      done();
    });
    await b.publish('fed', { ...msg({ n: 1 }), topic: 'orders', partition: 0, offset: '3', [SOURCE_INCARNATION]: 7 });
    await delivered;
    assert.equal(got[0]![SOURCE_INCARNATION], undefined, 'delivered without it');
    assert.equal(got[0]!.offset, '0');
    const [retained] = await retainedMessages(b.retained('fed', new Map()));
    assert.equal(retained![SOURCE_INCARNATION], undefined, 'replayed without it');
  });

  it('gives every message to every group, once, in order', async () => {
    const { broker: b } = broker();
    const a = collector(3);
    const c = collector(3);
    b.subscribe({ topic: 't', group: 'a', route: 'ra' }, a.handler);
    b.subscribe({ topic: 't', group: 'c', route: 'rc' }, c.handler);
    for (const v of [1, 2, 3]) await b.publish('t', msg(v));
    await Promise.all([a.finished, c.finished]);
    assert.deepEqual(a.values, [1, 2, 3]);
    assert.deepEqual(c.values, [1, 2, 3]);
  });

  it('shares a group between its members: each message reaches one of them', async () => {
    const { broker: b } = broker();
    const seen: [string, unknown][] = [];
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const member = (name: string) => async (m: Message) => {
      seen.push([name, m.value]);
      if (seen.length === 4) done();
    };
    b.subscribe({ topic: 't', group: 'g', route: 'r' }, member('x'));
    b.subscribe({ topic: 't', group: 'g', route: 'r' }, member('y'));
    for (const v of [1, 2, 3, 4]) await b.publish('t', msg(v));
    await all;
    assert.deepEqual(
      seen.map(([, v]) => v),
      [1, 2, 3, 4],
    );
    assert.deepEqual(new Set(seen.map(([n]) => n)), new Set(['x', 'y']));
  });

  it('starts a new group at the end of the topic, or at the oldest retained message with startFrom: earliest', async () => {
    const { broker: b } = broker();
    await b.publish('t', msg('old'));
    const late = collector(1);
    const early = collector(2);
    b.subscribe({ topic: 't', group: 'late', route: 'r' }, late.handler);
    b.subscribe({ topic: 't', group: 'early', route: 'r', startFrom: 'earliest' }, early.handler);
    await b.publish('t', msg('new'));
    await Promise.all([late.finished, early.finished]);
    assert.deepEqual(late.values, ['new']);
    assert.deepEqual(early.values, ['old', 'new']);
  });

  it('resumes a group where it stopped when a new member joins after the last one left (a reload)', async () => {
    const { broker: b } = broker();
    const first = collector(1);
    const sub = b.subscribe({ topic: 't', group: 'g', route: 'r' }, first.handler);
    await b.publish('t', msg(1));
    await first.finished;
    await sub.stop();
    // Published while the group has no member: kept for it.
    await b.publish('t', msg(2));
    await b.publish('t', msg(3));
    const second = collector(2);
    b.subscribe({ topic: 't', group: 'g', route: 'r' }, second.handler);
    await second.finished;
    assert.deepEqual(second.values, [2, 3]);
  });

  it('lets stop() wait for the message in hand, which then counts as consumed', async () => {
    const { broker: b } = broker();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let started!: () => void;
    const inHand = new Promise<void>((r) => (started = r));
    const sub = b.subscribe({ topic: 't', group: 'g', route: 'r' }, async () => {
      started();
      await held;
    });
    await b.publish('t', msg(1));
    await b.publish('t', msg(2));
    await inHand;
    let stopped = false;
    const stopping = sub.stop().then(() => (stopped = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(stopped, false, 'stop waits for the handler');
    release();
    await stopping;
    const next = collector(1);
    b.subscribe({ topic: 't', group: 'g', route: 'r' }, next.handler);
    await next.finished;
    assert.deepEqual(next.values, [2], 'message 1 was committed, message 2 was not handed to the stopped member');
  });

  it('offers a message again when its handler fails (at-least-once), keeping the order', async () => {
    const { broker: b, warnings } = broker();
    const seen: unknown[] = [];
    let failures = 1;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    b.subscribe({ topic: 't', group: 'g', route: 'r' }, async (m) => {
      seen.push(m.value);
      if (m.value === 1 && failures-- > 0) throw new Error('target down');
      if (m.value === 2) done();
    });
    await b.publish('t', msg(1));
    await b.publish('t', msg(2));
    await finished;
    assert.deepEqual(seen, [1, 1, 2]);
    assert.deepEqual(warnings, ['message not consumed; retrying']);
  });

  it('keeps at most `retain` messages per topic: a group that falls behind skips the oldest, with a warning', async () => {
    const { broker: b, warnings } = broker(2);
    for (const v of [1, 2, 3, 4]) await b.publish('t', msg(v));
    const c = collector(2);
    b.subscribe({ topic: 't', group: 'g', route: 'r', startFrom: 'earliest' }, c.handler);
    await c.finished;
    assert.deepEqual(c.values, [3, 4]);

    // A member stuck on one message while more arrive than the topic keeps.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const values: unknown[] = [];
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    b.subscribe({ topic: 'u', group: 'slow', route: 'r' }, async (m) => {
      values.push(m.value);
      if (m.value === 'a') await held;
      if (m.value === 'e') done();
    });
    for (const v of ['a', 'b', 'c', 'd', 'e']) await b.publish('u', msg(v));
    release();
    await finished;
    assert.deepEqual(values, ['a', 'd', 'e']);
    assert.ok(warnings.includes('consumer group fell behind retention; oldest messages were dropped'));
  });

  it('says a route that keeps falling behind retention once, then with the sum, naming the route, and counts every message it lost', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const stats = new BrokerStats('memory');
    const b = new MemoryBroker('mem', { kind: 'memory', retain: 2 }, { logger, telemetry: { broker: () => stats } as never });
    // A route whose target takes one message while the publisher sends five (a slow webhook).
    const gates: (() => void)[] = [];
    const values: unknown[] = [];
    b.subscribe({ topic: 't', group: 'eventgate-r-slow', route: 'slow' }, (m) => {
      values.push(m.value);
      return new Promise<void>((r) => gates.push(r));
    });
    let v = 0;
    b.publishNow('t', msg(v++));
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 5; i++) b.publishNow('t', msg(v++));
      const taken = values.length;
      gates.shift()!();
      while (values.length === taken) await new Promise((r) => setImmediate(r));
    }
    // The values the route never saw, below the last it saw: what retention dropped for it.
    const last = values.at(-1) as number;
    const skipped = last + 1 - values.length;
    assert.ok(skipped >= 20, `some messages were skipped at every turn (${skipped})`);
    const fellBehind = () => lines.filter((l) => l.msg === 'consumer group fell behind retention; oldest messages were dropped');
    // Every message the route takes found some skipped: 20 lines before, one now (the rest summed at the interval's end).
    assert.equal(fellBehind().length, 1);
    assert.deepEqual(stats.consumerErrors, new Map([['slow', skipped]]));
    for (const release of gates.splice(0)) release();
    const stopping = b.stop();
    for (const release of gates.splice(0)) release();
    await stopping;
    // The stop writes the sum not said yet: every lost message is in some line.
    assert.equal(fellBehind().length, 2);
    assert.equal(
      fellBehind().reduce((n, l) => n + (l.skipped as number), 0),
      skipped,
    );
    assert.deepEqual(
      fellBehind().map(({ route, group, topic, retain }) => ({ route, group, topic, retain })),
      Array(2).fill({ route: 'slow', group: 'eventgate-r-slow', topic: 't', retain: 2 }),
    );
  });

  it('applies a new retention in place, keeping topics and positions', async () => {
    const { broker: b } = broker(10);
    for (const v of [1, 2, 3, 4]) await b.publish('t', msg(v));
    b.reconfigure({ kind: 'memory', retain: 2 });
    const c = collector(2);
    b.subscribe({ topic: 't', group: 'g', route: 'r', startFrom: 'earliest' }, c.handler);
    await c.finished;
    assert.deepEqual(c.values, [3, 4]);
    assert.deepEqual(await b.publish('t', msg(5)), { broker: 'mem', topic: 't', partition: 0, offset: '4' });
  });

  it('keeps the newest messages in order, at their offsets, as the topic wraps around, grows and shrinks', async () => {
    const { broker: b } = broker(40);
    const retainedValues = async (after?: number) => (await retainedMessages(b.retained('t', new Map(after === undefined ? [] : [[0, BigInt(after)]])))).map((m) => [m.offset, m.value]);
    const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => [String(from + i), from + i]);
    for (let v = 0; v < 100; v++) await b.publish('t', msg(v));
    assert.deepEqual(await retainedValues(), range(60, 100));
    assert.deepEqual(await retainedValues(89), range(90, 100));
    b.reconfigure({ kind: 'memory', retain: 3 });
    assert.deepEqual(await retainedValues(), range(97, 100));
    for (let v = 100; v < 110; v++) await b.publish('t', msg(v));
    assert.deepEqual(await retainedValues(), range(107, 110));
    b.reconfigure({ kind: 'memory', retain: 1000 });
    for (let v = 110; v < 2110; v++) await b.publish('t', msg(v));
    const all = await retainedValues();
    assert.equal(all.length, 1000);
    assert.deepEqual(all[0], ['1110', 1110]);
    assert.deepEqual(all.at(-1), ['2109', 2109]);
    const c = collector(1001);
    b.subscribe({ topic: 't', group: 'g', route: 'r', startFrom: 'earliest' }, c.handler);
    await b.publish('t', msg('next'));
    await c.finished;
    assert.deepEqual(c.values, [...all.map(([, v]) => v), 'next'], 'a group reads every retained message in order, then the new one');
  });

  it('holds at most maxTopics topics: a new one replaces the oldest topic nobody reads, and fails when every topic is read', async () => {
    const warnings: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line)) });
    const b = new MemoryBroker('mem', { kind: 'memory', maxTopics: 3 }, { logger });
    const read = collector(2);
    await b.subscribe({ route: 'r', topic: 'read', group: 'g' }, read.handler);
    await b.publish('old', msg('o'));
    await b.publish('newer', msg('n'));
    // Three topics; a fourth replaces 'old' (no group), not 'read' (created first, but read).
    await b.publish('fourth', msg('f'));
    assert.deepEqual(
      warnings.map((w) => [w.topic, w.for, w.dropped]),
      [['old', 'fourth', 1]],
    );
    assert.deepEqual(
      (await retainedMessages(b.retained('newer', new Map()))).map((m) => m.value),
      ['n'],
    );
    // 'read' keeps working, and a group joining 'old' later finds it empty.
    await b.publish('read', msg(1));
    await b.publish('read', msg(2));
    await read.finished;
    assert.deepEqual(read.values, [1, 2]);
    // Every topic read: nothing may go, so a publish to a new topic fails (the route answers 503).
    const full = new MemoryBroker('full', { kind: 'memory', maxTopics: 1 }, { logger: pino({ level: 'silent' }) });
    await full.subscribe({ route: 'r', topic: 'only', group: 'g' }, async () => undefined);
    assert.throws(() => full.publishNow('another', msg(1)), /holds its maxTopics \(1\) topics, each read by a route: no room for topic 'another'/);
    assert.equal(b.topicProblem('x'.repeat(249)), undefined);
    assert.match(b.topicProblem('x'.repeat(250))!, /longer than 249 characters/);
  });

  it('lets a topic nobody reads give up its last message to maxBytes, where a read topic keeps its newest', async () => {
    const b = new MemoryBroker('mem', { kind: 'memory', maxBytes: 8 * 1024 * 1024 }, { logger: pino({ level: 'silent' }) });
    const big = (i: number) => msg({ i, pad: 'x'.repeat(1024 * 1024) }); // ~2 MiB estimated
    await b.subscribe({ route: 'r', topic: 'read', group: 'g' }, async () => undefined);
    await b.publish('read', big(0));
    // Six unread topics of one message each: over 8 MiB, the largest unread ones go, whole.
    for (let i = 1; i <= 6; i++) await b.publish(`unread-${i}`, big(i));
    const left = async (t: string) => (await retainedMessages(b.retained(t, new Map()))).length;
    assert.equal(await left('read'), 1);
    const unread = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => left(`unread-${i}`)));
    assert.ok(unread.reduce((a, n) => a + n, 0) <= 3, `at most 4 of ~2 MiB in 8 MiB: ${unread}`);
    assert.equal(unread[5], 1, 'the newest stays');
  });

  it('bounds retention by estimated bytes per topic (retainBytes) and across topics (maxBytes), keeping the newest', async () => {
    const b = new MemoryBroker('mem', { kind: 'memory', retainBytes: 10 * 1024 * 1024, maxBytes: 16 * 1024 * 1024 }, { logger: pino({ level: 'silent' }) });
    const big = (i: number) => msg({ i, pad: 'x'.repeat(1024 * 1024) }); // ~2 MiB estimated (2 bytes a character)
    for (let i = 0; i < 20; i++) await b.publish('a', big(i));
    const seenA = collector(4);
    await b.subscribe({ route: 'r', topic: 'a', group: 'g', startFrom: 'earliest' } as never, seenA.handler);
    await seenA.finished;
    assert.deepEqual(
      seenA.values.map((v) => (v as { i: number }).i),
      [16, 17, 18, 19],
      'only the newest ~10 MiB stay',
    );
    // A second topic pushes the broker over maxBytes: the largest topic (a) gives up its oldest first.
    for (let i = 0; i < 4; i++) await b.publish('b', big(100 + i));
    const seenA2 = collector(1);
    await b.subscribe({ route: 'r2', topic: 'a', group: 'g2', startFrom: 'earliest' } as never, seenA2.handler);
    await seenA2.finished;
    assert.ok((seenA2.values[0] as { i: number }).i >= 17, `topic a was trimmed to stay under maxBytes (oldest now ${(seenA2.values[0] as { i: number }).i})`);
    await b.stop();
  });

  it("gives a consumed message an identity of its own: the same when it is delivered again, another for a topic made again or another broker's life", async () => {
    const { broker: b } = broker();
    const seen: Message[] = [];
    const sub = b.subscribe({ topic: 't', group: 'g', route: 'r', startFrom: 'earliest' }, async (m) => void seen.push(m));
    b.publishNow('t', msg(1));
    b.publishNow('t', msg(2));
    await b.settle();
    await sub.stop();
    const [one, two] = seen.map((m) => b.sourceIdentity(m));
    assert.match(one!, /^memory\/[A-Za-z0-9_-]{8}\.0\/0$/);
    assert.notEqual(two, one);
    // Read again from the start (another group): the same messages, the same identities.
    const again: Message[] = [];
    const sub2 = b.subscribe({ topic: 't', group: 'g2', route: 'r', startFrom: 'earliest' }, async (m) => void again.push(m));
    await b.settle();
    await sub2.stop();
    assert.deepEqual(
      again.map((m) => b.sourceIdentity(m)),
      [one, two],
    );
    // Offset 0 of a topic of another broker (a restart: its topics begin again) is another message.
    const { broker: next } = broker();
    const later: Message[] = [];
    const sub3 = next.subscribe({ topic: 't', group: 'g', route: 'r', startFrom: 'earliest' }, async (m) => void later.push(m));
    next.publishNow('t', msg(1));
    await next.settle();
    await sub3.stop();
    assert.notEqual(next.sourceIdentity(later[0]!), one);
    // Not a message this broker holds: none.
    assert.equal(b.sourceIdentity(msg(1)), undefined);
  });

  it('gives a topic dropped (maxTopics) and made again other identities', () => {
    const b = new MemoryBroker('mem', { kind: 'memory', maxTopics: 1 }, { logger: pino({ level: 'silent' }) });
    const at = (topic: string) => b.sourceIdentity({ ...msg(1), topic, offset: (b.publishNow(topic, msg(1)) as { offset: string }).offset });
    const first = at('a');
    at('b');
    assert.notEqual(at('a'), first);
  });
});

/** Every message of a replay, its chunks read to the end. */
async function retainedMessages(retained: Promise<Retained>): Promise<Message[]> {
  const all: Message[] = [];
  for await (const { messages } of (await retained).chunks) all.push(...messages);
  return all;
}
