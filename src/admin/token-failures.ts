/**
 * Failed admin-token attempts per client address, so the token cannot be guessed at the speed a
 * client can send requests (spec §4's "rate limited → 429 with Retry-After"). A client address
 * (an IPv6 address's /64, which one host usually has whole) that presented `LIMIT` wrong tokens
 * within a window is refused, good token or not, until that window ends: were a good token
 * admitted, every refused guess would still tell right from wrong. A good token costs nothing
 * here but a lookup while some address has failed lately, and does not clear the count (a
 * client polling with the token would otherwise clear it for a guesser behind the same address).
 *
 * Memory: at most `maxAddresses` windows; when every one is in use, the failures of addresses
 * not tracked count in one window they share, so a flood from many addresses is bounded as a
 * whole rather than growing the map (and, while that shared window is full, untracked addresses
 * are refused with it: the flood's cost falls on the flood's addresses first).
 */
export class TokenFailures {
  /** Insertion order is window start order (a window that ends is deleted, not reused). */
  private readonly windows = new Map<string, { count: number; endsAt: number }>();

  constructor(
    readonly limit = 10,
    readonly windowMs = 60_000,
    readonly maxAddresses = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** How long (ms) `address` is still refused, or 0. */
  refusedFor(address: string): number {
    if (this.windows.size === 0) return 0;
    const key = clientKey(address);
    const w = this.windows.get(key) ?? this.windows.get(SHARED);
    if (w === undefined || w.count < this.limit) return 0;
    return Math.max(0, w.endsAt - this.now());
  }

  /** A wrong token from `address`: the ms it is now refused for when this failure reached the limit, else 0. */
  failed(address: string): number {
    const now = this.now();
    this.prune(now);
    let key = clientKey(address);
    let w = this.windows.get(key);
    if (w === undefined && this.windows.size >= this.maxAddresses) {
      key = SHARED;
      w = this.windows.get(SHARED);
    }
    if (w === undefined) {
      w = { count: 0, endsAt: now + this.windowMs };
      this.windows.set(key, w);
    }
    w.count++;
    return w.count === this.limit ? w.endsAt - now : 0;
  }

  /**
   * Forgets every failure counted, lockouts included: for a reload that changes the token, since
   * a guess at the old token says nothing about the new one (spec-checklist 643). How many
   * addresses were locked out then.
   */
  clear(): number {
    const now = this.now();
    let locked = 0;
    for (const w of this.windows.values()) if (w.count >= this.limit && w.endsAt > now) locked++;
    this.windows.clear();
    return locked;
  }

  /** Windows held (for tests: the flood bound). */
  get size(): number {
    return this.windows.size;
  }

  /** Drops the windows that ended: they are first in the map, so this stops at the first that has not. */
  private prune(now: number): void {
    for (const [key, w] of this.windows) {
      if (w.endsAt > now) return;
      this.windows.delete(key);
    }
  }
}

const SHARED = '*';

/**
 * The address a limit applies to: IPv4 as it is (also when IPv4-mapped, `::ffff:10.0.0.1`), IPv6
 * by its /64, e.g. `2001:db8:0:1::/64`.
 */
export function clientKey(address: string): string {
  if (!address.includes(':')) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const zone = address.indexOf('%');
  const bare = zone >= 0 ? address.slice(0, zone) : address;
  const [head = '', tail] = bare.split('::');
  const groups = (part: string) => (part === '' ? [] : part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])));
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...new Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${all
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
