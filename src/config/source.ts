import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, parse as parseYaml, isMap, isPair, isScalar, isSeq, visit, type Document, type Node as YamlNode } from 'yaml';
import { formatPath, type Diagnostic } from './diagnostics.js';

export type PathPart = string | number;

/**
 * A parsed YAML document with `${VAR}` substitution applied and every node's position kept,
 * so later stages can point at `file:line:col` without re-reading the file.
 */
export interface SourceDocument {
  file: string;
  text: string;
  value: unknown;
  /** Paths (formatted) whose value came wholly or partly from the environment: redacted in status output. */
  fromEnv: Set<string>;
  /** 1-based position of the key (or, with `which: 'value'`, the value) at `path`; the nearest existing ancestor when absent. */
  locate(path: readonly PathPart[], which?: 'key' | 'value'): { line: number; column: number };
  /** Offset of the value's first character in `text`, and whether it is a single-line plain or quoted scalar. */
  valueOffset(path: readonly PathPart[]): number | undefined;
}

export type Env = Readonly<Record<string, string | undefined>>;

const VAR = /\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const WHOLE_VAR = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/;

export function readSource(file: string, env: Env, diagnostics: Diagnostic[]): SourceDocument | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    diagnostics.push({ file, line: 1, column: 1, code: 'EG_CONFIG_FILE', path: '', message: `cannot read config file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
    return undefined;
  }
  return parseSource(file, text, env, diagnostics);
}

export function parseSource(file: string, text: string, env: Env, diagnostics: Diagnostic[]): SourceDocument | undefined {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const pos = (offset: number) => {
    const p = lineCounter.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const { line, column } = pos(e.pos[0]);
      diagnostics.push({ file, line, column, code: 'EG_CONFIG_SYNTAX', path: '', message: `YAML syntax error: ${firstLine(e.message)}` });
    }
    return undefined;
  }
  const fromEnv = new Set<string>();
  substituteEnv(doc, env, file, pos, fromEnv, diagnostics);

  const locateNode = (path: readonly PathPart[]) => findNode(doc, path);
  return {
    file,
    text,
    value: doc.toJS({ maxAliasCount: 100 }),
    fromEnv,
    locate(path, which = 'key') {
      const found = locateNode(path);
      const node = which === 'value' || !found.key ? found.value ?? found.key : found.key;
      const offset = node?.range?.[0] ?? 0;
      return pos(offset);
    },
    valueOffset(path) {
      const found = locateNode(path);
      if (!found.exact || !isScalar(found.value)) return undefined;
      const v = found.value;
      if (v.type === 'PLAIN') return v.range![0];
      if (v.type === 'QUOTE_DOUBLE' || v.type === 'QUOTE_SINGLE') return v.range![0] + 1;
      return undefined;
    },
  };
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/ at line \d+, column \d+.*$/, '');
}

function findNode(doc: Document, path: readonly PathPart[]): { key?: YamlNode; value?: YamlNode; exact: boolean } {
  let key: YamlNode | undefined;
  let value = doc.contents as YamlNode | null | undefined;
  for (const part of path) {
    if (isMap(value)) {
      const pair = value.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(part));
      if (!pair) return { key, value, exact: false };
      key = pair.key as YamlNode;
      value = (pair.value as YamlNode | null) ?? (pair.key as YamlNode);
    } else if (isSeq(value) && typeof part === 'number' && value.items[part] !== undefined) {
      key = value.items[part] as YamlNode;
      value = value.items[part] as YamlNode;
    } else {
      return { key, value: value ?? undefined, exact: false };
    }
  }
  return { key, value: value ?? undefined, exact: true };
}

function substituteEnv(
  doc: Document,
  env: Env,
  file: string,
  pos: (offset: number) => { line: number; column: number },
  fromEnv: Set<string>,
  diagnostics: Diagnostic[],
): void {
  visit(doc, {
    Scalar(_key, node, ancestors) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const source = node.value;
      const path = pathOf(ancestors, node);
      const whole = node.type === 'PLAIN' ? WHOLE_VAR.exec(source) : null;
      let missing = false;
      const replaced = source.replace(VAR, (match, escaped: string, name: string, fallback: string | undefined) => {
        if (escaped) return match.slice(1); // `$${X}` is a literal `${X}`
        const v = env[name];
        if (v !== undefined && v !== '') return v;
        if (fallback !== undefined) return fallback;
        if (v === '') return v;
        missing = true;
        const { line, column } = pos(node.range![0]);
        diagnostics.push({ file, line, column, code: 'EG_CONFIG_ENV', path: formatPath(path), message: `environment variable '${name}' is not set and has no default (write \${${name}:-default} to give one)` });
        return '';
      });
      if (missing || replaced === source) {
        if (!missing && replaced !== source) node.value = replaced;
        return;
      }
      fromEnv.add(formatPath(path));
      if (whole) {
        // `port: ${PORT}` takes the type of the value, as if it had been written there.
        try {
          const typed: unknown = parseYaml(replaced);
          if (typed === null || ['number', 'boolean'].includes(typeof typed)) {
            node.value = typed;
            return;
          }
        } catch {
          // not a plain YAML scalar: keep it as a string
        }
      }
      node.value = replaced;
    },
  });
}

function pathOf(ancestors: readonly unknown[], node: unknown): PathPart[] {
  const path: PathPart[] = [];
  let child: unknown = node;
  for (let i = ancestors.length - 1; i >= 0; i--) {
    const a = ancestors[i];
    if (isPair(a)) {
      if (a.key === child) return []; // a key, not a value: not addressable by path
      child = a;
      continue;
    }
    if (isMap(a)) {
      const pair = child as { key: unknown };
      path.unshift(isScalar(pair.key) ? String(pair.key.value) : '?');
    } else if (isSeq(a)) {
      path.unshift(a.items.indexOf(child as never));
    }
    child = a;
  }
  return path;
}
