/**
 * Several messages of one partition in hand at once, committed in order. A consumer hands each
 * message of a partition to `start()` in offset order; up to `capacity` are handled at the same
 * time, and `committable()` is the last offset of the contiguous prefix that is done: committing
 * it never skips a message still in hand (at-least-once). Messages that share an order key are
 * handled one after the other, in offset order (each waits until the earlier one settled,
 * retries included); others go meanwhile. With a capacity of 1 it is the one-at-a-time consumer.
 */
/** How many times `capacity` messages may be uncommitted behind the oldest one in hand. */
export const SPAN = 4;

export class InFlightWindow<O> {
  /** In offset order: what is in hand or done but not yet committable. */
  private readonly entries: { offset: O; done: boolean }[] = [];
  /** Per order key, the settling of the latest message that has it. */
  private readonly lanes = new Map<string, Promise<void>>();
  private inHand = 0;
  private waiters: (() => void)[] = [];
  /** Who onSettled() tells (a consumer's loop waits for room once per message: no array for it). */
  private wake: (() => void) | undefined = undefined;
  private last: O | undefined;
  /** A message was given back (its handler stopped with it in hand): nothing after it may be committed, nothing more started. */
  private givenBack = false;

  constructor(readonly capacity: number) {}

  /** Whether a message was given back: the owner stops starting new ones and, once idle, starts again from the committed offset. */
  get broken(): boolean {
    return this.givenBack;
  }

  get size(): number {
    return this.inHand;
  }

  /**
   * Resolves once fewer than `capacity` messages are in hand and fewer than SPAN × capacity are
   * past the committable offset: a message that takes long holds back only so many after it,
   * which bounds what a crash delivers again. At once when a message was given back (the owner stops).
   * Undefined when there is room now, so a consumer with room goes on without a microtask hop.
   */
  room(): Promise<void> | undefined {
    return this.hasRoom() ? undefined : this.waitForRoom();
  }

  /** Whether another message may start now (see room()); true once a message was given back. */
  hasRoom(): boolean {
    return this.givenBack || (this.inHand < this.capacity && this.entries.length < this.capacity * SPAN);
  }

  /**
   * Resolves when the next message in hand settles, for a consumer that checks hasRoom() again
   * anyway: one promise per wait, where room() is an async loop. Only while hasRoom() is false
   * (a message is then in hand, so one will settle).
   */
  settling(): Promise<void> {
    return new Promise<void>((r) => this.waiters.push(r));
  }

  /** settling() without a promise: `then` is called once, when the next message in hand settles (inside its settling: defer what it starts). */
  onSettled(then: () => void): void {
    if (this.wake === undefined) this.wake = then;
    else this.waiters.push(then);
  }

  private async waitForRoom(): Promise<void> {
    while (!this.givenBack && (this.inHand >= this.capacity || this.entries.length >= this.capacity * SPAN)) await new Promise<void>((r) => this.waiters.push(r));
  }

  /** Resolves once no message is in hand. */
  async idle(): Promise<void> {
    while (this.inHand > 0) await new Promise<void>((r) => this.waiters.push(r));
  }

  /**
   * Handles the message at `offset` (the next in order) with `handle`, after every earlier
   * message sharing one of `keys` settled. `handle` resolves true when the message is done, false
   * when it was given back. `settled` is told after each message, to commit what became committable.
   */
  start(offset: O, keys: readonly string[], handle: () => Promise<boolean>, settled: () => void): void {
    const entry = { offset, done: false };
    this.entries.push(entry);
    this.inHand++;
    const finish = this.finisher(entry, settled);
    if (keys.length === 0) {
      void this.run(handle, finish);
      return;
    }
    let before: Promise<void>[] | undefined;
    for (const k of keys) {
      const p = this.lanes.get(k);
      if (p) (before ??= []).push(p);
    }
    const mine = before ? Promise.all(before).then(() => this.run(handle, finish)) : Promise.resolve(this.run(handle, finish));
    for (const k of keys) {
      this.lanes.set(k, mine);
      void mine.then(() => {
        if (this.lanes.get(k) === mine) this.lanes.delete(k);
      });
    }
  }

  /**
   * What ends a message's handling: plain callbacks rather than an async function, as this runs
   * once per consumed message. `handle` resolves true when the message is done; false, or a
   * rejection (never with `true`), gives it back. Returned, not bound to a name: the bundle keeps
   * function names, and a named arrow would cost an Object.defineProperty per message.
   */
  private finisher(entry: { done: boolean }, settled: () => void): (result: unknown) => void {
    return (result) => {
      if (result === true) entry.done = true;
      else this.givenBack = true;
      this.advance();
      this.inHand--;
      const wake = this.wake;
      if (wake !== undefined) {
        this.wake = undefined;
        wake();
      }
      if (this.waiters.length > 0) {
        const waiters = this.waiters;
        this.waiters = [];
        for (const w of waiters) w();
      }
      settled();
    };
  }

  /** Runs `handle` (unless a message was given back meanwhile), `finish` told how it ended. */
  private run(handle: () => Promise<boolean>, finish: (result: unknown) => void): Promise<void> | void {
    if (this.givenBack) return finish(false);
    let handling: Promise<boolean>;
    try {
      handling = handle();
    } catch {
      return finish(false);
    }
    return handling.then(finish, finish);
  }

  /** The last offset before which every message is done (and it too), or undefined when that has not moved since the last call. */
  committable(): O | undefined {
    const last = this.last;
    this.last = undefined;
    return last;
  }

  private advance(): void {
    while (this.entries.length > 0 && this.entries[0]!.done) this.last = this.entries.shift()!.offset;
  }
}
