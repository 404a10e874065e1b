import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type * as Ws from 'ws';
import type { WebSocket } from 'ws';
import { bundled } from '../../src/core/bundled.js';
import { FrameWalk, hearOnlyCloseAnswer } from '../../src/kinds/listeners/ws-close-answer.js';
import { RawWsClient } from '../helpers/clients.js';

// ws as the gateway loads it: the vendor bundle `npm run build` writes (whose names the take-over
// finds ws's listener by), the package after a tsc-only build.
const { WebSocketServer } = bundled<typeof Ws>('ws');

const MASK = Buffer.from([0x12, 0x34, 0x56, 0x78]);

/** A client frame (masked unless told) of `opcode`, with the header length its size calls for. */
function frame(opcode: number, payload: Buffer, options: { fin?: boolean; masked?: boolean; rsv?: number; length?: bigint } = {}): Buffer {
  const { fin = true, masked = true, rsv = 0 } = options;
  const n = payload.length;
  const b0 = (fin ? 0x80 : 0) | rsv | opcode;
  const m = masked ? 0x80 : 0;
  let head: Buffer;
  if (options.length !== undefined || n >= 65536) {
    head = Buffer.from([b0, m | 127, 0, 0, 0, 0, 0, 0, 0, 0]);
    head.writeBigUInt64BE(options.length ?? BigInt(n), 2);
  } else if (n >= 126) {
    head = Buffer.from([b0, m | 126, 0, 0]);
    head.writeUInt16BE(n, 2);
  } else head = Buffer.from([b0, m | n]);
  if (!masked) return Buffer.concat([head, payload]);
  return Buffer.concat([head, MASK, Buffer.from(payload.map((b, i) => b ^ MASK[i % 4]!))]);
}

const text = (s: string) => frame(1, Buffer.from(s));
const close = (code: number, reason = '') => frame(8, Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]));

/** What an evicted flooder may still have in flight: every header length, control frames, a fragmented message, payloads ws would fail (not UTF-8, huge). */
const flood = Buffer.concat([
  ...Array.from({ length: 3 }, () => text('1')),
  text('x'.repeat(125)),
  frame(9, Buffer.from('ping')),
  text('y'.repeat(126)),
  frame(2, Buffer.alloc(70000, 7)),
  frame(1, Buffer.from('{"a":'), { fin: false }),
  frame(10, Buffer.alloc(0)),
  frame(0, Buffer.from('1}')),
  frame(1, Buffer.from([0xff, 0xfe])),
  frame(2, Buffer.alloc(0)),
]);

/** Where the first frame of `bytes` that is not to be skipped starts, and how many of its bytes decide that. */
const walks = {
  'a close frame': { tail: close(1000, 'bye'), decides: 2 },
  'an unmasked frame': { tail: frame(1, Buffer.from('1'), { masked: false }), decides: 2 },
  'RSV1 set': { tail: frame(1, Buffer.from('1'), { rsv: 0x40 }), decides: 2 },
  'an unknown opcode': { tail: frame(3, Buffer.from('1')), decides: 2 },
  'a fragmented ping': { tail: frame(9, Buffer.from('1'), { fin: false }), decides: 2 },
  'a ping over 125 bytes': { tail: frame(9, Buffer.alloc(126)), decides: 2 },
  'a 64-bit length over 2^53 - 1': { tail: frame(2, Buffer.alloc(0), { length: 2n ** 53n }), decides: 10 },
};

describe('FrameWalk (an evicted client read for its close frame only)', () => {
  it('skips every frame to skip and stops at the first that is not, whatever the chunks', () => {
    for (const [what, { tail, decides }] of Object.entries(walks)) {
      const stream = Buffer.concat([flood, tail, text('after')]);
      for (const size of [1, 2, 3, 5, 7, 13, 64, 1000, 65536, stream.length]) {
        const walk = new FrameWalk();
        let back: Buffer | undefined;
        let at = 0;
        for (; at < stream.length && back === undefined; at += size) back = walk.feed(stream.subarray(at, at + size));
        // Handed back: that frame's start up to the end of the chunk in which its header said enough.
        const end = Math.min(at, stream.length);
        assert.ok(end >= flood.length + decides && end - size < flood.length + decides, `${what}, chunks of ${size}: stopped in the chunk ending at ${end}`);
        assert.deepEqual(back, stream.subarray(flood.length, end), `${what}, chunks of ${size}`);
      }
    }
  });

  it('hands back nothing while every frame is one to skip', () => {
    const walk = new FrameWalk();
    for (let at = 0; at < flood.length; at += 7) assert.equal(walk.feed(flood.subarray(at, at + 7)), undefined);
    assert.deepEqual(walk.feed(close(1000)), close(1000));
  });
});

describe('hearOnlyCloseAnswer (over real sockets, with ws)', () => {
  let wss: Ws.WebSocketServer;
  let url: string;
  const accepted: { ws: WebSocket; socket: Socket }[] = [];
  const waiting: ((c: { ws: WebSocket; socket: Socket }) => void)[] = [];

  before(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await once(wss, 'listening');
    url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`;
    wss.on('connection', (ws, req) => {
      const c = { ws, socket: req.socket as Socket };
      const w = waiting.shift();
      if (w) w(c);
      else accepted.push(c);
    });
  });

  after(() => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });

  /** What the server's side of one connection saw. */
  interface Seen {
    client: RawWsClient;
    ws: WebSocket;
    /** 'message' and 'ping' events ws emitted after the take-over. */
    afterTakeOver: number;
    takenOver: boolean;
    /** Bytes the server's socket has read. */
    read: number;
    readTo(n: number): Promise<void>;
    closed: Promise<{ code: number; reason: string }>;
    errors: string[];
  }

  async function connection(): Promise<Seen> {
    const serverSide = new Promise<{ ws: WebSocket; socket: Socket }>((resolve) => {
      const c = accepted.shift();
      if (c) resolve(c);
      else waiting.push(resolve);
    });
    const client = await RawWsClient.connect(url);
    const { ws, socket } = await serverSide;
    const readers: (() => boolean)[] = [];
    const seen: Seen = {
      client,
      ws,
      afterTakeOver: 0,
      takenOver: false,
      read: 0,
      readTo: (n) =>
        seen.read >= n
          ? Promise.resolve()
          : new Promise<void>((resolve) =>
              readers.push(() => {
                if (seen.read < n) return false;
                resolve();
                return true;
              }),
            ),
      closed: new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() }))),
      errors: [],
    };
    socket.on('data', (chunk: Buffer) => {
      seen.read += chunk.length;
      for (let i = readers.length - 1; i >= 0; i--) if (readers[i]!()) readers.splice(i, 1);
    });
    const count = () => {
      if (seen.takenOver) seen.afterTakeOver++;
    };
    ws.on('message', count);
    ws.on('ping', count);
    ws.on('error', (err) => seen.errors.push(err.message));
    return seen;
  }

  /** The server closes with 1013 and, from then on, reads the client only for its close answer. */
  function evict(seen: Seen): void {
    seen.ws.close(1013, 'client too slow');
    seen.takenOver = true;
    assert.equal(hearOnlyCloseAnswer(seen.ws), true);
  }

  it('skips a flood sent after the close frame unparsed, and ends the connection on the close answer behind it', async () => {
    const seen = await connection();
    seen.ws.pause();
    const many = Buffer.concat(Array.from({ length: 20000 }, () => text('1')));
    seen.client.socket.write(Buffer.concat([many, flood]));
    evict(seen);
    seen.client.socket.write(Buffer.concat([flood, many, close(1000, 'bye'), text('after the close')]));
    assert.deepEqual(await seen.closed, { code: 1000, reason: 'bye' });
    assert.equal(seen.afterTakeOver, 0, 'ws emitted no message or ping after the take-over');
    assert.deepEqual(seen.errors, []);
    assert.deepEqual(await seen.client.waitCloseFrame(), { code: 1013, reason: 'client too slow' });
    await seen.client.waitEnd();
  });

  it('takes over wherever ws stood in a frame: mid-header of each length form, mid-mask, mid-payload, mid-close-frame', async () => {
    const firsts = {
      '64-bit': frame(2, Buffer.alloc(70000, 1)),
      '16-bit': text('z'.repeat(300)),
      '7-bit': text('z'.repeat(20)),
      close: close(1001, 'going'),
    };
    for (const [form, first] of Object.entries(firsts)) {
      for (const cut of [1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 300].filter((n) => n < first.length)) {
        const seen = await connection();
        seen.client.socket.write(first.subarray(0, cut));
        await seen.readTo(cut);
        evict(seen);
        const answer = form === 'close' ? { code: 1001, reason: 'going' } : { code: 1000, reason: 'bye' };
        seen.client.socket.write(Buffer.concat([first.subarray(cut), text('1'), frame(9, Buffer.alloc(0)), close(1000, 'bye')]));
        assert.deepEqual(await seen.closed, answer, `${form}, cut after ${cut} bytes`);
        assert.equal(seen.afterTakeOver, 0, `${form}, cut after ${cut} bytes`);
        await seen.client.waitEnd();
      }
    }
  });

  it('hears a close frame inside a fragmented message ws had begun before the take-over', async () => {
    const start = frame(1, Buffer.from('{"a":'), { fin: false });
    const seen = await connection();
    seen.client.socket.write(start);
    await seen.readTo(start.length);
    evict(seen);
    // Control frames may come between fragments (RFC 6455 §5.4): a ping, then the close frame.
    seen.client.socket.write(Buffer.concat([frame(0, Buffer.from('1'), { fin: false }), frame(9, Buffer.alloc(0)), close(1000, 'bye'), frame(0, Buffer.from('}'))]));
    assert.deepEqual(await seen.closed, { code: 1000, reason: 'bye' });
    assert.equal(seen.afterTakeOver, 0);
    assert.deepEqual(seen.errors, []);
    await seen.client.waitEnd();
  });

  it('reads a close frame or a long header cut between two reads after the take-over', async () => {
    const before = Buffer.concat([text('1'), frame(2, Buffer.alloc(70000, 2))]);
    const rest = Buffer.concat([frame(2, Buffer.alloc(70000, 3)), close(3000, 'cut')]);
    const stream = Buffer.concat([before, rest]);
    for (const cut of [1, 2, 5, 9, 10, 11, 13, 14, before.length - 1, before.length + 1, before.length + 9, stream.length - 10, stream.length - 7, stream.length - 1]) {
      const seen = await connection();
      evict(seen);
      seen.client.socket.write(stream.subarray(0, cut));
      await seen.readTo(cut);
      seen.client.socket.write(stream.subarray(cut));
      assert.deepEqual(await seen.closed, { code: 3000, reason: 'cut' }, `cut after ${cut} bytes`);
      assert.equal(seen.afterTakeOver, 0);
      await seen.client.waitEnd();
    }
  });

  it('ends the connection at once on a frame that breaks the protocol, as ws fails it', async () => {
    const broken = {
      'MASK must be set': frame(1, Buffer.from('1'), { masked: false }),
      'invalid opcode 3': frame(3, Buffer.from('1')),
      'invalid payload length 1': frame(8, Buffer.from([3])),
      'invalid status code 1005': close(1005),
      'invalid UTF-8 sequence': frame(8, Buffer.from([0x03, 0xe8, 0xff])),
    };
    for (const [message, bad] of Object.entries(broken)) {
      const seen = await connection();
      evict(seen);
      seen.client.socket.write(Buffer.concat([flood, bad, close(1000)]));
      // No close answer was heard: ws reports 1006, and the connection ends (its FIN, the client's).
      assert.equal((await seen.closed).code, 1006, message);
      assert.equal(seen.afterTakeOver, 0, message);
      assert.equal(seen.errors.length, 1, message);
      assert.match(seen.errors[0]!, new RegExp(message), message);
      await seen.client.waitEnd();
    }
  });

  it('leaves ws to parse as before where its internals are not as known: a Receiver field renamed or retyped, its data listener renamed', async () => {
    type Internals = { _receiver: Record<string, unknown>; _socket: Socket };
    const changes: Record<string, (i: Internals) => () => void> = {
      '_buffers renamed': (i) => rename(i._receiver, '_buffers', '_chunks'),
      '_state a string': (i) => retype(i._receiver, '_state', (v) => String(v)),
      '_payloadLength renamed': (i) => rename(i._receiver, '_payloadLength', '_length'),
      '_bufferedBytes not what it holds': (i) => retype(i._receiver, '_bufferedBytes', (v) => (v as number) + 1),
      'socketOnData renamed': (i) => {
        const l = i._socket.listeners('data').find((f) => f.name === 'socketOnData')!;
        Object.defineProperty(l, 'name', { value: 'onSocketData', configurable: true });
        return () => Object.defineProperty(l, 'name', { value: 'socketOnData', configurable: true });
      },
    };
    for (const [what, change] of Object.entries(changes)) {
      const seen = await connection();
      // ws mid-payload, its mask read: every field is one the take-over would rebuild from.
      const first = text('z'.repeat(300));
      seen.client.socket.write(first.subarray(0, 20));
      await seen.readTo(20);
      const internals = seen.ws as unknown as Internals;
      const listeners = internals._socket.listeners('data');
      const restore = change(internals);
      seen.ws.close(1013, 'client too slow');
      assert.equal(hearOnlyCloseAnswer(seen.ws), false, what);
      restore();
      assert.deepEqual(internals._socket.listeners('data'), listeners, `${what}: the socket's listeners unchanged`);
      assert.equal(internals._receiver._state, 4, `${what}: ws still mid-payload`);
      // closeClient's fallback: ws resumed, parsing the rest and the close answer itself.
      seen.ws.resume();
      seen.client.socket.write(Buffer.concat([first.subarray(20), close(1000, 'bye')]));
      assert.deepEqual(await seen.closed, { code: 1000, reason: 'bye' }, what);
      await seen.client.waitEnd();
    }
  });

  it('leaves ws to parse as before where called inside its parse loop (a message listener)', async () => {
    const seen = await connection();
    let took: boolean | undefined;
    seen.ws.once('message', () => {
      seen.ws.close(1013, 'client too slow');
      took = hearOnlyCloseAnswer(seen.ws);
      seen.ws.resume();
    });
    seen.client.socket.write(Buffer.concat([text('hello'), text('x'.repeat(40)), frame(9, Buffer.from('ping')), close(1000, 'bye')]));
    assert.deepEqual(await seen.closed, { code: 1000, reason: 'bye' });
    assert.equal(took, false);
    assert.deepEqual(seen.errors, []);
    await seen.client.waitEnd();
  });

  it('leaves ws as it is where it has read a close frame already', async () => {
    const seen = await connection();
    seen.client.socket.write(close(1000));
    await seen.readTo(8);
    assert.equal(seen.ws.readyState, 2);
    assert.equal(hearOnlyCloseAnswer(seen.ws), false);
    assert.deepEqual(await seen.closed, { code: 1000, reason: '' });
  });
});

/** Moves `obj[from]` to `obj[to]`; returns the undoing. */
function rename(obj: Record<string, unknown>, from: string, to: string): () => void {
  obj[to] = obj[from];
  delete obj[from];
  return () => {
    obj[from] = obj[to];
    delete obj[to];
  };
}

/** Replaces `obj[key]` by `f` of it; returns the undoing. */
function retype(obj: Record<string, unknown>, key: string, f: (v: unknown) => unknown): () => void {
  const was = obj[key];
  obj[key] = f(was);
  return () => {
    obj[key] = was;
  };
}
