import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, get, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { payloadMessage, type Message } from '../../src/core/message.js';
import type { ReplaySource, RetainedChunk } from '../../src/kinds/contracts.js';
import { SSE_DEFAULTS, SseStreams } from '../../src/kinds/listeners/sse.js';
import { sourceTag } from '../../src/kinds/listeners/sse-ids.js';
import { eventually } from '../helpers/gateway.js';
import { parseEvents } from '../helpers/sse.js';

/**
 * After a resume, the first live event of each partition is checked for a gap (sse.ts gapCheck());
 * once each partition of the source (Retained.partitions) was, the client is watched no more: its
 * live events cost what a client's that did not resume cost. Where the partitions are not known,
 * the watch stays.
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
      asked++;
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
  /** The watch of the path's one client (the stream's own state: nothing a client sees tells it). */
  const watchOf = () => [...(streams as unknown as { paths: Map<string, { clients: Set<{ watch: unknown }> }> }).paths.get('/e')!.clients][0]!.watch;

  before(async () => {
    streams = new SseStreams('api', SSE_DEFAULTS, pino({ level: 'silent' }));
    server = createServer((req, res) =>
      streams.open(req, res, '/e', new Map([['r', source]]), { request: { headers: req.headers, query: {}, remoteAddress: req.socket.remoteAddress }, until: undefined }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
  });
  after(() => {
    streams.closeAll();
    server.closeAllConnections();
    server.close();
  });

  for (const known of [true, false])
    it(known ? 'is dropped once the first live event of each partition was checked' : 'stays where the partitions are not known', async () => {
      partitions = known ? [0, 1] : undefined;
      asked = 0;
      const target = streams.target('/e', 'value', 'r', SOURCE);
      const { port } = server.address() as AddressInfo;
      const res = await new Promise<IncomingMessage>((resolve, reject) => {
        get({ host: '127.0.0.1', port, agent: false, headers: { accept: 'text/event-stream', 'last-event-id': `${sourceTag(SOURCE)}~0:1,1:1` } }, resolve).on('error', reject);
      });
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        text += chunk;
      });
      const got = () =>
        parseEvents(text)
          .filter((e) => e.event === undefined)
          .map((e) => JSON.parse(e.data) as { partition: number; offset: number });
      try {
        await eventually(() => assert.equal(got().length, 2, 'the resume sent 0:2 and 1:2'));
        await eventually(() => assert.equal(streams.replays, 0, 'the resume is over'));
        assert.notEqual(watchOf(), undefined, 'watched after the resume');
        // Partition 0's first live event follows the client's position there: no read, and partition 1 still to check.
        await target.send(message(0, 3), undefined as never);
        assert.notEqual(watchOf(), undefined, 'partition 1 not checked yet');
        await target.send(message(1, 3), undefined as never);
        if (known) assert.equal(watchOf(), undefined, 'each partition checked: watched no more');
        else assert.notEqual(watchOf(), undefined, 'the partitions are not known: still watched');
        await eventually(() =>
          assert.deepEqual(
            got().slice(2),
            [message(0, 3), message(1, 3)].map((m) => ({ partition: m.partition, offset: Number(m.offset) })),
          ),
        );
        assert.equal(asked, 1, 'no catch-up read');
      } finally {
        res.destroy();
      }
      await eventually(() => assert.equal(streams.count(), 0));
    });
});
