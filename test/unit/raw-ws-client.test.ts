import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { RawWsClient } from '../helpers/clients.js';

/** A server frame (unmasked) of `opcode` carrying `payload`, with the header length the size calls for. */
function frame(opcode: number, payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.alloc(4) : Buffer.alloc(10);
  if (n >= 126 && n < 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 126;
    head.writeUInt16BE(n, 2);
  } else if (n >= 65536) {
    head[0] = 0x80 | opcode;
    head[1] = 127;
    head.writeBigUInt64BE(BigInt(n), 2);
  }
  return Buffer.concat([head, payload]);
}

const text = (s: string) => frame(1, Buffer.from(s));
const closeFrame = (code: number, reason: string) => frame(8, Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]));

/**
 * What the gateway sends a client it evicts, in miniature, with every header length: small text
 * frames (acks), 7-, 16- and 64-bit lengths, a binary frame, a ping, the close frame, and a text
 * after it (not counted before the close).
 */
const texts = ['{"type":"ack","frame":1}', 'x'.repeat(125), 'y'.repeat(126), 'z'.repeat(70000), '{"type":"ack","frame":2}', ''];
const stream = Buffer.concat([
  text(texts[0]!),
  text(texts[1]!),
  frame(9, Buffer.from('p')),
  text(texts[2]!),
  frame(2, Buffer.alloc(300, 7)),
  text(texts[3]!),
  text(texts[4]!),
  text(texts[5]!),
  closeFrame(1013, 'client too slow'),
  text('after the close'),
]);

describe('RawWsClient.drain (skipping frames unread)', () => {
  let server: Server;
  let url: string;
  const sockets: Socket[] = [];

  before(async () => {
    // Answers the handshake, then sends nothing: each case hands the client its bytes itself, cut
    // where it chooses, as the socket's 'data' events would.
    server = createServer((socket) => {
      sockets.push(socket);
      socket.once('data', () => socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    url = `ws://127.0.0.1:${(server.address() as { port: number }).port}/`;
  });

  after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  /** A client fed `stream` in chunks of `size` bytes, draining from the chunk that holds byte `drainAt` on. */
  async function feed(size: number, drainAt: number): Promise<RawWsClient> {
    const client = await RawWsClient.connect(url);
    client.pause();
    for (let at = 0; at < stream.length; at += size) {
      if (at <= drainAt && drainAt < at + size) client.drain();
      client.socket.emit('data', stream.subarray(at, Math.min(at + size, stream.length)));
    }
    client.destroy();
    return client;
  }

  it('finds what parsing finds, whatever the chunks and wherever draining starts', async () => {
    const parsed = await feed(stream.length, Infinity);
    assert.deepEqual(parsed.texts, [...texts, 'after the close']);
    assert.deepEqual(parsed.close, { code: 1013, reason: 'client too slow' });
    assert.equal(parsed.textsBeforeClose, texts.length);
    assert.equal(parsed.pings, 1);
    // Parsing (before draining) copies what it holds at each chunk: tiny chunks drain early, so
    // the 70,000-byte frame is not parsed a byte at a time.
    const cases = [
      ...[1, 2, 3, 5, 7, 11].flatMap((size) => [0, 1, 30, 200].map((drainAt) => [size, drainAt] as const)),
      ...[64, 1000, 65536, stream.length].flatMap((size) => [0, 1, 30, 200, 70000, stream.length - 20].map((drainAt) => [size, drainAt] as const)),
    ];
    for (const [size, drainAt] of cases) {
      const client = await feed(size, drainAt);
      const at = `chunks of ${size}, draining from byte ${drainAt}`;
      assert.deepEqual(client.close, parsed.close, at);
      assert.equal(client.textsBeforeClose, texts.length, at);
      assert.equal(client.textFrames, texts.length + 1, at);
      assert.equal(client.pings, 1, at);
      assert.equal(client.received, stream.length, at);
      // Only what was parsed before draining is kept.
      assert.ok(client.texts.length < parsed.texts.length, at);
      assert.deepEqual(client.texts, parsed.texts.slice(0, client.texts.length), at);
    }
  });
});
