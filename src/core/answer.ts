import { problemBody, tookDeliveries, type Problem } from './errors.js';
import type { Delivery } from './message.js';
import type { Outcome } from './outcome.js';

/** How an outcome is answered to a publishing client; shared by the HTTP and WebSocket listeners. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
  problem?: Problem;
}

export function answerFor(outcome: Outcome): Answer {
  switch (outcome.outcome) {
    case 'delivered':
      return { status: 200, body: outcome.tagged ? { deliveries: outcome.deliveries, tagged: true } : { deliveries: outcome.deliveries } };
    case 'filtered':
      return { status: 200, body: { deliveries: [], filtered: true } };
    case 'deadlettered':
      return { status: 200, body: { deliveries: outcome.deliveries, deadlettered: true, errors: outcome.errors } };
    case 'invalid':
    case 'rejected':
    case 'failed':
      return { status: outcome.problem.status, body: problemBody(outcome.problem), problem: outcome.problem };
  }
}

/**
 * The JSON text of a `delivered` answer's body, the same text `JSON.stringify(answerFor(o).body)`
 * gives, written without it: JSON.stringify's fixed cost per call (~0.4 µs) and the answer object
 * were a visible share of a small publish (docs/performance.md). A broker delivery (the common
 * case) is written field by field; any other delivery goes through JSON.stringify.
 */
export function deliveredJson(deliveries: readonly Delivery[], tagged: boolean): string {
  const only = deliveries.length === 1 ? deliveries[0]! : undefined;
  // One broker delivery: the text up to its offset is the same for every message of a route.
  if (only && 'broker' in only && typeof only.offset === 'string' && Number.isInteger(only.partition)) {
    return `${prefixOf(only)}${jsonString(only.offset)}${tagged ? '}],"tagged":true}' : '}]}'}`;
  }
  let text = '{"deliveries":[';
  for (let i = 0; i < deliveries.length; i++) {
    const d = deliveries[i]!;
    if (i > 0) text += ',';
    text +=
      'broker' in d && typeof d.offset === 'string' && Number.isInteger(d.partition)
        ? `{"broker":${jsonString(d.broker)},"topic":${jsonString(d.topic)},"partition":${d.partition},"offset":${jsonString(d.offset)}}`
        : JSON.stringify(d);
  }
  return tagged ? `${text}],"tagged":true}` : `${text}]}`;
}

/** A delivered answer's JSON text and its length in bytes (the content-length). */
export interface RepeatedAnswer {
  readonly text: string;
  readonly bytes: number;
}

/** The last answer of a frozen delivery (repeatedAnswer). */
let repeated: { delivery: Delivery | undefined; tagged: boolean; answer: RepeatedAnswer } = { delivery: undefined, tagged: false, answer: { text: '', bytes: 0 } };

/**
 * deliveredJson's text and its byte length for one delivery that is a frozen object: MQTT and AMQP
 * answer every publish to a topic with the same one (TopicDeliveries: no offset to tell), so each
 * request of a route is answered with the same text. Kept for the last such delivery rather than
 * written, concatenated and measured again per request; undefined for any other outcome.
 */
export function repeatedAnswer(deliveries: readonly Delivery[], tagged: boolean): RepeatedAnswer | undefined {
  if (deliveries.length !== 1) return undefined;
  const only = deliveries[0]!;
  if (only === repeated.delivery && tagged === repeated.tagged) return repeated.answer;
  if (!Object.isFrozen(only)) return undefined;
  const text = deliveredJson(deliveries, tagged);
  repeated = { delivery: only, tagged, answer: { text, bytes: Buffer.byteLength(text) } };
  return repeated.answer;
}

/** The last prefix written, kept while deliveries go to the same broker, topic and partition. */
let prefix = { broker: '', topic: '', partition: -1, text: '' };

function prefixOf(d: { broker: string; topic: string; partition: number }): string {
  if (d.broker !== prefix.broker || d.topic !== prefix.topic || d.partition !== prefix.partition) {
    prefix = { broker: d.broker, topic: d.topic, partition: d.partition, text: `{"deliveries":[{"broker":${jsonString(d.broker)},"topic":${jsonString(d.topic)},"partition":${d.partition},"offset":` };
  }
  return prefix.text;
}

/** A string as JSON: quoted as it is when no character needs escaping (names, topics, offsets), else by JSON.stringify. */
function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(s);
  }
  return `"${s}"`;
}

/**
 * The WebSocket form of a problem (spec §5): `{"type":"error","frame","status",...}`. `frame` is the
 * number of the client's frame it answers (1-based, per connection), so a client pairs it with what
 * it sent even where successes get no answer (a route without `ack`).
 */
export function errorFrame(p: Problem, frame?: number): string {
  const out: Record<string, unknown> = { type: 'error', frame, status: p.status, title: p.title, detail: p.detail, code: p.code };
  out.errors = p.errors ?? [];
  // A WebSocket client sees no headers: what HTTP says in Retry-After (seconds), the frame says.
  const retryAfter = p.headers?.['retry-after'];
  if (retryAfter !== undefined && /^\d+$/.test(retryAfter)) out.retryAfter = Number(retryAfter);
  // And the RateLimit fields of a 429, as one object.
  const policy = p.headers?.['ratelimit-policy'];
  if (policy !== undefined)
    out.rateLimit = { policy, limit: Number(p.headers!['ratelimit-limit']), remaining: Number(p.headers!['ratelimit-remaining']), reset: Number(p.headers!['ratelimit-reset']) };
  if (p.took) out.deliveries = tookDeliveries(p.took);
  // The problem body's extension members (problemBody), in the same order.
  if (p.attempts !== undefined) out.attempts = p.attempts;
  if (p.endpointStatus !== undefined) out.endpointStatus = p.endpointStatus;
  if (p.target !== undefined) out.target = p.target;
  return JSON.stringify(out);
}
