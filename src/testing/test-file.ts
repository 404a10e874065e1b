import { dirname, isAbsolute, join } from 'node:path';
import { formatPath, type Diagnostic } from '../config/diagnostics.js';
import { readConfigFile } from '../config/read-file.js';
import { decodeUtf8, describeFsError, parseSource, type PathPart } from '../config/source.js';
import { closest, didYouMean } from '../config/suggest.js';
import { BATCH_TYPE, isPaddedBase64 } from '../codecs/cloudevents.js';
import { mediaTypeOf } from '../core/message.js';
import { compileExpression } from '../expr/expression.js';

/**
 * A config test file (`eventgate test`): YAML with a list of `tests:`, each sending one message
 * into one route and saying what must come out. Kept apart from the config so a platform team
 * can review "what this route does" as data.
 *
 *   config: gateway.yaml            # optional: the config, relative to this file
 *   tests:
 *     - name: bright lights are published
 *       route: light-in
 *       input: { value: {id: 1, lumens: 800}, key: ..., headers: {...}, path: /light, query: {...}, principal: alice, claims: {...}, topic: ... }
 *       # or, for a consume route's payload that is no UTF-8 text, valueBase64: <its bytes in base64> instead of value
 *       answers: { https://crm.example.com/hooks: 503 }   # what http targets' endpoints answer (else 200): a status, { status, retryAfter, location, body }, { error: refused | timeout }; none is called
 *       expect:
 *         outcome: delivered        # delivered | tagged | filtered | invalid | rejected | failed | deadlettered
 *         status: 400               # the HTTP status of a problem (invalid, rejected, failed)
 *         error: <regex>            # matched against the problem detail and errors (dead-letter, tag errors)
 *         delivered: 2              # a CloudEvents batch input: how many of its events were delivered
 *         to:                       # every output, in target order
 *           - { broker: local, topic: t, key: '1', headers: {...}, value: {...}, condition: <JSONata> }
 *           - { broker: local, topic: raw, valueBase64: <the bytes the broker target writes, in base64> }
 *           - { url: https://crm.example.com/hooks, method: POST, headers: {...}, value: {...} }   # an http target's request
 */
export interface TestInput {
  value: unknown;
  /** A consume route's payload as bytes (`valueBase64`), for one that is no UTF-8 text (binary Avro, protobuf, gzip); `value` is then null. */
  bytes: Buffer | undefined;
  key: string | null;
  headers: Record<string, string>;
  /** The request path (matched against the route's path for $path), or $path itself. */
  path: string | Record<string, string> | undefined;
  query: Record<string, string | string[]>;
  principal: string | undefined;
  claims: Record<string, unknown> | undefined;
  /** Consume routes: the topic the message came from (a wildcard `from.topic` needs a concrete one for $topic). */
  topic: string | undefined;
  /** Where each input field is written, for failure messages. */
  at: (field: string) => number;
  /** Where an input field's key is written, for a test-file problem the config shows (headers a route never gets). */
  place: (field: string) => { line: number; column: number };
}

export interface ExpectedOutput {
  broker?: string;
  topic?: string;
  listener?: string;
  path?: string;
  /** An http target's request URL (as requestUrl() writes it) and method. */
  url?: string;
  method?: string;
  key?: string | null;
  headers?: Record<string, string | null>;
  value?: unknown;
  /** `valueBase64`: the bytes a broker target writes (valuePayload), or a kafka listener's record upstream, compared byte for byte. */
  bytes?: Buffer;
  /** JSONata over the output value ($key, $headers, $topic bound): must be truthy. */
  condition?: string;
  /** Where each expectation is written, for failure messages. */
  at: (field: string) => number;
}

/**
 * What the endpoint of an http target answers a test's requests to `url` (as requestUrl() writes
 * it): a status (with `Retry-After` seconds, a redirect's `Location`, and the body's text, which
 * the target's failure quotes), or no answer at all (`error`: a refused connection, or none within
 * the target's `timeoutMs`).
 */
export type EndpointAnswer = EndpointReply & { url: string /** Where it is written, for a URL no request went to. */; line: number };
type EndpointReply =
  | { status: number; retryAfter: number | undefined; location: string | undefined; body: string | undefined; error?: undefined }
  | { error: EndpointError; status?: undefined; retryAfter?: undefined; location?: undefined; body?: undefined };

/** The failures without an answer a test's endpoint can stand for, as the webhook target meets them (its `connection` and `timeout` results). */
export type EndpointError = 'refused' | 'timeout';
const ENDPOINT_ERRORS: EndpointError[] = ['refused', 'timeout'];
const ANSWER_KEYS = ['status', 'retryAfter', 'location', 'body', 'error'];

export interface TestCase {
  file: string;
  /** Line of the test's list item. */
  line: number;
  name: string;
  route: string;
  /** Where its `route:` value is written: a route the config lacks is reported there. */
  routeAt: { line: number; column: number };
  input: TestInput;
  /** What the test's http target endpoints answer (the others answer 200). */
  answers: EndpointAnswer[];
  expect: {
    outcome: string;
    status?: number;
    error?: string;
    /** A CloudEvents batch: how many of its events were delivered (all, or those before the failing one). */
    delivered?: number;
    to?: ExpectedOutput[];
    at: (field: string) => number;
  };
}

export interface TestFile {
  file: string;
  /** `config:` resolved against the test file's directory, when it names one. */
  config: string | undefined;
  /** Every test, in the file's order; none when the file has a problem (nothing of it runs). */
  tests: TestCase[];
  /**
   * The route each test names (a string `name` and `route`), its own problems or not: checked
   * against the config beside the file's problems, so one run says them all.
   */
  routes: RouteReference[];
}

/** A test's `route:`, where it is written. */
export interface RouteReference {
  /** The test's index in `tests:`. */
  index: number;
  name: string;
  route: string;
  at: { line: number; column: number };
}

const OUTCOMES = ['delivered', 'tagged', 'filtered', 'invalid', 'rejected', 'failed', 'deadlettered'];
const TEST_KEYS = ['name', 'route', 'input', 'answers', 'expect'];
const REQUIRED_TEST_KEYS = ['name', 'route', 'input', 'expect'];
const INPUT_KEYS = ['value', 'valueBase64', 'key', 'headers', 'path', 'query', 'principal', 'claims', 'topic'];
const EXPECT_KEYS = ['outcome', 'status', 'error', 'delivered', 'to'];
const OUTPUT_KEYS = ['broker', 'topic', 'listener', 'path', 'url', 'method', 'key', 'headers', 'value', 'valueBase64', 'condition'];
const NOT_BASE64 = "'valueBase64' must be bytes in base64 (A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters; line breaks are ignored), as `base64` writes them";
/** The methods an http target sends with (its `method`). */
const METHODS = ['POST', 'PUT', 'PATCH'];
const ANSWERS_SHAPE =
  "'answers' must map the URL an http target calls to what its endpoint answers: a status (https://crm.example.com/hooks: 503), { status: 429, retryAfter: 2 }, { status: 302, location: https://... }, { status: 422, body: ... }, or { error: refused } / { error: timeout }";

/**
 * Reads and checks a test file; problems are diagnostics at `file:line:col`, like the config's.
 * Undefined when the file cannot be read or is no list of tests; a file with problems in its
 * tests is returned without tests to run, with the routes they name (TestFile.routes).
 */
export function readTestFile(file: string, diagnostics: Diagnostic[]): TestFile | undefined {
  let bytes: Buffer;
  try {
    // As a config file is read (a regular file of at most 16 MiB, or a pipe: one is named on the command line).
    bytes = readConfigFile(file, { pipe: true });
  } catch (err) {
    diagnostics.push({ file, line: 1, column: 1, code: 'EG_CONFIG_FILE', path: '', message: `cannot read test file: ${describeFsError(err)}` });
    return undefined;
  }
  // As a config is read: a Latin-1 'é' in an expected value read leniently became U+FFFD, and a
  // UTF-16 file "needs a list under 'tests:'".
  const text = decodeUtf8(bytes);
  if (typeof text !== 'string') {
    diagnostics.push({ file, line: text.line, column: text.column, code: 'EG_CONFIG_SYNTAX', path: '', message: text.message });
    return undefined;
  }
  const src = parseSource(file, text, {}, diagnostics, { substitute: false });
  if (!src) return undefined;
  const problems = diagnostics.length;
  const report = (path: PathPart[], message: string, which: 'key' | 'value' = 'value') => {
    const { line, column } = src.locate(path, which);
    // `tests[0].expect`, as config diagnostics write their paths (formatPath): one format for CI annotations.
    diagnostics.push({ file, line, column, code: 'EG_TEST_FILE', path: formatPath(path), message });
  };
  const doc = src.value as Record<string, unknown> | null;
  if (!isMap(doc) || !Array.isArray(doc.tests)) {
    report([], "a test file needs a list under 'tests:'");
    return undefined;
  }
  unknownKeys(doc, ['config', 'tests'], [], report);
  if (doc.config !== undefined && typeof doc.config !== 'string') report(['config'], "'config' must be a path");
  const tests: TestCase[] = [];
  const routes: RouteReference[] = [];
  doc.tests.forEach((raw: unknown, i: number) => {
    const at: PathPart[] = ['tests', i];
    if (!isMap(raw)) return report(at, 'a test must be a map with name, route, input and expect');
    if (typeof raw.name === 'string' && typeof raw.route === 'string') routes.push({ index: i, name: raw.name, route: raw.route, at: src.locate([...at, 'route'], 'value') });
    unknownKeys(raw, TEST_KEYS, at, report);
    for (const k of REQUIRED_TEST_KEYS) if (raw[k] === undefined && !misspeltAs(raw, TEST_KEYS, k)) report(at, `test is missing '${k}'`, 'key');
    if (raw.name !== undefined && typeof raw.name !== 'string') report([...at, 'name'], "'name' must be a string");
    if (raw.route !== undefined && typeof raw.route !== 'string') report([...at, 'route'], "'route' must be a route name");
    const input = raw.input;
    if (input !== undefined && !isMap(input)) report([...at, 'input'], "'input' must be a map (value or valueBase64, key, headers, path, query, principal, claims, topic)");
    if (isMap(input)) {
      unknownKeys(input, INPUT_KEYS, [...at, 'input'], report);
      if (input.headers !== undefined && !isStringMap(input.headers)) report([...at, 'input', 'headers'], "'headers' must map names to strings");
      if (input.key !== undefined && input.key !== null && typeof input.key !== 'string') report([...at, 'input', 'key'], "'key' must be a string");
      // A request's query parameters are strings (a repeated one a list of them), as the listener gives them to $query.
      if (input.query !== undefined && !(isMap(input.query) && Object.values(input.query).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((x) => typeof x === 'string')))))
        report([...at, 'input', 'query'], "'query' must map names to strings (quote numbers: '10'), or to lists of strings for a repeated parameter");
      if (input.topic !== undefined && typeof input.topic !== 'string') report([...at, 'input', 'topic'], "'topic' must be a topic name");
      if (input.valueBase64 !== undefined) {
        if (input.value !== undefined) report([...at, 'input', 'valueBase64'], "give 'value' or 'valueBase64', not both: they are the one payload, as JSON or text, or as its bytes", 'key');
        else if (base64Bytes(input.valueBase64) === undefined) report([...at, 'input', 'valueBase64'], NOT_BASE64);
      }
      if (input.path !== undefined && typeof input.path !== 'string' && !isStringMap(input.path))
        report([...at, 'input', 'path'], "'path' must be the request path (/orders/7) or a map of path parameters");
    }
    if (raw.answers !== undefined && !isMap(raw.answers)) report([...at, 'answers'], ANSWERS_SHAPE);
    const answers: EndpointAnswer[] = [];
    if (isMap(raw.answers)) {
      for (const [url, value] of Object.entries(raw.answers)) {
        const aAt: PathPart[] = [...at, 'answers', url];
        const normal = requestUrl(url);
        if (normal === undefined) report(aAt, `'${url}' is not an http(s) URL: 'answers' are keyed by the URL an http target calls`, 'key');
        else if (answers.some((a) => a.url === normal)) report(aAt, `'answers' names ${normal} twice`, 'key');
        const answer = endpointAnswer(value, aAt, report);
        if (normal !== undefined && answer !== undefined) answers.push({ ...answer, url: normal, line: src.locate(aAt, 'key').line });
      }
    }
    const expect = raw.expect;
    if (expect !== undefined && !isMap(expect)) report([...at, 'expect'], "'expect' must be a map (outcome, status, error, delivered, to)");
    if (isMap(expect)) {
      unknownKeys(expect, EXPECT_KEYS, [...at, 'expect'], report);
      if (expect.outcome === undefined) {
        if (!misspeltAs(expect, EXPECT_KEYS, 'outcome')) report([...at, 'expect'], `'expect' is missing 'outcome' (one of: ${OUTCOMES.join(', ')})`, 'key');
      } else if (!OUTCOMES.includes(String(expect.outcome))) report([...at, 'expect', 'outcome'], `'outcome' must be one of: ${OUTCOMES.join(', ')}${didYouMean(String(expect.outcome), OUTCOMES)}`);
      if (expect.status !== undefined && !Number.isInteger(expect.status)) report([...at, 'expect', 'status'], "'status' must be an HTTP status code");
      if (expect.delivered !== undefined) {
        if (!Number.isInteger(expect.delivered) || (expect.delivered as number) < 0) report([...at, 'expect', 'delivered'], "'delivered' must be a number of events (0 or more)");
        else if (!isBatchInput(input))
          report([...at, 'expect', 'delivered'], `'delivered' counts the events of a CloudEvents batch: the input needs headers { content-type: ${BATCH_TYPE} } and a list of events as its value`);
        else if (expect.outcome === 'delivered' && Array.isArray(input.value) && expect.delivered !== input.value.length)
          report([...at, 'expect', 'delivered'], `with outcome delivered every event of the batch is delivered: ${input.value.length}, not ${expect.delivered}`);
      }
      // A pattern or condition that cannot compile is the test file's problem, where it is written
      // (exit 2), not a crash of the run or a test failing on every config.
      if (expect.error !== undefined) {
        const why = regexProblem(String(expect.error));
        if (why) report([...at, 'expect', 'error'], `'error' must be a regular expression: ${why}`);
      }
      if (expect.to !== undefined && !Array.isArray(expect.to)) report([...at, 'expect', 'to'], "'to' must be a list of outputs");
      if (Array.isArray(expect.to)) {
        expect.to.forEach((o: unknown, j: number) => {
          const oAt: PathPart[] = [...at, 'expect', 'to', j];
          if (!isMap(o)) return report(oAt, 'an output must be a map (broker/topic, listener/path or url/method, key, headers, value or valueBase64, condition)');
          unknownKeys(o, OUTPUT_KEYS, oAt, report);
          // Beside `value` it may be: the value the route made, and the bytes written of it.
          if (o.valueBase64 !== undefined && base64Bytes(o.valueBase64) === undefined) report([...oAt, 'valueBase64'], NOT_BASE64);
          // Outputs carry keys and header values as strings: `key: 7` could never match the key '7'.
          for (const k of ['broker', 'topic', 'listener', 'path', 'url', 'method', 'condition']) if (o[k] !== undefined && typeof o[k] !== 'string') report([...oAt, k], `'${k}' must be a string`);
          if (typeof o.url === 'string' && requestUrl(o.url) === undefined) report([...oAt, 'url'], `'url' must be the http(s) URL an http target calls, not '${o.url}'`);
          if (typeof o.method === 'string' && !METHODS.includes(o.method))
            report([...oAt, 'method'], `'method' must be one an http target sends with: ${METHODS.join(', ')}${didYouMean(o.method, METHODS)}`);
          if (o.key !== undefined && o.key !== null && typeof o.key !== 'string') report([...oAt, 'key'], `'key' must be a string (quote it: '${String(o.key)}'), or null for no key`);
          if (o.headers !== undefined && (!isMap(o.headers) || !Object.values(o.headers).every((v) => v === null || typeof v === 'string')))
            report([...oAt, 'headers'], "'headers' must map names to strings (quote numbers: '3'), or to null for a header that must be absent");
          if (typeof o.condition === 'string') {
            try {
              compileExpression(o.condition);
            } catch (err) {
              report([...oAt, 'condition'], `'condition' is not a valid expression: ${(err as Error).message}`);
            }
          }
        });
      }
    }
    if (diagnostics.length > problems) return;
    const inp = (input ?? {}) as Record<string, unknown>;
    const exp = expect as Record<string, unknown>;
    const lineOf = (path: PathPart[]) => src.locate(path, 'key').line;
    tests.push({
      file,
      line: lineOf(at),
      name: raw.name as string,
      route: raw.route as string,
      routeAt: src.locate([...at, 'route'], 'value'),
      input: {
        value: inp.value ?? null,
        bytes: inp.valueBase64 === undefined ? undefined : base64Bytes(inp.valueBase64),
        key: (inp.key as string | null | undefined) ?? null,
        headers: (inp.headers as Record<string, string> | undefined) ?? {},
        path: inp.path as TestInput['path'],
        query: (inp.query as Record<string, string | string[]> | undefined) ?? {},
        principal: inp.principal === undefined ? undefined : String(inp.principal),
        claims: inp.claims as Record<string, unknown> | undefined,
        topic: inp.topic as string | undefined,
        at: (field: string) => lineOf([...at, 'input', field]),
        place: (field: string) => src.locate([...at, 'input', field], 'key'),
      },
      answers,
      expect: {
        outcome: exp.outcome as string,
        status: exp.status as number | undefined,
        error: exp.error === undefined ? undefined : String(exp.error),
        delivered: exp.delivered as number | undefined,
        to: Array.isArray(exp.to)
          ? exp.to.map(
              (o: Record<string, unknown>, j: number) =>
                ({
                  ...o,
                  ...(typeof o.url === 'string' ? { url: requestUrl(o.url) } : {}),
                  ...(o.valueBase64 !== undefined ? { bytes: base64Bytes(o.valueBase64) } : {}),
                  at: (field: string) => lineOf([...at, 'expect', 'to', j, field]),
                }) as ExpectedOutput,
            )
          : undefined,
        at: (field: string) => lineOf([...at, 'expect', field]),
      },
    });
  });
  // In the order of the file, as a config's problems are printed (the checks above go key by key).
  // Relative to the test file, as `eventgate test` and `eventgate validate` both take it.
  const config = typeof doc.config === 'string' ? (isAbsolute(doc.config) ? doc.config : join(dirname(file), doc.config)) : undefined;
  if (diagnostics.length > problems) {
    diagnostics.push(...diagnostics.splice(problems).sort((a, b) => a.line - b.line || a.column - b.column));
    // A `config:` that is no path leaves no config to check the routes against.
    return doc.config === undefined || config !== undefined ? { file, config, tests: [], routes } : undefined;
  }
  return { file, config, tests, routes };
}

/**
 * One `answers` value: a status (`503`), a map `{ status, retryAfter, location, body }`, or
 * `{ error: refused | timeout }` (no answer); undefined after reporting what is wrong with it.
 */
function endpointAnswer(value: unknown, at: PathPart[], report: (path: PathPart[], message: string, which?: 'key' | 'value') => void): EndpointReply | undefined {
  if (!isMap(value)) return statusProblem(value, at, report) ? undefined : { status: value as number, retryAfter: undefined, location: undefined, body: undefined };
  let problems = 0;
  const note = (path: PathPart[], message: string, which?: 'key' | 'value') => {
    problems++;
    report(path, message, which);
  };
  unknownKeys(value, ANSWER_KEYS, at, note);
  if (value.error !== undefined) {
    if (!ENDPOINT_ERRORS.includes(value.error))
      note(
        [...at, 'error'],
        `'error' must be one of: ${ENDPOINT_ERRORS.join(', ')} (a refused connection, no answer within the target's timeoutMs)${didYouMean(String(value.error), ENDPOINT_ERRORS)}`,
      );
    for (const k of ['status', 'retryAfter', 'location', 'body']) if (value[k] !== undefined) note([...at, k], `'${k}' goes with an answer; { error: ${String(value.error)} } stands for none`, 'key');
    return problems > 0 ? undefined : { error: value.error as EndpointError };
  }
  if (value.status === undefined) note(at, "an answer needs 'status' (or 'error': refused or timeout, for none)");
  else statusProblem(value.status, [...at, 'status'], note);
  const retryAfter = value.retryAfter;
  if (typeof retryAfter === 'string' && /^\d+$/.test(retryAfter)) note([...at, 'retryAfter'], `'retryAfter' is a number of seconds: write it without quotes: ${retryAfter}`);
  else if (retryAfter !== undefined && !(Number.isInteger(retryAfter) && retryAfter >= 0))
    note([...at, 'retryAfter'], `'retryAfter' is the seconds the endpoint's Retry-After header asks the target to wait (0 or more), not ${JSON.stringify(retryAfter)}`);
  // What the running target reads of an answer besides its status: a redirect's Location, and the body it quotes in a failure's detail.
  const location = value.location;
  if (location !== undefined && (typeof location !== 'string' || location === ''))
    note([...at, 'location'], `'location' is the Location header of a redirect (https://crm.example.com/v2/hooks), not ${JSON.stringify(location)}`);
  else if (location !== undefined && Number.isInteger(value.status) && !(value.status >= 300 && value.status <= 399))
    note([...at, 'location'], `'location' goes with a redirect (a status from 300 to 399): the target reads it of no other answer, not of ${value.status}`, 'key');
  const body = value.body;
  if (body !== undefined && typeof body !== 'string' && !isMap(body) && !Array.isArray(body))
    note([...at, 'body'], `'body' is what the endpoint answers: text, or a map or list sent as its JSON, not ${JSON.stringify(body)}`);
  if (problems > 0) return undefined;
  return {
    status: value.status as number,
    retryAfter: retryAfter as number | undefined,
    location: location as string | undefined,
    body: body === undefined || typeof body === 'string' ? body : JSON.stringify(body),
  };
}

/** Reports a status that is no HTTP status from 200 to 599; true when it did. */
function statusProblem(status: unknown, at: PathPart[], report: (path: PathPart[], message: string) => void): boolean {
  if (typeof status === 'string' && /^\d+$/.test(status)) report(at, `a status is a number: write it without quotes: ${status}`);
  else if (!Number.isInteger(status) || (status as number) < 200 || (status as number) > 599)
    report(at, `the status an endpoint answers must be an HTTP status from 200 to 599 (503: unavailable), not ${JSON.stringify(status)}`);
  else return false;
  return true;
}

/** A URL as an http target's request names it (`http(s)://host[:port]/path?query`), or undefined when it is no http(s) URL. */
export function requestUrl(text: string): string | undefined {
  if (!/^https?:\/\//i.test(text)) return undefined;
  try {
    const u = new URL(text);
    return `${u.origin}${u.pathname}${u.search}`;
  } catch {
    return undefined;
  }
}

/** The bytes a base64 text (RFC 4648 §4, line breaks and spaces aside) stands for, or undefined when it is none: Buffer.from would skip what is not base64 without a word. */
function base64Bytes(text: unknown): Buffer | undefined {
  if (typeof text !== 'string') return undefined;
  const compact = text.replace(/\s+/g, '');
  if (!isPaddedBase64(compact)) return undefined;
  return Buffer.from(compact, 'base64');
}

function regexProblem(pattern: string): string | undefined {
  try {
    new RegExp(pattern);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

function unknownKeys(map: Record<string, unknown>, allowed: string[], at: PathPart[], report: (path: PathPart[], message: string, which?: 'key' | 'value') => void): void {
  for (const k of Object.keys(map)) if (!allowed.includes(k)) report([...at, k], `unknown key '${k}'${didYouMean(k, allowed)}; expected one of: ${allowed.join(', ')}`, 'key');
}

/** Whether `map` has an unknown key that is a near spelling of `key`: that key's own error says it, not a second one saying `key` is missing (as a config's do). */
function misspeltAs(map: Record<string, unknown>, allowed: string[], key: string): boolean {
  return Object.keys(map).some((k) => !allowed.includes(k) && closest(k, allowed) === key);
}

/** Whether a test's input is a CloudEvents batch request (its content-type, parameters aside). */
function isBatchInput(input: unknown): input is Record<string, unknown> {
  if (!isMap(input) || !isStringMap(input.headers)) return false;
  const ct = Object.entries(input.headers).find(([k]) => k.toLowerCase() === 'content-type')?.[1];
  return ct !== undefined && mediaTypeOf(ct) === BATCH_TYPE;
}

function isMap(v: unknown): v is Record<string, any> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isStringMap(v: unknown): v is Record<string, string> {
  return isMap(v) && Object.values(v).every((x) => typeof x === 'string');
}
