/**
 * The longest delay Node arms a timer for (2^31−1 ms, about 24.8 days): a longer one fires after
 * 1 ms instead (TimeoutOverflowWarning).
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Whatever holds one expiry timer (a WebSocket client, an event stream). */
export interface Expiring {
  expiry: NodeJS.Timeout | undefined;
}

/**
 * Calls `expired` at `until` (ms since the epoch), replacing the holder's earlier timer; none
 * when `until` is undefined. A time further off than a timer can wait is reached in steps. The
 * timer never keeps the process alive.
 */
export function expireAt(holder: Expiring, until: number | undefined, expired: () => void): void {
  clearTimeout(holder.expiry);
  holder.expiry = undefined;
  if (until === undefined || !Number.isFinite(until)) return;
  const wait = Math.max(0, until - Date.now());
  holder.expiry = setTimeout(
    () => {
      holder.expiry = undefined;
      if (wait > MAX_TIMER_MS) expireAt(holder, until, expired);
      else expired();
    },
    Math.min(wait, MAX_TIMER_MS),
  ).unref();
}
