import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type * as Ws from 'ws';
import type { WebSocket } from 'ws';
import { bundled } from '../core/bundled.js';
import type { Problem } from '../core/errors.js';
import { shownValue, type Message } from '../core/message.js';
import { outcomeLabel, type Outcome } from '../core/outcome.js';

const { WebSocketServer } = bundled<typeof Ws>('ws');

export const DEFAULT_TAP_MAX_PER_SECOND = 100;
/** A tap client with more unsent data than this is too slow to follow; it is closed with 1013. */
const MAX_BUFFERED = 4 * 1024 * 1024;
const GOING_AWAY = 1001;
const TRY_AGAIN_LATER = 1013;

/**
 * The live tap of one route: every message the route handles, with its outcome, streamed to the
 * admin WebSocket clients watching it. At most `maxPerSecond` messages are sent in each one-second
 * window; the rest are counted and reported in a `{"type":"skipped"}` frame when the window ends,
 * so a busy route cannot flood the tap (or the gateway serialising for it).
 */
export class TapChannel {
  /** Read on the message path: a route nobody taps pays one property read. */
  active = false;
  private readonly clients = new Set<WebSocket>();
  private windowStart = 0;
  private sent = 0;
  private skipped = 0;
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly route: string,
    private readonly hub: TapHub,
  ) {}

  add(ws: WebSocket): void {
    this.clients.add(ws);
    this.active = true;
    ws.on('close', () => {
      this.clients.delete(ws);
      this.active = this.clients.size > 0;
    });
    ws.on('error', () => ws.terminate());
    ws.send(JSON.stringify({ type: 'hello', route: this.route, maxPerSecond: this.hub.maxPerSecond }));
  }

  /**
   * Called by the route after each message, only while `active`: the message as the route
   * received it, its outcome, and the traceparent of the route's span for it.
   */
  publish(input: Message, outcome: Outcome, latencyMs: number, traceparent: string): void {
    const now = Date.now();
    if (now - this.windowStart >= 1000) {
      this.flushSkipped();
      this.windowStart = now;
      this.sent = 0;
    }
    if (this.sent >= this.hub.maxPerSecond) {
      if (this.skipped++ === 0) this.flushTimer = setTimeout(() => this.flushSkipped(), this.windowStart + 1000 - now).unref();
      return;
    }
    this.sent++;
    this.broadcast(tapFrame(tapEvent(this.route, input, outcome, latencyMs, traceparent, now)));
  }

  private flushSkipped(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.skipped === 0) return;
    const frame = JSON.stringify({ type: 'skipped', route: this.route, count: this.skipped, maxPerSecond: this.hub.maxPerSecond, since: new Date(this.windowStart).toISOString() });
    this.skipped = 0;
    this.broadcast(frame);
  }

  private broadcast(frame: string): void {
    for (const ws of this.clients) {
      if (ws.readyState !== 1) continue;
      if (ws.bufferedAmount > MAX_BUFFERED) {
        this.clients.delete(ws);
        this.active = this.clients.size > 0;
        ws.close(TRY_AGAIN_LATER, 'tap client too slow');
        continue;
      }
      ws.send(frame);
    }
  }

  close(code: number, reason: string): Promise<void> {
    clearTimeout(this.flushTimer);
    const all = [...this.clients];
    this.clients.clear();
    this.active = false;
    return Promise.all(all.map((ws) => closeSocket(ws, code, reason))).then(() => undefined);
  }
}

/**
 * `message` is what the route received; `output`, for delivered messages, what its targets
 * received (after transforms and header edits, with the route's own traceparent).
 */
function tapEvent(route: string, input: Message, outcome: Outcome, latencyMs: number, traceparent: string, now: number): Record<string, unknown> {
  const event: Record<string, unknown> = {
    type: 'message',
    route,
    at: new Date(now).toISOString(),
    outcome: outcomeLabel(outcome),
    latencyMs: Math.round(latencyMs * 1000) / 1000,
    traceId: traceparent.slice(3, 35),
    traceparent,
    message: view(input),
  };
  switch (outcome.outcome) {
    case 'delivered':
      event.deliveries = outcome.deliveries;
      if (outcome.message) event.output = view(outcome.message);
      if (outcome.tagged) event.errors = outcome.tags ?? [];
      break;
    case 'deadlettered':
      event.deliveries = outcome.deliveries;
      event.errors = outcome.errors;
      if (outcome.cause) {
        event.status = outcome.cause.status;
        event.problem = problemOf(outcome.cause);
      }
      break;
    case 'invalid':
    case 'rejected':
    case 'failed':
      event.status = outcome.problem.status;
      event.problem = problemOf(outcome.problem);
      if (outcome.problem.errors) event.errors = outcome.problem.errors;
      break;
    case 'filtered':
      break;
  }
  return event;
}

/** A tap event's `problem`: what it is, and the failing target's tries, last answer and place when known (as the problem answer has them). */
function problemOf(p: Problem): Record<string, unknown> {
  const shown: Record<string, unknown> = { code: p.code, title: p.title, detail: p.detail };
  if (p.attempts !== undefined) shown.attempts = p.attempts;
  if (p.endpointStatus !== undefined) shown.endpointStatus = p.endpointStatus;
  if (p.target !== undefined) shown.target = p.target;
  return shown;
}

/**
 * The event as JSON. A value JSON cannot write (a consumed payload nested so deeply that writing it
 * overflows the stack) is shown as a note instead: the tap is called as the route settles a
 * message, and its exception made the route give a delivered message back to its server, which
 * then delivered it again.
 */
function tapFrame(event: Record<string, unknown>): string {
  try {
    return JSON.stringify(event);
  } catch (err) {
    const note = `(the value cannot be shown: ${(err as Error).message})`;
    event.message = { ...(event.message as Record<string, unknown>), value: note };
    if (event.output) event.output = { ...(event.output as Record<string, unknown>), value: note };
    return JSON.stringify(event);
  }
}

function view(m: Message): Record<string, unknown> {
  return { key: m.key, headers: m.headers, ...shownValue(m), topic: m.topic, partition: m.partition, offset: m.offset, timestamp: m.timestamp };
}

/** Every route's tap channel, owned by the gateway so channels outlive admin server restarts and route rebuilds. */
export class TapHub {
  maxPerSecond = DEFAULT_TAP_MAX_PER_SECOND;
  private readonly channels = new Map<string, TapChannel>();
  /** Tap clients send nothing; a small frame limit keeps them from sending much. */
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4096 });

  channel(route: string): TapChannel {
    let c = this.channels.get(route);
    if (!c) this.channels.set(route, (c = new TapChannel(route, this)));
    return c;
  }

  configure(options: { maxPerSecond?: number } | undefined): void {
    this.maxPerSecond = options?.maxPerSecond ?? DEFAULT_TAP_MAX_PER_SECOND;
  }

  /** Closes the taps of routes a reload removed. */
  retain(routes: Iterable<string>): void {
    const keep = new Set(routes);
    for (const [name, c] of this.channels) {
      if (keep.has(name)) continue;
      this.channels.delete(name);
      void c.close(GOING_AWAY, 'route removed');
    }
  }

  accept(req: IncomingMessage, socket: Duplex, head: Buffer, route: string): void {
    this.wss.handleUpgrade(req, socket, head, (ws) => this.channel(route).add(ws));
  }

  closeAll(reason: string): Promise<void> {
    return Promise.all([...this.channels.values()].map((c) => c.close(GOING_AWAY, reason))).then(() => undefined);
  }
}

/** Close politely; a client that does not answer the close handshake within a second is cut off. */
function closeSocket(ws: WebSocket, code: number, reason: string): Promise<void> {
  if (ws.readyState === 3) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ws.terminate();
      resolve();
    }, 1000).unref();
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(code, reason);
  });
}
