import { once } from 'node:events';
import { createRequire } from 'node:module';
import type WsModule from 'ws';
import { fetch, type ReplyHeaders } from './http.js';

// ws is CommonJS: required, its files load as they are; imported, Node runs each through its
// CommonJS export scanner first (~50 ms of CPU of each of the ~80 test files that use this module).
const WebSocket = createRequire(import.meta.url)('ws') as typeof WsModule;

export interface HttpReply {
  status: number;
  headers: ReplyHeaders;
  body: any;
  text: string;
}

/** POSTs JSON (or a raw string with its own content type) and parses the JSON reply. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpReply> {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(url, { method: 'POST', body: raw, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  let parsed: any;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** A WebSocket client that queues what it receives, so tests can await frames in order. */
export class WsClient {
  readonly frames: string[] = [];
  private waiting: ((f: string) => void)[] = [];
  closed: { code: number; reason: string } | undefined;
  private closeWaiters: ((c: { code: number; reason: string }) => void)[] = [];

  private constructor(readonly ws: WsModule) {
    ws.on('message', (data) => {
      const f = data.toString();
      const w = this.waiting.shift();
      if (w) w(f);
      else this.frames.push(f);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.closeWaiters.splice(0)) w(this.closed);
    });
  }

  static async connect(url: string, options: WsModule.ClientOptions = {}): Promise<WsClient> {
    const ws = new WebSocket(url, options);
    const client = new WsClient(ws);
    await Promise.race([
      once(ws, 'open'),
      once(ws, 'unexpected-response').then(([, res]) => {
        const { statusCode, headers } = res as { statusCode: number; headers: Record<string, string | string[] | undefined> };
        throw Object.assign(new Error(`handshake refused: ${statusCode}`), { statusCode, headers });
      }),
      once(ws, 'error').then(([err]) => {
        throw err;
      }),
    ]);
    return client;
  }

  send(value: unknown): void {
    this.ws.send(typeof value === 'string' ? value : JSON.stringify(value));
  }

  /** The next frame, parsed as JSON; rejects after `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<any> {
    return JSON.parse(await this.nextText(timeoutMs));
  }

  nextText(timeoutMs = 5000): Promise<string> {
    const queued = this.frames.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(w), 1);
        reject(new Error('timed out waiting for a frame'));
      }, timeoutMs);
      const w = (f: string) => {
        clearTimeout(timer);
        resolve(f);
      };
      this.waiting.push(w);
    });
  }

  waitClose(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for close')), timeoutMs);
      this.closeWaiters.push((c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * A WebSocket client on a raw TCP socket, for what a library client hides: one that stops
 * reading (a slow consumer), and the exact frames the server sends, close code included.
 */
export class RawWsClient {
  private buffer = Buffer.alloc(0);
  /** The text frames received, decoded; after `drain()` no more are kept (`textFrames` counts them). */
  readonly texts: string[] = [];
  /** Text frames received, kept or skipped. */
  textFrames = 0;
  /** Set by `drain()`: text and binary frames are skipped unread. */
  private skimming = false;
  /** Bytes of the payload being skipped that are still to come. */
  private skipping = 0;
  close: { code: number; reason: string } | undefined;
  /** Bytes received so far (frames and headers). */
  received = 0;
  /** Pings received (this client never answers them). */
  pings = 0;
  /** How many text frames had arrived when the close frame did (what follows a close frame is not for the application). */
  textsBeforeClose: number | undefined;
  /** The socket's error, once it had one (ECONNRESET: the server reset the connection). */
  error: Error | undefined;
  private readonly ended: Promise<void>;
  private closeWaiters: ((c: { code: number; reason: string }) => void)[] = [];

  private constructor(readonly socket: import('node:net').Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received += chunk.length;
      if (this.skimming) return this.skim(chunk);
      this.buffer = Buffer.concat([this.buffer, chunk]);
      this.parse();
    });
    this.ended = new Promise((resolve) => socket.once('close', () => resolve()));
    // A reset is how a server ends a connection it stopped reading (the data left unread makes the
    // kernel send RST, not FIN): the gateway cuts so an evicted client that did not answer its close
    // frame within the grace. It ends the connection ('close' follows); unheard, it was thrown as
    // an uncaught ECONNRESET into whichever test was running.
    socket.on('error', (err) => (this.error = err));
  }

  /** Opens the connection and completes the handshake; rejects with the status if it is refused. */
  static async connect(url: string, headers: Record<string, string> = {}): Promise<RawWsClient> {
    const { connect } = await import('node:net');
    const u = new URL(url);
    const socket = connect(Number(u.port), u.hostname);
    await once(socket, 'connect');
    socket.write(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${Buffer.from('eventgate-tests!').toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
        Object.entries(headers)
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join('') +
        '\r\n',
    );
    let head = Buffer.alloc(0);
    while (!head.includes('\r\n\r\n')) {
      const [chunk] = (await once(socket, 'data')) as [Buffer];
      head = Buffer.concat([head, chunk]);
    }
    const end = head.indexOf('\r\n\r\n') + 4;
    const status = Number(/^HTTP\/1\.1 (\d+)/.exec(head.toString('latin1'))?.[1]);
    if (status !== 101) {
      socket.destroy();
      throw Object.assign(new Error(`handshake refused: ${status}`), { statusCode: status });
    }
    const client = new RawWsClient(socket);
    const rest = head.subarray(end);
    if (rest.length > 0) socket.emit('data', rest);
    return client;
  }

  /** A masked text frame carrying `text`, as a client sends it (RFC 6455 §5.2); short payloads only. */
  static textFrame(text: string): Buffer {
    const payload = Buffer.from(text);
    if (payload.length > 125) throw new Error('textFrame: payloads up to 125 bytes');
    const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
    return Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]);
  }

  /** A masked close frame with `code`, as a client sends it to end the connection (RFC 6455 §5.5.1). */
  static closeFrame(code = 1000): Buffer {
    const payload = Buffer.alloc(2);
    payload.writeUInt16BE(code);
    const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
    return Buffer.concat([Buffer.from([0x88, 0x82]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]);
  }

  /**
   * Writes `chunk` (client frames) over and over, honouring TCP backpressure, until `stop()` is
   * true or the server ends the connection. Returns how many chunks were written.
   */
  async flood(chunk: Buffer, stop: () => boolean): Promise<number> {
    let written = 0;
    let ended = false;
    void this.ended.then(() => (ended = true));
    while (!stop() && !ended && !this.socket.destroyed) {
      written++;
      if (!this.socket.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            this.socket.off('drain', done);
            this.socket.off('close', done);
            resolve();
          };
          const timer = setTimeout(done, 200);
          this.socket.once('drain', done);
          this.socket.once('close', done);
        });
      }
    }
    return written;
  }

  /** Stop reading: the kernel buffers fill up and the server sees a slow client. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /**
   * Resumes reading as fast as a client can: from now on text and binary frames are counted
   * (`textFrames`) and skipped, their payloads neither copied nor decoded, while pings and the
   * close frame are read as before. For a client that let megabytes of small frames pile up and
   * must reach the close frame behind them within a server's grace on a starved machine: decoding
   * each of ~100,000 acks into `texts` took seconds there.
   */
  drain(): void {
    this.skimming = true;
    // What the last chunks left unparsed (the start of a frame) is where skimming begins.
    const rest = this.buffer;
    this.buffer = Buffer.alloc(0);
    if (rest.length > 0) this.skim(rest);
    this.socket.resume();
  }

  /**
   * Resolves with the close frame's code and reason once it has arrived; rejects at `timeoutMs`, or
   * as soon as the connection ends without one (a server that cut it), saying which.
   */
  waitCloseFrame(timeoutMs = 10000): Promise<{ code: number; reason: string }> {
    if (this.close) return Promise.resolve(this.close);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for a close frame (${this.received} bytes read, the connection open)`)), timeoutMs);
      this.closeWaiters.push((c) => {
        clearTimeout(timer);
        resolve(c);
      });
      void this.ended.then(() => {
        clearTimeout(timer);
        // Every byte read before the close was parsed: a close frame among them has resolved this.
        if (!this.close) reject(new Error(`the connection ended without a close frame (${this.received} bytes read${this.error ? `; ${this.error.message}` : ''})`));
      });
    });
  }

  /** Resolves when the TCP connection is gone. */
  waitEnd(timeoutMs = 10000): Promise<void> {
    return Promise.race([this.ended, new Promise<void>((_, reject) => setTimeout(() => reject(new Error('timed out waiting for the connection to end')), timeoutMs).unref())]);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private parse(): void {
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const opcode = b[0]! & 0x0f;
      let len = b[1]! & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      if (b.length < offset + len) return;
      const payload = b.subarray(offset, offset + len);
      this.buffer = b.subarray(offset + len);
      if (opcode === 1) {
        this.texts.push(payload.toString('utf8'));
        this.textFrames++;
      } else this.control(opcode, payload);
    }
  }

  /** A ping or the close frame (other opcodes are not counted). */
  private control(opcode: number, payload: Buffer): void {
    if (opcode === 9) this.pings++;
    else if (opcode === 8) {
      this.close = { code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString('utf8') };
      this.textsBeforeClose ??= this.textFrames;
      for (const w of this.closeWaiters.splice(0)) w(this.close);
    }
  }

  /**
   * `parse()` after `drain()`: walks the frame headers of `chunk` in place, skipping data payloads
   * (across chunks: `skipping`); only a header or control frame cut by the chunk's end is kept.
   */
  private skim(chunk: Buffer): void {
    let i = Math.min(this.skipping, chunk.length);
    this.skipping -= i;
    let b = chunk;
    if (this.buffer.length > 0) {
      // A header or control frame begun in the last chunk (at most 14 + 125 bytes).
      b = Buffer.concat([this.buffer, chunk.subarray(i)]);
      i = 0;
    }
    while (b.length - i >= 2) {
      const opcode = b[i]! & 0x0f;
      let len = b[i + 1]! & 0x7f;
      let offset = i + 2;
      if (len === 126) {
        if (b.length - i < 4) break;
        len = b.readUInt16BE(i + 2);
        offset = i + 4;
      } else if (len === 127) {
        if (b.length - i < 10) break;
        len = Number(b.readBigUInt64BE(i + 2));
        offset = i + 10;
      }
      if (opcode < 8) {
        if (opcode === 1) this.textFrames++;
        const end = offset + len;
        if (end > b.length) {
          this.skipping = end - b.length;
          i = b.length;
          break;
        }
        i = end;
      } else {
        if (b.length < offset + len) break;
        this.control(opcode, b.subarray(offset, offset + len));
        i = offset + len;
      }
    }
    // A copy: a view would hold the whole chunk.
    this.buffer = i < b.length ? Buffer.from(b.subarray(i)) : Buffer.alloc(0);
  }
}
