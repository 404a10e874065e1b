import secureJson from 'secure-json-parse';
import { problem, type Problem } from '../../core/errors.js';
import { CONTAINER_BYTES } from '../../core/heap-size.js';
import { hugeNumberAt, hugeNumberText } from '../../core/message.js';
import { REPEATED_NAMES_WHY, repeatedNameOf, repeatedNameText } from './repeated-names.js';

/** Nesting deeper than this is refused before parsing (listeners' `maxJsonDepth` default). */
export const DEFAULT_MAX_JSON_DEPTH = 64;
/** A body or frame whose parsed value would take more heap than this (estimated) is refused before parsing (listeners' `maxParsedBytes` default). */
export const DEFAULT_MAX_PARSED_BYTES = 8 * 1024 * 1024;

export type ClientJson = { ok: true; value: unknown } | { ok: false; problem: Problem };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Parses a body or frame a client sent, refusing what could hurt the gateway or the systems
 * behind it, before any of it reaches a chain:
 * - nesting deeper than `maxDepth` (recursive code downstream — ajv, JSON.stringify, consumers —
 *   can overflow the stack on deep values; checked on the raw bytes, so nothing is allocated);
 * - a parsed size over `maxParsedBytes`, estimated on the raw bytes too (heap-size.ts): a small
 *   body of many empty objects would otherwise cost 25 times its size in heap;
 * - bytes that are not UTF-8 (RFC 8259 §8.1), instead of silently replacing them;
 * - `__proto__` keys, and `constructor` keys holding a `prototype` (prototype poisoning of
 *   consumers that merge objects naively; secure-json-parse, as fastify uses it);
 * - numbers too large for a double, which JSON.parse turns into Infinity and JSON.stringify
 *   would then send on as `null`;
 * - an object that gives a member name twice (I-JSON, RFC 7493): the chain sees the last value,
 *   while the body goes on as written to readers that may keep the first (repeated-names.ts).
 */
export function parseClientJson(body: Buffer, what: 'body' | 'frame', maxDepth = DEFAULT_MAX_JSON_DEPTH, maxParsedBytes = DEFAULT_MAX_PARSED_BYTES): ClientJson {
  const shape = jsonShape(body, maxDepth);
  if (shape.depth > maxDepth) return refuse('EG_JSON_TOO_DEEP', `the ${what} nests JSON arrays/objects more than ${maxDepth} levels deep`);
  const parsedBytes = 2 * body.length + shape.containers * CONTAINER_BYTES;
  if (parsedBytes > maxParsedBytes) {
    return refuse('EG_PAYLOAD_TOO_LARGE', `the ${what} would take about ${parsedBytes} bytes once parsed (${shape.containers} arrays/objects); at most ${maxParsedBytes} are accepted`);
  }
  let text: string;
  let value: unknown;
  try {
    if (shape.plain) {
      // ASCII is UTF-8 as it is, and without a backslash the only way to spell a `__proto__` or
      // `constructor` key is literally: JSON.parse alone gives what secure-json-parse would, unless
      // the text holds one of those words (then it decides). Its two regular expressions over
      // every body cost as much as the parse (docs/performance.md).
      text = body.toString('latin1');
      value = text.indexOf('__proto__') === -1 && text.indexOf('constructor') === -1 ? JSON.parse(text) : secureParse(text);
    } else {
      try {
        text = utf8.decode(body);
      } catch {
        return refuse('EG_BAD_JSON', `the ${what} is not valid UTF-8`);
      }
      // The decoder took a leading byte order mark (RFC 8259 §8.1 lets a parser ignore one); a
      // second is no JSON, which secure-json-parse would skip as well: accepted, it was sent on
      // (clientPayloadOriginal leaves off one mark).
      if (text.charCodeAt(0) === 0xfeff) return refuse('EG_BAD_JSON', `the ${what} is not valid JSON: it starts with two byte order marks (one may come before JSON)`);
      value = secureParse(text);
    }
  } catch (err) {
    const message = (err as Error).message;
    if (message.includes('forbidden prototype property')) {
      return refuse('EG_JSON_FORBIDDEN_KEY', `the ${what} has a "__proto__" key or a "constructor" key with a "prototype"; these are refused to protect consumers from prototype poisoning`);
    }
    return refuse('EG_BAD_JSON', `the ${what} is not valid JSON: ${message}`);
  }
  if (shape.maybeHuge) {
    const at = hugeNumberAt(value);
    if (at !== undefined) return refuse('EG_BAD_JSON', hugeNumberText(what, at));
  }
  const repeated = repeatedNameOf(value, shape.members, () => text);
  if (repeated) return refuse('EG_BAD_JSON', `the ${what} gives ${repeatedNameText(repeated)}: ${REPEATED_NAMES_WHY}`);
  return { ok: true, value };
}

function secureParse(text: string): unknown {
  return secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
}

function refuse(code: 'EG_BAD_JSON' | 'EG_JSON_TOO_DEEP' | 'EG_JSON_FORBIDDEN_KEY' | 'EG_PAYLOAD_TOO_LARGE', detail: string): ClientJson {
  return { ok: false, problem: problem(code, detail) };
}

/**
 * The deepest nesting of `[`/`{` outside strings, counted on the bytes; stops counting once past
 * `limit`. Multi-byte UTF-8 sequences never contain ASCII bytes, so they cannot fake a bracket
 * or a quote.
 */
export function nestingDepth(bytes: Uint8Array, limit: number): number {
  return jsonShape(bytes, limit).depth;
}

/**
 * nestingDepth, how many arrays and objects the bytes hold, how many object members (a `:`
 * outside strings is one: repeated-names.ts), whether a number might overflow a
 * double, and whether the bytes are `plain`: ASCII without a backslash (all counted while scanning
 * anyway, so no second pass over the text). A JSON number overflows only with an exponent or 309+
 * digits, so `maybeHuge` is set by any exponent (an `e`/`E` right after a digit, outside strings)
 * or digit run that long; the parsed value is then checked.
 */
export function jsonShape(bytes: Uint8Array, limit: number, start = 0, end = bytes.length): { depth: number; containers: number; members: number; maybeHuge: boolean; plain: boolean } {
  let depth = 0;
  let members = 0;
  let max = 0;
  let containers = 0;
  let inString = false;
  let digits = 0;
  let maybeHuge = false;
  let plain = true;
  for (let i = start; i < end; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c) {
        plain = false;
        i++; // backslash: skip the escaped byte
      } else if (b === 0x22) inString = false;
      else if (b >= 0x80) plain = false;
      continue;
    }
    if (b >= 0x30 && b <= 0x39) {
      if (++digits >= 309) maybeHuge = true;
      continue;
    }
    if ((b === 0x65 || b === 0x45) && digits > 0) maybeHuge = true;
    digits = 0;
    if (b === 0x22) inString = true;
    else if (b === 0x5b || b === 0x7b) {
      containers++;
      if (++depth > max && (max = depth) > limit) return { depth: max, containers, members, maybeHuge, plain };
    } else if (b === 0x5d || b === 0x7d) depth--;
    else if (b === 0x3a) members++;
    else if (b >= 0x80 || b === 0x5c) plain = false;
  }
  return { depth: max, containers, members, maybeHuge, plain };
}
