/**
 * Write coalescing for websocket forward targets. Every message for a path is framed once; the
 * frames queued for a path during one event-loop turn are joined into one buffer at the end of
 * the turn (setImmediate), and that one buffer goes to each client with one write. A broadcast of
 * k messages to n clients so costs n writes instead of k × n, and nothing is allocated per client
 * per message. Under load more messages arrive per turn, so the batches grow exactly when the
 * syscalls would otherwise dominate; at low rates a batch is one frame, written a turn later.
 */
import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';

/** What the batch needs of a connected client. */
export interface BatchClient {
  ws: WebSocket;
  /** Frames of the pending batch this client does not get (queued before it joined, or already written to it). */
  batchSkip: number;
  /** The batch generation batchSkip refers to. */
  batchEpoch: number;
}

export class PathBatch<C extends BatchClient> {
  private frames: Buffer[] = [];
  private payloads: Buffer[] = [];
  private bytes = 0;
  private epoch = 0;
  private scheduled = false;

  /**
   * `clients()` gives the path's clients when the batch is written. The send bound is the
   * listener's business, checked when a frame is queued (counting pendingBytes()): a client over
   * it has left the path by the time the batch is written.
   */
  constructor(private readonly clients: () => Iterable<C>) {}

  get pending(): number {
    return this.frames.length;
  }

  /** Bytes queued for `client` in this turn, not yet written to it. */
  pendingBytes(client: C): number {
    const skip = this.skip(client);
    if (skip === 0) return this.bytes;
    let bytes = 0;
    for (let i = skip; i < this.frames.length; i++) bytes += this.frames[i]!.length;
    return bytes;
  }

  /** Queues a frame (and its payload, for clients that cannot take prepared bytes) for every client of the path. */
  queue(frame: Buffer, payload: Buffer): void {
    this.frames.push(frame);
    this.payloads.push(payload);
    this.bytes += frame.length;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** A client that joins mid-turn gets only what is queued from now on, as it would have without batching. */
  joined(client: C): void {
    client.batchEpoch = this.epoch;
    client.batchSkip = this.frames.length;
  }

  /**
   * Writes what is pending for one client now: before anything else is sent to it (an ack, an
   * error frame, a close frame), so it keeps the order in which it was produced.
   */
  flushClient(client: C): void {
    const skip = this.skip(client);
    if (skip >= this.frames.length) return;
    this.write(client, skip, skip === 0 ? this.joinedBuffer() : Buffer.concat(this.frames.slice(skip)));
    client.batchEpoch = this.epoch;
    client.batchSkip = this.frames.length;
  }

  /** Writes the turn's frames to every client of the path, one write each. */
  flush(): void {
    this.scheduled = false;
    if (this.frames.length === 0) return;
    const all = this.joinedBuffer();
    let offsets: number[] | undefined;
    for (const client of this.clients()) {
      const skip = this.skip(client);
      if (skip >= this.frames.length) continue;
      if (skip === 0) {
        this.write(client, 0, all);
        continue;
      }
      offsets ??= this.offsets();
      this.write(client, skip, all.subarray(offsets[skip]));
    }
    this.frames = [];
    this.payloads = [];
    this.bytes = 0;
    this.epoch++;
  }

  private skip(client: C): number {
    return client.batchEpoch === this.epoch ? client.batchSkip : 0;
  }

  private joinedBuffer(): Buffer {
    return this.frames.length === 1 ? this.frames[0]! : Buffer.concat(this.frames, this.bytes);
  }

  private offsets(): number[] {
    const out = [0];
    for (const f of this.frames) out.push(out[out.length - 1]! + f.length);
    return out;
  }

  private write(client: C, from: number, bytes: Buffer): void {
    const ws = client.ws;
    if (ws.readyState !== 1) return;
    if (canWriteRaw(ws)) (ws as unknown as WsInternals)._socket!.write(bytes);
    else for (let i = from; i < this.payloads.length; i++) ws.send(this.payloads[i]!, { binary: false });
  }
}

/** The parts of a ws connection that canWriteRaw relies on (see there). */
interface WsInternals {
  _socket?: Duplex & { writable: boolean };
  _sender?: { _state: number; _queue: unknown[] };
}

/**
 * Whether prepared frames may be written straight to the client's socket: exactly what ws's
 * Sender#sendFrame does when its queue is empty — which holds because permessage-deflate is off
 * here, so the sender only queues while it reads a Blob, and nothing sends Blobs. Anything else
 * (no socket, a queued sender) goes through ws.send() as usual. ws.bufferedAmount counts these
 * bytes, so the slow-client bound still applies. These are ws internals, so package.json pins ws
 * to one minor version; the websocket tests cover this path.
 */
function canWriteRaw(ws: WebSocket): boolean {
  const internals = ws as unknown as WsInternals;
  const sender = internals._sender;
  return internals._socket?.writable === true && sender !== undefined && sender._state === 0 && sender._queue.length === 0;
}
