/**
 * What a consumed NATS message becomes for its route: its payload, its subject, its header block
 * (read leniently, names Go writes in HTTP's case taken in lower case) and, from a stream, its
 * sequence and time.
 */

import type { JsMsg, Msg, MsgHdrs } from 'nats';
import { fromNatsHeaders } from '../../../codecs/cloudevents.js';
import { offsetText, payloadMessage, type Message } from '../../../core/message.js';
import { repeatedHeaders, singleValued } from '../acknowledgement.js';

/**
 * Header names the gateway reads by their lower-case spelling (core/message.ts, the CloudEvents
 * codec). Go's NATS client writes every header name as HTTP does (`Content-Type`), and its readers
 * match names regardless of case, so these are taken in any case and named in lower case.
 */
const CASE_FREE_NAMES = new Map(['content-type', 'content-encoding'].map((n) => [n, n]));

const CASE_FREE_LENGTHS = new Set([...CASE_FREE_NAMES.keys()].map((n) => n.length));

/**
 * A consumed message's headers. The client decodes them when first asked and throws on a name
 * that is not printable ASCII (`Ü: 1`, `a b: 1`), which nats-server passes on from any
 * publisher: thrown in a subscription's callback, that closed the connection's reader, and every
 * route on the broker stalled until the connection was dropped as stale. Such a block is read
 * here instead, its names as they came (a target that cannot carry one refuses the message).
 */
export function consumedHeaders(m: Msg | JsMsg): ConsumedHeaders {
  let h: MsgHdrs | undefined;
  try {
    h = m.headers;
  } catch {
    // The client's message (a JetStream message wraps one) keeps the bytes it read and where the header block ends.
    const inner = (m as { msg?: Msg }).msg ?? m;
    const raw = inner as unknown as { _rdata?: Uint8Array; _msg?: { hdr?: number } };
    const end = raw._msg?.hdr ?? -1;
    if (raw._rdata === undefined || end < 0) return { headers: {} };
    return readHeaders(looseHeaders(Buffer.from(raw._rdata.subarray(0, end)).toString('utf8')));
  }
  if (!h) return { headers: {} };
  return readHeaders(h.keys().map((k) => [k, h.values(k)] as [string, string[]]));
}

/** A consumed message's headers (the last value of a repeated name), and every value of those it repeats, for a Kafka target (repeatedHeaders). */
export interface ConsumedHeaders {
  headers: Record<string, string>;
  repeated?: Record<string, Buffer[]>;
}

function readHeaders(entries: [string, string[]][]): ConsumedHeaders {
  const headers = caseFree(singleValued(entries));
  // A binary-mode CloudEvent in the NATS binding's `ce-<name>` headers, as the gateway's `ce_<name>`.
  return { headers: fromNatsHeaders(headers), repeated: repeatedHeaders(entries, headers) };
}

/** Headers of one value each (a test's `input.headers`) as readHeaders makes them of a message's. */
export function headersRead(given: Readonly<Record<string, string>>): Record<string, string> {
  return fromNatsHeaders(caseFree({ ...given }));
}

/** A header block's `name: value` lines, as the client reads them but taking any name. */
function looseHeaders(block: string): [string, string[]][] {
  const out = new Map<string, string[]>();
  // The first line is `NATS/1.0` and a status, if any.
  for (const line of block.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (colon < 1) continue;
    const name = line.slice(0, colon);
    const values = out.get(name) ?? [];
    values.push(line.slice(colon + 1).trim());
    out.set(name, values);
  }
  return [...out];
}

/** `Content-Type` and `Content-Encoding` in any case, as Go's client writes them, under their lower-case names; `out` is changed. Also what `eventgate test` reads a nats route's input headers with. */
function caseFree(out: Record<string, string>): Record<string, string> {
  for (const name of Object.keys(out)) {
    // Most names are neither: no lower-case copy made for them (this runs for every consumed message).
    if (!CASE_FREE_LENGTHS.has(name.length)) continue;
    const lower = CASE_FREE_NAMES.get(name.toLowerCase());
    if (lower === undefined || lower === name) continue;
    // A lower-case one the publisher also sent wins.
    if (!Object.hasOwn(out, lower)) out[lower] = out[name]!;
    delete out[name];
  }
  return out;
}

export function coreMessage(data: Buffer, subject: string, { headers, repeated }: ConsumedHeaders, at: number): Message {
  return payloadMessage(data, { headers, topic: subject, partition: null, offset: null, timestamp: at }, repeated);
}

export function streamMessage(m: JsMsg): Message {
  const { headers, repeated } = consumedHeaders(m);
  return payloadMessage(
    Buffer.from(m.data),
    {
      headers,
      topic: m.subject,
      partition: 0,
      offset: offsetText(m.seq),
      // JetStream timestamps are nanoseconds.
      timestamp: Math.floor(m.info.timestampNanos / 1e6),
    },
    repeated,
  );
}
