/**
 * Frames the websocket listener writes itself (./websocket.ts): forwarded messages are framed once
 * and a turn's frames written to each client's socket in one write, straight past ws's Sender
 * when ws would write them as they are. What of ws's internals that relies on is here, in one
 * place (package.json pins ws to one minor version for it).
 */
import type { Duplex } from 'node:stream';
import type * as Ws from 'ws';
import type { WebSocket } from 'ws';
import { bundled } from '../../core/bundled.js';
import { PacedWriter, SLICE_BYTES } from './paced-write.js';

/** What writeFrames needs of a client: its connection, and the pacing of what it has not taken yet. */
export interface FramedClient {
  readonly ws: WebSocket;
  paced: PacedWriter | undefined;
}

/** ws's framing function (public in ws, absent from @types/ws). */
const { Sender } = bundled<typeof Ws>('ws') as unknown as { Sender: { frame(data: Buffer, options: { fin: boolean; opcode: number; mask: boolean; readOnly: boolean; rsv1: boolean }): Buffer[] } };

/** A complete unmasked text frame (header + payload), as a server sends it. */
export function textFrame(payload: Buffer): Buffer {
  return Buffer.concat(Sender.frame(payload, { fin: true, opcode: 0x01, mask: false, readOnly: false, rsv1: false }));
}

/**
 * Writes a turn's joined frames to a client: the prepared bytes straight to its socket when ws
 * would write them as they are, else each payload through ws.send().
 */
export function writeFrames(client: FramedClient, bytes: Buffer, payloads: readonly Buffer[], from: number): void {
  const ws = client.ws;
  if (ws.readyState !== 1) return;
  if (canWriteRaw(ws)) {
    // Paced, a slice of whole frames at a time (a wss socket encrypts what it is handed at once).
    const socket = (ws as unknown as WsInternals)._socket!;
    if (bytes.length <= SLICE_BYTES && !client.paced?.held) socket.write(bytes);
    else (client.paced ??= new PacedWriter(socket, framesEnd)).write(bytes);
    return;
  }
  client.paced?.handOver();
  for (let i = from; i < payloads.length; i++) ws.send(payloads[i]!, { binary: false });
}

/** Where a slice of prepared frames starting at `from` ends when paced: after the last whole frame within SLICE_BYTES, or after the one frame that is larger. */
function framesEnd(bytes: Buffer, from: number): number {
  let at = from;
  while (at < bytes.length) {
    // An unmasked frame: a 2-byte header whose 7-bit length may say 126 (16-bit length follows) or 127 (64-bit).
    const short = bytes[at + 1]! & 0x7f;
    const end = short === 126 ? at + 4 + bytes.readUInt16BE(at + 2) : short === 127 ? at + 10 + Number(bytes.readBigUInt64BE(at + 2)) : at + 2 + short;
    if (end - from > SLICE_BYTES && at > from) break;
    at = end;
  }
  return at;
}

/** The parts of a ws connection that canWriteRaw relies on (see there). */
interface WsInternals {
  _socket?: Duplex & { writable: boolean };
  _sender?: { _state: number; _queue: unknown[] };
}

/**
 * Whether prepared frames may be written straight to the client's socket: exactly what ws's
 * Sender#sendFrame does when its queue is empty — which holds because permessage-deflate is off
 * (the listener's WebSocketServer has perMessageDeflate: false), so the sender only queues while it reads a Blob, and nothing sends Blobs. Anything else
 * (no socket, a queued sender) goes through ws.send() as usual. ws.bufferedAmount counts these
 * bytes, so the slow-client bound still applies. These are ws internals, so package.json pins ws
 * to one minor version; the websocket tests cover this path.
 */
export function canWriteRaw(ws: WebSocket): boolean {
  const internals = ws as unknown as WsInternals;
  const sender = internals._sender;
  return internals._socket?.writable === true && sender !== undefined && sender._state === 0 && sender._queue.length === 0;
}
