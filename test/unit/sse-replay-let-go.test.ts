import assert from 'node:assert/strict';
import { get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, Retained, RetainedChunk } from '../../src/kinds/contracts.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { closeSse, parseEvents, serveSse } from '../helpers/sse.js';

/**
 * A replay read that fails after live events it was to send were let go for the send bound: the
 * client is disconnected only when the read had not yet sent up to the last of them (it would go
 * live past events it never got). A read that had sent past them all leaves it nothing missing:
 * it is told `resumed: false` and streams on.
 */
describe('SSE: a replay read that fails after letting go of live events it covers', () => {
  const BOUND = 1024;
  const SOURCE = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  const PAD = 'x'.repeat(600);
  let server: Server;
  let streams: SseStreams;
  /** What the streams logged at warn, in order. */
  const warnings: string[] = [];
  /** The case's read: its ends, and its chunks, which the case drives. */
  let retained: () => Retained = () => assert.fail('no read');
  const source: ReplaySource = { sourceKey: SOURCE, replay: () => Promise.resolve(retained()) };
  const message = (offset: number): Message =>
    payloadMessage(Buffer.from(JSON.stringify({ offset, pad: PAD })), { headers: {}, topic: 'orders', partition: 0, offset: String(offset), timestamp: Date.now() });
  const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

  before(async () => {
    const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push((JSON.parse(line) as { msg: string }).msg) });
    streams = new SseStreams('api', { ...SSE_DEFAULTS, maxBufferedBytes: BOUND }, logger);
    server = await serveSse(streams, () => new Map([['r', source]]));
  });
  after(() => closeSse(streams, server));

  /**
   * A client resumes after offset 1; its read reaches offset 20. Once it asks for its first chunk,
   * live events 2-4 come (600 bytes each: over the 1 KiB bound, so they are let go); the read then
   * sends 2-`sentUpTo` and fails. The client's events, and whether its stream was closed.
   */
  async function failAfter(
    sentUpTo: number,
    beforeFailing: (res: IncomingMessage) => Promise<void> = async () => {},
  ): Promise<{ events: () => ReturnType<typeof parseEvents>; closed: () => boolean; live: (offset: number) => Promise<void> }> {
    const target = streams.target('/e', 'value', 'r', SOURCE);
    let asked = false;
    let fail: () => void = () => {};
    const failed = new Promise<void>((resolve) => {
      fail = resolve;
    });
    retained = () => ({
      ends: new Map([[0, 20n]]),
      close: () => Promise.resolve(),
      chunks: (async function* (): AsyncGenerator<RetainedChunk> {
        asked = true;
        await failed;
        if (sentUpTo >= 2) yield { messages: range(2, sentUpTo).map(message) };
        throw new Error('the read broke');
      })(),
    });
    const { port } = server.address() as AddressInfo;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/e', agent: false, headers: { accept: 'text/event-stream', 'last-event-id': `${sourceTag(SOURCE)}~0:1` } }, resolve).on('error', reject);
    });
    assert.equal(res.statusCode, 200);
    let text = '';
    let closed = false;
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
    });
    res.on('error', () => {});
    res.on('close', () => {
      closed = true;
    });
    await eventually(() => assert.ok(asked, 'the read asked for its first chunk'));
    for (const offset of [2, 3, 4]) await target.send(message(offset), undefined as never);
    assert.equal(streams.slowClientsClosed, 0, 'let go, not cut off');
    await beforeFailing(res);
    fail();
    await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
    return {
      events: () => parseEvents(text),
      closed: () => closed,
      live: async (offset) => void (await target.send(message(offset), undefined as never)),
    };
  }
  const offsets = (events: ReturnType<typeof parseEvents>) => events.filter((e) => e.event === undefined).map((e) => (JSON.parse(e.data) as { offset: number }).offset);

  it('streams on, told resumed: false, when the read had sent past every event it let go', async () => {
    const client = await failAfter(6);
    await client.live(21);
    await eventually(() => assert.deepEqual(offsets(client.events()), [...range(2, 6), 21], 'what the read sent, then the next live event'));
    const notices = client.events().filter((e) => e.event === 'eventgate.resume');
    assert.deepEqual(
      notices.map((e) => JSON.parse(e.data)),
      [{ resumed: false, reason: 'the broker could not replay retained events' }],
    );
    assert.equal(client.closed(), false, 'not disconnected');
  });

  it('disconnects the client when the read failed before it sent the last event it let go', async () => {
    const client = await failAfter(3);
    await eventually(() => assert.ok(client.closed(), 'disconnected'));
    // Destroyed at once: what was still unsent when the read failed may not reach it.
    const got = offsets(client.events());
    assert.deepEqual(got, [2, 3].slice(0, got.length), 'some of what the read sent, and nothing past the gap');
    assert.deepEqual(
      client.events().filter((e) => e.event !== undefined),
      [],
      'no resumed: false',
    );
    assert.equal(streams.slowClientsClosed, 0, 'not counted as a slow client');
  });

  it('says nothing of a read that fails once its client is gone', async () => {
    const from = warnings.length;
    // Gone before the read fails, with live events let go that the read had not sent (the case above's disconnect).
    const client = await failAfter(1, async (res) => {
      const open = streams.count();
      res.destroy();
      await eventually(() => assert.equal(streams.count(), open - 1, 'the stream seen closed'));
    });
    assert.equal(client.closed(), true);
    assert.deepEqual(warnings.slice(from), [], 'no "could not be resumed" for a client that is not there');
  });
});
