/** Slab size: a turn's small messages share one buffer and one socket write. */
const SLAB_BYTES = 64 * 1024;

/**
 * The bytes a publisher encodes in one event-loop turn (the MQTT and AMQP publishers): messages
 * are encoded straight into 64 KiB slabs, and the turn's slabs leave in one socket write each, at
 * the end of the turn: no buffer per message and no write per message.
 */
export class TurnBuffer {
  private slab: Buffer | undefined;
  private used = 0;
  /** Filled slabs of this turn, written before the current one. */
  private full: Buffer[] = [];

  /** A buffer with `size` bytes free from `at`; `commit` the offset after what was encoded. */
  room(size: number): Buffer {
    if (this.slab && this.used + size <= this.slab.length) return this.slab;
    if (this.slab && this.used > 0) this.full.push(this.slab.subarray(0, this.used));
    this.slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, size));
    this.used = 0;
    return this.slab;
  }

  /** Where the next message starts in the buffer `room` returned. */
  get at(): number {
    return this.used;
  }

  commit(end: number): void {
    this.used = end;
  }

  /** The turn's bytes, to be written in order; the rest of the slab serves the next turn (what was taken stays untouched). */
  take(): Buffer[] {
    const chunks = this.full;
    if (this.slab && this.used > 0) chunks.push(this.slab.subarray(0, this.used));
    this.full = [];
    this.slab = this.slab && this.used + 512 <= this.slab.length ? this.slab.subarray(this.used) : undefined;
    this.used = 0;
    return chunks;
  }
}
