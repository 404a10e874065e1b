import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, RetainedChunk } from '../../src/kinds/contracts.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { closeSse, resumeSse, serveSse } from '../helpers/sse.js';

/**
 * After a resume, the first live event of each partition is checked for a gap (sse.ts gapCheck());
 * once each partition of the source (Retained.partitions) was, the client is watched no more: its
 * live events cost what a client's that did not resume cost. Where the partitions are not known,
 * the watch stays. What tells them apart, beside the cost: a partition the read did not list.
 */
describe("SSE: a resumed client's watch for a gap", () => {
  const SOURCE = JSON.stringify(['kafka', 'kafka', 'orders', null]);
  let server: Server;
  let streams: SseStreams;
  /** The partitions the source's reads report (undefined: not known). */
  let partitions: number[] | undefined;
  let asked = 0;
  const source: ReplaySource = {
    sourceKey: SOURCE,
    replay: () => {
      // A catch-up read (the second) finds nothing: the partition it was asked for is one the route started after.
      if (asked++ > 0) return Promise.resolve({ ends: new Map(), partitions, close: () => Promise.resolve(), chunks: (async function* (): AsyncGenerator<RetainedChunk> {})() });
      return Promise.resolve({
        ends: new Map([
          [0, 2n],
          [1, 2n],
        ]),
        partitions,
        close: () => Promise.resolve(),
        chunks: (async function* (): AsyncGenerator<RetainedChunk> {
          yield { messages: [message(0, 2), message(1, 2)] };
        })(),
      });
    },
  };
  const message = (partition: number, offset: number): Message =>
    payloadMessage(Buffer.from(JSON.stringify({ partition, offset })), { headers: {}, topic: 'orders', partition, offset: String(offset), timestamp: Date.now() });

  before(async () => {
    streams = new SseStreams('api', SSE_DEFAULTS, pino({ level: 'silent' }));
    server = await serveSse(
      streams,
      () => new Map([['r', source]]),
      (req) => req.url!,
    );
  });
  after(() => closeSse(streams, server));

  for (const known of [true, false])
    it(known ? 'is dropped once the first live event of each partition was checked' : 'stays where the partitions are not known', async () => {
      partitions = known ? [0, 1] : undefined;
      asked = 0;
      // A path of its own: the path's live positions are not those the other case left.
      const path = known ? '/known' : '/unknown';
      const target = streams.target(path, 'value', 'r', SOURCE);
      const { res, events } = await resumeSse(server, `${sourceTag(SOURCE)}~0:1,1:1`, path);
      const got = () =>
        events()
          .filter((e) => e.event === undefined)
          .map((e) => JSON.parse(e.data) as { partition: number; offset: number });
      try {
        await eventually(() => assert.equal(got().length, 2, 'the resume sent 0:2 and 1:2'));
        await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
        // Each partition's first live event follows the client's position there: no read.
        await target.send(message(0, 3), undefined as never);
        await target.send(message(1, 3), undefined as never);
        assert.equal(asked, 1, 'no catch-up read');
        // A record of a partition the resume's read did not list (one added since), past where the
        // client is there (nowhere): checked only by a watch still there. Dropped (each listed
        // partition checked), the record goes out as to a client that did not resume, as the
        // route's group takes such a partition from its start position; kept, it starts a read.
        await target.send(message(2, 5), undefined as never);
        await eventually(() => assert.equal(streams.replays, 0, 'any catch-up is over'));
        if (known) assert.equal(asked, 1, 'each listed partition checked: watched no more, no catch-up read');
        else assert.equal(asked, 2, 'the partitions are not known: still watched, the new partition checked (a catch-up read)');
        await eventually(() =>
          assert.deepEqual(
            got().slice(2),
            [message(0, 3), message(1, 3), message(2, 5)].map((m) => ({ partition: m.partition, offset: Number(m.offset) })),
          ),
        );
      } finally {
        res.destroy();
      }
      await eventually(() => assert.equal(streams.count(), 0));
    });
});
