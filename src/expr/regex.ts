/**
 * Regular expressions in JSONata (`$contains(s, /^(a+)+$/)`, `$match`, `$replace`, `$split`) run
 * on client data, and a backtracking engine (JavaScript's RegExp) can take exponential time on a
 * 32-byte string — in one synchronous call that no time box can interrupt. JSONata lets the
 * embedder choose the engine; eventgate gives it RE2 (re2js, pure JavaScript), whose matching time
 * is linear in the input, and bounds the input a regex call may be given, so one call's cost is
 * bounded too. RE2 has no backreferences or lookaround: such a pattern is a config error.
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

/** A JavaScript regex literal compiled for RE2, or why it cannot be. */
export function compileLinear(re: RegExp): RE2JS {
  const R = engine();
  let flags = 0;
  if (re.flags.includes('i')) flags |= R.CASE_INSENSITIVE;
  if (re.flags.includes('m')) flags |= R.MULTILINE;
  if (re.flags.includes('s')) flags |= R.DOTALL;
  return R.compile(R.translateRegExp(re.source), flags);
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
