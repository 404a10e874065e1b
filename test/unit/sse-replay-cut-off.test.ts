import assert from 'node:assert/strict';
import { get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { payloadMessage } from '../../src/core/message.js';
import type { ReplaySource, Retained } from '../../src/kinds/contracts.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { createLogger } from '../../src/log.js';
import { eventually } from '../helpers/gateway.js';
import { closeSse, serveSse } from '../helpers/sse.js';

/**
 * A client cut off for its send bound while its replay's read is being set up (live events held
 * behind it went over the bound) is gone: when the read's ends come, it is not cut off a second
 * time (counted twice in eventgate_slow_clients_disconnected_total, said twice in the log), its
 * read is ended without a chunk being read (Retained.close), and the path's next route is not read.
 */
describe('SSE: a client cut off before its replay read began', () => {
  const BOUND = 1024;
  let server: Server;
  let streams: SseStreams;
  let slowCounted = 0;
  let replays = 0;
  let begin: (r: Retained) => void = () => {};
  const SOURCE = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  const source: ReplaySource = {
    sourceKey: SOURCE,
    replay: () => {
      replays++;
      return new Promise<Retained>((resolve) => {
        begin = resolve;
      });
    },
  };
  /** The path's second route: read after the first, from its oldest retained message. */
  let nextReplays = 0;
  const next: ReplaySource = {
    sourceKey: JSON.stringify(['kafka', 'kafka', 'payments', null]),
    replay: () => {
      nextReplays++;
      return Promise.resolve({ chunks: (async function* () {})(), close: () => Promise.resolve() });
    },
  };

  before(async () => {
    streams = new SseStreams('api', { ...SSE_DEFAULTS, maxBufferedBytes: BOUND }, createLogger('silent'), () => slowCounted++);
    server = await serveSse(
      streams,
      () =>
        new Map([
          ['r', source],
          ['r2', next],
        ]),
    );
  });
  after(() => closeSse(streams, server));

  it('is cut off once, and its replay reads nothing more', async () => {
    const target = streams.target('/e', 'value', 'r', SOURCE);
    const { port } = server.address() as AddressInfo;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      get({ host: '127.0.0.1', port, path: '/e', agent: false, headers: { accept: 'text/event-stream', 'last-event-id': `${sourceTag(SOURCE)}~0:1` } }, resolve).on('error', reject);
    });
    assert.equal(res.statusCode, 200);
    res.on('error', () => {});
    const closed = new Promise((resolve) => res.on('close', resolve));
    res.resume();
    await eventually(() => assert.equal(replays, 1, 'the replay read is being set up'));

    // Live events held behind the replay, over the bound: the client is cut off as one that does not read.
    for (let offset = 10; offset < 13; offset++) {
      const msg = payloadMessage(Buffer.from(JSON.stringify({ pad: 'x'.repeat(600) })), { headers: {}, topic: 't', partition: 0, offset: String(offset), timestamp: Date.now() });
      await target.send(msg, undefined as never);
    }
    assert.equal(streams.slowClientsClosed, 1);
    await closed;

    // The read's ends come now (none covering the held events): nothing is left to do for the client.
    let chunksRead = 0;
    let ended = 0;
    begin({
      chunks: (async function* () {
        chunksRead++;
        yield { messages: [] };
      })(),
      close: () => {
        ended++;
        return Promise.resolve();
      },
      ends: new Map([[0, 5n]]),
    });
    await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
    assert.equal(streams.slowClientsClosed, 1, 'cut off once');
    assert.equal(slowCounted, 1, 'counted once in eventgate_slow_clients_disconnected_total');
    assert.equal(chunksRead, 0, 'no chunk of its read asked for');
    assert.equal(ended, 1, 'its read ended once');
    assert.equal(nextReplays, 0, "the next route's source not read");
  });
});
