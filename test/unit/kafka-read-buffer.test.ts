import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { Writer } from '../../src/codecs/kafka-protocol/wire.js';
import { ProxyConnection, type ConnectionHost } from '../../src/kinds/listeners/kafka/connection.js';
import { eventually } from '../helpers/gateway.js';

/**
 * A client connection of the kafka listener reads into one buffer it reuses (readIntoBuffer), and
 * produce requests to topics no route names go upstream as views of it. These run the connection
 * over real sockets, with an upstream that reads slowly, so that what the proxy wrote upstream is
 * still queued when the client's next bytes arrive.
 */

/** An acks=0 Produce v8 request to `topic` (never answered), its records random bytes. */
function produceFrame(topic: string, correlationId: number, recordBytes: number): Buffer {
  const body = new Writer().int16(0).int16(8).int32(correlationId).nullableString('test').nullableString(null).int16(0).int32(30000).int32(1).string(topic).int32(1).int32(0).finish();
  const records = randomBytes(recordBytes);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length + 4 + records.length);
  const len = Buffer.alloc(4);
  len.writeInt32BE(records.length);
  return Buffer.concat([size, body, len, records]);
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

describe('kafka listener connection: client reads into one reused buffer', () => {
  it('streams requests upstream intact while upstream reads slower than the client sends', async () => {
    const requests = Array.from({ length: 60 }, (_, i) => produceFrame('free', i, 100_000 + i * 3_001));
    const sent = Buffer.concat(requests);
    // Upstream takes one read, then waits a moment before the next: the proxy's writes queue up.
    const received: Buffer[] = [];
    let receivedBytes = 0;
    const upstreamServer = createServer((s) => {
      s.on('data', (c: Buffer) => {
        received.push(c);
        receivedBytes += c.length;
        s.pause();
        setTimeout(() => s.resume(), 1);
      });
    });
    const upstreamPort = await listen(upstreamServer);
    const closed: (string | undefined)[] = [];
    const host: ConnectionHost = {
      maxFrameBytes: () => 1 << 20,
      answersAfterClientLeftMs: () => 30_000,
      advertise: () => Promise.reject(new Error('not asked')),
      govern: () => {
        throw new Error('nothing is governed');
      },
      governs: () => false,
      closed: (_conn, problem) => closed.push(problem?.reason),
    };
    let conn: ProxyConnection | undefined;
    const proxyServer = createServer({ pauseOnConnect: true }, (accepted: Socket) => {
      conn = new ProxyConnection(accepted, connect(upstreamPort, '127.0.0.1'), host, true);
    });
    const proxyPort = await listen(proxyServer);
    try {
      const client = connect(proxyPort, '127.0.0.1');
      await once(client, 'connect');
      client.write(sent);
      await eventually(() => assert.ok(receivedBytes >= sent.length, `${receivedBytes} of ${sent.length} bytes upstream`), 30000);
      assert.ok(conn, 'the proxy took the connection');
      assert.equal(conn.client.constructor.name, 'Socket');
      assert.equal(Buffer.concat(received).equals(sent), true, 'upstream got every byte the client sent, in order');
      client.end();
      await once(client, 'close');
      // The connection handed over still counts for its server: close() completes once it is gone.
      await new Promise<void>((resolve) => proxyServer.close(() => resolve()));
      assert.deepEqual(closed, [undefined]);
    } finally {
      proxyServer.close();
      upstreamServer.close();
    }
  });
});
