/**
 * Splits a Kafka byte stream into size-prefixed frames without copying more than it must: a frame
 * that arrived in one chunk is a view of it; only frames spread over chunks (or read from a socket
 * that reuses one buffer for its reads) are copied, once, into a buffer of their size. A frame may instead be streamed (`stream` returned from onStart): its bytes are handed on as they
 * arrive, which keeps large opaque responses (Fetch) from being held whole in memory.
 */
export interface FrameHandler {
  /**
   * A frame of `size` bytes begins; `head` holds its first bytes (without the size prefix): at
   * least 8 (fewer if the frame is shorter), and as many more of the frame as arrived with them
   * (up to 512 when its first bytes came in an earlier chunk). A view: not to be kept.
   * Return 'buffer' to get it whole in onFrame, 'stream' to get its bytes (size prefix included)
   * in onChunk as they come.
   */
  onStart(size: number, head: Buffer): 'buffer' | 'stream';
  /** A whole frame: its body (without the size prefix), and the frame as it came (with it). */
  onFrame(body: Buffer, frame: Buffer): void;
  onChunk(bytes: Buffer, last: boolean): void;
}

export class FrameTooLarge extends Error {
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super(`frame of ${size} bytes (limit ${limit})`);
  }
}

/** Frames up to this size are assembled in one buffer allocated when they begin; larger ones as their chunks arrive. */
const ASSEMBLE_BYTES = 1 << 20;

/** Frames from this size up are read into a buffer of their own that can be recycled (smaller ones come from Buffer's pool). */
const RECYCLE_BYTES = 64 * 1024;

/** Frames' memory kept for the next frames (see FrameReader.spares). */
const MAX_SPARES = 2;

/** Bytes of a frame's start handed to onStart when they were held back over a chunk's end. */
const HEAD_BYTES = 512;

const EMPTY = Buffer.alloc(0);

export class FrameReader {
  /** The start of the next frame (fewer bytes than its head needs), always a copy. */
  private held: Buffer = EMPTY;
  private streaming = false;
  /** Bytes of the streamed frame still to come. */
  private left = 0;
  /** Bytes (size prefix included) of the buffered frame being read, or -1 between frames. */
  private size = -1;
  private filled = 0;
  /** That frame, filled as its bytes arrive; or, when it is large, its chunks. */
  private frame: Buffer | undefined;
  private parts: Buffer[] | undefined;
  /** Memory this reader allocated for frames (recycle() takes back only these). */
  private readonly own = new WeakSet<ArrayBufferLike>();
  /**
   * Frames' memory given back by recycle(), for the next frames that fit. Two: a client keeps
   * several produce requests in flight, and the next one often starts before the previous one's
   * write upstream completed (with one spare, a fifth of kcat's requests got fresh memory).
   */
  private readonly spares: Buffer[] = [];

  constructor(
    private readonly handler: FrameHandler,
    /** A number, or a function read at each frame (a listener's limit that a reload may change). */
    private readonly maxFrameBytes: number | (() => number),
    /**
     * Called once with the stream's first bytes (at least 4, the first size prefix), before its
     * size is judged: it may throw to refuse a stream that is no Kafka at all (foreignProtocol).
     */
    private checkFirst?: (first: Buffer) => void,
  ) {}

  /** A streamed frame is being read: its remaining bytes must come before it is whole upstream. */
  get midStream(): boolean {
    return this.streaming;
  }

  /**
   * `transient`: the chunk's memory is reused once push returns (a socket reading into one
   * buffer): what must outlive the call is copied; streamed bytes are still handed on as views.
   * Throws FrameTooLarge for a size prefix that is negative or over the limit.
   */
  push(chunk: Buffer, transient = false): void {
    while (chunk.length > 0) {
      if (this.streaming) chunk = this.streamOn(chunk);
      else if (this.size >= 0) chunk = this.fill(chunk, transient);
      else chunk = this.start(chunk, transient);
    }
  }

  /** Between frames: reads the next frame's size and head; returns what of `chunk` is still to read. */
  private start(chunk: Buffer, transient: boolean): Buffer {
    const held = this.held;
    // Wait for the size and the first 8 bytes of the header (correlation id or api key, version
    // and correlation id), or for the whole frame if it is shorter.
    const first = held.length === 0 ? chunk : Buffer.concat([held, chunk.subarray(0, HEAD_BYTES)]);
    if (first.length < 4) return this.hold(first, chunk);
    if (this.checkFirst) {
      const check = this.checkFirst;
      this.checkFirst = undefined;
      check(first);
    }
    const size = first.readInt32BE(0);
    const limit = typeof this.maxFrameBytes === 'number' ? this.maxFrameBytes : this.maxFrameBytes();
    if (size < 0 || size > limit) throw new FrameTooLarge(size, limit);
    if (first.length < 4 + Math.min(size, 8)) return this.hold(first, chunk);
    const head = first.subarray(4, Math.min(first.length, 4 + size));
    this.held = EMPTY;
    if (this.handler.onStart(size, head) === 'stream') {
      this.streaming = true;
      this.left = 4 + size;
      if (held.length > 0) this.streamOn(held);
      return chunk;
    }
    // A frame that arrived whole in one chunk is a view of it (unless the chunk is reused).
    if (held.length === 0 && !transient && chunk.length >= 4 + size) {
      const whole = chunk.subarray(0, 4 + size);
      this.handler.onFrame(whole.subarray(4), whole);
      return chunk.subarray(4 + size);
    }
    // Large frames are not allocated whole before their bytes come (a size prefix costs nothing to send).
    this.size = 4 + size;
    this.filled = 0;
    if (this.size <= ASSEMBLE_BYTES) this.frame = this.allocate(this.size);
    else this.parts = [];
    if (held.length > 0) this.fill(held, false);
    return chunk;
  }

  /**
   * Memory for a frame of `size` bytes: a spare that fits, or a new buffer (rounded up to 64 KB
   * from that size, so that the next frames of a similar size fit when it comes back).
   */
  private allocate(size: number): Buffer {
    if (size < RECYCLE_BYTES) return Buffer.allocUnsafe(size);
    const spares = this.spares;
    for (let i = 0; i < spares.length; i++) {
      const spare = spares[i]!;
      if (spare.length < size) continue;
      spares.splice(i, 1);
      return spare.subarray(0, size);
    }
    const fresh = Buffer.allocUnsafeSlow(Math.ceil(size / RECYCLE_BYTES) * RECYCLE_BYTES);
    this.own.add(fresh.buffer);
    return fresh.subarray(0, size);
  }

  /**
   * A frame handed on by onFrame that nothing reads any more (its bytes were written on): its
   * memory may hold the next frame. Only frames this reader assembled are taken back.
   */
  recycle(frame: Buffer): void {
    // Never the same memory twice: two frames would be read into it.
    if (!this.own.has(frame.buffer) || this.spares.some((s) => s.buffer === frame.buffer)) return;
    const spare = Buffer.from(frame.buffer);
    // Full: the smaller of the two makes room (the larger fits more of the next frames).
    if (this.spares.length < MAX_SPARES) this.spares.push(spare);
    else {
      const smaller = this.spares[0]!.length <= this.spares[1]!.length ? 0 : 1;
      if (this.spares[smaller]!.length < spare.length) this.spares[smaller] = spare;
    }
  }

  /** Keeps the first bytes of a frame until more arrive (a copy: `chunk` may be reused). */
  private hold(first: Buffer, chunk: Buffer): Buffer {
    this.held = first === chunk ? Buffer.from(chunk) : Buffer.concat([this.held, chunk]);
    return EMPTY;
  }

  /** Adds what belongs to the buffered frame; hands the frame on once whole; returns what follows it. */
  private fill(chunk: Buffer, transient: boolean): Buffer {
    const n = Math.min(chunk.length, this.size - this.filled);
    if (this.frame !== undefined) chunk.copy(this.frame, this.filled, 0, n);
    else this.parts!.push(transient ? Buffer.from(chunk.subarray(0, n)) : chunk.subarray(0, n));
    this.filled += n;
    if (this.filled === this.size) {
      const whole = this.frame ?? Buffer.concat(this.parts!, this.size);
      this.size = -1;
      this.frame = undefined;
      this.parts = undefined;
      this.handler.onFrame(whole.subarray(4), whole);
    }
    return chunk.subarray(n);
  }

  /** Hands on what belongs to the streamed frame; returns what follows it. */
  private streamOn(chunk: Buffer): Buffer {
    const n = Math.min(this.left, chunk.length);
    this.left -= n;
    const last = this.left === 0;
    if (last) this.streaming = false;
    if (n > 0) this.handler.onChunk(n === chunk.length ? chunk : chunk.subarray(0, n), last);
    return chunk.subarray(n);
  }
}
