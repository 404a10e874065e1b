/**
 * A lean WebSocket subscriber for fan-out load: the RFC 6455 handshake through node:http, then it
 * only walks frame headers to count frames. The `ws` library's receiving side (a Writable stream,
 * a Buffer and an event per frame) costs about as much per frame as a server's sending side, so
 * 500 `ws` clients in one process measure the load generator, not the server; this one costs a
 * fraction of that, which leaves the server as the bottleneck on a 2-core machine.
 */
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import type { Socket } from 'node:net';

export interface Subscriber {
  /** Server-to-client frames seen so far. */
  frames: number;
  closed: boolean;
  close(): void;
}

/**
 * Connects to `url` (ws://host:port/path). `onFrame` is called per frame with the number of frames
 * seen; `onPayload`, when given, with each complete text payload (costs a copy; use on one client).
 */
export function subscribe(url: string, onFrame: () => void, onPayload?: (text: string) => void, onClose?: () => void): Promise<Subscriber> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({
      host: u.hostname,
      port: Number(u.port),
      path: u.pathname + u.search,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64') },
    });
    req.on('response', (res) => reject(new Error(`handshake refused: ${res.statusCode}`)));
    req.on('error', reject);
    req.on('upgrade', (_res, socket: Socket, head: Buffer) => {
      socket.setNoDelay(true);
      const sub: Subscriber = { frames: 0, closed: false, close: () => socket.destroy() };
      const parser = new FrameWalker(
        () => {
          sub.frames++;
          onFrame();
        },
        onPayload,
        // Answered as browsers and ws do: the gateway disconnects clients that do not (pingIntervalMs).
        (payload) => socket.write(pong(payload)),
      );
      socket.on('data', (chunk: Buffer) => parser.push(chunk));
      socket.on('close', () => {
        sub.closed = true;
        onClose?.();
      });
      socket.on('error', () => undefined);
      if (head.length > 0) parser.push(head);
      resolve(sub);
    });
    req.end();
  });
}

/** A masked pong echoing a ping's payload (at most 125 bytes), as a client sends it (RFC 6455 §5.5.3). */
function pong(payload: Buffer): Buffer {
  const mask = randomBytes(4);
  return Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!))]);
}

/** Walks unmasked server frames across chunk boundaries: header, then skip (or collect) the payload. */
class FrameWalker {
  /** Payload bytes still to skip from the current frame. */
  private remaining = 0;
  private header: Buffer = Buffer.alloc(0);
  private payload: Buffer[] = [];
  /** Whether the current frame carries data (text or binary), as opposed to ping, pong or close. */
  private data = false;
  private ping = false;

  constructor(
    private readonly onFrame: () => void,
    private readonly onPayload?: (text: string) => void,
    private readonly onPing?: (payload: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, chunk.length - i);
        if (this.onPayload || this.ping) this.payload.push(chunk.subarray(i, i + take));
        this.remaining -= take;
        i += take;
        if (this.remaining === 0) this.complete();
        continue;
      }
      // Collect a whole header (2, 4 or 10 bytes) before reading the length.
      const h = this.header.length > 0 ? Buffer.concat([this.header, chunk.subarray(i)]) : chunk.subarray(i);
      const consumedBefore = this.header.length;
      if (h.length < 2) return this.keep(h);
      const len7 = h[1]! & 0x7f;
      const size = len7 === 126 ? 4 : len7 === 127 ? 10 : 2;
      if (h.length < size) return this.keep(h);
      const length = len7 === 126 ? h.readUInt16BE(2) : len7 === 127 ? Number(h.readBigUInt64BE(2)) : len7;
      this.header = Buffer.alloc(0);
      const opcode = h[0]! & 0x0f;
      this.data = opcode === 1 || opcode === 2;
      this.ping = opcode === 9;
      i += size - consumedBefore;
      this.remaining = length;
      if (length === 0) this.complete();
    }
  }

  private keep(partial: Buffer): void {
    this.header = Buffer.from(partial);
  }

  private complete(): void {
    if (this.ping) this.onPing?.(Buffer.concat(this.payload));
    if (!this.data) {
      this.payload = [];
      return;
    }
    this.onFrame();
    if (this.onPayload) {
      this.onPayload(Buffer.concat(this.payload).toString('utf8'));
      this.payload = [];
    }
  }
}
