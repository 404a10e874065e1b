/**
 * How the http listener turns a request into messages, apart from its sockets: which bodies it
 * takes, which headers travel with the message, and CloudEvents in every mode of the HTTP binding.
 * `eventgate test` (src/testing/run-tests.ts) uses the same functions, so a config test of an http
 * route sees exactly what the running listener would hand the route.
 */
import { problem, type Problem } from '../../core/errors.js';
import { BODY_NOT_READ, isJsonMedia, newHeaders, type Message, type MessageContext } from '../../core/message.js';
import type { Outcome } from '../../core/outcome.js';
import { decodeBinary, decodeStructured, structuredProblem, type HttpMode } from '../../codecs/cloudevents.js';

/**
 * Request headers that describe the HTTP exchange (or carry credentials) rather than the event;
 * every other header travels with the message.
 */
const NOT_FORWARDED = new Set([
  'host',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'content-length',
  // The body is decoded before it becomes the message (src/core/content-coding.ts).
  'content-encoding',
  'expect',
  'authorization',
  'cookie',
  'proxy-authorization',
  'proxy-connection',
  'accept',
  'accept-encoding',
  'accept-language',
  'user-agent',
  // Fetch metadata a browser adds by itself (no page script can set them): the exchange, not the event.
  'priority',
  'upgrade-insecure-requests',
  'dnt',
]);

const JSON_TYPE = 'application/json';

/**
 * The request headers (lower-case names) that travel with the message. `rawHeaders` (node's
 * request.rawHeaders): node's parser drops a header named `__proto__` from `raw` (it assigns each
 * name on a plain object, which sets the prototype instead), so that one is taken from there; and
 * its values are bytes read as Latin-1 (headerText). Without it (a config test's input) the values
 * are text as written: `Ã¼` there is those two characters, not the UTF-8 of `ü`.
 */
export function forwardedHeaders(raw: Readonly<Record<string, string | string[] | undefined>>, rawHeaders?: readonly string[]): Record<string, string> {
  const out = newHeaders();
  const text = rawHeaders === undefined ? asWritten : headerText;
  for (const name in raw) {
    // `sec-*` (sec-fetch-*, sec-ch-ua*, sec-gpc): names the Fetch standard reserves for the browser;
    // `:method`, `:path`, ...: HTTP/2's pseudo-headers, the request line's parts, never headers.
    if (NOT_FORWARDED.has(name) || name.startsWith('sec-') || name.charCodeAt(0) === 58) continue;
    const v = raw[name];
    // The usual content type is shared rather than the parser's fresh copy, which a memory topic would retain with every message.
    if (v !== undefined) out[name] = Array.isArray(v) ? text(v.join(', ')) : v === JSON_TYPE ? JSON_TYPE : text(v);
  }
  if (rawHeaders !== undefined) protoHeader(out, rawHeaders);
  return out;
}

const HIGH_BYTE = /[\u0080-\u00ff]/;
const BEYOND_BYTE = /[^\u0000-\u00ff]/;
const utf8 = new TextDecoder('utf-8', { fatal: true });
const asWritten = (v: string) => v;

/**
 * A header value as the client meant it. node reads each byte of a value as one character
 * (Latin-1), so the UTF-8 that curl, Go and most clients send for `Jürgen` became `JÃ¼rgen`, and
 * Kafka, MQTT and NATS headers got that, UTF-8 encoded again. Bytes that are valid UTF-8 are read
 * as UTF-8; others stay Latin-1, as Python's urllib and node's own client send `ü` (one byte, which
 * no valid UTF-8 sequence can be alone). Only for values node's parser read (forwardedHeaders);
 * one with a character beyond a byte is no such value, and is taken as it is.
 */
function headerText(v: string): string {
  // An ASCII value (nearly all) costs one test, 45-80 ns: 0.2-0.4 µs for a request's headers.
  if (!HIGH_BYTE.test(v) || BEYOND_BYTE.test(v)) return v;
  try {
    return utf8.decode(Buffer.from(v, 'latin1'));
  } catch {
    return v;
  }
}

/** Sets a `__proto__` request header (in any case; repeats joined with `, `, as node joins others) from node's raw list, in `out` (newHeaders). */
function protoHeader(out: Record<string, string>, rawHeaders: readonly string[]): void {
  let value: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length === 9 && name.toLowerCase() === PROTO) value = value === undefined ? rawHeaders[i + 1]! : `${value}, ${rawHeaders[i + 1]!}`;
  }
  if (value !== undefined) out[PROTO] = headerText(value);
}

const PROTO = '__proto__';

/**
 * Why a body of `contentType` (a media type as mediaTypeOf gives it) is not taken, or undefined.
 * A binary-mode CloudEvent's body is its data, of any datacontenttype (HTTP binding §3.1.1): it
 * is taken as bytes, the value a structured event's data_base64 gives. Refusing it made the
 * gateway unable to take back the binary-mode webhook requests it sends for such events.
 */
export function refusedMediaType(contentType: string, headers: Readonly<Record<string, string | string[] | undefined>>): Problem | undefined {
  if (contentType === 'text/plain') return refusedCharset(headers['content-type']);
  if (isJsonMedia(contentType) || headers['ce-specversion'] !== undefined) return undefined;
  return problem('EG_UNSUPPORTED_MEDIA_TYPE', `content type '${contentType}' is not accepted; send application/json (or application/*+json, or text/plain for a string value)`);
}

/**
 * The 400 for a request whose Content-Type lines disagree, or undefined. node keeps the first of
 * several, over HTTP/1.1 and HTTP/2 alike, where a proxy in front may have read another: `text/plain`
 * then `application/json` published the JSON as a string. Content-Type has one value (RFC 9110
 * §8.3, §5.3: no list); lines that say one thing, however spelled (`application/json` and
 * `application/json; charset=UTF-8`), pass. One pass over the raw names, a length compare each;
 * lines not the same text are compared as parsed media types (sameMediaType).
 */
export function conflictingContentTypes(rawHeaders: readonly string[]): Problem | undefined {
  let first: string | undefined;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (name.length !== 12 || name.toLowerCase() !== 'content-type') continue;
    const value = rawHeaders[i + 1]!.trim().toLowerCase();
    if (first === undefined) first = value;
    else if (value !== first && !sameMediaType(first, value)) {
      return problem('EG_BAD_REQUEST', `the request has Content-Type headers that disagree ('${first.slice(0, 100)}', '${value.slice(0, 100)}'); send one`);
    }
  }
  return undefined;
}

/**
 * A parameter of a media type (RFC 9110 §5.6.6): its name, `=`, a token or a quoted string; or
 * none, as `parameters = *( OWS ";" OWS [ parameter ] )` allows (`application/json;`, which the
 * single line's reader takes too).
 */
const MEDIA_PARAMETER = /;\s*(?:([^\s;=]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*))?/gy;

/**
 * Whether two Content-Type values (trimmed, lower-cased) name one media type with the same
 * parameters (RFC 9110 §8.3.1): spaces around `;` and `=`, quoting and the order of parameters
 * do not matter, and neither does a charset the body is read as UTF-8 in, given or not (JSON:
 * RFC 8259 §8.1; text/plain: refusedCharset). The values were lower-cased whole, so a
 * parameter's case (a boundary's) is not told apart: no body the gateway reads has such a parameter.
 */
function sameMediaType(a: string, b: string): boolean {
  const x = parsedMediaType(a);
  const y = parsedMediaType(b);
  return x !== undefined && y !== undefined && x === y;
}

/** A Content-Type value (trimmed, lower-cased) as one canonical text; undefined when it is no `type/subtype *(; name=value)`. */
function parsedMediaType(value: string): string | undefined {
  const semi = value.indexOf(';');
  const type = (semi === -1 ? value : value.slice(0, semi)).trim();
  if (!/^[^\s/]+\/[^\s/]+$/.test(type)) return undefined;
  const params = new Map<string, string>();
  let at = semi === -1 ? value.length : semi;
  MEDIA_PARAMETER.lastIndex = at;
  for (let m = MEDIA_PARAMETER.exec(value); m !== null; m = MEDIA_PARAMETER.exec(value)) {
    at = MEDIA_PARAMETER.lastIndex;
    if (m[1] === undefined) continue;
    const raw = m[2]!.trim();
    const v = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
    // Twice the same name: no one value to compare.
    if (params.has(m[1]!)) return undefined;
    params.set(m[1]!, v);
  }
  if (value.slice(at).trim() !== '') return undefined;
  // The charset as the gateway reads the body: JSON, and text/plain without one or in a charset
  // whose bytes read as UTF-8 unchanged (utf8, us-ascii), are read as UTF-8; lines saying so agree.
  const charset = params.get('charset');
  if (charset === undefined ? isJsonMedia(type) || type === 'text/plain' : UTF8_CHARSETS.has(charset)) params.set('charset', 'utf-8');
  return `${type}${[...params]
    .sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0))
    .map(([k, v]) => `;${k}=${v}`)
    .join('')}`;
}

/** Charsets whose bytes read as UTF-8 unchanged. */
const UTF8_CHARSETS = new Set(['utf-8', 'utf8', 'us-ascii', 'ascii']);

/**
 * A text/plain body is read as UTF-8, so one declared in another charset is refused (415) rather
 * than delivered mis-decoded: UTF-16 text is valid UTF-8 byte for byte ("hi" became "h\0i\0"),
 * and Latin-1 text was refused as "not valid UTF-8", which hid the cause. JSON types have no
 * charset parameter (RFC 8259 §11): JSON is UTF-8 whatever a client writes there.
 */
function refusedCharset(raw: string | string[] | undefined): Problem | undefined {
  const header = Array.isArray(raw) ? raw[0] : raw;
  const m = header === undefined ? null : /;\s*charset\s*=\s*("?)([^";]*)\1/i.exec(header);
  if (m === null) return undefined;
  const charset = m[2]!.trim().toLowerCase();
  if (UTF8_CHARSETS.has(charset)) return undefined;
  return problem('EG_UNSUPPORTED_MEDIA_TYPE', `text/plain in charset '${charset}' is not accepted; send the text as UTF-8 (charset=utf-8)`);
}

/**
 * A binary- or structured-mode CloudEvent request's message headers and value (attributes as
 * `ce_` headers, data as the value), or the 400 `EG_CLOUDEVENT_INVALID` naming what is wrong.
 * `rawHeaders` (the request's raw lines, where there is a request) refuses an attribute sent in two headers.
 */
export function decodeEvent(
  mode: Exclude<HttpMode, 'batch'>,
  value: unknown,
  headers: Record<string, string>,
  rawHeaders?: readonly string[],
): { ok: true; headers: Record<string, string>; value: unknown } | { ok: false; problem: Problem } {
  if (mode === 'structured') {
    const event = decodeStructured(value, headers);
    return event.ok ? { ok: true, headers: event.event.headers, value: event.event.value } : { ok: false, problem: structuredProblem(event.errors) };
  }
  const decoded = decodeBinary(headers, rawHeaders);
  return decoded.ok ? { ok: true, headers: decoded.headers, value } : decoded;
}

/**
 * The events of a CloudEvents batch, one after another in their order, answered as one: 200 with
 * every delivery when all passed; otherwise the first failure's answer, saying how many events
 * before it were delivered (the client resends from there). `delivered` is that count (all of
 * them when the outcome is delivered).
 */
export async function handleBatch(route: { handle(msg: Message, ctx: MessageContext): Promise<Outcome> }, msgs: Message[], ctx: MessageContext): Promise<{ outcome: Outcome; delivered: number }> {
  const deliveries: Outcome & { outcome: 'delivered' } = { outcome: 'delivered', deliveries: [], tagged: false };
  for (const [i, msg] of msgs.entries()) {
    // A context per event: its steps write on it (a validate step's tag errors, which the next
    // event's tag listed as its own, `$message`), for that event alone.
    const own: MessageContext = { ...ctx };
    const outcome = await route.handle(msg, own);
    // The answer says what the last event's steps want said in it (a ratelimit step's fields).
    if (own.replyHeaders !== undefined) ctx.replyHeaders = own.replyHeaders;
    if (outcome.outcome === 'delivered' || outcome.outcome === 'deadlettered') deliveries.deliveries.push(...outcome.deliveries);
    if (outcome.outcome === 'delivered') deliveries.tagged ||= outcome.tagged;
    if (outcome.outcome === 'invalid' || outcome.outcome === 'rejected' || outcome.outcome === 'failed') {
      const p = outcome.problem;
      return {
        outcome: {
          ...outcome,
          problem: { ...p, detail: `event [${i}] (id ${msg.headers.ce_id}): ${p.detail}; the ${i} event(s) before it were delivered`, errors: p.errors?.map((e) => `[${i}] ${e}`) },
        },
        delivered: i,
      };
    }
  }
  return { outcome: deliveries, delivered: msgs.length };
}

/** A message from a request: no key, no position. */
export function requestMessage(value: unknown, headers: Record<string, string>): Message {
  return { value, key: null, headers, topic: null, partition: null, offset: null, timestamp: Date.now() };
}

/** A request's message from its head alone, for an auth that judges it before its body is read. */
export function headMessage(headers: Record<string, string>): Message {
  return { ...requestMessage(null, headers), [BODY_NOT_READ]: true };
}
