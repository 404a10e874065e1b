/**
 * Write coalescing for broadcasts to many clients of a path (websocket forwards, event streams).
 * Every message for a path is framed once; the frames queued for a path during one event-loop
 * turn are joined into one buffer at the end of the turn (setImmediate), and that one buffer goes
 * to each client with one write. A broadcast of k messages to n clients so costs n writes instead
 * of k × n, and nothing is allocated per client per message. Under load more messages arrive per
 * turn, so the batches grow exactly when the syscalls would otherwise dominate; at low rates a
 * batch is one frame, written a turn later.
 */

/** What the batch keeps on each client of the path. */
export interface BatchClient {
  /** Frames of the pending batch this client does not get (queued before it joined, or already written to it). */
  batchSkip: number;
  /** The batch generation batchSkip refers to. */
  batchEpoch: number;
}

/**
 * How the joined frames reach one client: `bytes` are the frames `from` onwards of this turn's,
 * whose items (what each frame was queued with) are `items[from..]`.
 */
export type BatchWriter<C, I> = (client: C, bytes: Buffer, items: readonly I[], from: number) => void;

export class PathBatch<C extends BatchClient, I = undefined> {
  private frames: Buffer[] = [];
  private items: I[] = [];
  private bytes = 0;
  private epoch = 0;
  private scheduled = false;

  /**
   * `clients()` gives the path's clients when the batch is written. The send bound is the
   * listener's business, checked when a frame is queued (on what the client's socket holds from
   * earlier turns): a client over it has left the path by the time the batch is written.
   */
  constructor(
    private readonly clients: () => Iterable<C>,
    private readonly writeTo: BatchWriter<C, I>,
  ) {}

  get pending(): number {
    return this.frames.length;
  }

  /** Queues a frame (and what the writer may need besides its bytes) for every client of the path. */
  queue(frame: Buffer, item: I): void {
    this.frames.push(frame);
    this.items.push(item);
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
    this.writeTo(client, skip === 0 ? this.joinedBuffer() : Buffer.concat(this.frames.slice(skip)), this.items, skip);
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
        this.writeTo(client, all, this.items, 0);
        continue;
      }
      offsets ??= this.offsets();
      this.writeTo(client, all.subarray(offsets[skip]), this.items, skip);
    }
    this.frames = [];
    this.items = [];
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
}
