import { isDeepStrictEqual } from 'node:util';
import type FindMyWayModule from 'find-my-way';
import type * as Pino from 'pino';
import { bundled } from '../core/bundled.js';
import { redact } from '../config/secrets.js';
import { compileExpression, truthy } from '../expr/expression.js';
import { attributesOf, decodeBatch, decodeFrameEvent, httpMode, toStructured } from '../codecs/cloudevents.js';
import { decodeEvent, forwardedHeaders, handleBatch, refusedMediaType, requestMessage } from '../kinds/listeners/http-request.js';
import { filledPath } from '../kinds/listeners/route-paths.js';
import { parseQuery as queryOf } from '../kinds/listeners/transport.js';
import type { Problem } from '../core/errors.js';
import { decodeValueBytes, encodeValue, isEncoded, isJsonMedia, mediaTypeOf, ORIGINAL, payloadOriginal, valuePayload } from '../core/message.js';
import type { BrokerRuntime, CompiledStep, ListenerRuntime, Target } from '../kinds/contracts.js';
import type { KindRegistry } from '../kinds/registry.js';
import type { Plan, RoutePlan } from '../plan/types.js';
import type { Delivery, Message, MessageContext } from '../core/message.js';
import { outcomeLabel, type Outcome } from '../core/outcome.js';
import { RouteRuntime } from '../runtime/route.js';
import { TRACEPARENT } from '../runtime/trace.js';
import { RecordingEndpoints } from './recording-endpoints.js';
import type { ExpectedOutput, TestCase } from './test-file.js';

// The gateway's bundles (src/core/bundled.ts), not a second copy of each package from node_modules.
const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');
const { pino } = bundled<typeof Pino>('pino');

/** What a route sent to one target: a broker's topic, a listener's path, or an http target's request. */
export interface Output {
  broker?: string;
  listener?: string;
  topic?: string;
  path?: string;
  /** An http target's request: the URL it went to (user and password in it travel as `authorization`) and its method. */
  url?: string;
  method?: string;
  key: string | null;
  headers: Record<string, string>;
  value: unknown;
  /** The payload's bytes as a broker target writes them, or as a kafka listener sends the record upstream (none: a tombstone): what an expected `valueBase64` is compared with. */
  bytes?: Buffer;
}

export interface Mismatch {
  /** Line in the test file of the expectation that failed. */
  line: number;
  what: string;
  expected: string;
  actual: string;
}

export interface TestResult {
  test: TestCase;
  passed: boolean;
  mismatches: Mismatch[];
  outcome: Outcome | undefined;
  outputs: Output[];
  durationMs: number;
}

/**
 * Runs one test (runUnredacted). What a mismatch shows of the route's doing has the config's
 * secrets redacted, as the running gateway's log has: a CI log is no place for a `${VAR}` token
 * that a webhook URL or a header carries.
 */
export async function runTest(plan: Plan, test: TestCase, registry: KindRegistry): Promise<TestResult> {
  const result = await runUnredacted(plan, test, registry);
  const secrets = plan.secretValues;
  if (!secrets || secrets.size === 0 || result.passed) return result;
  const shown = shownSecrets(secrets);
  return { ...result, mismatches: result.mismatches.map((m) => ({ ...m, actual: redact(m.actual, shown) })) };
}

/**
 * The secrets as an actual value's text writes them: as they are, and as show() writes a string
 * (quoted, `"` and `\` escaped). The log redacts a secret too short to be looked for inside text
 * where a whole string is it; here that string stands quoted, and quoted it is looked for.
 */
function shownSecrets(secrets: ReadonlySet<string>): Set<string> {
  const shown = new Set(secrets);
  for (const secret of secrets) {
    const quoted = JSON.stringify(secret);
    shown.add(quoted);
    shown.add(quoted.slice(1, -1));
  }
  return shown;
}

/**
 * Runs one test: the route is built from the compiled plan exactly as `run` builds it, with its
 * real steps, key and topic expressions and webhook targets; its brokers, listeners and the
 * endpoints its `http` targets call are replaced by recorders that keep what the route sends.
 * Nothing leaves the process: no socket is opened, no URL called.
 */
async function runUnredacted(plan: Plan, test: TestCase, registry: KindRegistry): Promise<TestResult> {
  const started = performance.now();
  const fail = (what: string, expected: string, actual: string, line = test.line): TestResult => ({
    test,
    passed: false,
    mismatches: [{ line, what, expected, actual }],
    outcome: undefined,
    outputs: [],
    durationMs: performance.now() - started,
  });
  const routePlan = plan.routes.get(test.route);
  if (!routePlan) return fail('route', `a route named '${test.route}'`, `the config's routes are: ${[...plan.routes.keys()].join(', ') || '(none)'}`);

  const outputs: Output[] = [];
  const brokers = new Map<string, BrokerRuntime>([...plan.brokers.values()].map((b) => [b.name, recordingBroker(b.name, b.kind, outputs, registry.brokers.get(b.kind)?.publishInstruction)]));
  const listeners = new Map<string, ListenerRuntime>([...plan.listeners.values()].map((l) => [l.name, recordingListener(l.name, l.kind, outputs)]));
  const endpoints = new RecordingEndpoints(test.answers, outputs);

  let params: Record<string, string> | undefined;
  if (routePlan.from.type === 'listener') {
    const p = test.input.path;
    if (typeof p === 'string') {
      // The router would drop a query string without a word, and $query would not have it.
      const q = p.indexOf('?');
      if (q >= 0) return fail('input.path', `a path without a query string: give it as input.query (${show(queryOf(p.slice(q + 1)))})`, p, test.input.at('path'));
      const router = FindMyWay();
      router.on('POST', routePlan.from.path, () => undefined);
      const found = router.find('POST', p);
      if (!found) return fail('input.path', `a path that route '${test.route}' serves (${routePlan.from.path})`, p, test.input.at('path'));
      params = { ...found.params } as Record<string, string>;
    } else params = p ?? {};
  }
  let topic: string | undefined;
  if (routePlan.from.type === 'broker') {
    const read = topicOf(routePlan.from, test, plan, registry);
    if (typeof read !== 'string') return fail('input.topic', read.expected, test.input.topic ?? '(none)', test.input.topic !== undefined ? test.input.at('topic') : undefined);
    topic = read;
  }
  const route = new RouteRuntime(withoutBackoff(withPrincipal(routePlan, test)), {
    brokers,
    listeners,
    logger: pino({ level: 'silent' }),
    instanceId: 'test',
    webhookSender: endpoints,
    targetsInTurn: true,
  });
  const from = routePlan.from;
  const listenerKind = from.type === 'listener' ? plan.listeners.get(from.listener)?.kind : undefined;
  // A kafka listener's route governs records produced to its topic, which go on to that topic upstream (or, with `to`, to its targets).
  const upstream =
    from.type === 'listener' && listenerKind !== undefined && registry.listeners.get(listenerKind)?.routesBy === 'topic'
      ? (plan.listeners.get(from.listener)!.options as { upstream?: string }).upstream
      : undefined;
  // A request, a frame and an mqtt, amqp or nats message have no key: one given here would be a value the running gateway never sees.
  const keyless =
    from.type === 'broker'
      ? registry.brokers.get(plan.brokers.get(from.broker)?.kind ?? '')?.keyless !== undefined
      : upstream === undefined && (listenerKind === 'http' || listenerKind === 'websocket');
  if (keyless && test.input.key !== null && test.input.key !== undefined) {
    const source = from.type === 'broker' ? `reads broker '${from.broker}', whose messages have no key` : 'takes requests, which have no key';
    return fail('input.key', `no key: route '${test.route}' ${source} (leave input.key out)`, show(test.input.key), test.input.at('key'));
  }
  // Bytes are a broker's payload or a produced record's value: a request's body or a frame is written as input.value.
  if (test.input.bytes !== undefined && from.type !== 'broker' && upstream === undefined)
    return fail(
      'input.valueBase64',
      `input.value: route '${test.route}' reads listener '${from.listener}', whose messages a test writes as input.value (valueBase64 is the payload of a message consumed from a broker, or of a record produced to a kafka listener)`,
      '(bytes)',
      test.input.at('valueBase64'),
    );
  const lowerHeaders = Object.fromEntries(Object.entries(test.input.headers).map(([k, v]) => [k.toLowerCase(), v]));
  let headers = test.input.headers;
  let value = test.input.value;
  let batch: Message[] | undefined;
  if (listenerKind === 'http' && upstream === undefined) {
    // The request as the http listener makes it into messages, with its own functions.
    const request = httpRequest(value, lowerHeaders);
    if (!request.ok) {
      if ('problem' in request) return finish(test, { outcome: 'invalid', problem: request.problem }, [], started, endpoints, 0);
      return fail('input.value', request.expected, show(value), test.input.at('value'));
    }
    ({ headers, value, batch } = request);
  } else if (listenerKind === 'websocket') {
    // A frame's message carries no headers of the handshake (only its trace context); they are for auth and ratelimit steps.
    headers = {};
    // A route whose frames are structured CloudEvents by agreement reads the frame as the listener does.
    if (from.type === 'listener' && from.structured) {
      const event = decodeFrameEvent(value, headers);
      if (!event.ok) return finish(test, { outcome: 'invalid', problem: event.problem }, [], started, endpoints);
      ({ headers, value } = event);
    }
  } else if (from.type === 'broker') {
    // As the broker's consumer reads them off the wire (BrokerKind.consumedHeaders).
    const broker = plan.brokers.get(from.broker);
    const read = broker && registry.brokers.get(broker.kind)?.consumedHeaders;
    if (read) headers = read(headers, broker.options);
  }
  const given: Message = {
    value,
    key: test.input.key,
    headers,
    topic: from.type === 'broker' ? topic! : upstream !== undefined ? from.path : null,
    partition: from.type === 'broker' || upstream !== undefined ? 0 : null,
    offset: from.type === 'broker' ? '0' : null,
    timestamp: Date.now(),
  };
  // A string stands for a payload's UTF-8 bytes, as a broker's consumer read them: a binary-mode
  // event's data of a type neither JSON nor text/plain is then those bytes (asConsumed). A memory
  // topic's message (BrokerKind.inProcess) has no bytes, only the value it was published with: given as bytes, it is bytes.
  const bytes = test.input.bytes;
  const inProcess = from.type === 'broker' && registry.brokers.get(plan.brokers.get(from.broker)?.kind ?? '')?.inProcess === true;
  // A produced record's value, as the kafka listener reads it (JSON, else UTF-8 text).
  if (bytes !== undefined && upstream !== undefined) given.value = decodeValueBytes(bytes, 0, bytes.length);
  else if (bytes !== undefined) {
    // As the consumers read a payload (payloadMessage): a compressed one stays its bytes, others are UTF-8 text or JSON.
    given.value = inProcess ? bytes : isEncoded(headers) ? bytes : decodeValueBytes(bytes, 0, bytes.length);
    if (!inProcess) given[ORIGINAL] = payloadOriginal(bytes, given.value, headers);
  } else if (from.type === 'broker' && typeof value === 'string' && !inProcess) given[ORIGINAL] = payloadOriginal(Buffer.from(value, 'utf8'), value, headers);
  // A consumed message as the running route reads it (an application/cloudevents+json record, `from.cloudevents: structured`).
  const msg = from.type === 'broker' ? route.asConsumed(given) : given;
  const ctx: MessageContext =
    from.type === 'listener' && upstream === undefined
      ? { route: test.route, path: params, query: test.input.query, remoteAddress: '127.0.0.1', request: { headers: lowerHeaders, query: test.input.query, remoteAddress: '127.0.0.1' } }
      : { route: test.route, remoteAddress: from.type === 'listener' ? '127.0.0.1' : undefined, consumed: from.type === 'broker' ? msg.headers : undefined };
  if (batch !== undefined) {
    const { outcome, delivered } = await handleBatch(route, batch, ctx);
    return finish(test, outcome, outputs, started, endpoints, delivered);
  }
  let outcome = upstream !== undefined ? await route.checkRecord(msg, ctx) : await route.handle(msg, ctx);
  // A consume route sends a message that fails for good to its `deadletter`, as the running gateway does.
  if (from.type === 'broker') outcome = await route.settleFirst(msg, outcome, ctx);
  // With `to`, the record goes to the route's targets instead, as the proxy sends it.
  if (upstream !== undefined && route.delivers) outcome = await route.deliverRecord(msg, outcome, ctx);
  else if (upstream !== undefined && outcome.outcome === 'delivered') {
    // The record as the proxy writes it: the chain's value and headers, the key as the client sent it;
    // the client's own bytes where the chain left the value (the test's, or its value's JSON).
    const out = outcome.message ?? msg;
    const written = out.value === msg.value ? (bytes ?? encodedValue(msg.value)) : encodedValue(out.value);
    outputs.push({ broker: upstream, topic: from.type === 'listener' ? from.path : '', key: msg.key, headers: { ...out.headers }, value: out.value, ...(written && { bytes: written }) });
  }
  return finish(test, outcome, outputs, started, endpoints);
}

/**
 * What the http listener makes of a request with this body and these headers (lower-case names):
 * the message's headers and value, or a batch's messages, or the problem it answers instead.
 * `expected` when the test's value cannot be such a body.
 */
function httpRequest(
  body: unknown,
  lowerHeaders: Record<string, string>,
): { ok: true; headers: Record<string, string>; value: unknown; batch?: Message[] } | { ok: false; problem: Problem } | { ok: false; expected: string } {
  let value = body;
  const contentType = mediaTypeOf(lowerHeaders['content-type'] ?? 'application/json');
  if (!isJsonMedia(contentType)) {
    const refused = refusedMediaType(contentType, lowerHeaders);
    if (refused) return { ok: false, problem: refused };
    if (typeof value !== 'string')
      return {
        ok: false,
        expected:
          contentType === 'text/plain' ? 'a string: a text/plain body is the value as text' : `a string: the body of a binary-mode CloudEvent of type ${contentType} is its bytes (the string's UTF-8)`,
      };
    // Any other type than text/plain is a binary-mode event's data, which the listener takes as bytes.
    if (contentType !== 'text/plain') value = Buffer.from(value, 'utf8');
  }
  const headers = forwardedHeaders(lowerHeaders);
  const mode = httpMode(contentType, lowerHeaders);
  if (mode === 'batch') {
    const decoded = decodeBatch(value, headers);
    if (!decoded.ok) return decoded;
    return { ok: true, headers, value, batch: decoded.events.map((e) => requestMessage(e.value, e.headers)) };
  }
  if (mode === undefined) return { ok: true, headers, value };
  return decodeEvent(mode, value, headers);
}

async function finish(test: TestCase, outcome: Outcome, outputs: Output[], started: number, endpoints: RecordingEndpoints, delivered?: number): Promise<TestResult> {
  // The trace header the route adds to every message is the gateway's, not the config's doing.
  for (const o of outputs) delete o.headers[TRACEPARENT];
  const mismatches = await compare(test, outcome, outputs);
  // An answer for a URL no request went to is most likely a URL written wrong: the test would pass without testing what it says.
  for (const a of test.answers) {
    if (endpoints.used.has(a)) continue;
    const called = outputs.filter((o) => o.url !== undefined).map(describeOutput);
    mismatches.push({ line: a.line, what: `answers[${a.url}]`, expected: `a request to ${a.url}`, actual: called.length ? `requests went to: ${called.join(', ')}` : 'no http target was called' });
  }
  if (test.expect.delivered !== undefined && delivered !== test.expect.delivered)
    mismatches.push({ line: test.expect.at('delivered'), what: 'delivered', expected: `${test.expect.delivered} event(s) of the batch`, actual: String(delivered ?? 0) });
  return { test, passed: mismatches.length === 0, mismatches, outcome, outputs, durationMs: performance.now() - started };
}

/**
 * The topic (`$topic`) the test's message comes with, as the route would get it from its broker:
 * `input.topic`, else the route's `from.topic` when that is itself a topic. A topic the route never
 * reads (outside its filter, a wildcard, not its own topic) cannot stand for its input, as a path
 * the route does not serve cannot; nor can a filter or an amqp queue name, whose messages come
 * with topics of their own.
 */
function topicOf(from: { broker: string; topic: string }, test: TestCase, plan: Plan, registry: KindRegistry): string | { expected: string } {
  const broker = plan.brokers.get(from.broker);
  const kind = broker === undefined ? undefined : registry.brokers.get(broker.kind);
  const read = kind?.topicsRead?.(from.topic, broker!.options);
  const given = test.input.topic;
  if (given === undefined) {
    if (read === undefined || read.literal) return from.topic;
    return { expected: `${read.what}: route '${test.route}' gets its messages with their own topics ($topic), so give input.topic` };
  }
  const why = kind?.topicProblem?.(given, 'publish');
  const reads = why === undefined && (read === undefined ? given === from.topic : read.matches(given));
  if (reads) return given;
  return { expected: `${read?.what ?? from.topic}: route '${test.route}' reads no other${why === undefined ? '' : ` (${why})`}` };
}

/**
 * An http target's tries in a test follow one another at once: its endpoint is a recorder that
 * answers at once, and waiting out `backoffMs` (seconds, with `Retry-After` up to `maxBackoffMs`)
 * would only slow the run. The tries themselves, and what the last one's failure says, are kept.
 */
function withoutBackoff(plan: RoutePlan): RoutePlan {
  if (!plan.to.some((t) => t.type === 'http')) return plan;
  return { ...plan, to: plan.to.map((t) => (t.type === 'http' ? { ...t, webhook: { ...t.webhook, backoffMs: 0, maxBackoffMs: 0 } } : t)) };
}

/**
 * With `principal` in the input the test stands for an authenticated client: the route's auth
 * steps accept it as that principal instead of checking credentials (send real credentials in
 * `headers` to test the auth step itself).
 */
function withPrincipal(plan: RoutePlan, test: TestCase): RoutePlan {
  const { principal, claims } = test.input;
  if (principal === undefined && claims === undefined) return plan;
  const authenticated: CompiledStep = {
    kind: 'auth',
    needsClient: true,
    run(msg, ctx) {
      ctx.identity = { principal, claims: claims ?? {} };
      return msg;
    },
  };
  return { ...plan, steps: plan.steps.map((s) => (s.kind === 'auth' ? authenticated : s)) };
}

async function compare(test: TestCase, outcome: Outcome, outputs: Output[]): Promise<Mismatch[]> {
  const out: Mismatch[] = [];
  const e = test.expect;
  // A dead-lettered message's failure, when it failed rather than being refused by a validate step's schema.
  const problem = 'problem' in outcome ? outcome.problem : outcome.outcome === 'deadlettered' ? outcome.cause : undefined;
  // `tagged` is a delivery with the validation-error header: `outcome: delivered` still holds for it, `tagged` only for it.
  const actual = outcomeLabel(outcome);
  if (actual !== e.outcome && !(e.outcome === 'delivered' && outcome.outcome === 'delivered')) {
    // `where`, as the gateway's log says it: which expression failed, at its config line (a route may have several).
    const why = problem
      ? ` (${problem.status} ${problem.detail}${problem.errors?.length ? `: ${problem.errors.join('; ')}` : ''})${problem.logDetail ? `\nwhere: ${problem.logDetail}` : ''}`
      : outcome.outcome === 'deadlettered'
        ? ` (${outcome.errors.join('; ')})`
        : '';
    out.push({ line: e.at('outcome'), what: 'outcome', expected: e.outcome, actual: `${actual}${why}` });
    return out;
  }
  if (e.status !== undefined && problem?.status !== e.status)
    out.push({ line: e.at('status'), what: 'status', expected: String(e.status), actual: problem ? String(problem.status) : `none (${outcome.outcome})` });
  if (e.error !== undefined) {
    // A tagged message (delivered) has its validation errors to match, as a dead-lettered one has.
    const errors = outcome.outcome === 'deadlettered' ? outcome.errors : outcome.outcome === 'delivered' ? (outcome.tags ?? []) : [];
    const text = [problem?.detail, ...(problem?.errors ?? []), ...errors].filter(Boolean).join('\n');
    if (!new RegExp(e.error).test(text)) out.push({ line: e.at('error'), what: 'error', expected: `matching /${e.error}/`, actual: text || '(no error)' });
  }
  if (e.to === undefined) return out;
  if (e.to.length !== outputs.length) {
    out.push({ line: e.at('to'), what: 'number of outputs', expected: String(e.to.length), actual: `${outputs.length}${outputs.length ? `: ${outputs.map(describeOutput).join(', ')}` : ''}` });
  }
  for (const [i, want] of e.to.entries()) {
    const got = outputs[i];
    if (!got) break;
    out.push(...(await compareOutput(i, want, got)));
  }
  return out;
}

function describeOutput(o: Output): string {
  // Without the query string, which may hold a token.
  if (o.url !== undefined) return `${o.method} ${o.url.replace(/\?.*$/s, '')}`;
  return o.broker !== undefined ? `${o.broker}/${o.topic}` : `${o.listener}${o.path}`;
}

async function compareOutput(i: number, want: ExpectedOutput, got: Output): Promise<Mismatch[]> {
  const out: Mismatch[] = [];
  const where = `to[${i}]`;
  for (const field of ['broker', 'topic', 'listener', 'path', 'url', 'method', 'key'] as const) {
    if (want[field] === undefined) continue;
    if (want[field] !== got[field]) out.push({ line: want.at(field), what: `${where}.${field}`, expected: show(want[field]), actual: show(got[field] ?? null) });
  }
  for (const [name, value] of Object.entries(want.headers ?? {})) {
    const actual = got.headers[name] ?? got.headers[name.toLowerCase()];
    // `name: null` says the header must be absent.
    if ((value ?? undefined) !== actual)
      out.push({ line: want.at('headers'), what: `${where}.headers.${name}`, expected: value === null ? '(absent)' : show(value), actual: actual === undefined ? '(absent)' : show(actual) });
  }
  if (want.bytes !== undefined) {
    const expected = `bytes ${want.bytes.toString('base64')} (in base64)`;
    if (got.bytes === undefined)
      out.push({
        line: want.at('valueBase64'),
        what: `${where}.valueBase64`,
        expected,
        actual: got.broker !== undefined ? 'no value (a tombstone)' : `${describeOutput(got)}: valueBase64 is what a broker target writes (write its value as value)`,
      });
    else if (!want.bytes.equals(got.bytes)) out.push({ line: want.at('valueBase64'), what: `${where}.valueBase64`, expected, actual: shownBytes(got.bytes) });
  }
  // Bytes (a binary-mode event's data) are compared as their UTF-8 text, as the test wrote its input.
  const gotValue = Buffer.isBuffer(got.value) && typeof want.value === 'string' ? got.value.toString('utf8') : got.value;
  if ('value' in want && !isDeepStrictEqual(want.value, gotValue)) {
    for (const d of diff(want.value, gotValue, `${where}.value`)) out.push({ line: want.at('value'), ...d });
  }
  if (want.condition !== undefined) {
    let result: unknown;
    try {
      result = await compileExpression(want.condition).evaluate(got.value, { key: got.key, headers: got.headers, topic: got.topic ?? null });
    } catch (err) {
      result = `error: ${(err as Error).message}`;
    }
    if (!truthy(result) || typeof result === 'string')
      out.push({ line: want.at('condition'), what: `${where}.condition`, expected: `${want.condition} to be true`, actual: `${show(result ?? null)} for value ${show(got.value)}` });
  }
  return out;
}

/** Where two values differ, by path: a readable diff of expected vs actual. */
export function diff(expected: unknown, actual: unknown, at: string): { what: string; expected: string; actual: string }[] {
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (isObj(expected) && isObj(actual)) {
    const keys = [...new Set([...Object.keys(expected), ...Object.keys(actual)])];
    return keys.flatMap((k) =>
      isDeepStrictEqual(expected[k], actual[k])
        ? []
        : k in actual
          ? k in expected
            ? diff(expected[k], actual[k], `${at}.${k}`)
            : [{ what: `${at}.${k}`, expected: '(absent)', actual: show(actual[k]) }]
          : [{ what: `${at}.${k}`, expected: show(expected[k]), actual: '(absent)' }],
    );
  }
  if (Array.isArray(expected) && Array.isArray(actual) && expected.length === actual.length) {
    return expected.flatMap((v, i) => (isDeepStrictEqual(v, actual[i]) ? [] : diff(v, actual[i], `${at}[${i}]`)));
  }
  return [{ what: at, expected: show(expected), actual: show(actual) }];
}

/** Bytes in base64, with their text when they are UTF-8. */
function shownBytes(b: Buffer): string {
  const text = Buffer.from(b.toString('utf8'), 'utf8').equals(b) ? `: ${JSON.stringify(b.toString('utf8'))}` : '';
  return `bytes ${b.toString('base64')} (in base64)${text}`;
}

/** The bytes a kafka listener writes for a record value: none for null (a tombstone), else its JSON or text. */
function encodedValue(value: unknown): Buffer | undefined {
  return value === null ? undefined : Buffer.from(encodeValue(value), 'utf8');
}

function show(v: unknown): string {
  if (Buffer.isBuffer(v)) return `bytes ${JSON.stringify(v.toString('utf8'))}`;
  return v === undefined ? '(nothing)' : JSON.stringify(v);
}

function recordingBroker(name: string, kind: string, outputs: Output[], publishInstruction: BrokerRuntime['publishInstruction']): BrokerRuntime {
  let offset = 0;
  return {
    name,
    kind,
    // A consume route's writes leave out the consumed message's instructions to its source's stream, as on the running gateway.
    ...(publishInstruction && { publishInstruction }),
    start: async () => undefined,
    stop: async () => undefined,
    reconfigure: () => undefined,
    health: () => ({ ready: true }),
    async publish(topic: string, msg: Message): Promise<Delivery> {
      outputs.push({ broker: name, topic, key: msg.key, headers: { ...msg.headers }, value: msg.value, bytes: Buffer.from(valuePayload(msg)) });
      return { broker: name, topic, partition: 0, offset: String(offset++) };
    },
    subscribe: () => ({ stop: async () => undefined }),
  };
}

function recordingListener(name: string, kind: string, outputs: Output[]): ListenerRuntime {
  return {
    name,
    kind,
    start: async () => undefined,
    stop: async () => undefined,
    reconfigure: () => undefined,
    bind: () => undefined,
    address: () => undefined,
    health: () => ({ ready: true }),
    status: () => ({}),
    forwardTarget(path: string, { format }): Target {
      return {
        // What a client of the path gets and where: the room the message's own path parameters
        // fill in (`/rooms/a` for `/rooms/:r`), and the payload as the listeners write it (an
        // envelope with `ce` for a CloudEvent, `cloudevent` structured, or an envelope when the
        // message is no CloudEvent).
        async send(msg, ctx) {
          const { [TRACEPARENT]: _trace, ...headers } = msg.headers;
          const ce = attributesOf(msg.headers);
          const value =
            format === 'value'
              ? msg.value
              : format === 'cloudevent' && ce
                ? toStructured(msg)
                : { topic: msg.topic, partition: msg.partition, offset: msg.offset, key: msg.key, headers, value: msg.value, timestamp: msg.timestamp, ...(ce ? { ce: { ...ce } } : {}) };
          outputs.push({ listener: name, path: filledPath(path, ctx?.path), key: msg.key, headers: { ...msg.headers }, value });
          return { listener: name, path, clients: 1 };
        },
      };
    },
  };
}
