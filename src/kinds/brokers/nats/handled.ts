/**
 * What a JetStream consume route remembers of the messages it handled: the stream sequences it
 * acknowledged lately, so a copy JetStream delivers again is acknowledged, not handed to the
 * targets a second time. Kept per stream (as created) and durable consumer, not per subscription:
 * a reload that rebuilds the route or swaps its broker (a creds rotation) makes a new subscription
 * of the same consumer, and with the memory gone with the old one, an acknowledgement lost with a
 * connection, or a consumer state nats-server brought back older after a restart, sent messages
 * the webhook had answered long before to it again (spec-checklist 4701: 181 after a restart 3 s
 * after a creds rotation).
 */

/** Sequences remembered per consumer: the newest this many. */
export const HANDLED_KEPT = 10_000;

/** Memories of consumers no subscription reads any more, kept for one that comes to read it again (a reload's next route), the newest this many. */
const UNREAD_KEPT = 16;

/** A set of stream sequences that forgets its oldest entries past `max`. */
export class HandledSequences {
  private readonly items = new Set<number>();

  constructor(private readonly max = HANDLED_KEPT) {}

  /** The lowest sequence held (redelivered copies are added out of order). */
  oldest(): number | undefined {
    let low: number | undefined;
    for (const n of this.items) if (low === undefined || n < low) low = n;
    return low;
  }

  has(n: number): boolean {
    return this.items.has(n);
  }

  clear(): void {
    this.items.clear();
  }

  add(n: number): void {
    this.items.add(n);
    if (this.items.size > this.max) this.items.delete(this.items.values().next().value!);
  }
}

/** A subscription's hold on its consumer's memory: `release()` once it reads the consumer no more. */
export interface HandledHold {
  /** Whose memory it is (handledKey). */
  readonly key: string;
  readonly sequences: HandledSequences;
  release(): void;
}

interface Kept {
  readonly sequences: HandledSequences;
  readers: number;
}

/** Per stream, its creation time and consumer: a stream made again numbers its messages from 1 again, and another consumer's sequences are not this one's. */
const memories = new Map<string, Kept>();
/** Keys of `memories` no subscription holds, the one released longest ago first. */
const unread: string[] = [];

/** Names consumer `consumer` of stream `stream` as created at `created`. */
export function handledKey(stream: string, created: string, consumer: string): string {
  return JSON.stringify([stream, created, consumer]);
}

/**
 * The memory of consumer `consumer` of stream `stream` (created at `created`), shared by every
 * subscription of this process that reads it, and kept past the last one's release for the next.
 */
export function holdHandled(stream: string, created: string, consumer: string): HandledHold {
  const key = handledKey(stream, created, consumer);
  let kept = memories.get(key);
  if (kept === undefined) {
    kept = { sequences: new HandledSequences(), readers: 0 };
    memories.set(key, kept);
  }
  const at = unread.indexOf(key);
  if (at >= 0) unread.splice(at, 1);
  kept.readers++;
  const held = kept;
  let released = false;
  return {
    key,
    sequences: held.sequences,
    release() {
      if (released) return;
      released = true;
      if (--held.readers > 0) return;
      unread.push(key);
      while (unread.length > UNREAD_KEPT) memories.delete(unread.shift()!);
    },
  };
}
