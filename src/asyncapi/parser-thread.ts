/**
 * The thread that parses AsyncAPI documents (parse-worker.ts), as the gateway's thread sees it.
 * A parse is CPU work of a hundred milliseconds or more (about a second for the first in a thread);
 * run on the event loop it held every connection's traffic for that long on each reload that
 * changed a document. The thread reads the document's local `$ref`s through the caller's reader
 * (asking for each file by message), so the caller still learns every file a document depends on.
 *
 * One thread serves every parse, started on first use and stopped when it has been idle a while:
 * the parser and its compiled schemas (~32 MB idle) are not kept by a command or a gateway that parses
 * no document of its config. A running gateway whose config names AsyncAPI documents keeps it
 * (keepParserThread): a reload that changes one is live within 500 ms only with the thread warm
 * (a thread's first parse takes ~1 s: loading the parser, its rules' first compile). A thread that dies (out of its heap, `asyncapiParser.maxHeapMb`) or overruns a parse's
 * `asyncapiParser.timeoutMs` fails the parses it had with a problem; the next parse starts a new one.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';
import type { AsyncApiProblem } from './document.js';
import type { ParseOutcome } from './parse.js';
import type { RefPolicy } from './refs.js';

/** Gateway → thread. */
export type ToParser = { kind: 'parse'; id: number; file: string; text: string; policy: RefPolicy } | { kind: 'file'; id: number; read: number; text?: string; error?: string };
/** Thread → gateway. */
export type FromParser = { kind: 'read'; id: number; read: number; file: string } | { kind: 'done'; id: number; outcome: ParseOutcome } | { kind: 'failed'; id: number; error: string };

/** A thread idle this long is stopped (its memory returned); the next parse starts another. */
const IDLE_MS = 30_000;

/**
 * `asyncapiParser` in gateway.yaml. A parse not done within `timeoutMs` (its remote `$ref`
 * fetches included) is given up and its thread stopped. `maxHeapMb` is the thread's heap: a
 * 4 MiB document (refs.ts's cap) of plain channels parses in about 35 s within ~600 MB, and
 * several such files a document `$ref`s need more; the default lets a gateway on a host with less
 * memory than that be killed whole instead of losing only the thread, hence the setting.
 */
export interface ParserLimits {
  timeoutMs: number;
  maxHeapMb: number;
}
export const DEFAULT_PARSER_LIMITS: ParserLimits = { timeoutMs: 60_000, maxHeapMb: 1024 };

interface Pending {
  file: string;
  read: (absPath: string) => string;
  resolve: (o: ParseOutcome) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

let thread: Worker | undefined;
/** The heap `thread` was started with: a parse asking for another gets a new thread once this one has nothing in hand. */
let threadHeapMb = 0;
let idleTimer: NodeJS.Timeout | undefined;
/** Set by keepParserThread: the thread is not stopped when idle. */
let kept = false;
let nextId = 1;
const pending = new Map<number, Pending>();

/** Parses `text` (the document at `file`) in the parser thread. */
export function parseInThread(file: string, text: string, read: (absPath: string) => string, policy: RefPolicy, limits?: Partial<ParserLimits>): Promise<ParseOutcome> {
  const { timeoutMs, maxHeapMb } = { ...DEFAULT_PARSER_LIMITS, ...limits };
  const worker = ensureThread(maxHeapMb);
  const id = nextId++;
  // The thread keeps the process alive while it parses (a pending promise alone would not: a
  // `validate` would exit mid-parse), and not once idle, waiting to be stopped.
  worker.ref();
  return new Promise<ParseOutcome>((resolve, reject) => {
    const timer = setTimeout(() => stop(worker, `parsing took longer than ${timeoutMs} ms (asyncapiParser.timeoutMs)`), timeoutMs);
    pending.set(id, { file, read, resolve, reject, timer });
    try {
      worker.postMessage({ kind: 'parse', id, file, text, policy } satisfies ToParser);
    } catch (err) {
      // Not sent (a policy that cannot be cloned): answered now, not by the 60 s bound, which would stop the thread.
      settle(id);
      reject(err as Error);
    }
  });
}

/**
 * Whether the thread stays when idle: a running gateway keeps it while its config names AsyncAPI
 * documents, whose next edit must be live within 500 ms (spec §6), and lets it go (after
 * `IDLE_MS`) once a reload names none. A thread that died or overran a parse is not started
 * again until the next parse.
 */
export function keepParserThread(keep: boolean): void {
  if (kept === keep) return;
  kept = keep;
  if (keep) clearTimeout(idleTimer);
  else if (thread && pending.size === 0) stopWhenIdle(thread);
}

/** Whether a parser thread runs now (idle ones stop after `IDLE_MS`, unless kept). */
export function parserThreadRunning(): boolean {
  return thread !== undefined;
}

/**
 * How a parser thread is started (scripts/write-bundle-code-caches.js starts one so, to write the
 * parser bundle's code cache under the V8 flags a parser thread has). No flags of the process
 * (`--input-type`, `--test`, a preload): the thread needs none, and some refuse a worker.
 */
export function parserThreadOptions(maxHeapMb = DEFAULT_PARSER_LIMITS.maxHeapMb): WorkerOptions {
  return { execArgv: [], resourceLimits: { maxOldGenerationSizeMb: maxHeapMb, maxYoungGenerationSizeMb: YOUNG_GENERATION_MB } };
}

/**
 * The thread's young generation (V8's default lets it grow to 48 MB, two 16 MB semi-spaces). A
 * parse grew it and left it committed, ~24 MB of a kept idle thread's resident memory until V8's
 * memory reducer shrank it, which some idle gateways never got (the 3.0 example idled at ~100 MB
 * or at 129-134 MB). At 12 MB (4 MB semi-spaces) a parse takes the CPU it took with the default,
 * for the 3.0 example as for a 4000-channel document; at 6 MB the 4000-channel parse cost ~13 %
 * more (docs/performance.md, "The kept parser thread's memory").
 */
const YOUNG_GENERATION_MB = 12;

function ensureThread(maxHeapMb: number): Worker {
  clearTimeout(idleTimer);
  if (thread && (threadHeapMb === maxHeapMb || pending.size > 0)) return thread;
  // An idle thread with another heap (a reload changed maxHeapMb): forgotten first, so its exit fails no parse.
  if (thread) {
    const old = thread;
    thread = undefined;
    void old.terminate();
  }
  const worker = new Worker(new URL('./parse-worker.js', import.meta.url), parserThreadOptions(maxHeapMb));
  worker.on('message', (m: FromParser) => answer(worker, m));
  worker.on('error', (err) => stop(worker, threadError(err, maxHeapMb)));
  worker.on('exit', (code) => stop(worker, `the parser thread exited (code ${code})`));
  thread = worker;
  threadHeapMb = maxHeapMb;
  return worker;
}

/** Why the thread failed, in the operator's terms: its heap is a setting. */
function threadError(err: Error, maxHeapMb: number): string {
  if ((err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY') return `the parser ran out of its ${maxHeapMb} MB heap (asyncapiParser.maxHeapMb)`;
  return err.message;
}

function answer(worker: Worker, m: FromParser): void {
  const p = pending.get(m.id);
  if (!p) return;
  if (m.kind === 'read') {
    let reply: ToParser;
    try {
      reply = { kind: 'file', id: m.id, read: m.read, text: p.read(m.file) };
    } catch (err) {
      reply = { kind: 'file', id: m.id, read: m.read, error: (err as Error).message };
    }
    worker.postMessage(reply);
    return;
  }
  settle(m.id);
  if (m.kind === 'done') p.resolve(m.outcome);
  else p.reject(new Error(m.error));
}

function settle(id: number): void {
  clearTimeout(pending.get(id)?.timer);
  pending.delete(id);
  if (pending.size === 0 && thread) {
    thread.unref();
    if (!kept) stopWhenIdle(thread);
  }
}

function stopWhenIdle(idle: Worker): void {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(() => {
    // Forgotten before it is told to stop: a parse asked for meanwhile starts a new thread, never
    // one on its way out (whose exit would fail that parse).
    if (thread !== idle || pending.size > 0 || kept) return;
    thread = undefined;
    void idle.terminate();
  }, IDLE_MS);
  idleTimer.unref();
}

/**
 * The thread is gone or given up: each parse it had is answered with a problem at its document
 * (a reload reports it and keeps the running config, as for any invalid document).
 */
function stop(worker: Worker, why: string): void {
  if (thread !== worker) return;
  thread = undefined;
  void worker.terminate();
  for (const [id, p] of [...pending]) {
    clearTimeout(p.timer);
    pending.delete(id);
    const problem: AsyncApiProblem = { file: p.file, line: 1, column: 1, path: [], message: `the document could not be parsed: ${why}` };
    p.resolve({ result: { document: undefined, problems: [problem] } });
  }
}
