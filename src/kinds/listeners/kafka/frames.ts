/**
 * Splits a Kafka byte stream into size-prefixed frames without copying more than it must: a frame
 * that arrived in one chunk is a view of it; only frames spread over chunks are concatenated, once.
 * A frame may instead be streamed (`stream` returned from onStart): its bytes are handed on as they
 * arrive, which keeps large opaque responses (Fetch) from being held whole in memory.
 */
export interface FrameHandler {
  /**
   * A frame of `size` bytes begins; `head` holds its first bytes (without the size prefix): at
   * least 8 (fewer if the frame is shorter), and as many more of the frame as arrived with them.
   * Return 'buffer' to get it whole in onFrame, 'stream' to get its bytes (size prefix included)
   * in onChunk as they come.
   */
  onStart(size: number, head: Buffer): 'buffer' | 'stream';
  /** A whole frame: its body (without the size prefix), and the frame as it came (with it). */
  onFrame(body: Buffer, frame: Buffer): void;
  onChunk(bytes: Buffer, last: boolean): void;
}

export class FrameTooLarge extends Error {}

export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Body size of the frame being read, or -1 between frames. */
  private size = -1;
  private streaming = false;
  /** Bytes of the streamed frame still to come. */
  private left = 0;

  constructor(
    private readonly handler: FrameHandler,
    private readonly maxFrameBytes: number,
  ) {}

  /** Throws FrameTooLarge for a size prefix that is negative or over the limit. */
  push(chunk: Buffer): void {
    if (this.streaming) chunk = this.streamOn(chunk);
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.size < 0) {
        // Wait for the size and the first 8 bytes of the header (correlation id or api key,
        // version and correlation id), or for the whole frame if it is shorter.
        if (this.buffered < 4) return;
        const size = this.peekInt32();
        if (size < 0 || size > this.maxFrameBytes) throw new FrameTooLarge(`frame of ${size} bytes (limit ${this.maxFrameBytes})`);
        if (this.buffered < 4 + Math.min(size, 8)) return;
        const head = this.peek(4 + Math.min(size, 8)).subarray(4, 4 + size);
        this.size = size;
        if (this.handler.onStart(size, head) === 'stream') {
          this.streaming = true;
          this.left = 4 + size;
          const held = this.take(this.buffered);
          const rest = this.streamOn(held);
          if (rest.length === 0) return;
          this.chunks.push(rest);
          this.buffered = rest.length;
          continue;
        }
      }
      if (this.buffered < 4 + this.size) return;
      const whole = this.take(4 + this.size);
      this.size = -1;
      this.handler.onFrame(whole.subarray(4), whole);
    }
  }

  /** Hands on what belongs to the streamed frame; returns what follows it. */
  private streamOn(chunk: Buffer): Buffer {
    const n = Math.min(this.left, chunk.length);
    this.left -= n;
    const last = this.left === 0;
    if (last) {
      this.streaming = false;
      this.size = -1;
    }
    if (n > 0) this.handler.onChunk(n === chunk.length ? chunk : chunk.subarray(0, n), last);
    return chunk.subarray(n);
  }

  private peekInt32(): number {
    return this.peek(4).readInt32BE(0);
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const all = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [all];
    return all;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks, this.buffered);
      out = all.subarray(0, n);
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
