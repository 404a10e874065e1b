/**
 * `node dist/bench/reload-stream.js [intervalMs...] [--seconds s] [--routes n] [--swap]`: hot reload under a
 * stream of edits (spec §6: "a stream of edits never postpones a reload for more than a second").
 * For each interval (default 40, 200 and 1000 ms) a fresh `eventgate run` has its gateway.yaml
 * rewritten in place that often for `--seconds` (default 10), each write a new revision; the
 * revision a reload applied is read from its "gateway ready" line (a route named `rev-<n>`).
 * `--routes n` adds n routes, for a config whose compile takes longer; `--swap` publishes each
 * revision as a Kubernetes ConfigMap volume does (`swap` below). Prints one JSON line per
 * interval: the gaps between successive applied reloads during the stream, and for each write the
 * time until it, or a later revision, was live (docs/performance.md, "Hot reload under a stream
 * of edits"). Timings: run it on a quiet machine; nothing here is asserted.
 */
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { httpMemoryConfig } from './configs.js';
import type { LogLine } from '../test/helpers/gateway.js';
import { startGateway } from './processes.js';
import { percentile, round } from './stats.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { seconds: { type: 'string', default: '10' }, routes: { type: 'string', default: '0' }, swap: { type: 'boolean', default: false } },
});
const extraRoutes = Number(values.routes);
const seconds = Number(values.seconds);
const intervals = positionals.length ? positionals.map(Number) : [40, 200, 1000];

/** The bench's http-memory config, plus a route whose name carries the revision. */
const config = (revision: number) => `${httpMemoryConfig(revision)}  - name: rev-${revision}
    from: { listener: api, path: /rev }
    to: { broker: local, topic: rev }
${Array.from(
  { length: extraRoutes },
  (_, i) => `  - name: extra-${i}
    from: { listener: api, path: /extra/${i} }
    through: light
    to: { broker: local, topic: extra-${i} }
`,
).join('')}`;

/**
 * What the kubelet does: the revision in a new timestamped directory, `..data` pointed at it by a
 * rename, the old directory removed; gateway.yaml is a symlink to `..data/gateway.yaml`.
 */
const swap = (dir: string, revision: number, text: string) => {
  mkdirSync(join(dir, `..r${revision}`));
  writeFileSync(join(dir, `..r${revision}`, 'gateway.yaml'), text);
  symlinkSync(`..r${revision}`, join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  rmSync(join(dir, `..r${revision - 1}`), { recursive: true });
};
const swapSetup = (dir: string) => {
  mkdirSync(join(dir, '..r0'));
  symlinkSync('..r0', join(dir, '..data'));
  symlinkSync('..data/gateway.yaml', join(dir, 'gateway.yaml'));
};

const at = (l: LogLine) => Date.parse(String(l.time));
const summary = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, min: round(s[0] ?? NaN), median: round(percentile(s, 0.5)), p90: round(percentile(s, 0.9)), max: round(s.at(-1) ?? NaN) };
};

for (const everyMs of intervals) {
  const gw = await startGateway(config(0), values.swap ? { setup: swapSetup } : {});
  try {
    const writes: number[] = [0];
    const from = gw.logs.length;
    const started = Date.now();
    let revision = 0;
    while (Date.now() - started < seconds * 1000) {
      const due = started + (revision + 1) * everyMs;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      revision++;
      writes[revision] = Date.now();
      if (values.swap) swap(gw.dir, revision, config(revision));
      else gw.write('gateway.yaml', config(revision));
    }
    const last = revision;
    const streamEnd = writes[last]!;
    await gw.waitForLog((l) => l.msg === 'gateway ready' && (l.routes as string[]).includes(`rev-${last}`), 10000, from);
    /** Applied reloads in order: when, and which revision. */
    const applied = gw.logs
      .slice(from)
      .filter((l) => l.msg === 'gateway ready')
      .map((l) => ({ at: at(l), revision: Number((l.routes as string[]).find((r) => r.startsWith('rev-'))!.slice(4)) }));
    const gaps: number[] = [];
    for (let i = 1; i < applied.length; i++) if (applied[i]!.at <= streamEnd) gaps.push(applied[i]!.at - applied[i - 1]!.at);
    const firstGap = applied.length ? applied[0]!.at - writes[1]! : NaN;
    const latency: number[] = [];
    for (let r = 1; r <= last; r++) {
      const live = applied.find((a) => a.revision >= r);
      if (live) latency.push(live.at - writes[r]!);
    }
    const rejected = gw.logs.slice(from).filter((l) => l.msg.startsWith('reload rejected') || l.msg.startsWith('reload rolled back'));
    process.stdout.write(
      `${JSON.stringify({
        everyMs,
        ...(values.swap && { swap: true }),
        writes: last,
        reloads: applied.length,
        rejected: rejected.length,
        ...(rejected.length && { rejectedFor: [...new Set(rejected.map((l) => l.diagnostic ?? l.error))] }),
        firstReloadAfterFirstWriteMs: firstGap,
        gapsDuringStreamMs: summary(gaps),
        writeToLiveMs: summary(latency),
      })}\n`,
    );
  } finally {
    await gw.stop();
    rmSync(gw.dir, { recursive: true, force: true });
  }
}
