/**
 * A warning that a flood can raise thousands of times a second (connections dropped at a
 * listener's limit, nats core messages dropped, refused Kafka produce requests): logged so an
 * operator sees it, without the flood flooding the log. Per key, the first occurrence is logged at
 * once; then at most one line per interval, at its end, with the count of the occurrences since
 * the last line and the details of the last of them, so every occurrence is counted in some line.
 * An interval without any closes the key's window: the next occurrence is logged at once again.
 */
/** The interval of the gateway's flood warnings: one line per key this often at most. */
export const FLOOD_LOG_INTERVAL_MS = 10_000;

/** The window of the keys past `maxWindows` (no caller's key starts with a NUL). */
const SHARED_WINDOW = '\u0000shared';

/**
 * The warnings with a window open, in the whole process: a window's summary is written at its
 * interval's end by a timer the process does not wait for, so the shutdown writes them
 * (flushPendingWarnings) rather than let them go with the process.
 */
const withOpenWindows = new Set<{ flush(): void }>();

/**
 * Writes the summary of every warning whose window is still open (the process is about to exit).
 * A warning of another gateway in the same process (tests) only has its line written early.
 */
export function flushPendingWarnings(): void {
  for (const warning of [...withOpenWindows]) warning.flush();
}

export class RateLimitedWarning<T> {
  private readonly windows = new Map<string, { count: number; last: T | undefined; timer: NodeJS.Timeout; group: string | undefined }>();
  /** Windows open per group (its shared window aside), for maxWindowsPerGroup. */
  private readonly perGroup = new Map<string, number>();
  /** After close(): each occurrence is its own line (see close()). */
  private closed = false;

  /**
   * `line(last, count)` logs one line: `count` occurrences, the last of them `last`. `maxWindows`
   * bounds the keys with a window at once, for keys a client chooses (the reason a kafka client's
   * connection was closed carries its frame's size): past it, new keys count in one window they
   * share, so garbage of ever-changing reasons logs a bounded number of lines, not one each.
   */
  constructor(
    readonly intervalMs: number,
    private readonly line: (last: T, count: number) => void,
    private readonly maxWindows = Number.POSITIVE_INFINITY,
    /**
     * Bounds the windows one group (a client's address) opens at once: past it, that group's new
     * keys count in a window of the group's own, so one client's garbage cannot take all of
     * `maxWindows` and leave another client's first occurrence unlogged (spec-checklist 644).
     */
    private readonly maxWindowsPerGroup = Number.POSITIVE_INFINITY,
  ) {}

  /** One occurrence, with its details; `key` keeps a window of its own (a route's, say), counted in `group`'s bound. */
  occurred(details: T, key = '', group?: string): void {
    if (this.closed) return this.line(details, 1);
    let inGroup = group;
    if (!this.windows.has(key)) {
      if (group !== undefined && (this.perGroup.get(group) ?? 0) >= this.maxWindowsPerGroup) {
        key = `${SHARED_WINDOW}\u0000${group}`;
        inGroup = undefined;
      }
      if (this.windows.size >= this.maxWindows && !this.windows.has(key)) {
        key = SHARED_WINDOW;
        inGroup = undefined;
      }
    }
    const window = this.windows.get(key);
    if (window) {
      window.count++;
      window.last = details;
      return;
    }
    this.line(details, 1);
    const timer = setInterval(() => this.intervalEnded(key), this.intervalMs);
    timer.unref();
    this.windows.set(key, { count: 0, last: undefined, timer, group: inGroup });
    withOpenWindows.add(this);
    if (inGroup !== undefined) this.perGroup.set(inGroup, (this.perGroup.get(inGroup) ?? 0) + 1);
  }

  /** Logs what was counted and not logged yet, and closes every window (the next occurrence is logged at once). */
  flush(): void {
    for (const key of [...this.windows.keys()]) this.closeWindow(key);
  }

  /**
   * The owner stops (a route's close(), a listener's or a subscription's stop): what was counted is
   * logged, and so is each occurrence after this one, at once. What still occurs then is the
   * little the owner had in hand (a route's records whose answers came after its drain timeout),
   * and a window opened for it would lose its count with the process if it exited before the
   * interval ended (spec-checklist 1049).
   */
  close(): void {
    this.closed = true;
    this.flush();
  }

  private intervalEnded(key: string): void {
    const window = this.windows.get(key)!;
    if (window.count === 0) return this.closeWindow(key);
    this.line(window.last as T, window.count);
    window.count = 0;
    window.last = undefined;
  }

  private closeWindow(key: string): void {
    const window = this.windows.get(key)!;
    clearInterval(window.timer);
    this.windows.delete(key);
    if (this.windows.size === 0) withOpenWindows.delete(this);
    if (window.group !== undefined) {
      const left = (this.perGroup.get(window.group) ?? 1) - 1;
      if (left > 0) this.perGroup.set(window.group, left);
      else this.perGroup.delete(window.group);
    }
    if (window.count > 0) this.line(window.last as T, window.count);
  }
}
