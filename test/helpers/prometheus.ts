import { fetch } from './http.js';

/** One scrape of a Prometheus text endpoint, parsed (exposition format 0.0.4). */
export interface Scrape {
  text: string;
  contentType: string | null;
  /** `# TYPE` of each family. */
  types: Map<string, string>;
  /** Value of one series; undefined when the series is absent. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Every series of a metric name, with its labels. */
  series(name: string): { labels: Record<string, string>; value: number }[];
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string, contentType: string | null = null): Scrape {
  const types = new Map<string, string>();
  const all: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name!, type!);
      continue;
    }
    if (line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(LABEL)) labels[k!] = v!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    all.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  const matches = (have: Record<string, string>, want: Record<string, string>) => Object.keys(have).length === Object.keys(want).length && Object.entries(want).every(([k, v]) => have[k] === v);
  return {
    text,
    contentType,
    types,
    value: (name, labels = {}) => all.find((s) => s.name === name && matches(s.labels, labels))?.value,
    series: (name) => all.filter((s) => s.name === name).map(({ labels, value }) => ({ labels, value })),
  };
}

export async function scrape(adminUrl: string, headers: Record<string, string> = {}): Promise<Scrape> {
  const res = await fetch(`${adminUrl}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}: ${await res.text()}`);
  return parsePrometheus(await res.text(), res.headers.get('content-type'));
}

/**
 * Re-scrapes until `check` holds, for state that settles on the far side of a socket (a
 * disconnect the server has yet to see); fails with the last scrape after `timeoutMs`.
 */
export async function scrapeUntil(adminUrl: string, check: (s: Scrape) => boolean, timeoutMs = 5000): Promise<Scrape> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const s = await scrape(adminUrl);
    if (check(s)) return s;
    if (Date.now() > deadline)
      throw new Error(
        `metrics did not reach the expected state within ${timeoutMs} ms:\n${s.text
          .split('\n')
          .filter((l) => l.startsWith('eventgate_'))
          .join('\n')}`,
      );
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Waits until every memory consume route is through its topic (`eventgate_memory_consumer_lag` 0:
 * nothing undelivered, nothing in hand). A publish to a memory topic is answered once the topic
 * took it, and a forward delivers it later, to the clients connected then: a test that reads what
 * a new client gets first waits for this, or the client may get what the tests before published.
 */
export async function memoryRoutesCaughtUp(adminUrl: string, timeoutMs = 15000): Promise<void> {
  await scrapeUntil(adminUrl, (s) => s.series('eventgate_memory_consumer_lag').every((l) => l.value === 0), timeoutMs);
}
