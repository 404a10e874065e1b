/**
 * Pacing of what goes to one client of a broadcast (event streams, websocket forwards): a buffer
 * larger than a slice is handed to the client's stream a slice at a time, the next once it took the last
 * ('drain'); the rest waits here as views of the same buffer. A turn's batch (write-batch.ts) is one
 * buffer shared by every client of the path, and stays shared only as long as no stream holds a
 * copy of it: a TLS socket encrypts at once everything it is handed, so writing a 4 MB batch whole
 * to 40 TLS clients that do not read held 40 encrypted copies (+177 MB). Paced, a client costs at
 * most about a slice beyond what it has read. The send bound counts what waits here as unsent.
 */

/** The most handed to a client's stream at once, beyond what it has taken. */
export const SLICE_BYTES = 64 * 1024;

/** The part of a Writable (a socket, a ServerResponse) the pacing uses. */
export interface PacedStream {
  write(chunk: Buffer | string): boolean;
  end(): void;
  once(event: 'drain', listener: () => void): unknown;
  readonly writableLength: number;
  readonly destroyed: boolean;
  readonly writableEnded: boolean;
}

export class PacedWriter {
  private backlog: Buffer[] = [];
  private next = 0;
  private backlogBytes = 0;
  private waiting = false;

  /**
   * `cut(bytes, from)` says where the slice starting at `from` ends: at a boundary of the
   * protocol's messages, so each slice holds whole events (one HTTP chunk each, as proxies and
   * readers see them whole); by default every SLICE_BYTES.
   */
  constructor(
    private readonly out: PacedStream,
    private readonly cut: (bytes: Buffer, from: number) => number = (bytes, from) => Math.min(bytes.length, from + SLICE_BYTES),
  ) {}

  /** Bytes written and not yet read by the client: what its stream holds and what waits here. */
  get unsent(): number {
    return this.out.writableLength + this.backlogBytes;
  }

  /** Bytes written that wait here, not yet handed to the stream. */
  get held(): number {
    return this.backlogBytes;
  }

  /** Writes after everything written before. */
  write(data: Buffer | string): void {
    if (this.backlogBytes === 0 && (typeof data === 'string' || data.length <= SLICE_BYTES)) {
      this.out.write(data);
      return;
    }
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    for (let at = 0; at < bytes.length; ) {
      const end = Math.max(at + 1, this.cut(bytes, at));
      this.backlog.push(bytes.subarray(at, end));
      at = end;
    }
    this.backlogBytes += bytes.length;
    if (!this.waiting) this.pump();
  }

  /** Ends the stream after what was written (the rest is handed over at once: the stream is ending). */
  end(): void {
    this.handOver();
    this.out.end();
  }

  /** Hands the stream everything still waiting, at once: before what must follow it and does not go through here (a websocket close frame). */
  handOver(): void {
    if (!this.out.destroyed && !this.out.writableEnded) for (let i = this.next; i < this.backlog.length; i++) this.out.write(this.backlog[i]!);
    this.drop();
  }

  /** Forgets what waits (a client cut off: it will not get it). Whole frames or events only were handed over. */
  drop(): void {
    this.backlog = [];
    this.next = 0;
    this.backlogBytes = 0;
  }

  private readonly pump = (): void => {
    this.waiting = false;
    while (this.next < this.backlog.length) {
      if (this.out.destroyed || this.out.writableEnded) return this.drop();
      const slice = this.backlog[this.next++]!;
      this.backlogBytes -= slice.length;
      if (!this.out.write(slice)) {
        this.waiting = true;
        this.out.once('drain', this.pump);
        break;
      }
    }
    if (this.next === this.backlog.length) this.drop();
  };
}
