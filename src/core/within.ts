/**
 * Waits for `work` at most `ms`: 'done' once it settled (either way), 'late' when the time ran
 * out first. What it waits for goes on; the caller decides what to do with work that is late
 * (a close a frozen server never answers: drop the connection instead).
 */
export function within(work: Promise<unknown>, ms: number): Promise<'done' | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms).unref()));
  const done = work.then(
    () => 'done' as const,
    () => 'done' as const,
  );
  return Promise.race([done, late]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`, without keeping the process alive. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
