import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, Retained, RetainedChunk } from '../../src/kinds/contracts.js';
import { SHARED_LEAD_CHUNKS } from '../../src/kinds/listeners/shared-replay.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { OTHER_SOURCE, sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { closeSse, parseEvents, resumeSse, serveSse } from '../helpers/sse.js';

/**
 * Clients resumed at the same position whose route's first live event shows them the same gap (the
 * route's new group started after records their replays never reached) share one catch-up read:
 * each gets every record once, in order, at its own pace; one that leaves does not end the read for
 * the others, one that stops reading is let go rather than holding the read's chunks for it, and a
 * read that fails fails each of them as a failed catch-up does.
 */
describe('SSE: a catch-up read shared by the clients one live event found short', () => {
  const SOURCE = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  let server: Server;
  let streams: SseStreams;
  /** What the streams logged (messages). */
  let logged: string[] = [];
  /** The resume reads asked for (offset 2, up to 3), then the catch-up reads. */
  let resumes = 0;
  let catchUps = 0;
  /** Catch-up reads ended (Retained.close, or their chunks' own end). */
  let closed = 0;
  /** The catch-up read's chunks, made anew for each read asked for. */
  let catchUp: () => AsyncGenerator<RetainedChunk>;
  let catchUpEnds = 10n;
  let resumeCount = 0;
  const source: ReplaySource = {
    sourceKey: SOURCE,
    replay: (): Promise<Retained> => {
      if (resumes < resumeCount) {
        resumes++;
        return Promise.resolve({
          ends: new Map([[0, 3n]]),
          close: () => Promise.resolve(),
          chunks: (async function* (): AsyncGenerator<RetainedChunk> {
            yield { messages: [message(2)] };
          })(),
        });
      }
      catchUps++;
      let done = false;
      const end = () => {
        if (!done) closed++;
        done = true;
        return Promise.resolve();
      };
      const chunks = catchUp();
      return Promise.resolve({
        ends: new Map([[0, catchUpEnds]]),
        close: end,
        chunks: (async function* () {
          try {
            yield* chunks;
          } finally {
            await end();
          }
        })(),
      });
    },
  };
  const message = (offset: number, pad = ''): Message =>
    payloadMessage(Buffer.from(JSON.stringify({ offset, pad })), { headers: {}, topic: 'orders', partition: 0, offset: String(offset), timestamp: Date.now() });

  interface Client {
    res: IncomingMessage;
    offsets: () => number[];
    notices: () => unknown[];
  }
  /** A stream resumed after offset 1 of partition 0. */
  async function resumed(): Promise<Client> {
    const { res, events } = await resumeSse(server, `${sourceTag(SOURCE)}~0:1`);
    const offsets = () =>
      events()
        .filter((e) => e.event === undefined)
        .map((e) => (JSON.parse(e.data) as { offset: number }).offset);
    const notices = () =>
      events()
        .filter((e) => e.event === 'eventgate.resume')
        .map((e) => JSON.parse(e.data) as unknown);
    return { res, offsets, notices };
  }
  /**
   * A stream resumed after offset 1 of partition 0 over a plain socket (HTTP/1.0: the body as sent,
   * not chunked), so that what reached it before the gateway cut it off can still be read after:
   * an http client's response discards what it had not read when its connection closes early.
   */
  async function rawResumed(): Promise<{ socket: Socket; text: () => string }> {
    const { port } = server.address() as AddressInfo;
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.on('error', () => {});
    let raw = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      raw += chunk;
    });
    socket.write(`GET /e HTTP/1.0\r\nAccept: text/event-stream\r\nLast-Event-ID: ${sourceTag(SOURCE)}~0:1\r\n\r\n`);
    return { socket, text: () => raw.slice(raw.indexOf('\r\n\r\n') + 4) };
  }
  /** `count` clients resumed after 0:1, each sent offset 2 by its resume, every resume over. */
  async function resumedClients(count: number): Promise<Client[]> {
    resumeCount = count;
    const clients: Client[] = [];
    for (let i = 0; i < count; i++) clients.push(await resumed());
    await eventually(() => {
      for (const c of clients) assert.deepEqual(c.offsets(), [2], 'the resume read sent offset 2');
      assert.equal(streams.replays, 0, 'the resumes are over');
    });
    return clients;
  }

  beforeEach(async () => {
    resumes = 0;
    catchUps = 0;
    closed = 0;
    catchUpEnds = 10n;
    logged = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void logged.push((JSON.parse(line) as { msg: string }).msg) });
    streams = new SseStreams('api', SSE_DEFAULTS, logger);
    server = await serveSse(streams, () => new Map([['r', source]]));
  });
  afterEach(() => {
    streams.closeAll();
    server.closeAllConnections();
    server.close();
  });

  it('reads once for three clients; each gets every record once, in order, and one that leaves mid-read ends it for none', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    catchUp = async function* () {
      yield { messages: [3, 4, 5].map((o) => message(o)) };
      await released;
      yield { messages: [6, 7, 8, 9].map((o) => message(o)) };
    };
    const target = streams.target('/e', 'value', 'r', SOURCE);
    const [a, b, c] = await resumedClients(3);
    // Offsets 3-8 never came live (the route's group started at the topic's end): 9 starts the catch-up.
    await target.send(message(9), undefined as never);
    await eventually(() => {
      for (const client of [a!, b!, c!]) assert.deepEqual(client.offsets(), [2, 3, 4, 5], 'the first chunk');
    });
    // One leaves while the read waits for its next chunk.
    b!.res.destroy();
    release();
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-ups are over'));
    await target.send(message(10), undefined as never);
    for (const client of [a!, c!]) await eventually(() => assert.deepEqual(client.offsets(), [2, 3, 4, 5, 6, 7, 8, 9, 10], 'each record once, in order'));
    assert.deepEqual(b!.offsets(), [2, 3, 4, 5]);
    assert.deepEqual({ resumes, catchUps, closed }, { resumes: 3, catchUps: 1, closed: 1 }, 'one catch-up read, ended once');
    for (const client of [a!, c!]) assert.deepEqual(client.notices(), [], 'no notice: nothing was missed');
    a!.res.destroy();
    c!.res.destroy();
  });

  it('ends the read once, asking for no further chunk, when the last of its clients leaves mid-read', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let read = 0;
    catchUp = async function* () {
      read++;
      yield { messages: [3, 4, 5].map((o) => message(o)) };
      await released;
      read++;
      yield { messages: [6, 7, 8].map((o) => message(o)) };
      read++;
      yield { messages: [9].map((o) => message(o)) };
    };
    const target = streams.target('/e', 'value', 'r', SOURCE);
    const clients = await resumedClients(2);
    await target.send(message(10), undefined as never);
    await eventually(() => {
      for (const client of clients) assert.deepEqual(client.offsets(), [2, 3, 4, 5], 'the first chunk');
    });
    // Both leave while the read waits for its second chunk: the one that gets it last ends the read.
    for (const client of clients) client.res.destroy();
    await eventually(() => assert.equal(streams.count(), 0, 'both gone'));
    release();
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-ups are over'));
    await eventually(() => assert.deepEqual({ catchUps, closed }, { catchUps: 1, closed: 1 }, 'one read, ended once'));
    assert.equal(read, 2, 'no chunk asked for after the last client left');
    assert.deepEqual(logged, [], 'nothing logged: clients that left are not slow');
  });

  it('fails each client, which still gets the live event that started it, when the shared read fails', async () => {
    catchUp = async function* () {
      yield { messages: [3, 4].map((o) => message(o)) };
      throw new Error('the read broke');
    };
    const target = streams.target('/e', 'value', 'r', SOURCE);
    const clients = await resumedClients(2);
    await target.send(message(9), undefined as never);
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-ups are over'));
    await target.send(message(10), undefined as never);
    for (const client of clients) {
      await eventually(() => assert.deepEqual(client.offsets(), [2, 3, 4, 9, 10], 'what the read sent, then the event that started it, then the next'));
      assert.deepEqual(client.notices(), [{ resumed: false, reason: 'the broker could not replay retained events' }]);
    }
    assert.deepEqual({ catchUps, closed }, { catchUps: 1, closed: 1 });
    for (const client of clients) client.res.destroy();
  });

  it('lets go of a client that stops reading rather than hold the read for it; the other gets it all', { timeout: 60_000 }, async () => {
    // Chunks of 1 MB: a client that reads nothing is over the send bound (1 MiB) after a few, its socket full.
    const CHUNKS = SHARED_LEAD_CHUNKS * 4;
    const pad = 'x'.repeat(1024 * 1024);
    catchUpEnds = BigInt(2 + CHUNKS);
    catchUp = async function* () {
      for (let o = 3; o <= 2 + CHUNKS; o++) yield { messages: [message(o, pad)] };
    };
    const target = streams.target('/e', 'value', 'r', SOURCE);
    resumeCount = 2;
    const reading = await resumed();
    const stopped = await rawResumed();
    const stoppedOffsets = () =>
      parseEvents(stopped.text())
        .filter((e) => e.event === undefined)
        .map((e) => (JSON.parse(e.data) as { offset: number }).offset);
    await eventually(() => {
      for (const offsets of [reading.offsets(), stoppedOffsets()]) assert.deepEqual(offsets, [2], 'the resume read sent offset 2');
      assert.equal(streams.replays, 0, 'the resumes are over');
    });
    stopped.socket.pause();
    await target.send(message(3 + CHUNKS), undefined as never);
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-ups are over'), 50_000);
    // The read's records, then the live event that started it.
    await eventually(
      () =>
        assert.deepEqual(
          reading.offsets(),
          Array.from({ length: CHUNKS + 2 }, (_, i) => i + 2),
          'every record once, in order',
        ),
      20_000,
    );
    assert.equal(streams.slowClientsClosed, 1, 'the one that read nothing was let go');
    assert.deepEqual(logged, ['event stream client fell behind the catch-up read it shares; disconnecting so that it resumes again']);
    assert.deepEqual({ catchUps, closed }, { catchUps: 1, closed: 1 });
    reading.res.destroy();
    // What the let-go client was sent before it was cut off, read now: the records from 2 on, in
    // order, each once, and a last id naming the last of them (its reconnect resumes right after it).
    const ended = new Promise((resolve) => stopped.socket.once('close', resolve));
    stopped.socket.resume();
    await ended;
    const events = parseEvents(stopped.text());
    const sent = stoppedOffsets();
    assert.ok(sent.length >= 1 && sent.length < CHUNKS + 2, `a part of the read: ${sent.length} of ${CHUNKS + 2}`);
    assert.deepEqual(
      sent,
      Array.from({ length: sent.length }, (_, i) => i + 2),
      'from 2 on, in order, once',
    );
    assert.equal(events.filter((e) => e.id !== undefined).at(-1)?.id, `${sourceTag(SOURCE)}~0:${sent.at(-1)}`, 'its last id names its last record');
    assert.deepEqual(
      events.filter((e) => e.event !== undefined),
      [],
      'no notice: it is cut off, not told it missed anything',
    );
  });
});

/**
 * A catch-up read asks the route's source now (a reload may have changed it) for what a read of the
 * client's own would: from its oldest retained event when the client's positions are of another
 * source (sse.ts resume(): `foreign`), not after them.
 */
describe('SSE: a shared catch-up read of a route whose source a reload changed', () => {
  const OLD = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  const NEW = JSON.stringify(['kafka', 'kafka', 'orders-v2', null]);
  let server: Server;
  let streams: SseStreams;
  /** The positions each read of the new source was asked to read after. */
  const askedNew: Map<number, bigint>[] = [];
  const message = (topic: string, offset: number): Message =>
    payloadMessage(Buffer.from(JSON.stringify({ topic, offset })), { headers: {}, topic, partition: 0, offset: String(offset), timestamp: Date.now() });
  const oldSource: ReplaySource = {
    sourceKey: OLD,
    replay: () =>
      Promise.resolve({
        ends: new Map([[0, 2n]]),
        partitions: [0],
        close: () => Promise.resolve(),
        chunks: (async function* (): AsyncGenerator<RetainedChunk> {
          yield { messages: [message('orders', 2)] };
        })(),
      }),
  };
  const newSource: ReplaySource = {
    sourceKey: NEW,
    replay: (after) => {
      askedNew.push(new Map(after));
      return Promise.resolve({
        ends: new Map([[0, 1n]]),
        partitions: [0],
        close: () => Promise.resolve(),
        chunks: (async function* (): AsyncGenerator<RetainedChunk> {
          yield { messages: [message('orders-v2', 0), message('orders-v2', 1)] };
        })(),
      });
    },
  };

  before(async () => {
    streams = new SseStreams('api', SSE_DEFAULTS, pino({ level: 'silent' }));
    server = await serveSse(streams, () => new Map([['r', oldSource]]));
  });
  after(() => closeSse(streams, server));

  it('reads the new source from its oldest event for clients whose positions are of the old one', async () => {
    const oldTarget = streams.target('/e', 'value', 'r', OLD);
    const { res, events } = await resumeSse(server, `${sourceTag(OLD)}~0:1`);
    const got = () =>
      events()
        .filter((e) => e.event === undefined)
        .map((e) => JSON.parse(e.data) as { topic: string; offset: number });
    const notices = () =>
      events()
        .filter((e) => e.event === 'eventgate.resume')
        .map((e) => (JSON.parse(e.data) as { reason: string }).reason);
    try {
      await eventually(() => assert.deepEqual(got(), [{ topic: 'orders', offset: 2 }], 'the resume sent orders 0:2'));
      await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
      // A reload points the route at another topic; a record of the old one still reaches the
      // stream (the old route's last), past the client's position there: a catch-up read of the route as it is now.
      streams.retain(new Set(['/e']), new Set(), new Map([['/e', new Map([['r', newSource]])]]));
      await oldTarget.send(message('orders', 5), undefined as never);
      await eventually(() => assert.equal(streams.replays, 0, 'the catch-up is over'));
      assert.deepEqual(askedNew, [new Map()], "the new topic read from its oldest event, not after the old topic's offset 2");
      assert.deepEqual(notices(), [OTHER_SOURCE], 'told so');
      await eventually(() =>
        assert.deepEqual(got(), [
          { topic: 'orders', offset: 2 },
          { topic: 'orders-v2', offset: 0 },
          { topic: 'orders-v2', offset: 1 },
          { topic: 'orders', offset: 5 },
        ]),
      );
    } finally {
      res.destroy();
    }
  });
});
