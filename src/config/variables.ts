/**
 * `${VAR}` references in config strings (spec §2): `${VAR}`, `${VAR:-default}`, a default that
 * holds references itself (`${PRIMARY:-${FALLBACK:-localhost}}`, as shells and Docker Compose
 * read it), and `$${` for a literal `${`. A scanner rather than a regular expression: a regex read
 * `${A:-${B}}` as the default `${B` followed by a `}`, and delivered the literal text `${B}` as the
 * value; a reference it did not recognise (`${1X}`, `${HOST` never closed) stayed in the value as
 * text. Both are now problems at their place.
 */
export type Env = Readonly<Record<string, string | undefined>>;

export interface VariableProblem {
  /** Offset in the string where the reference starts. */
  readonly index: number;
  readonly message: string;
}

export interface Expansion {
  readonly value: string;
  /** Whether there was any reference (or `$${`) to expand. */
  readonly changed: boolean;
  /** Whether the string is exactly one reference (`port: ${PORT}` then takes the type of its value). */
  readonly whole: boolean;
  readonly problems: readonly VariableProblem[];
  /** The environment's values that went into the result (not defaults written in the file): secrets. */
  readonly envValues: readonly string[];
  /** The names of the variables the environment gave the result from (`HTTP_PORT`), one set empty too: a problem with the value names them. */
  readonly envNames: readonly string[];
  /**
   * Where character `index` of `value` was written in the string: past a reference the two differ
   * in length, and a place inside a reference's value is the reference's `$`. A JSONata expression
   * holding `${PREFIX}` reports its compile errors at an index of the value; the config check
   * points at the file with this (it pointed as many columns off as the value and the reference
   * differ in length).
   */
  sourceIndex(index: number): number;
}

/** A part of the value that is not the text as written: a reference's value, or `$${` written for `${`. */
interface Replaced {
  /** Where it starts and ends in the value. */
  readonly from: number;
  readonly to: number;
  /** Where what it replaced starts and ends in the string as written. */
  readonly sourceFrom: number;
  readonly sourceTo: number;
  /** `$${...}`: the value is the text as written less its first `$`, character for character. */
  readonly literal: boolean;
}

const NAME = /[A-Za-z_][A-Za-z0-9_]*/y;

/** `s` with its references replaced from `env`. */
export function expandVariables(s: string, env: Env): Expansion {
  if (!s.includes('${')) return { value: s, changed: false, whole: false, problems: [], envValues: [], envNames: [], sourceIndex: (i) => i };
  const scan = new Scanner(s, env);
  const value = scan.text(0, false).text;
  const whole = scan.leadingReferenceEnd === s.length;
  const replaced = scan.replaced;
  return { value, changed: true, whole, problems: scan.problems, envValues: scan.envValues, envNames: scan.envNames, sourceIndex: (i) => sourceIndex(replaced, i) };
}

function sourceIndex(replaced: readonly Replaced[], index: number): number {
  // The shift of the text as written against the value, from the parts replaced before `index`.
  let shift = 0;
  for (const r of replaced) {
    if (index < r.from) break;
    if (index < r.to) return r.literal ? r.sourceFrom + 1 + (index - r.from) : r.sourceFrom;
    shift = r.sourceTo - r.to;
  }
  return index + shift;
}

class Scanner {
  problems: VariableProblem[] = [];
  envValues: string[] = [];
  envNames: string[] = [];
  /** Where a reference at the very start of the string ended (for `whole`). */
  leadingReferenceEnd = -1;
  /** The parts of the value (outside defaults) that are not the text as written, in order. */
  readonly replaced: Replaced[] = [];

  constructor(
    private readonly s: string,
    private readonly env: Env,
  ) {}

  /** Expands from `i` to the end, or (in a default) to the `}` that closes it, whose index is `end`. */
  text(i: number, inDefault: boolean): { text: string; end: number } {
    const s = this.s;
    let out = '';
    while (i < s.length) {
      const c = s[i];
      if (inDefault && c === '}') return { text: out, end: i };
      if (c === '$' && s[i + 1] === '$' && s[i + 2] === '{') {
        // `$${...}`: the text up to its closing brace, as written, less the first `$`.
        const close = matchingBrace(s, i + 2);
        const end = close === -1 ? s.length : close + 1;
        if (!inDefault) this.replaced.push({ from: out.length, to: out.length + end - i - 1, sourceFrom: i, sourceTo: end, literal: true });
        out += s.slice(i + 1, end);
        i = end;
        continue;
      }
      if (c === '$' && s[i + 1] === '{') {
        const ref = this.reference(i);
        if (i === 0) this.leadingReferenceEnd = ref.next;
        if (!inDefault) this.replaced.push({ from: out.length, to: out.length + ref.value.length, sourceFrom: i, sourceTo: ref.next, literal: false });
        out += ref.value;
        i = ref.next;
        continue;
      }
      out += c;
      i++;
    }
    return { text: out, end: i };
  }

  /** The reference starting at `start` (at its `$`): its value and the index after it. */
  reference(start: number): { value: string; next: number } {
    const s = this.s;
    NAME.lastIndex = start + 2;
    const name = NAME.exec(s)?.[0];
    if (name === undefined) return this.malformed(start, `'${shown(s, start)}' is not a variable reference: a name is letters, digits and _, not starting with a digit (write $\${ for a literal \${)`);
    const after = start + 2 + name.length;
    if (s[after] === '}') return { value: this.lookup(name, undefined, start), next: after + 1 };
    if (s.startsWith(':-', after)) {
      // The default is expanded on a scanner of its own, kept only if it is used: its missing variables count only then.
      const inner = new Scanner(s, this.env);
      const fallback = inner.text(after + 2, true);
      if (fallback.end >= s.length) {
        this.problems.push({ index: start, message: unclosed(s, start) });
        return { value: '', next: s.length };
      }
      const value = this.lookup(name, { text: fallback.text, problems: inner.problems, envValues: inner.envValues, envNames: inner.envNames }, start);
      return { value, next: fallback.end + 1 };
    }
    if (after >= s.length) return this.malformed(start, unclosed(s, start));
    return this.malformed(start, `'${shown(s, start)}' is not a reference this config takes: write \${${name}} or \${${name}:-default}`);
  }

  private lookup(name: string, fallback: { text: string; problems: VariableProblem[]; envValues: string[]; envNames: string[] } | undefined, at: number): string {
    const v = this.env[name];
    if (v !== undefined && v !== '') {
      this.envValues.push(v);
      this.envNames.push(name);
      return v;
    }
    if (fallback !== undefined) {
      this.problems.push(...fallback.problems);
      this.envValues.push(...fallback.envValues);
      this.envNames.push(...fallback.envNames);
      return fallback.text;
    }
    if (v === '') {
      // Named, as a set value is (`(from \${R})` in a wrong value's message); no value to keep from logs.
      this.envNames.push(name);
      return v;
    }
    this.problems.push({
      index: at,
      message: `environment variable '${name}' is not set and has no default (write \${${name}:-default} to give one, or pass --vars-file FILE with stand-in values to check the config without the deployment's environment)`,
    });
    return '';
  }

  private malformed(start: number, message: string): { value: string; next: number } {
    this.problems.push({ index: start, message });
    const close = matchingBrace(this.s, start + 1);
    return { value: '', next: close === -1 ? this.s.length : close + 1 };
  }
}

/** Index of the `}` closing the `{` at `open`, counting nested braces; -1 when there is none. */
function matchingBrace(s: string, open: number): number {
  let depth = 0;
  for (let i = open; i < s.length; i++) {
    if (s[i] === '{') depth++;
    else if (s[i] === '}' && --depth === 0) return i;
  }
  return -1;
}

function unclosed(s: string, start: number): string {
  return `'${shown(s, start)}' is not closed: a reference ends with } (write $\${ for a literal \${)`;
}

/** The reference as written, cut short for a message. */
function shown(s: string, start: number): string {
  const close = matchingBrace(s, start + 1);
  const text = s.slice(start, close === -1 ? s.length : close + 1);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
