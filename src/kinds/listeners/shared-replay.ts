/**
 * One catch-up read of an event stream's route, shared by the resumed clients one live event
 * showed the same gap to (sse.ts gapCheck()): a restart with the default instance id has every
 * browser resume before the route's new group joins, and its first live event found each of them
 * short of the same records. Read once per client, 200 browsers made 200 reads of one range; read
 * here once, each client goes through the read's chunks at its own pace, through its own resume.
 */
import type { ReplaySource, Retained, RetainedChunk } from '../contracts.js';

/**
 * How many chunks (a Kafka Fetch round: 1 MiB per leader) the read may hold for the slowest of its
 * clients beyond the one the fastest reached. Further behind, that client is let go (`behind`):
 * held for it, the chunks of a client that stopped reading piled up until its stream was cut off.
 */
export const SHARED_LEAD_CHUNKS = 8;

/** Where one client is in the read's chunks. */
interface Reader {
  /** The index of the next chunk it takes. */
  at: number;
  /** Let go: it left, or it fell behind (its next chunk answers with an error). */
  gone: boolean;
  /** Tells its stream it fell too far behind (the stream cuts it off: it resumes again on its own). */
  behind: () => void;
}

export class SharedReplay {
  private retained: Promise<Retained> | undefined;
  private iterator: AsyncIterator<RetainedChunk> | undefined;
  /** The chunks read that a client still has to take; `buffer[0]` is chunk number `base`. */
  private readonly buffer: RetainedChunk[] = [];
  private base = 0;
  private ended = false;
  private failure: { err: unknown } | undefined;
  /** The next chunk's read, once asked for: every client waiting for it waits on this one. */
  private pulling: Promise<void> | undefined;
  private readonly readers = new Set<Reader>();

  constructor(private readonly source: ReplaySource) {}

  /**
   * The read as one client sees it, a ReplaySource whose replay() joins it: its own chunks and its
   * own close(). `behind`: cuts the client off should it fall SHARED_LEAD_CHUNKS behind the others.
   */
  join(behind: () => void): ReplaySource {
    return {
      sourceKey: this.source.sourceKey,
      replay: (after) => this.open(after, behind),
    };
  }

  /**
   * `after`: what the client's resume() asks the source for, the same for every client of the read
   * (they share it by their positions and the source): its positions, or none when they are of
   * another source (from the oldest retained event).
   */
  private async open(after: ReadonlyMap<number, bigint>, behind: () => void): Promise<Retained> {
    // Joined within the live event's turn, before any chunk was read: a later one would have missed chunks already let go.
    if (this.iterator !== undefined) throw new Error('a shared catch-up read is joined only before it reads');
    const reader: Reader = { at: 0, gone: false, behind };
    this.readers.add(reader);
    // The first client's call starts the read: the others of the same live event join it before it lists its ends.
    this.retained ??= this.source.replay(after);
    let retained: Retained;
    try {
      retained = await this.retained;
    } catch (err) {
      this.leave(reader);
      throw err;
    }
    const { gap, forget, ends, partitions } = retained;
    return { gap, forget, ends, partitions, chunks: this.chunks(reader), close: () => Promise.resolve(this.leave(reader)) };
  }

  /** One client's chunks: those read already, then each next one as the first of them asks for it. */
  private async *chunks(reader: Reader): AsyncGenerator<RetainedChunk> {
    try {
      for (;;) {
        while (reader.at - this.base >= this.buffer.length) {
          if (reader.gone) throw new Error('fell behind the catch-up read it shared');
          if (this.failure) throw this.failure.err;
          if (this.ended) return;
          await this.pull();
        }
        if (reader.gone) throw new Error('fell behind the catch-up read it shared');
        const chunk = this.buffer[reader.at - this.base]!;
        reader.at++;
        this.trim();
        yield chunk;
      }
    } finally {
      this.leave(reader);
    }
  }

  /** Reads the next chunk (once, whichever client asks first); a failure is every client's. */
  private pull(): Promise<void> {
    this.pulling ??= (async () => {
      try {
        const retained = await this.retained!;
        this.iterator ??= retained.chunks[Symbol.asyncIterator]();
        const next = await this.iterator.next();
        if (next.done) this.ended = true;
        else {
          this.buffer.push(next.value);
          this.dropLaggards();
        }
      } catch (err) {
        this.failure = { err };
      } finally {
        this.pulling = undefined;
      }
    })();
    return this.pulling;
  }

  /** Clients SHARED_LEAD_CHUNKS behind the newest chunk are let go, so the read holds no more for them. */
  private dropLaggards(): void {
    const newest = this.base + this.buffer.length;
    for (const reader of this.readers)
      if (newest - reader.at > SHARED_LEAD_CHUNKS) {
        this.leave(reader);
        reader.behind();
      }
  }

  /** Lets go of the chunks every client still reading has taken. */
  private trim(): void {
    let slowest = this.base + this.buffer.length;
    for (const reader of this.readers) slowest = Math.min(slowest, reader.at);
    const taken = slowest - this.base;
    if (taken <= 0) return;
    this.buffer.splice(0, taken);
    this.base = slowest;
  }

  /** A client leaves (its stream is gone, its read over or let go): the last one ends the read. */
  private leave(reader: Reader): void {
    if (reader.gone && !this.readers.has(reader)) return;
    reader.gone = true;
    this.readers.delete(reader);
    this.trim();
    if (this.readers.size > 0) return;
    this.buffer.length = 0;
    void this.iterator?.return?.(undefined).catch(() => undefined);
    // Ended early (every client gone) or at its end: Retained.close is once only in effect.
    void this.retained?.then(
      (r) => r.close(),
      () => undefined,
    );
  }
}
