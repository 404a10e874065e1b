/**
 * Regular expressions in JSONata (`$contains(s, /^(a+)+$/)`, `$match`, `$replace`, `$split`) run
 * on client data, and a backtracking engine (JavaScript's RegExp) can take exponential time on a
 * 32-byte string — in one synchronous call that no time box can interrupt. JSONata lets the
 * embedder choose the engine; eventgate gives it RE2 (re2js, pure JavaScript), whose matching time
 * is linear in the input, and bounds the input a regex call may be given, so one call's cost is
 * bounded too. RE2 has no backreferences or lookaround: such a pattern is a config error.
 * A JSON Schema's `pattern` runs on client data too, in a validate step (schemaPattern).
 */
import { createRequire } from 'node:module';
import type { RE2JS } from 're2js';

/** re2js is loaded with the first regex literal a config has: most configs have none (see expression.ts). */
let re2: typeof RE2JS | undefined;
function engine(): typeof RE2JS {
  return (re2 ??= (createRequire(import.meta.url)('re2js') as { RE2JS: typeof RE2JS }).RE2JS);
}

/** Longest string (UTF-16 code units) one regex call may search, unless `expressions.maxRegexInput` says otherwise. */
export const DEFAULT_MAX_REGEX_INPUT = 32 * 1024;

/**
 * A JavaScript regex literal compiled for RE2, or why it cannot be. Its `.`, `\s` and `\S` are
 * given RE2 in JavaScript's meaning (jsMeaning), as JSONata documents them: RE2's alone took
 * `/a.b/` to match `a\rb` and `/x\s$/` not to match `x` and a no-break space.
 */
export function compileLinear(re: RegExp): RE2JS {
  const R = engine();
  if (hasNamedBackreference(re.source, re.flags)) throw new Error('invalid escape sequence: `\\k`: a named backreference');
  let flags = 0;
  if (re.flags.includes('i')) flags |= R.CASE_INSENSITIVE;
  if (re.flags.includes('m')) flags |= R.MULTILINE;
  if (re.flags.includes('s')) flags |= R.DOTALL;
  return R.compile(R.translateRegExp(jsMeaning(re.source, re.flags.includes('s')) ?? re.source), flags);
}

/** The RegExp-shaped engine class jsonata instantiates per evaluation (`new RegexEngine(literal)`; it sets lastIndex and calls exec). */
export type RegexEngineClass = new (re: RegExp) => { lastIndex: number; exec(s: string): RegExpExecArray | null };

/**
 * An engine class for one expression: patterns are compiled once (jsonata makes a new engine per
 * evaluation, with the same literal object), and a search over more than `maxInput` code units
 * fails the evaluation instead of running.
 */
export function linearRegexEngine(maxInput: number): RegexEngineClass {
  const compiled = new WeakMap<RegExp, RE2JS>();
  return class LinearRegExp {
    lastIndex = 0;
    private readonly pattern: RE2JS;
    constructor(re: RegExp) {
      let p = compiled.get(re);
      if (!p) compiled.set(re, (p = compileLinear(re)));
      this.pattern = p;
    }

    exec(s: string): RegExpExecArray | null {
      if (s.length > maxInput)
        throw { code: 'EG_REGEX_INPUT', message: `a regular expression was given a string of ${s.length} characters; at most ${maxInput} are searched (expressions.maxRegexInput)` };
      if (this.lastIndex > s.length) {
        this.lastIndex = 0;
        return null;
      }
      const m = this.pattern.matcher(s);
      if (!m.find(this.lastIndex)) {
        this.lastIndex = 0;
        return null;
      }
      const groups: (string | undefined)[] = [];
      for (let i = 0; i <= m.groupCount(); i++) groups.push(m.group(i) ?? undefined);
      const result = Object.assign(groups, { index: m.start(), input: s }) as unknown as RegExpExecArray;
      this.lastIndex = m.end();
      return result;
    }
  };
}

/** Every regex literal in a jsonata AST, with its position (for a config error when RE2 cannot run it). */
export function regexLiterals(ast: unknown): { re: RegExp; position: number }[] {
  const out: { re: RegExp; position: number }[] = [];
  const seen = new Set<object>();
  const walk = (v: unknown) => {
    if (typeof v !== 'object' || v === null || seen.has(v)) return;
    seen.add(v);
    const node = v as { type?: string; value?: unknown; position?: number };
    if (node.type === 'regex' && node.value instanceof RegExp) out.push({ re: node.value, position: node.position ?? 0 });
    for (const x of Object.values(v)) walk(x);
  };
  walk(ast);
  return out;
}

/**
 * The longest string a JSON Schema pattern that cannot backtrack exponentially searches with
 * JavaScript's engine: a quadratic one (`\s+$`) then takes at most half a millisecond, a cubic one
 * (`^\d+\d+\d+$`) tens, where on a body's 30 000 characters `\s+$` held the event loop 3.5 s.
 */
const NATIVE_PATTERN_INPUT = 256;

/** What JavaScript's `\s` matches (ECMA-262 WhiteSpace and LineTerminator), where RE2's is ASCII only. */
const JS_SPACE = '\\t\\n\\v\\f\\r \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff';

/** What ajv's generated code calls of a pattern (`code.regExp`), and the key it caches it by. */
export interface PatternTester {
  test(s: string): boolean;
  toString(): string;
}

/**
 * A JSON Schema `pattern` (or `patternProperties` name) as a validate step runs it on client data:
 * ajv's engine (`code.regExp`). JavaScript's engine backtracks, and `{"pattern": "^(a+)+$"}` held
 * the event loop 6 s for a 26-character string (every client waiting). A pattern that can
 * backtrack exponentially (a repeated group holding a quantifier or an alternation: `(a+)+`,
 * `([a-z]+\.)+`, `(a|aa)*`) runs on RE2, in time linear in the string; any other on
 * JavaScript's for strings up to NATIVE_PATTERN_INPUT characters (the common case, and ~20 times
 * faster than re2js) and on RE2 for longer ones. Written so RE2 reads it as JavaScript does (`.`
 * and `\s` as JavaScript's). A pattern RE2 cannot run (lookaround, a backreference) stays on
 * JavaScript's engine: docs/security.md says so.
 */
export function schemaPattern(source: string, flags: string): PatternTester {
  const native = new RegExp(source, flags);
  // Compiled for RE2 when first needed (re2js loads then): most patterns only ever meet short strings.
  let linear: RE2JS | null | undefined;
  const search = (s: string) => {
    linear ??= linearPattern(source, flags) ?? null;
    return linear === null ? native.test(s) : linear.matcher(s).find();
  };
  const text = native.toString();
  if (backtracksExponentially(source)) return { test: search, toString: () => text };
  return { test: (s) => (s.length <= NATIVE_PATTERN_INPUT ? native.test(s) : search(s)), toString: () => text };
}
// The name ajv's standalone code would call it by (never written: validate steps compile in process).
schemaPattern.code = 'schemaPattern';

/** `source` compiled for RE2 with JavaScript's meaning of `.` and `\s`; undefined when RE2 cannot run it. */
function linearPattern(source: string, flags: string): RE2JS | undefined {
  const translated = hasNamedBackreference(source, flags) ? undefined : jsMeaning(source, false);
  if (translated === undefined) return undefined;
  try {
    const R = engine();
    return R.compile(R.translateRegExp(translated));
  } catch {
    return undefined;
  }
}

/**
 * `source` written so RE2 reads its `.` (unless `dotAll`), `\s` and `\S` as JavaScript does, where
 * RE2's `.` excludes only `\n` and its `\s` is ASCII; undefined when it has no such spelling (a
 * class holding `\S`, JavaScript's `[]` and `[^]`).
 */
function jsMeaning(source: string, dotAll: boolean): string | undefined {
  let out = '';
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      i++;
      if (next === 's') out += inClass ? JS_SPACE : `[${JS_SPACE}]`;
      else if (next === 'S' && !inClass) out += `[^${JS_SPACE}]`;
      // A class holding \S has no RE2 spelling of JavaScript's meaning.
      else if (next === 'S') return undefined;
      else out += c + next;
    } else if (inClass) {
      if (c === ']') inClass = false;
      out += c;
    } else if (c === '[') {
      // JavaScript's `[]` (nothing) and `[^]` (anything) are other classes to RE2.
      if (source[i + 1] === ']' || source.startsWith('^]', i + 1)) return undefined;
      inClass = true;
      out += c;
    } else out += c === '.' && !dotAll ? '[^\\n\\r\\u2028\\u2029]' : c;
  }
  return out;
}

/**
 * Whether `source` holds a named backreference (`\k<q>`), which JavaScript reads as one with the
 * `u` flag (a JSON Schema pattern's) or in a pattern with a named group. RE2 has none, and re2js'
 * translation does not refuse it but makes it the letters `k<q>`: `^(?<q>["'])\w*\k<q>$` then
 * matched none of the strings it was written for, with no error (a schema pattern on strings over
 * NATIVE_PATTERN_INPUT characters, an expression's regex always).
 */
function hasNamedBackreference(source: string, flags: string): boolean {
  if (!flags.includes('u') && !/\(\?<(?![=!])/.test(source)) return false;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') {
      if (!inClass && source[i + 1] === 'k') return true;
      i++;
    } else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
  }
  return false;
}

/**
 * Quantifiers that repeat more than a fixed count (`*`, `+`, `{n,}`, `{n,m}`) a pattern may hold
 * and still run on JavaScript's engine for short strings: k of them side by side backtrack in
 * time n^k, and on 257 characters `^a*a*a*$` took 66 ms where `^a*a*a*a*$` took 5.6 s.
 */
const NATIVE_MAX_REPEATS = 3;

/**
 * Whether a backtracking engine can take exponential time on `source` (some group is repeated —
 * `*`, `+`, `?`, `{...}` after it — and holds a quantifier or an alternation), or polynomial time
 * of a degree over NATIVE_MAX_REPEATS even on short strings. Conservative: a pattern this takes
 * for one only runs on RE2 (slower for short strings, the same answers).
 */
function backtracksExponentially(source: string): boolean {
  const groups: { repeats: boolean }[] = [{ repeats: false }];
  let repeats = 0;
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
      continue;
    }
    const top = groups[groups.length - 1]!;
    if (c === '[') inClass = true;
    else if (c === '(') groups.push({ repeats: false });
    else if (c === '|') top.repeats = true;
    else if (c === '*' || c === '+' || c === '{' || (c === '?' && source[i - 1] !== '(')) {
      top.repeats = true;
      if ((c === '*' || c === '+' || /^\{\d*,/.test(source.slice(i))) && ++repeats > NATIVE_MAX_REPEATS) return true;
    } else if (c === ')' && groups.length > 1) {
      const inner = groups.pop()!;
      const quantified = /^[*+?{]/.test(source.slice(i + 1));
      if (quantified && inner.repeats) return true;
      // What the group holds is in its parent too: `((a+)b)+` repeats a quantifier.
      if (inner.repeats) groups[groups.length - 1]!.repeats = true;
    }
  }
  return false;
}
