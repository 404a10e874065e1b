/**
 * `npm run soak [-- --minutes 10] [--out DIR]`: the gateway under mixed load for a long while —
 * HTTP publish through a chain to a memory topic fanned out to websocket clients (some staying,
 * others joining and leaving all the time), HTTP → Kafka → websocket through librdkafka's mock
 * cluster, and a config reload every 30 s — sampling its RSS, open descriptors, websocket clients
 * and event-loop delay. At the end it checks, end to end, that every accepted message reached every
 * client that stayed, and that descriptors and clients went back to where they were before the
 * churn. Prints a table, writes soak.json, soak.svg and soak.png (RSS and event-loop delay over
 * time) to DIR. Not part of `npm test`: it is long, and its figures are about time.
 */
import { Agent, request } from 'node:http';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { subscribe, type Subscriber } from './load/frame-counter.js';
import { cpuMs, rssBytes, startGateway, startKafka, type RunningGateway } from './processes.js';
import { describeMachine } from './report.js';
import { renderPlot, type Series } from './soak-plot.js';
import { percentile } from './stats.js';

const USAGE = 'usage: npm run soak -- [--minutes N (default 10)] [--out DIR (default soak-results)] [--http-rate N/s (200)] [--kafka-rate N/s (50)]';

/** Targets (issue #18). */
const TARGETS = { rssMbPerMinute: 1, loopP99Ms: 50 };
const RELOAD_EVERY_S = 30;
const SAMPLE_EVERY_S = 5;
const STABLE_CLIENTS = 5;
/**
 * Descriptors the gateway opens and closes by itself (Kafka broker connections, the admin
 * connection this process polls): a leak grows with the ~6,000 clients that come and go, this does not.
 */
const FD_TOLERANCE = 2;
/** Joining and leaving clients: this many join every second, each stays 2 to 8 seconds. */
const CHURN_PER_SECOND = 10;

function config(bootstrap: string, topic: string, revision: number): string {
  return `version: 1
admin: { port: 0, host: 127.0.0.1 }
brokers:
  local: { kind: memory, retain: 1000 }
  kafka:
    kind: kafka
    brokers: ${JSON.stringify(bootstrap)}
    clientId: eventgate-soak
    producer: { acks: all }
    consumer: { fromBeginning: true, maxWaitMs: 20 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: events-in
    from: { listener: api, path: /events }
    through:
      - validate: { schema: { type: object, required: [seq], properties: { seq: { type: integer, minimum: 0 } } } }
      - transform: '{ "seq": seq, "revision": ${revision}, "padding": padding }'
    to: { broker: local, topic: events }
  - name: events-out
    from: { broker: local, topic: events }
    to: { listener: push, path: /events }
  - name: kafka-in
    from: { listener: api, path: /kafka }
    to: { broker: kafka, topic: ${topic} }
  - name: kafka-out
    from: { broker: kafka, topic: ${topic} }
    to: { listener: push, path: /kafka }
`;
}

interface Sample {
  t: number;
  rssMb: number;
  fds: number;
  wsClients: number;
  loopP99Ms: number;
  httpRps: number;
  /** The gateway's CPU in the window, % of one core. */
  gatewayCpuPct: number;
  /** The whole machine's busy CPU in the window, % of all its cores: a delay with the machine near 100 % is waiting for a core. */
  machineBusyPct: number;
}

/** Counts which sequence numbers a client received, and how often. */
class Tally {
  private seen = new Uint8Array(1 << 16);
  duplicates = 0;
  received = 0;
  add(seq: number): void {
    if (seq >= this.seen.length) {
      const grown = new Uint8Array(Math.max(seq + 1, this.seen.length * 2));
      grown.set(this.seen);
      this.seen = grown;
    }
    if (this.seen[seq]) this.duplicates++;
    else this.received++;
    this.seen[seq] = 1;
  }
  has(seq: number): boolean {
    return this.seen[seq] === 1;
  }
  missing(accepted: number[]): number[] {
    return accepted.filter((s) => !this.seen[s]);
  }
}

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        minutes: { type: 'string', default: '10' },
        out: { type: 'string', default: 'soak-results' },
        'http-rate': { type: 'string', default: '200' },
        'kafka-rate': { type: 'string', default: '50' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`soak: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const minutes = Number(values.minutes);
  const httpRate = Number(values['http-rate']);
  const kafkaRate = Number(values['kafka-rate']);
  if (!(minutes > 0) || !(httpRate > 0) || !(kafkaRate > 0)) {
    process.stderr.write(`soak: --minutes, --http-rate and --kafka-rate must be positive numbers\n${USAGE}\n`);
    return 2;
  }
  const outDir = resolve(values.out!);
  mkdirSync(outDir, { recursive: true });
  const durationS = minutes * 60;
  const warmupS = Math.min(60, durationS / 5);
  const machine = describeMachine();

  const kafka = await startKafka({ brokers: 3, requestLog: false });
  const topic = kafka.topic('soak');
  await kafka.createTopic(topic, 3);
  let gw: RunningGateway | undefined;
  const subscribers: Subscriber[] = [];
  try {
    let revision = 0;
    gw = await startGateway(config(kafka.bootstrap, topic, revision), { readyTimeoutMs: 60_000 });
    const pid = gw.process.pid!;
    const g = gw;
    // FIFO, so every kept-alive connection is used in turn: with LIFO (the default) the coldest ones
    // could sit idle until the gateway's keepAliveTimeoutMs and a request sent as the gateway closes
    // one fails with ECONNRESET — a client-side race of HTTP/1.1 keep-alive, not the gateway's doing.
    const agent = new Agent({ keepAlive: true, maxSockets: 16, scheduling: 'fifo' });
    const padding = 'x'.repeat(200);

    // Clients that stay for the whole run: each must see every accepted message once.
    const eventTallies: Tally[] = [];
    // Stable clients are closed only after the figures are taken (finally, below): any close counted here is the gateway's.
    let unexpectedCloses = 0;
    for (let i = 0; i < STABLE_CLIENTS; i++) {
      const tally = new Tally();
      eventTallies.push(tally);
      subscribers.push(
        await subscribe(
          g.url('push', '/events', 'ws'),
          () => undefined,
          (text) => tally.add((JSON.parse(text) as { seq: number }).seq),
          () => void unexpectedCloses++,
        ),
      );
    }
    const kafkaTally = new Tally();
    subscribers.push(
      await subscribe(
        g.url('push', '/kafka', 'ws'),
        () => undefined,
        (text) => kafkaTally.add((JSON.parse(text) as { seq: number }).seq),
        () => void unexpectedCloses++,
      ),
    );

    const accepted = { events: [] as number[], kafka: [] as number[] };
    const failures: string[] = [];
    let httpErrors = 0;
    let httpDone = 0;
    const seq = { events: 0, kafka: 0 };
    const post = (path: '/events' | '/kafka'): Promise<void> => {
      const key = path === '/events' ? 'events' : 'kafka';
      const n = seq[key]++;
      const body = JSON.stringify({ seq: n, padding });
      return new Promise((done) => {
        const req = request(g.url('api', path), { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
          res.resume();
          res.on('end', () => {
            httpDone++;
            if (res.statusCode! >= 200 && res.statusCode! < 300) accepted[key].push(n);
            else {
              httpErrors++;
              if (failures.length < 10) failures.push(`POST ${path} answered ${res.statusCode}`);
            }
            done();
          });
        });
        req.on('error', (err) => {
          httpErrors++;
          if (failures.length < 10) failures.push(`POST ${path}: ${err.message}`);
          done();
        });
        req.end(body);
      });
    };

    // Probe: one message of each kind end to end (the Kafka consumer has joined, the producer connected).
    await post('/events');
    await post('/kafka');
    const probing = setInterval(() => void post('/kafka'), 500);
    await until(
      () => kafkaTally.received > 0 && eventTallies.every((t) => t.received > 0),
      60_000,
      () =>
        `the probe messages never arrived (accepted ${JSON.stringify(accepted)}, memory → ws clients got ${eventTallies.map((t) => t.received)}, Kafka → ws got ${kafkaTally.received}; ${failures.join('; ')})`,
    );
    clearInterval(probing);
    await delay(1000);
    // A websocket forward is a live stream: records produced before the route's consumer joined
    // its group are not expected at the client. The probe ends with the first record delivered;
    // what was accepted before it is reported, not counted as lost.
    const firstKafka = accepted.kafka.find((n) => kafkaTally.has(n)) ?? 0;
    const beforeJoin = accepted.kafka.filter((n) => n < firstKafka);
    accepted.kafka = accepted.kafka.filter((n) => n >= firstKafka);
    const baseline = { fds: countFds(pid), wsClients: await wsClients(g) };

    // Fixed-rate publishers, churning clients, reloads, sampling.
    const started = performance.now();
    const elapsed = () => (performance.now() - started) / 1000;
    const inFlight = new Set<Promise<void>>();
    const fire = (p: Promise<void>) => {
      inFlight.add(p);
      void p.then(() => inFlight.delete(p));
    };
    const owed = { events: 0, kafka: 0 };
    const tick = setInterval(() => {
      owed.events += httpRate / 100;
      owed.kafka += kafkaRate / 100;
      for (; owed.events >= 1; owed.events--) fire(post('/events'));
      for (; owed.kafka >= 1; owed.kafka--) fire(post('/kafka'));
    }, 10);

    const churners = new Set<Subscriber>();
    let churnJoined = 0;
    let churnFailed = 0;
    const churn = setInterval(() => {
      for (let i = 0; i < CHURN_PER_SECOND; i++) {
        churnJoined++;
        subscribe(g.url('push', '/events', 'ws'), () => undefined).then(
          (s) => {
            churners.add(s);
            setTimeout(
              () => {
                churners.delete(s);
                s.close();
              },
              2000 + Math.random() * 6000,
            );
          },
          () => churnFailed++,
        );
      }
    }, 1000);

    let reloads = 0;
    let reloadFailures = 0;
    let reloading: Promise<void> = Promise.resolve();
    const reloader = setInterval(() => {
      reloading = g.reconfigure(config(kafka.bootstrap, topic, ++revision)).then(
        (line) => {
          if (line.msg === 'config reloaded') reloads++;
          else {
            reloadFailures++;
            failures.push(`reload ${revision}: ${line.msg}`);
          }
        },
        (err: Error) => {
          reloadFailures++;
          failures.push(`reload ${revision}: ${err.message}`);
        },
      );
    }, RELOAD_EVERY_S * 1000);

    const samples: Sample[] = [];
    let lastDone = 0;
    // Per window, what the gateway and the whole machine used: tells a delay the gateway caused
    // from one spent waiting for a core while other processes (other test runs) took the machine.
    let lastCpu = { at: performance.now(), gateway: cpuMs(pid), machine: machineCpu() };
    const sample = async () => {
      const loop = await loopP99Ms(g);
      const now = { at: performance.now(), gateway: cpuMs(pid), machine: machineCpu() };
      const gatewayCpuPct = ((now.gateway - lastCpu.gateway) / (now.at - lastCpu.at)) * 100;
      const machineBusyPct = ((now.machine.busy - lastCpu.machine.busy) / Math.max(1, now.machine.total - lastCpu.machine.total)) * 100;
      lastCpu = now;
      samples.push({
        t: elapsed() / 60,
        rssMb: rssBytes(pid) / 2 ** 20,
        fds: countFds(pid),
        wsClients: await wsClients(g),
        loopP99Ms: loop,
        httpRps: (httpDone - lastDone) / SAMPLE_EVERY_S,
        gatewayCpuPct,
        machineBusyPct,
      });
      lastDone = httpDone;
      const s = samples[samples.length - 1]!;
      process.stderr.write(
        `soak: ${s.t.toFixed(1)} min  RSS ${s.rssMb.toFixed(1)} MB  fds ${s.fds}  ws ${s.wsClients}  loop p99 ${s.loopP99Ms.toFixed(1)} ms  ${s.httpRps.toFixed(0)} req/s  gateway CPU ${s.gatewayCpuPct.toFixed(0)} %  machine ${s.machineBusyPct.toFixed(0)} % busy\n`,
      );
    };
    await loopP99Ms(g); // starts the first window now
    lastCpu = { at: performance.now(), gateway: cpuMs(pid), machine: machineCpu() };
    const sampler = setInterval(() => void sample(), SAMPLE_EVERY_S * 1000);

    await delay(durationS * 1000);
    clearInterval(tick);
    clearInterval(churn);
    clearInterval(reloader);
    clearInterval(sampler);
    await reloading;
    await Promise.all(inFlight);

    // Everything accepted arrives (bounded wait); the churning clients leave.
    const expectedEvents = accepted.events.length;
    await until(
      () => eventTallies.every((t) => t.received >= expectedEvents) && kafkaTally.received >= accepted.kafka.length,
      30_000,
      () => 'not everything arrived',
    ).catch(() => undefined);
    for (const s of churners) s.close();
    churners.clear();
    // The publishers' kept-alive connections (up to 16) would stay open for the gateway's
    // keepAliveTimeoutMs (65 s): they are the load's, not the gateway's, and were not there at the baseline.
    agent.destroy();
    await delay(9000); // the last churners' timers have fired and their sockets are closed
    const end = { fds: countFds(pid), wsClients: await wsClients(g) };
    await sample();

    const after = samples.filter((s) => s.t * 60 >= warmupS);
    const slope = slopePerMinute(after.map((s) => [s.t, s.rssMb]));
    const loops = after.map((s) => s.loopP99Ms).sort((a, b) => a - b);
    const worst = after.reduce<Sample | undefined>((w, s) => (w === undefined || s.loopP99Ms > w.loopP99Ms ? s : w), undefined);
    const lostEvents = Math.max(...eventTallies.map((t) => t.missing(accepted.events).length));
    const lostKafkaSeqs = kafkaTally.missing(accepted.kafka);
    const lostKafka = lostKafkaSeqs.length;
    const gatewayErrors = g.logs.filter((l) => l.level === 'error' || l.level === 'fatal' || (l.level as unknown) === 50 || (l.level as unknown) === 60).length;
    const errors = httpErrors + reloadFailures + unexpectedCloses + churnFailed + gatewayErrors;
    const result = {
      machine,
      minutes,
      warmup_minutes: warmupS / 60,
      http_rate: httpRate,
      kafka_rate: kafkaRate,
      published: { events: accepted.events.length, kafka: accepted.kafka.length },
      lost: { events: lostEvents, kafka: lostKafka, kafka_first_seqs: lostKafkaSeqs.slice(0, 20) },
      kafka_probe_before_consumer_joined: { accepted: beforeJoin.length, delivered: beforeJoin.filter((n) => kafkaTally.has(n)).length },
      duplicates: { events: Math.max(...eventTallies.map((t) => t.duplicates)), kafka: kafkaTally.duplicates },
      errors: {
        total: errors,
        http: httpErrors,
        reload_failures: reloadFailures,
        stable_client_disconnects: unexpectedCloses,
        churn_connect_failures: churnFailed,
        gateway_error_logs: gatewayErrors,
        first: failures,
      },
      reloads,
      churn: { joined: churnJoined },
      rss_mb: { start: samples[0]?.rssMb ?? NaN, end: samples[samples.length - 1]?.rssMb ?? NaN, max: Math.max(...samples.map((s) => s.rssMb)), slope_after_warmup_mb_per_min: slope },
      loop_p99_ms: { median_window: percentile(loops, 0.5), worst_window: loops[loops.length - 1] ?? NaN },
      worst_loop_window: worst ? { minute: worst.t, gateway_cpu_pct: worst.gatewayCpuPct, machine_busy_pct: worst.machineBusyPct } : null,
      cpu_pct_median_window: {
        gateway: percentile(
          after.map((s) => s.gatewayCpuPct).sort((a, b) => a - b),
          0.5,
        ),
        machine_busy: percentile(
          after.map((s) => s.machineBusyPct).sort((a, b) => a - b),
          0.5,
        ),
      },
      fds: { baseline: baseline.fds, end: end.fds, max: Math.max(...samples.map((s) => s.fds)) },
      ws_clients: { baseline: baseline.wsClients, end: end.wsClients, max: Math.max(...samples.map((s) => s.wsClients)) },
      samples,
    };
    const checks = [
      ['RSS growth after warm-up', `${slope.toFixed(2)} MB/min`, `<= ${TARGETS.rssMbPerMinute} MB/min`, slope <= TARGETS.rssMbPerMinute],
      [
        'event-loop delay p99 (worst 5 s window after warm-up)',
        `${result.loop_p99_ms.worst_window.toFixed(1)} ms (median window ${result.loop_p99_ms.median_window.toFixed(1)}; in the worst, gateway CPU ${worst?.gatewayCpuPct.toFixed(0)} % of a core, machine ${worst?.machineBusyPct.toFixed(0)} % busy, median windows ${result.cpu_pct_median_window.gateway.toFixed(0)} % and ${result.cpu_pct_median_window.machine_busy.toFixed(0)} %)`,
        `<= ${TARGETS.loopP99Ms} ms`,
        result.loop_p99_ms.worst_window <= TARGETS.loopP99Ms,
      ],
      ['file descriptors after the churn', `${end.fds} (before: ${baseline.fds}, max ${result.fds.max})`, `back to baseline (± ${FD_TOLERANCE})`, end.fds <= baseline.fds + FD_TOLERANCE],
      [
        'websocket clients after the churn',
        `${end.wsClients} (before: ${baseline.wsClients}, max ${result.ws_clients.max}; ${churnJoined} joined and left)`,
        'back to baseline',
        end.wsClients === baseline.wsClients,
      ],
      [
        'errors',
        `${errors} (HTTP ${httpErrors}, reloads failed ${reloadFailures}/${reloads + reloadFailures}, stable clients dropped ${unexpectedCloses}, gateway error logs ${gatewayErrors})`,
        '0',
        errors === 0,
      ],
      [
        'lost (accepted, never delivered)',
        `memory → ws ${lostEvents} of ${accepted.events.length} (each of ${STABLE_CLIENTS} clients), Kafka → ws ${lostKafka} of ${accepted.kafka.length}`,
        '0',
        lostEvents === 0 && lostKafka === 0,
      ],
    ] as const;
    const table = [`| check | measured | target | ok |`, `|---|---|---|---|`, ...checks.map(([what, got, target, ok]) => `| ${what} | ${got} | ${target} | ${ok ? 'yes' : '**no**'} |`)].join('\n');
    const summary = `${table}\n\n${minutes} min, ${httpRate} POST/s to a memory topic fanned out to ${STABLE_CLIENTS} staying and ~${CHURN_PER_SECOND * 5} joining/leaving websocket clients, ${kafkaRate} POST/s to Kafka (mock cluster, 3 brokers) consumed back to a websocket client, a reload every ${RELOAD_EVERY_S} s (${reloads} applied); RSS ${result.rss_mb.start.toFixed(1)} → ${result.rss_mb.end.toFixed(1)} MB (max ${result.rss_mb.max.toFixed(1)}). ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}, load average ${machine.loadavg_at_start} at start, commit ${machine.commit ?? '?'}, ${machine.date}.\n`;
    writeFileSync(join(outDir, 'soak.json'), `${JSON.stringify({ ...result, pass: checks.every((c) => c[3]) }, null, 2)}\n`);
    writeFileSync(join(outDir, 'soak.md'), summary);
    const series: Series[] = [
      { title: 'RSS (MB)', points: samples.map((s) => [s.t, s.rssMb]) },
      { title: 'event-loop delay p99 per 5 s (ms)', points: samples.map((s) => [s.t, s.loopP99Ms]), limit: TARGETS.loopP99Ms },
      { title: 'websocket clients', points: samples.map((s) => [s.t, s.wsClients]) },
    ];
    const svg = renderPlot(series, { warmupMinutes: warmupS / 60, caption: `eventgate soak, ${minutes} min, ${machine.date.slice(0, 16)}Z, commit ${machine.commit ?? '?'}` });
    writeFileSync(join(outDir, 'soak.svg'), svg);
    await screenshot(svg, join(outDir, 'soak.png')).catch((err: Error) => process.stderr.write(`soak: no PNG (${err.message}); soak.svg has the plot\n`));
    process.stdout.write(summary);
    process.stderr.write(`soak: wrote ${outDir}/soak.{json,md,svg,png}\n`);
    return 0;
  } finally {
    for (const s of subscribers) s.close();
    await gw?.stop();
    await kafka.stop();
  }
}

/** CPU time of the whole machine so far, in ticks: busy (all but idle and iowait) and total; Linux /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return { busy: total - fields[3]! - fields[4]!, total };
}

function countFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function wsClients(g: RunningGateway): Promise<number> {
  const status = (await g.status()) as { listeners: { name: string; clients?: number }[] };
  return status.listeners.find((l) => l.name === 'push')?.clients ?? NaN;
}

/** The gateway's event-loop delay p99 since the previous call (prom-client resets its histogram on each scrape). */
async function loopP99Ms(g: RunningGateway): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const m = /^nodejs_eventloop_lag_p99_seconds\s+([0-9.e+-]+)/m.exec(text);
  return m ? Number(m[1]) * 1000 : NaN;
}

/** Least-squares slope of y over x. */
function slopePerMinute(points: [number, number][]): number {
  if (points.length < 2) return NaN;
  const n = points.length;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

async function until(pred: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!pred()) {
    if (performance.now() > deadline) throw new Error(`soak: ${what()}`);
    await delay(50);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Renders the SVG to PNG with Debian's headless Chromium (the one the dashboard test uses). */
async function screenshot(svg: string, file: string): Promise<void> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
    await page.setContent(`<!doctype html><html><body style="margin:0;background:#fff">${svg}</body></html>`);
    await page.locator('svg').screenshot({ path: file });
  } finally {
    await browser.close();
  }
}

process.exitCode = await main();
