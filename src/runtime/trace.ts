import { randomFillSync } from 'node:crypto';
import { context, INVALID_SPAN_CONTEXT, ProxyTracerProvider, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Context, type Span, type SpanContext } from '@opentelemetry/api';
import type { Outcome } from '../core/outcome.js';

/** W3C Trace Context headers (https://www.w3.org/TR/trace-context/). */
export const TRACEPARENT = 'traceparent';

/**
 * The tracer is resolved through the global API on every startSpan, so an OpenTelemetry SDK
 * registered at any time (usually `node --import ./otel.js`) receives our spans; with none, the
 * API is a no-op and startSpan only allocates a non-recording span.
 */
const tracer = trace.getTracer('eventgate');

/**
 * What the global API answers when no SDK is registered: a fresh proxy's delegate is the no-op
 * provider. Comparing with it on each message (a property read and a call) lets the no-SDK path
 * skip the API altogether; an SDK registered later is seen at the next message.
 */
const NOOP_PROVIDER = new ProxyTracerProvider().getDelegate();
function sdkRegistered(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider && provider.getDelegate() === NOOP_PROVIDER);
}
/** The span of every message when no SDK is registered: not recording, ending it does nothing. */
const NON_RECORDING = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/** The span of a message that is not traced on its own (a record of a Kafka produce request). */
export const UNTRACED: MessageSpan = { span: NON_RECORDING, traceId: '', traceparent: '', context: undefined };

/** version "-" trace-id "-" parent-id "-" flags (§3.2); a later version may append "-" fields. */
const VERSION_00 = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;
const LATER_VERSION = /^(?!ff)[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** The span context an incoming `traceparent` names, or undefined when it is absent or malformed (then a new trace starts). */
export function parseTraceparent(header: string | undefined): SpanContext | undefined {
  if (header === undefined) return undefined;
  let h = header;
  if (!VERSION_00.test(h)) {
    h = h.trim();
    // Version ff is forbidden; version 00 has exactly four fields.
    if (h.startsWith('00-') ? !VERSION_00.test(h) : !LATER_VERSION.test(h)) return undefined;
  }
  const traceId = h.slice(3, 35);
  const spanId = h.slice(36, 52);
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, traceFlags: parseInt(h.slice(53, 55), 16), isRemote: true };
}

export function formatTraceparent(sc: Pick<SpanContext, 'traceId' | 'spanId' | 'traceFlags'>): string {
  return `00-${sc.traceId}-${sc.spanId}-${sc.traceFlags & TraceFlags.SAMPLED ? '01' : '00'}`;
}

/**
 * New traces' `traceparent`s are made ahead, a pool at a time: the CSPRNG fills one buffer, one
 * hex conversion turns it into text, and one join lays it out as ready-made
 * `00-<trace-id>-<span-id>-01` headers. A message's header is one slice of that text, where a hex
 * conversion per message (a native call and a malloc) put it together from four pieces: a rope of
 * six strings, which a memory topic then kept with every retained message and the scavenger copied
 * (docs/performance.md). A pool's bytes are never used twice.
 */
const POOL_HEADERS = 128;
/** `00-` + 32 + `-` + 16 + `-01`. */
const HEADER_LENGTH = 55;
const random = Buffer.allocUnsafe(POOL_HEADERS * 24);
let pool = '';
let poolAt = 0;

/** The next unused ready-made header of the pool (trace id at [3, 35), span id at [36, 52)). */
function nextHeader(): string {
  while (poolAt === pool.length) {
    randomFillSync(random);
    const hex = random.toString('hex');
    const parts: string[] = [];
    for (let i = 0; i < hex.length; i += 48) {
      const traceId = hex.slice(i, i + 32);
      const spanId = hex.slice(i + 32, i + 48);
      // All-zero ids are invalid (W3C Trace Context §3.2.2.3); the rare header with one is left out.
      if (traceId !== ZERO_TRACE && spanId !== ZERO_SPAN) parts.push('00-', traceId, '-', spanId, '-01');
    }
    pool = parts.join('');
    poolAt = 0;
  }
  const header = pool.slice(poolAt, poolAt + HEADER_LENGTH);
  poolAt += HEADER_LENGTH;
  return header;
}

/** The gateway's span for one message on one route. */
export interface MessageSpan {
  readonly span: Span;
  readonly traceId: string;
  /** The `traceparent` the message carries onwards: the incoming trace id (or a new one) with this span's id. */
  readonly traceparent: string;
  /** Set only when an SDK made the span, so instrumentations below (e.g. a Kafka client's) nest under it. */
  readonly context: Context | undefined;
}

export interface SpanTemplate {
  name: string;
  kind: SpanKind;
  attributes: Record<string, string>;
}

/** Built once per route, so starting a span builds no strings. */
export function spanTemplate(route: string, fromBroker: boolean): SpanTemplate {
  return { name: `route ${route}`, kind: fromBroker ? SpanKind.CONSUMER : SpanKind.SERVER, attributes: { 'eventgate.route': route } };
}

/**
 * Starts the span of one message: a child of the incoming `traceparent` when there is a valid
 * one, else the root of a new trace. With an SDK registered the SDK picks the ids and the sampling
 * decision; without one the span ids are made here, so every message leaves with a fresh span id
 * either way, and a new trace is marked sampled so downstream parent-based samplers keep it.
 */
export function startMessageSpan(template: SpanTemplate, incoming: string | undefined): MessageSpan {
  const parent = parseTraceparent(incoming);
  if (!sdkRegistered()) return ownSpan(parent);
  const parentContext = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  const span = tracer.startSpan(template.name, { kind: template.kind, attributes: template.attributes }, parentContext);
  const sc = span.spanContext();
  // A provider that hands back the parent's context (or an invalid one) made no span of its own.
  if (sc.spanId === ZERO_SPAN || sc.traceId === ZERO_TRACE || (parent !== undefined && sc.spanId === parent.spanId)) return { ...ownSpan(parent), span };
  return { span, traceId: sc.traceId, traceparent: formatTraceparent(sc), context: trace.setSpan(parentContext, span) };
}

/** Ids made here, when nothing recorded the span: the parent's trace (or a new, sampled one) and a new span id. */
function ownSpan(parent: SpanContext | undefined): MessageSpan {
  const header = nextHeader();
  if (parent) {
    const traceparent = formatTraceparent({ traceId: parent.traceId, spanId: header.slice(36, 52), traceFlags: parent.traceFlags });
    return { span: NON_RECORDING, traceId: parent.traceId, traceparent, context: undefined };
  }
  // A new trace: the header as it was made, marked sampled (flags 01).
  return { span: NON_RECORDING, traceId: header.slice(3, 35), traceparent: header, context: undefined };
}

/** Calls `fn` with the span active (only when an SDK made it; otherwise there is nothing to nest under it). */
export function inSpan<A extends unknown[], R>(s: MessageSpan, fn: (...args: A) => R, thisArg: unknown, ...args: A): R {
  return s.context ? context.with(s.context, fn, thisArg, ...args) : fn.apply(thisArg, args);
}

export function endMessageSpan(s: MessageSpan, outcome: Outcome): void {
  const span = s.span;
  if (span.isRecording()) {
    span.setAttribute('eventgate.outcome', outcome.outcome);
    if (outcome.outcome === 'failed') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.problem.detail });
    else if (outcome.outcome === 'invalid' || outcome.outcome === 'rejected') span.setAttribute('eventgate.problem', outcome.problem.code);
  }
  span.end();
}

/** The trace id of a message's `traceparent`, for logs about it outside its route's span. */
export function traceIdOf(headers: Record<string, string>): string | undefined {
  return parseTraceparent(headers[TRACEPARENT])?.traceId;
}
