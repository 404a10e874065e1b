import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, Retained, RetainedChunk } from '../../src/kinds/contracts.js';
import { SHARED_LEAD_CHUNKS } from '../../src/kinds/listeners/shared-replay.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { parseEvents } from '../helpers/sse.js';

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
    const { port } = server.address() as AddressInfo;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get({ host: '127.0.0.1', port, agent: false, headers: { accept: 'text/event-stream', 'last-event-id': `${sourceTag(SOURCE)}~0:1` } }, resolve).on('error', reject);
    });
    assert.equal(res.statusCode, 200);
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      text += chunk;
    });
    res.on('error', () => {});
    const offsets = () =>
      parseEvents(text)
        .filter((e) => e.event === undefined)
        .map((e) => (JSON.parse(e.data) as { offset: number }).offset);
    const notices = () =>
      parseEvents(text)
        .filter((e) => e.event === 'eventgate.resume')
        .map((e) => JSON.parse(e.data) as unknown);
    return { res, offsets, notices };
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
    server = createServer((req, res) =>
      streams.open(req, res, '/e', new Map([['r', source]]), { request: { headers: req.headers, query: {}, remoteAddress: req.socket.remoteAddress }, until: undefined }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
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
    const [reading, stopped] = await resumedClients(2);
    stopped!.res.pause();
    await target.send(message(3 + CHUNKS), undefined as never);
    await eventually(() => assert.equal(streams.replays, 0, 'the catch-ups are over'), 50_000);
    // The read's records, then the live event that started it.
    await eventually(
      () =>
        assert.deepEqual(
          reading!.offsets(),
          Array.from({ length: CHUNKS + 2 }, (_, i) => i + 2),
          'every record once, in order',
        ),
      20_000,
    );
    assert.equal(streams.slowClientsClosed, 1, 'the one that read nothing was let go');
    assert.deepEqual(logged, ['event stream client fell behind the catch-up read it shares; disconnecting so that it resumes again']);
    assert.deepEqual({ catchUps, closed }, { catchUps: 1, closed: 1 });
    reading!.res.destroy();
    stopped!.res.destroy();
  });
});
