import assert from 'node:assert/strict';
import type { IncomingMessage, Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, Retained, RetainedChunk } from '../../src/kinds/contracts.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { closeSse, parseEvents, resumeSse, serveSse } from '../helpers/sse.js';

/**
 * A resumed client's first live event past its position + 1 starts a catch-up read of its route
 * (the records the route's new group never delivered). When that read fails, the client is told
 * `resumed: false` and still gets the live event that started it: it was held for the read, and a
 * failed read sends what it held.
 */
describe('SSE: a catch-up read that fails', () => {
  const SOURCE = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  let server: Server;
  let streams: SseStreams;
  /** The reads asked for, in order: the resume's, then the catch-up's. */
  const reads: Array<() => Retained> = [];
  let asked = 0;
  const source: ReplaySource = { sourceKey: SOURCE, replay: () => Promise.resolve(reads[asked++]!()) };
  const message = (offset: number): Message => payloadMessage(Buffer.from(JSON.stringify({ offset })), { headers: {}, topic: 'orders', partition: 0, offset: String(offset), timestamp: Date.now() });
  /** A stream of `server`'s resumed after offset 1 of partition 0, and the offsets of the records it got so far. */
  async function resumed(on: Server): Promise<{ res: IncomingMessage; text: () => string; offsets: () => number[] }> {
    const { res, text, events } = await resumeSse(on, `${sourceTag(SOURCE)}~0:1`);
    const offsets = () =>
      events()
        .filter((e) => e.event === undefined)
        .map((e) => (JSON.parse(e.data) as { offset: number }).offset);
    return { res, text, offsets };
  }

  before(async () => {
    streams = new SseStreams('api', SSE_DEFAULTS, pino({ level: 'silent' }));
    server = await serveSse(streams, () => new Map([['r', source]]));
  });
  after(() => closeSse(streams, server));

  it('sends the live event that started it after the resumed: false notice', async () => {
    const target = streams.target('/e', 'value', 'r', SOURCE);
    // The resume's read: offset 2, up to its end (3).
    reads.push(() => ({
      ends: new Map([[0, 3n]]),
      close: () => Promise.resolve(),
      chunks: (async function* (): AsyncGenerator<RetainedChunk> {
        yield { messages: [message(2)] };
      })(),
    }));
    // The catch-up's read: fails before it sends anything.
    reads.push(() => ({
      ends: new Map([[0, 10n]]),
      close: () => Promise.resolve(),
      chunks: (async function* (): AsyncGenerator<RetainedChunk> {
        yield* [];
        throw new Error('the read broke');
      })(),
    }));
    const { res, text, offsets } = await resumed(server);
    await eventually(() => assert.deepEqual(offsets(), [2], 'the resume read sent offset 2'));
    await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
    // Offsets 3-8 never came live (the route's group started at the topic's end): 9 starts the catch-up.
    await target.send(message(9), undefined as never);
    await eventually(() => assert.equal(asked, 2, 'the catch-up read was asked for'));
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-up is over'));
    await target.send(message(10), undefined as never);
    await eventually(() => assert.deepEqual(offsets(), [2, 9, 10], 'the event that started the catch-up, then the next'));
    assert.deepEqual(
      parseEvents(text())
        .filter((e) => e.event === 'eventgate.resume')
        .map((e) => JSON.parse(e.data)),
      [{ resumed: false, reason: 'the broker could not replay retained events' }],
    );
    res.destroy();
  });

  it('reads the route of the running config when a reload came during the resume', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let oldAsked = 0;
    let newAsked = 0;
    // The resume's read: offset 2, up to its end (3), once the case let it go on.
    const before: ReplaySource = {
      sourceKey: SOURCE,
      replay: () => {
        oldAsked++;
        return Promise.resolve({
          ends: new Map([[0, 3n]]),
          close: () => Promise.resolve(),
          chunks: (async function* (): AsyncGenerator<RetainedChunk> {
            await released;
            yield { messages: [message(2)] };
          })(),
        });
      },
    };
    // The same topic's route after the reload: its catch-up read finds 3-8.
    const now: ReplaySource = {
      sourceKey: SOURCE,
      replay: () => {
        newAsked++;
        return Promise.resolve({
          ends: new Map([[0, 10n]]),
          close: () => Promise.resolve(),
          chunks: (async function* (): AsyncGenerator<RetainedChunk> {
            yield { messages: [3, 4, 5, 6, 7, 8, 9].map(message) };
          })(),
        });
      },
    };
    const reloaded = await serveSse(
      streams,
      () => new Map([['r', before]]),
      () => '/r',
    );
    try {
      const routeTarget = streams.target('/r', 'value', 'r', SOURCE);
      const { res, offsets } = await resumed(reloaded);
      await eventually(() => assert.equal(oldAsked, 1, 'the resume read began'));
      // A reload: the route reads the same topic through a new broker (its old one stopped).
      streams.retain(
        new Set(['/e', '/r']),
        new Set(),
        new Map([
          ['/e', new Map([['r', source]])],
          ['/r', new Map([['r', now]])],
        ]),
      );
      release();
      await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
      await routeTarget.send(message(9), undefined as never);
      await eventually(() => assert.equal(streams.replays, 0, 'the catch-up is over'));
      assert.deepEqual({ oldAsked, newAsked }, { oldAsked: 1, newAsked: 1 }, "the catch-up read is the running route's");
      await eventually(() => assert.deepEqual(offsets(), [2, 3, 4, 5, 6, 7, 8, 9], 'each record once, in order'));
      res.destroy();
    } finally {
      reloaded.closeAllConnections();
      reloaded.close();
    }
  });
});
