/**
 * Reading a client after its close frame only for its answer to it (RFC 6455 §7.1.1), below ws's
 * frame parser. The websocket listener reads an evicted client again once its close frame is out,
 * so that the client's answer ends the connection at once (a browser's `close` event) rather than at
 * the grace; but such a client is typically one that flooded frames without reading, and ws would
 * parse every frame it still has in flight (megabytes of 1-byte frames: hundreds of ms of the
 * gateway's CPU, on a starved machine the whole grace), only for them to be dropped. Here the socket's
 * bytes skip ws: frame headers are walked (FIN/opcode, the three length forms, the mask) and payloads
 * skipped without being copied or unmasked. At the first close frame, or a header that breaks the
 * protocol, the bytes from that frame on go back to ws's parser, which reads the close frame (or
 * fails on the header) and ends the connection exactly as it does for any client.
 *
 * What of ws's internals this relies on (its socket's 'data' listener, its Receiver's parse state)
 * is here alone; package.json pins ws to one minor version, and test/unit/ws-close-answer covers it.
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** The Receiver's states (ws/lib/receiver.js) this module reads; any other one it leaves alone. */
const GET_INFO = 0;
const GET_PAYLOAD_LENGTH_16 = 1;
const GET_PAYLOAD_LENGTH_64 = 2;
const GET_MASK = 3;
const GET_DATA = 4;
const CLOSING = 2;
/** The longest frame header: 2 bytes, a 64-bit length, a mask. */
const MAX_HEADER = 14;

/** The parts of ws's Receiver read here: where its parse of the current frame stands. */
interface ReceiverState {
  _state: number;
  _buffers: Buffer[];
  _bufferedBytes: number;
  _fin: boolean;
  _opcode: number;
  _masked: boolean;
  _payloadLength: number;
  _mask: Buffer | undefined;
}

interface WsInternals {
  _socket?: Duplex;
  _receiver?: ReceiverState;
}

type DataListener = (this: Duplex, chunk: Buffer) => void;

/**
 * From now on `ws`'s socket is read past its parser until its close frame (see above). False, and
 * nothing changed, where ws no longer parses this connection (it has read a close frame or failed
 * it) or is not as this module knows it: the caller then resumes ws as before.
 */
export function hearOnlyCloseAnswer(ws: WebSocket): boolean {
  const internals = ws as unknown as WsInternals;
  const socket = internals._socket;
  const receiver = knownReceiver(internals._receiver);
  if (ws.readyState !== CLOSING || socket === undefined || receiver === undefined) return false;
  const wsOnData = socket.listeners('data').find((l) => l.name === 'socketOnData') as DataListener | undefined;
  if (wsOnData === undefined || receiver._state > GET_DATA) return false;
  // ws waits for bytes, as between two reads; not so inside its own parse loop (a 'message' or
  // 'ping' listener), where the frame it stands on is taken off its buffers already.
  if (receiver._bufferedBytes >= bytesWanted(receiver)) return false;
  // What ws has read of the frame it was in: that frame's bytes as the client sent them (the mask
  // kept), so the walk starts at a frame's start and ws, handed bytes back, starts at one too.
  const started = [...consumedHeader(receiver), ...receiver._buffers];
  receiver._state = GET_INFO;
  receiver._opcode = 0;
  receiver._buffers = [];
  receiver._bufferedBytes = 0;
  const walk = new FrameWalk();
  const onData = (chunk: Buffer) => {
    const back = walk.feed(chunk);
    if (back === undefined) return;
    // Handed back as ws reads a chunk: its parser reads the close frame and what follows is ignored.
    socket.off('data', onData);
    socket.on('data', wsOnData);
    wsOnData.call(socket, back);
  };
  socket.off('data', wsOnData);
  socket.on('data', onData);
  if (started.length > 0) onData(Buffer.concat(started));
  ws.resume();
  if (socket.listeners('data').includes(onData)) socket.resume();
  return true;
}

/**
 * ws's Receiver where its fields are as this module reads them, else undefined: a ws whose Receiver
 * differs (fields renamed or retyped) is left to parse as before rather than have its state
 * rebuilt from undefined values (a TypeError in closeClient, or bytes skipped that ws must read).
 */
function knownReceiver(r: unknown): ReceiverState | undefined {
  if (typeof r !== 'object' || r === null) return undefined;
  const s = r as { [K in keyof ReceiverState]?: unknown };
  if (!Number.isInteger(s._state) || (s._state as number) < GET_INFO || !Number.isInteger(s._opcode) || !Number.isSafeInteger(s._payloadLength)) return undefined;
  if (typeof s._fin !== 'boolean' || typeof s._masked !== 'boolean' || !Array.isArray(s._buffers) || typeof s._bufferedBytes !== 'number') return undefined;
  // What it holds is what it counts, so the bytes handed to the walk are the ones it has not parsed.
  let held = 0;
  for (const b of s._buffers) {
    if (!Buffer.isBuffer(b)) return undefined;
    held += b.length;
  }
  if (held !== s._bufferedBytes) return undefined;
  if (s._state === GET_DATA && s._masked && !(Buffer.isBuffer(s._mask) && s._mask.length === 4)) return undefined;
  return r as ReceiverState;
}

/** How many bytes ws's Receiver needs buffered to take its next step (it holds fewer when at rest). */
function bytesWanted(r: ReceiverState): number {
  if (r._state === GET_PAYLOAD_LENGTH_64) return 8;
  if (r._state === GET_MASK) return 4;
  if (r._state === GET_DATA) return r._payloadLength;
  return 2;
}

/** The bytes of the current frame ws's Receiver has taken off its buffers (none at a frame's start). */
function consumedHeader(r: ReceiverState): Buffer[] {
  if (r._state === GET_INFO) return [];
  const b0 = (r._fin ? 0x80 : 0) | r._opcode;
  const mask = r._masked ? 0x80 : 0;
  if (r._state === GET_PAYLOAD_LENGTH_16) return [Buffer.from([b0, mask | 126])];
  if (r._state === GET_PAYLOAD_LENGTH_64) return [Buffer.from([b0, mask | 127])];
  // Reading the mask (GET_MASK) or the payload: the length is known.
  const head = [lengthHeader(b0, mask, r._payloadLength)];
  if (r._state === GET_DATA && r._masked && r._mask) head.push(r._mask);
  return head;
}

function lengthHeader(b0: number, mask: number, n: number): Buffer {
  if (n < 126) return Buffer.from([b0, mask | n]);
  if (n < 65536) {
    const h = Buffer.from([b0, mask | 126, 0, 0]);
    h.writeUInt16BE(n, 2);
    return h;
  }
  const h = Buffer.alloc(10);
  h[0] = b0;
  h[1] = mask | 127;
  h.writeBigUInt64BE(BigInt(n), 2);
  return h;
}

/**
 * Walks a client's frames across chunks. `feed` returns undefined while every frame is one to skip,
 * else the bytes from the start of the first frame that is not (a close frame, or a header ws would
 * fail the connection for) to the end of the chunk.
 */
export class FrameWalk {
  /** Payload bytes still to skip of the frame being walked. */
  private skip = 0;
  /** The start of a header cut by the last chunk's end (at most MAX_HEADER - 1 bytes). */
  private cut: Buffer | undefined;

  feed(chunk: Buffer): Buffer | undefined {
    let at = 0;
    if (this.skip > 0) {
      at = Math.min(this.skip, chunk.length);
      this.skip -= at;
    }
    if (this.cut !== undefined) {
      const cut = this.cut;
      const head = Buffer.concat([cut, chunk.subarray(at, at + MAX_HEADER - cut.length)]);
      const length = headerLength(head, 0);
      if (length === undefined) {
        this.cut = head;
        return undefined;
      }
      this.cut = undefined;
      if (length < 0) return Buffer.concat([cut, chunk.subarray(at)]);
      at += length - cut.length;
      this.skip = payloadLength(head, 0);
      const n = Math.min(this.skip, chunk.length - at);
      this.skip -= n;
      at += n;
    }
    while (at < chunk.length) {
      const length = headerLength(chunk, at);
      if (length === undefined) {
        this.cut = Buffer.from(chunk.subarray(at));
        return undefined;
      }
      if (length < 0) return chunk.subarray(at);
      const payload = payloadLength(chunk, at);
      const n = Math.min(payload, chunk.length - at - length);
      at += length + n;
      this.skip = payload - n;
    }
    return undefined;
  }
}

/**
 * The length of the header at `at` of a frame to skip; -1 for a close frame or a header that
 * breaks the protocol (ws's Receiver#getInfo and #getPayloadLength64 fail on these whatever came
 * before); undefined if the bytes end inside it.
 */
function headerLength(b: Buffer, at: number): number | undefined {
  if (b.length - at < 2) return undefined;
  const b0 = b[at]!;
  const b1 = b[at + 1]!;
  const opcode = b0 & 0x0f;
  const short = b1 & 0x7f;
  // RSV bits without an extension (none is negotiated), an unknown opcode, a client frame unmasked.
  if ((b0 & 0x70) !== 0 || (opcode > 2 && opcode < 8) || opcode > 10 || (b1 & 0x80) === 0) return -1;
  // The close frame, and control frames fragmented or over 125 bytes.
  if (opcode === 8 || (opcode > 8 && ((b0 & 0x80) === 0 || short > 125))) return -1;
  if (short === 127) {
    if (b.length - at < 10) return undefined;
    // A 64-bit length beyond 2^53 - 1, as ws.
    if (b.readUInt32BE(at + 2) > 0x1fffff) return -1;
  }
  const length = short === 126 ? 8 : short === 127 ? 14 : 6;
  return b.length - at < length ? undefined : length;
}

/** The payload length of the (complete, masked) header at `at`. */
function payloadLength(b: Buffer, at: number): number {
  const short = b[at + 1]! & 0x7f;
  if (short === 126) return b.readUInt16BE(at + 2);
  if (short === 127) return b.readUInt32BE(at + 2) * 2 ** 32 + b.readUInt32BE(at + 6);
  return short;
}
