import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, afterEach, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { killOnExit, tempDir } from './reaper.js';
import { fetch } from './http.js';

/** The repository root (this file runs from dist/test/helpers). */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const cliPath = join(repoRoot, 'bin', 'eventgate.js');

export interface LogLine {
  level: string;
  msg: string;
  [k: string]: unknown;
}

export interface RunningGateway {
  dir: string;
  configFile: string;
  process: ChildProcess;
  logs: LogLine[];
  stderr(): string;
  adminUrl: string;
  /** Bound port of a listener, from the latest "gateway ready" line. */
  port(listener: string): number;
  url(listener: string, path: string, scheme?: string): string;
  /** Resolves with the first log line (already seen or future) matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs?: number, fromIndex?: number): Promise<LogLine>;
  /** Writes a file relative to the gateway's directory (in place, as `echo > file` would). */
  write(name: string, text: string): void;
  /**
   * Writes the config and waits for the reload it causes to be applied or rejected. In place by
   * default; `{ whole: true }` writes a sibling and renames it over, so the watcher never reads the
   * file half-written (an in-place write empties it first: on a loaded machine a reload can read
   * that, be rejected, and the test see the rejection instead of the reload that follows).
   */
  reconfigure(yaml: string, file?: string, how?: { whole?: boolean }): Promise<LogLine>;
  status(): Promise<any>;
  /** Sends a signal and waits for the process to exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartOptions {
  /** Extra files written next to the config (relative path → content). */
  files?: Record<string, string>;
  env?: Record<string, string>;
  /** Wait for "gateway ready" (default true); false to observe a failing start. */
  waitReady?: boolean;
  /**
   * Prepares the directory before the config is written (e.g. makes gateway.yaml a symlink, as
   * a Kubernetes ConfigMap volume does; the config is then written through it).
   */
  setup?: (dir: string) => void;
  /** How long to wait for "gateway ready" (default START_OR_RELOAD_MS); configs with AsyncAPI documents parse them first. */
  readyTimeoutMs?: number;
  /** More options of `eventgate run` (e.g. `['--vars-file', 'vars.env']`). */
  args?: string[];
}

/**
 * How long a start or a reload may take before a test gives up on it. A config with an AsyncAPI
 * document parses it first, which the gateway allows 60 s (asyncapiParser.timeoutMs); a starved CI
 * machine took over 8 s for one parse in a new thread, where an idle one takes ~2 s. A wait meant
 * to end gets that room: a start or reload that does end is not slowed by it.
 */
export const START_OR_RELOAD_MS = 70_000;

const running = new Set<RunningGateway>();
killOnExit(() => {
  for (const g of running) g.process.kill('SIGKILL');
});

/** Starts `eventgate run` as a user would, in its own temp directory, on the given config. */
export async function startGateway(yaml: string, options: StartOptions = {}): Promise<RunningGateway> {
  const dir = tempDir('eventgate-test');
  const configFile = join(dir, 'gateway.yaml');
  const write = (name: string, text: string) => {
    const p = join(dir, name);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, text);
  };
  for (const [name, text] of Object.entries(options.files ?? {})) write(name, text);
  options.setup?.(dir);
  write('gateway.yaml', yaml);

  const child = spawn(process.execPath, [cliPath, 'run', '-c', configFile, ...(options.args ?? [])], {
    cwd: dir,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogLine[] = [];
  const waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void; from: number }[] = [];
  let stderr = '';
  let buffer = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim() === '') continue;
      let parsed: LogLine;
      try {
        parsed = JSON.parse(line) as LogLine;
      } catch {
        parsed = { level: 'unparsed', msg: line };
      }
      logs.push(parsed);
      for (const w of [...waiters]) {
        if (logs.length - 1 >= w.from && w.pred(parsed)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(parsed);
        }
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;

  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs = 10000, fromIndex = 0) => {
    const seen = logs.slice(fromIndex).find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `timed out waiting for a log line; last lines:\n${logs
                .slice(-5)
                .map((l) => JSON.stringify(l))
                .join('\n')}\nstderr: ${stderr}`,
            ),
          ),
        timeoutMs,
      );
      const w = { pred, from: fromIndex, resolve: (l: LogLine) => (clearTimeout(timer), resolve(l)) };
      waiters.push(w);
      void exited.then(() => {
        if (waiters.includes(w)) {
          clearTimeout(timer);
          reject(new Error(`gateway exited while waiting for a log line; stderr: ${stderr}`));
        }
      });
    });
  };

  const latestReady = () => [...logs].reverse().find((l) => l.msg === 'gateway ready') as (LogLine & { listeners: Record<string, number>; admin?: number }) | undefined;
  const gw: RunningGateway = {
    dir,
    configFile,
    process: child,
    logs,
    stderr: () => stderr,
    get adminUrl() {
      return `http://127.0.0.1:${latestReady()?.admin}`;
    },
    port(listener) {
      const p = latestReady()?.listeners[listener];
      if (p === undefined) throw new Error(`listener ${listener} has no port in the ready line`);
      return p;
    },
    url(listener, path, scheme = 'http') {
      return `${scheme}://127.0.0.1:${gw.port(listener)}${path}`;
    },
    waitForLog,
    write,
    async reconfigure(text, file = 'gateway.yaml', how = {}) {
      const from = logs.length;
      if (how.whole) {
        write(`${file}.next`, text);
        renameSync(join(dir, `${file}.next`), join(dir, file));
      } else write(file, text);
      const reloaded = (l: LogLine) => l.msg === 'config reloaded' || l.msg.startsWith('reload rejected') || l.msg.startsWith('reload rolled back');
      const line = await waitForLog(reloaded, START_OR_RELOAD_MS, from);
      // A write in place truncates the file first: a writer held up past the reload's quiet time
      // (100 ms, on a starved CI machine) shows the gateway an empty file, which it rejects (as
      // designed), before the write's own change reloads the text. That text's reload is the answer.
      const emptied = !how.whole && text.trim() !== '' && line.msg.startsWith('reload rejected') && String(line.diagnostic).includes('the config file is empty');
      return emptied ? waitForLog(reloaded, START_OR_RELOAD_MS, logs.indexOf(line) + 1) : line;
    },
    async status() {
      const res = await fetch(`${gw.adminUrl}/admin/status`);
      return res.json();
    },
    async stop(signal = 'SIGTERM') {
      running.delete(gw);
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const [code, sig] = await exited;
      return { code, signal: sig };
    },
  };
  running.add(gw);
  if (options.waitReady !== false) {
    // Generous by default: on a machine shared by parallel test runs, Node alone can take seconds to start.
    try {
      await waitForLog((l) => l.msg === 'gateway ready', options.readyTimeoutMs ?? START_OR_RELOAD_MS);
    } catch (err) {
      // A gateway that never got ready must not outlive the test file (it would keep it from exiting).
      await gw.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }
  return gw;
}

type Lazy<T> = T | (() => T | Promise<T>);
const resolveLazy = <T>(v: Lazy<T>): Promise<T> => Promise.resolve(typeof v === 'function' ? (v as () => T | Promise<T>)() : v);

/** A gateway that a test fixture owns: reads go to the gateway it currently runs. */
export interface GatewayFixture extends RunningGateway {
  /**
   * Starts this test's gateway (for a fixture made without a config); it is stopped, and its
   * directory removed, after the test.
   */
  start(yaml: string, options?: StartOptions): Promise<RunningGateway>;
}

/**
 * The block gateways (`useGateway(yaml)`) registered so far, by number, and which of them are
 * running; the stops `afterGateways` holds until the gateways registered after it have stopped.
 */
let gatewaysRegistered = 0;
const gatewaysRunning = new Set<number>();
const heldStops: { after: number; stop: () => unknown }[] = [];

/** Runs (and awaits) the held stops that no running gateway registered after them waits for. */
async function runHeldStops(): Promise<void> {
  const ready = heldStops.filter((h) => ![...gatewaysRunning].some((n) => n > h.after));
  for (const h of ready) heldStops.splice(heldStops.indexOf(h), 1);
  // Each stops even when one before it threw: a server left running would outlive the file.
  const failed: unknown[] = [];
  for (const h of ready) {
    try {
      await h.stop();
    } catch (e) {
      failed.push(e);
    }
  }
  if (failed.length) throw failed[0];
}

/**
 * `after(stop)` for a server the block's gateways use (a broker, a proxy, a webhook receiver),
 * whose stop waits until every `useGateway(yaml)` registered after this call has stopped.
 * `after()`s run in the order they are registered and a server is registered before the gateway
 * that names it; stopped first, it would leave the gateway's stop waiting its drain
 * (`admin.drainTimeoutMs`, 10 s) for commits, acks and leaves nothing answers. The stop then runs
 * at the end of the last such gateway's `after()`.
 */
export function afterGateways(stop: () => unknown): void {
  const mark = gatewaysRegistered;
  after(async () => {
    heldStops.push({ after: mark, stop });
    await runHeldStops();
  });
}

/**
 * A gateway for the enclosing `describe` block, always stopped afterwards with its temp directory
 * removed, whether the tests passed or not.
 *
 * - `useGateway(yaml, options)`: started once in `before()`, stopped in `after()`. `yaml` and
 *   `options` may be functions, for configs that need what an earlier `before()` made (a peer's
 *   port); hooks run in the order they are registered.
 * - `useGateway()`: each test starts its own with `await gw.start(yaml, options)` (reload and
 *   shutdown tests change or stop it); stopped in `afterEach()`.
 *
 * The returned object stands for the running gateway (`gw.url(...)`, `gw.logs`, `gw.stop()` — a
 * test may stop it itself; stopping twice is harmless).
 */
export function useGateway(yaml?: Lazy<string>, options: Lazy<StartOptions> = {}): GatewayFixture {
  let current: RunningGateway | undefined;
  let forgetDir: (() => void) | undefined;
  const start = async (text: string, opts: StartOptions = {}): Promise<RunningGateway> => {
    if (current) throw new Error('useGateway: a gateway is already running in this fixture');
    current = await startGateway(text, opts);
    const dir = current.dir;
    // A test file cancelled by the runner skips after(): its directory goes with the process.
    forgetDir = killOnExit(() => rmSync(dir, { recursive: true, force: true }));
    return current;
  };
  const dispose = async (): Promise<void> => {
    const gw = current;
    current = undefined;
    if (!gw) return;
    // Graceful, as a user stops it; a gateway stuck in shutdown is killed rather than hanging the file.
    const killer = setTimeout(() => gw.process.kill('SIGKILL'), 20000);
    try {
      await gw.stop();
    } finally {
      clearTimeout(killer);
      rmSync(gw.dir, { recursive: true, force: true });
      forgetDir?.();
    }
  };
  if (yaml === undefined) {
    afterEach(dispose);
  } else {
    const number = ++gatewaysRegistered;
    before(async () => {
      gatewaysRunning.add(number);
      await start(await resolveLazy(yaml), await resolveLazy(options));
    });
    after(async () => {
      try {
        await dispose();
      } finally {
        gatewaysRunning.delete(number);
        await runHeldStops();
      }
    });
  }
  return new Proxy({ start } as GatewayFixture, {
    get(target, prop) {
      if (prop === 'start') return target.start;
      if (prop === 'then') return undefined; // not a thenable, even when awaited by mistake
      if (!current) throw new Error(`useGateway: no gateway is running (reading ${String(prop)} outside a test, or before start())`);
      const value = Reflect.get(current, prop, current) as unknown;
      return typeof value === 'function' ? value.bind(current) : value;
    },
  });
}

/** Runs the CLI to completion (validate, schema, ...). */
export async function runCli(args: string[], options: { cwd?: string; env?: Record<string, string> } = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [cliPath, ...args], { cwd: options.cwd ?? repoRoot, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  // 'close', not 'exit': under load the last stdout chunk can still be in the pipe when the process has exited.
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

/** A temp directory with the given files; returns its path. Removed when the test process ends. */
export function tempFiles(files: Record<string, string>): string {
  const dir = tempDir('eventgate-files');
  killOnExit(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

/**
 * Retries `check` until it stops throwing (or `timeoutMs` passes, then throws its last error):
 * for outcomes that become true some time after an event the test cannot observe directly.
 */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 5000, intervalMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await check();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }
}

/**
 * Waits until `count()` reaches `target` for as long as it keeps growing, and returns the last
 * count: throws, naming `what` and how far it got, once it stood still for `stallMs`. For work a
 * loaded machine does slowly but steadily (answers read, partitions copied), where a fixed
 * deadline fails a run still under way; a stall is what such a test is after.
 */
export async function untilReached(count: () => Promise<number> | number, target: number, what: string, stallMs = 20000, intervalMs = 100): Promise<number> {
  let last = await count();
  let movedAt = Date.now();
  while (last < target) {
    if (Date.now() - movedAt > stallMs) throw new Error(`${what}: ${last} of ${target}, none more in ${stallMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
    const now = await count();
    if (now !== last) movedAt = Date.now();
    last = now;
  }
  return last;
}

/**
 * Runs `test`; if it fails, appends the whole log of each of `gateways()` (their stdout, then
 * stderr) to its error, for a failure seen once on a loaded machine to be read afterwards. To its
 * stack too: the spec reporter prints an error as `util.inspect` does, from the stack, which was
 * written when the error was made, so a message changed afterwards is never shown.
 */
export async function withLogsOnFailure<T>(gateways: () => readonly RunningGateway[], test: () => Promise<T>): Promise<T> {
  try {
    return await test();
  } catch (err) {
    const logs = gateways().map((gw, i) => `gateway ${i + 1}'s log:\n${gw.logs.map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${gw.stderr()}`);
    if (err instanceof Error) {
      err.message += `\n${logs.join('\n')}`;
      if (err.stack !== undefined) err.stack += `\n${logs.join('\n')}`;
    }
    throw err;
  }
}

/**
 * Waits for each of `routes` to log `consumer ready` (after line `fromIndex`), each wait given
 * `timeoutMs`, in order: a consume route takes messages only from then on, so a test publishes after.
 */
export async function consumersReady(gw: RunningGateway, routes: string | readonly string[], timeoutMs = 30000, fromIndex = 0): Promise<void> {
  for (const route of typeof routes === 'string' ? [routes] : routes) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, timeoutMs, fromIndex);
}
