import { LineCounter, parseDocument, isAlias, isMap, isPair, isScalar, isSeq, visit, type Document, type Node as YamlNode, type Scalar } from './yaml.js';
import { escapeControls, formatPath, type Diagnostic } from './diagnostics.js';
import { expandVariables, type Env } from './variables.js';
import { jsonSyntaxProblem } from './json-syntax.js';
import { readConfigFile } from './read-file.js';
import { isIdentityPath } from './secrets.js';
import { MULTIPLE_DOCUMENTS, pathOfNode, tagProblemsOf } from './yaml-tags.js';

export type PathPart = string | number;

/**
 * A parsed YAML document with `${VAR}` substitution applied and every node's position kept,
 * so later stages can point at `file:line:col` without re-reading the file.
 */
export interface SourceDocument {
  file: string;
  text: string;
  value: unknown;
  /** Paths (formatted) whose value a `${VAR}` reference gave, wholly or partly: redacted in status output (but defaultsOnly). */
  fromEnv: Set<string>;
  /** The environment values substituted for `${VAR}`s (not the defaults written in the file): secrets wherever they show up. */
  envValues: Set<string>;
  /**
   * Paths of fromEnv whose value the file's own defaults gave, every variable in it unset
   * (`${CRM_URL:-http://crm.internal/in}`): the file's text, no secret, so shown as written (the
   * webhook it names, in logs and answers), as a value written without a reference is.
   */
  defaultsOnly?: Set<string>;
  /** Paths (formatted) of quoted scalars that are exactly `${VAR}`: strings, whatever the variable holds. */
  quotedVariables?: Set<string>;
  /** Paths (formatted) of unquoted scalars that are exactly `${VAR}` and took a number, boolean or null from its value, with that `${VAR}` text. */
  typedVariables?: Map<string, string>;
  /** Paths (formatted) of fromEnv whose value took environment values, with those variables' names (`HTTP_PORT`), for a problem with the value to name them. */
  variableNames?: Map<string, readonly string[]>;
  /** 1-based position of the key (or, with `which: 'value'`, the value) at `path`; the nearest existing ancestor when absent. */
  locate(path: readonly PathPart[], which?: 'key' | 'value'): { line: number; column: number };
  /**
   * 1-based position of character `index` of the string value at `path` (e.g. where a JSONata
   * expression fails to parse), through quotes, escapes, folding and block indentation; the
   * value's start when `path` is not a string scalar.
   */
  locateInValue(path: readonly PathPart[], index: number): { line: number; column: number };
  /** The file the value at `path` was written in, when the document merges several (`include:`); else `file`. */
  fileOf?(path: readonly PathPart[]): string;
}

export interface ParseOptions {
  /** Replace `${VAR}` from the environment (default true; off for referenced schema files). */
  substitute?: boolean;
}

export type { Env };

/** The config the CLI reads when `-c` names none. */
export const DEFAULT_CONFIG_FILE = 'gateway.yaml';

/**
 * Reads and parses the config file. `bytes` is what was read (undefined when the file could not
 * be read), so a file watcher can tell later whether the file still holds what was loaded.
 * `reload`: a running gateway reads the file it was started with again (the file gone is an edit, not a missing -c).
 * `fragment`: an included file, which the command line did not name.
 */
export function readSource(
  file: string,
  env: Env,
  diagnostics: Diagnostic[],
  options: { reload?: boolean; fragment?: boolean } = {},
): { source: SourceDocument | undefined; bytes: Buffer | undefined } {
  const reload = options.reload ?? false;
  let bytes: Buffer;
  try {
    // A named pipe only when named on the command line: a reload's read of one would wait for good.
    bytes = readConfigFile(file, { pipe: !reload && !options.fragment });
  } catch (err) {
    // `eventgate run` in a directory without the default ./gateway.yaml: say how to name one.
    const hint = !reload && file === DEFAULT_CONFIG_FILE && (err as NodeJS.ErrnoException).code === 'ENOENT' ? ` (no ${DEFAULT_CONFIG_FILE} in ${process.cwd()}: name the config with -c FILE)` : '';
    diagnostics.push({ file, line: 1, column: 1, code: 'EG_CONFIG_FILE', path: '', message: `cannot read config file: ${describeFsError(err)}${hint}` });
    return { source: undefined, bytes: undefined };
  }
  const text = decodeUtf8(bytes);
  if (typeof text !== 'string') {
    diagnostics.push(syntaxProblem(file, text.line, text.column, text.message));
    return { source: undefined, bytes };
  }
  return { source: parseSource(file, text, env, diagnostics), bytes };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The file's text, or where it stops being UTF-8. Decoding leniently would turn a Latin-1 `é` in
 * a topic name into U+FFFD without a word, and the gateway would publish to another topic.
 */
export function decodeUtf8(bytes: Uint8Array): string | { line: number; column: number; message: string } {
  const wide = wideEncodingOf(bytes);
  if (wide) return { line: 1, column: 1, message: `the file is ${wide} text, not UTF-8 (save the file as UTF-8)` };
  try {
    const text = utf8.decode(bytes);
    // YAML and JSON text cannot hold U+0000, and the YAML reader takes it without a word: a file
    // of NULs between the characters read as one string ("the config must be a map").
    const nul = text.indexOf('\0');
    if (nul < 0) return text;
    const before = text.slice(0, nul);
    return {
      line: before.split('\n').length,
      column: nul - (before.lastIndexOf('\n') + 1) + 1,
      message: 'the file is not text: a NUL byte (0x00) here is not allowed (a binary file? save the file as UTF-8 text)',
    };
  } catch {
    // Only on failure: find the first byte that starts no valid sequence (or a sequence cut short).
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i]!;
      const need = b < 0x80 ? 0 : b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : -1;
      if (need < 0) break;
      const seq = bytes.subarray(i, i + need + 1);
      try {
        if (seq.length !== need + 1) throw new Error('cut short');
        utf8.decode(seq);
      } catch {
        break;
      }
      i += need + 1;
    }
    const before = utf8.decode(bytes.subarray(0, i));
    const lineStart = before.lastIndexOf('\n') + 1;
    const hex = (bytes[i] ?? 0).toString(16).toUpperCase().padStart(2, '0');
    return {
      line: before.split('\n').length,
      column: before.length - lineStart + 1,
      message: `the file is not UTF-8 text: byte 0x${hex} here is not valid UTF-8 (save the file as UTF-8)`,
    };
  }
}

/**
 * 'UTF-16' (or 'UTF-32') when the bytes are text in that encoding, as Windows tools write it
 * (Notepad's "Unicode", PowerShell 5's `>` and `Out-File`): by its byte order mark, or without
 * one by the NULs beside the first character, which a config's first character (a letter, `#`,
 * `-`, a space) has in those encodings.
 */
function wideEncodingOf(bytes: Uint8Array): string | undefined {
  if (bytes.length < 2) return undefined;
  const [a, b, c, d] = [bytes[0], bytes[1], bytes[2], bytes[3]];
  const bigEndian32 = a === 0 && b === 0 && (c === 0 ? d !== 0 : c === 0xfe && d === 0xff);
  const littleEndian32 = c === 0 && d === 0 && (b === 0 ? a !== 0 : a === 0xff && b === 0xfe);
  if (bigEndian32 || littleEndian32) return 'UTF-32';
  if ((a === 0xff && b === 0xfe) || (a === 0xfe && b === 0xff) || (a === 0) !== (b === 0)) return 'UTF-16';
  return undefined;
}

/** `ENOENT` → "no such file (ENOENT)": the code alone means little to most users. */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const what: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'it is a directory', ENOTDIR: 'a parent is not a directory' };
  return e.code ? `${what[e.code] ?? 'cannot read'} (${e.code})` : e.message;
}

/**
 * The text as a document, in the order its problems are found: YAML syntax, an alias inside its
 * own anchor, `${VAR}` substitution (unless `options.substitute` is false), numbers that are not
 * finite, aliases resolved. Undefined, with the problems in `diagnostics`, when the text is not a
 * config's YAML; a `${VAR}` problem alone still gives the document.
 */
export function parseSource(file: string, raw: string, env: Env, diagnostics: Diagnostic[], options: ParseOptions = {}): SourceDocument | undefined {
  // A byte order mark (Windows editors write one) takes no column: positions are as an editor shows them.
  const text = raw.charCodeAt(0) === 0xfeff ? raw.slice(1) : raw;
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  const pos = (offset: number) => {
    const p = lineCounter.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    diagnostics.push(...syntaxErrors(doc, file, text, pos));
    return undefined;
  }
  const collectionKey = firstCollectionKey(doc);
  if (collectionKey) {
    const { line, column } = pos(collectionKey.at);
    diagnostics.push(syntaxProblem(file, line, column, `YAML error: this key is a ${collectionKey.what}, not a name; a key must be a plain string (quote it if it should read as written)`));
    return undefined;
  }
  const cycle = aliasCycle(doc);
  if (cycle) {
    const { line, column } = pos(cycle.at);
    diagnostics.push(
      syntaxProblem(file, line, column, `YAML error: alias *${cycle.name} is inside the node its anchor &${cycle.name} names, so the value would contain itself; copy the value instead`),
    );
    return undefined;
  }
  const fromEnv = new Set<string>();
  const envValues = new Set<string>();
  const defaultsOnly = new Set<string>();
  const quotedVariables = new Set<string>();
  const typedVariables = new Map<string, string>();
  const variableNames = new Map<string, readonly string[]>();
  // The string as written of each scalar whose `${VAR}`s were replaced, to locate places in its value.
  const written = new WeakMap<Scalar, Written>();
  if (options.substitute !== false) {
    substituteEnv(doc, env, file, text, pos, { fromEnv, defaultsOnly, variableNames }, diagnostics, envValues, quotedVariables, typedVariables, written);
  }
  keysMadeEqual(doc, file, text, pos, diagnostics);

  if (nonFiniteNumbers(doc, file, text, pos, diagnostics)) return undefined;
  if (tagProblems(doc, file, text, pos, diagnostics)) return undefined;

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    // Aliases are resolved only here: an alias to no anchor, or an alias bomb.
    const unresolved = unresolvedAlias(doc);
    const badMerge = unresolved ? undefined : badMergeSource(doc);
    const { line, column } = pos(unresolved?.at ?? badMerge?.at ?? 0);
    // An unresolved alias as a merge source (`<<: *base`) threw "Merge sources must be maps or map
    // aliases", which sends the reader to the wrong mistake: the anchor is what is missing.
    const message = unresolved
      ? `Unresolved alias (the anchor must be set before the alias): ${unresolved.name}`
      : badMerge
        ? `a merge key (<<) takes a map, an alias of one, or a list of those; this is ${badMerge.what}`
        : firstLine((err as Error).message);
    diagnostics.push(syntaxProblem(file, line, column, `YAML error: ${message}`));
    return undefined;
  }
  const locateNode = (path: readonly PathPart[]) => findNode(doc, path);
  return {
    file,
    text,
    value,
    fromEnv,
    envValues,
    defaultsOnly,
    quotedVariables,
    typedVariables,
    variableNames,
    locate(path, which = 'key') {
      const found = locateNode(path);
      const node = which === 'value' || !found.key ? (found.value ?? found.key) : found.key;
      const offset = node?.range?.[0] ?? 0;
      return pos(offset);
    },
    locateInValue(path, index) {
      const found = locateNode(path);
      const node = found.exact ? found.value : undefined;
      if (!isScalar(node) || typeof node.value !== 'string') return pos(node?.range?.[0] ?? found.value?.range?.[0] ?? 0);
      const before = written.get(node);
      if (before) return pos(offsetInScalar(text, node, before.text, before.sourceIndex(index)));
      return pos(offsetInScalar(text, node, node.value, index));
    },
  };
}

/** A scalar's string before its `${VAR}`s were replaced, and where an index of its value was in it. */
interface Written {
  text: string;
  sourceIndex(index: number): number;
}

/** Where a node of the text is, 1-based. */
type PositionOf = (offset: number) => { line: number; column: number };

/** The parser's errors as diagnostics, in the user's words: one per line, and none for the tokens after a lost document. */
function syntaxErrors(doc: Document, file: string, text: string, pos: PositionOf): Diagnostic[] {
  const out: Diagnostic[] = [];
  // One mistake often yields several errors on its line (the parser's recovery trips again): report the first.
  const seen = new Set<number>();
  for (const e of doc.errors) {
    const { line, column: reported } = pos(e.pos[0]);
    if (seen.has(line)) continue;
    // The parser points a key out of line with its siblings at column 1; the key is where its text starts.
    const column = e.code === 'BAD_INDENT' ? Math.max(reported, indentOf(lineAt(text, line)) + 1) : reported;
    // "Unexpected ... token in YAML stream" after an error: the parser lost the document there and
    // trips on every token left, one diagnostic per line to the end of the file.
    if (seen.size > 0 && e.code === 'UNEXPECTED_TOKEN' && e.message.includes('token in YAML stream')) continue;
    seen.add(line);
    // The library's own words advise a call of its API; the user needs to know what to change.
    const message =
      e.code === 'MULTIPLE_DOCS'
        ? MULTIPLE_DOCUMENTS
        : e.code === 'RESOURCE_EXHAUSTION'
          ? // The parser ran out of stack ("Maximum call stack size exceeded"): say what in the file did it.
            'YAML error: the lists and maps here nest too deeply to be read (the parser ran out of stack); a config needs a handful of levels'
          : `YAML syntax error: ${firstLine(e.message)}${e.code === 'DUPLICATE_KEY' ? duplicateKeyHint(doc, e.pos[0], pos) : ''}${flowVariableHint(text, line)}${indentHint(e.code, text, line) || valueHint(e.code, text, line, reported) || flowValueHint(e.code, text, line, reported)}`;
    out.push(syntaxProblem(file, line, column, message));
  }
  return out;
}

/**
 * Which key a "Map keys must be unique" is about and where the map has it first: in a long file
 * (a second `routes:` appended at the end, a key pasted twice) the other one is what to find.
 */
function duplicateKeyHint(doc: Document, at: number, pos: PositionOf): string {
  let hint = '';
  visit(doc, {
    Map(_key, map) {
      const i = map.items.findIndex((p) => (p.key as YamlNode | null)?.range?.[0] === at);
      if (i < 0) return;
      const key = map.items[i]!.key;
      const first = isScalar(key) ? map.items.slice(0, i).find((p) => isScalar(p.key) && p.key.value === key.value) : undefined;
      const firstAt = (first?.key as YamlNode | undefined)?.range?.[0];
      if (isScalar(key) && firstAt !== undefined) {
        const { line, column } = pos(firstAt);
        hint = `: '${escapeControls(String(key.value))}' is written at ${line}:${column} too (remove one, or merge the two)`;
      }
      return visit.BREAK;
    },
  });
  return hint;
}

/**
 * A list or a map as a key (`[a]: 1`, `? {a: 1}`): toJS turns it into a string ("[ a ]") with a
 * process warning on stderr that advises a call of the yaml library's API, and the key is then
 * located nowhere (its problem was reported at 1:1). No key of a config or of a file it names is one.
 */
function firstCollectionKey(doc: Document): { at: number; what: string } | undefined {
  let found: { at: number; what: string } | undefined;
  visit(doc, {
    Pair(_key, pair) {
      const written = pair.key as YamlNode | null;
      const key = isAlias(written) ? written.resolve(doc) : written;
      if (!isMap(key) && !isSeq(key)) return;
      found = { at: written?.range?.[0] ?? 0, what: isMap(key) ? 'map' : 'list' };
      return visit.BREAK;
    },
  });
  return found;
}

/**
 * An alias inside the node its anchor names (`a: &x [*x]`) is a cycle: toJS would build a
 * circular object, and every later walk of the config would recurse until the stack overflows
 * (a bare "Maximum call stack size exceeded", no file:line:col). A config is a tree: the first
 * such alias, found in one pass in document order (an alias names the last node with its anchor before it).
 */
function aliasCycle(doc: Document): { at: number; name: string } | undefined {
  let cycle: { at: number; name: string } | undefined;
  const anchored = new Map<string, YamlNode>();
  visit(doc, (_key, node) => {
    if (isAlias(node)) {
      const target = anchored.get(node.source);
      const at = node.range?.[0];
      if (target?.range && at !== undefined && at >= target.range[0] && at < target.range[2]) {
        cycle = { at, name: node.source };
        return visit.BREAK;
      }
    } else if ((isMap(node) || isSeq(node) || isScalar(node)) && node.anchor) anchored.set(node.anchor, node);
  });
  return cycle;
}

/** The first alias that names no anchor, with its offset (none: an alias bomb is the whole document's). */
function unresolvedAlias(doc: Document): { at: number; name: string } | undefined {
  let found: { at: number; name: string } | undefined;
  visit(doc, {
    Alias(_key, node) {
      if (node.resolve(doc) === undefined) {
        found = { at: node.range?.[0] ?? 0, name: node.source };
        return visit.BREAK;
      }
    },
  });
  return found;
}

/**
 * The first merge source (`<<: X`, or an item of `<<: [X, Y]` or of the list `<<: *list` names)
 * that is no map nor an alias of one, with what it is: the parser throws without a place, and the
 * problem was said at 1:1.
 */
function badMergeSource(doc: Document): { at: number; what: string } | undefined {
  let found: { at: number; what: string } | undefined;
  const isMapSource = (item: unknown) => isMap(isAlias(item) ? item.resolve(doc) : item);
  const check = (node: unknown, inList: boolean): boolean => {
    const target = isAlias(node) ? node.resolve(doc) : node;
    if (isMap(target)) return false;
    if (isSeq(target) && !inList && !isAlias(node)) return target.items.some((item) => check(item, true));
    // yaml merges the maps of an aliased list as of a list written there: such an alias is no
    // mistake (taken for one, it was named in place of the merge key that made toJS throw).
    if (isSeq(target) && !inList && target.items.every(isMapSource)) return false;
    const what = isSeq(target)
      ? isAlias(node)
        ? inList
          ? 'an alias of a list'
          : 'an alias of a list with an item that is no map'
        : 'a list inside the list'
      : isAlias(node)
        ? 'an alias of a scalar'
        : 'a scalar';
    found = { at: (node as YamlNode | null)?.range?.[0] ?? 0, what };
    return true;
  };
  visit(doc, {
    Pair(_key, pair) {
      const key = pair.key;
      if (isScalar(key) && typeof key.value === 'symbol' && check(pair.value, false)) return visit.BREAK;
    },
  });
  return found;
}

/**
 * Two keys of one map that are one name once read as text: a `${VAR}` made them the same
 * (`${B:-local}` beside `local`), YAML read them as values of different types (`1` and `"1"`,
 * `true` and `"true"`, `~` and `""`), or one is an alias (`*n`) of the other's name. YAML compared
 * them as values or as nodes, and the later one replaced the other without a word, a broker or
 * listener gone.
 */
function keysMadeEqual(doc: Document, file: string, text: string, pos: PositionOf, diagnostics: Diagnostic[]): void {
  visit(doc, {
    Map(_key, map) {
      // Each name's first key as written (an alias where one was written).
      const first = new Map<string, YamlNode>();
      for (const pair of map.items) {
        const node = pair.key as YamlNode | null;
        // A key may be an alias (`*n: 1`): it is the name its anchor holds, as toJS reads it.
        const key = isAlias(node) ? node.resolve(doc) : node;
        // A merge key (`<<`, which may repeat) is a symbol: not a name.
        if (!node?.range || !isScalar(key) || typeof key.value === 'symbol') continue;
        // `.nan` is no name, as nonFiniteNumbers says; YAML finds no two NaNs equal.
        if (Number.isNaN(key.value)) continue;
        // As toJS names it: a null key (`~`, or nothing before the colon) is the empty name.
        const name = key.value === null ? '' : String(key.value);
        const earlier = first.get(name);
        if (!earlier) {
          first.set(name, node);
          continue;
        }
        const written = (k: YamlNode) => text.slice(k.range![0], k.range![1]);
        // Keys of one value are YAML's own error, reported before this.
        const substituted = written(node).includes('${') || written(earlier).includes('${');
        const how = substituted
          ? 'once their ${VAR}s are replaced'
          : isAlias(node) || isAlias(earlier)
            ? 'an alias standing for the name its anchor holds: the second would replace the first'
            : 'which YAML reads as two keys (one a string, one a number, boolean or null), but a name is text: the second would replace the first';
        const { line, column } = pos(node.range[0]);
        diagnostics.push({
          file,
          line,
          column,
          code: 'EG_CONFIG_CONFLICT',
          path: '',
          message: `key '${name}' is given twice in this map: here (${written(node)}) and at line ${pos(earlier.range![0]).line} (${written(earlier)}), ${how}`,
        });
      }
    },
  });
}

/**
 * YAML reads `.inf`, `-.inf`, `.nan` and numbers beyond a double (`1e400`) as Infinity and NaN,
 * which the schema's number checks let through: `rate: 1e400` made a rate limit that never
 * limits, `retain: .inf` a memory topic that grows without bound, and JSON (`plan --format json`)
 * cannot write them. No key of a config means anything by them, so each is named. True when any.
 */
function nonFiniteNumbers(doc: Document, file: string, text: string, pos: PositionOf, diagnostics: Diagnostic[]): boolean {
  let found = false;
  visit(doc, {
    Scalar(_key, node, ancestors) {
      if (typeof node.value !== 'number' || Number.isFinite(node.value)) return;
      found = true;
      const path = pathOfNode(ancestors, node);
      const [start, end] = node.range ?? [0, 0];
      const { line, column } = pos(start);
      const where = path.length > 0 ? `${formatPath(path)} is` : 'the value is';
      const written = text.slice(start, end) || String(node.value);
      const shown = written.includes('${') ? `${written} (${node.value} once substituted)` : written;
      diagnostics.push({
        file,
        line,
        column,
        code: 'EG_CONFIG_SCHEMA',
        path: formatPath(path),
        message: `${where} ${shown}, which is not a finite number: write the number itself (no setting takes an infinite or NaN value)`,
      });
    },
  });
  return found;
}

/**
 * Reports every YAML tag the config cannot take, at the tag: one that makes what JSON has not
 * (nonJsonTags), and one the yaml package could not resolve, which it only warns of and drops
 * (`topic: !Ref orders` read as `orders`; `!!int x`). True when there was one.
 */
function tagProblems(doc: Document, file: string, text: string, pos: PositionOf, diagnostics: Diagnostic[]): boolean {
  // `port: !!int ${PORT}`: the tag did not fit the text `${PORT}`, but the variable's value,
  // typed as it was substituted, does (a failed tag leaves its text, a string, which fits none).
  const found = tagProblemsOf(doc, text, (node) => isScalar(node) && fitsTag((node as { tag?: string }).tag, node.value));
  for (const { at, path, message } of found) {
    const { line, column } = pos(at);
    diagnostics.push({ file, line, column, code: 'EG_CONFIG_SCHEMA', path: formatPath(path), message });
  }
  return found.length > 0;
}

/** Whether `value` is of the type a standard scalar tag makes: what a `${VAR}` gave under `!!int`, `!!float`, `!!bool`, `!!null`. */
function fitsTag(tag: string | undefined, value: unknown): boolean {
  switch (tag) {
    case 'tag:yaml.org,2002:int':
      return Number.isInteger(value);
    case 'tag:yaml.org,2002:float':
      return typeof value === 'number';
    case 'tag:yaml.org,2002:bool':
      return typeof value === 'boolean';
    case 'tag:yaml.org,2002:null':
      return value === null;
    default:
      return false;
  }
}

/**
 * Maps character `index` of a string scalar's value to an offset in the file text. The value
 * and its source differ only in whitespace (indentation, folded line breaks), quotes and
 * escapes, so the n-th non-blank character of the value is the n-th non-blank character of
 * the source once escapes are counted as the one character they stand for.
 */
function offsetInScalar(text: string, node: Scalar, value: string, index: number): number {
  const [start, end] = node.range!;
  let from = start;
  if (node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE') from = start + 1;
  else if (node.type === 'BLOCK_LITERAL' || node.type === 'BLOCK_FOLDED') {
    const nl = text.indexOf('\n', start);
    from = nl === -1 || nl >= end ? start : nl + 1;
  }
  const isBlank = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r';
  // The target: the k-th non-blank character of the value, plus `extra` blanks after it on the same line.
  const clamped = Math.max(0, Math.min(index, value.length));
  let k = 0;
  let lastNonBlankEnd = 0;
  for (let i = 0; i < clamped; i++) {
    if (!isBlank(value[i])) {
      k++;
      lastNonBlankEnd = i + 1;
    }
  }
  // Past the end ("expected ... before end of expression"): the last character, where the text stops short.
  if (clamped >= value.length && k > 0) return offsetInScalar(text, node, value, lastNonBlankEnd - 1);
  const onBlank = isBlank(value[clamped]) || clamped >= value.length;
  const gap = value.slice(lastNonBlankEnd, clamped);
  const extra = onBlank && !gap.includes('\n') ? gap.length : 0;
  const want = onBlank ? k : k + 1;
  if (want === 0) return from + extra;
  let seen = 0;
  for (let o = from; o < end; ) {
    const c = text[o]!;
    if (isBlank(c)) {
      o++;
      continue;
    }
    let width = 1;
    if (node.type === 'QUOTE_DOUBLE' && c === '\\') {
      width = escapeWidth(text[o + 1]);
      // Escapes that stand for blanks (or for nothing: an escaped line break) are not counted.
      if (isBlank(text[o + 1]) || 'ntr'.includes(text[o + 1]!)) {
        o += width;
        continue;
      }
    } else if (node.type === 'QUOTE_SINGLE' && c === "'" && text[o + 1] === "'") width = 2;
    seen++;
    if (seen === want) return onBlank ? o + width + extra : o;
    o += width;
  }
  return from;
}

/** Source width of a double-quoted escape (`\n` is 2, `\x41` is 4, `\u0041` is 6). */
function escapeWidth(c: string | undefined): number {
  if (c === 'x') return 4;
  if (c === 'u') return 6;
  if (c === 'U') return 10;
  return 2;
}

/**
 * `{ port: ${PORT} }` is not YAML: `{` and `}` are flow indicators, so an unquoted variable
 * cannot sit inside a flow map or list. A common stumble, so say how to write it; a quoted one
 * (`[{transform: "${X}"}]`) is fine, and the error is something else.
 */
function flowVariableHint(text: string, line: number): string {
  const lineText = text.split('\n')[line - 1] ?? '';
  if (!unquotedVariableInFlow(lineText)) return '';
  return ' (an unquoted ${VAR} cannot appear inside { } or [ ]: quote it, or write that map in block style to keep a number a number)';
}

/** Whether `lineText` has a `${` outside quotes after a `[` or `{` outside quotes. */
function unquotedVariableInFlow(lineText: string): boolean {
  let quote: string | undefined;
  let inFlow = false;
  for (let i = 0; i < lineText.length; i++) {
    const c = lineText[i];
    if (quote === '"' && c === '\\') i++;
    else if (quote !== undefined) {
      if (c === quote) quote = undefined;
    } else if ((c === '"' || c === "'") && (i === 0 || ' \t[{,:'.includes(lineText[i - 1]!)))
      quote = c; // a quote within a plain scalar (it's) is text
    else if (c === '[' || c === '{') inFlow = true;
    else if (c === '#' && (i === 0 || lineText[i - 1] === ' ')) return false;
    else if (inFlow && c === '$' && lineText[i + 1] === '{') return true;
  }
  return false;
}

/**
 * A value YAML cannot hold as written, most often a JSONata expression: `filter: x ? 1 : 2` (a
 * `: ` in a plain value starts a map), `filter: "on" = state` (a value that opens with a quote,
 * `[` or `{` ends where they close). The parser's words ("Nested mappings are not allowed in
 * compact mappings", "Unexpected scalar at node end") name its grammar; say how to write the value.
 */
function valueHint(code: string, text: string, line: number, column: number): string {
  if (code !== 'BLOCK_AS_IMPLICIT_KEY' && code !== 'UNEXPECTED_TOKEN') return '';
  const m = /^(\s*(?:-\s+)*)([^\s#'"[{][^:#]*?):[ \t]+(?=\S)/.exec(lineAt(text, line));
  if (!m) return '';
  const key = m[2]!.trim();
  const start = m[0].length + 1; // the value's column
  const value = lineAt(text, line).slice(start - 1);
  if (column < start || value.startsWith('#') || value.startsWith('|') || value.startsWith('>')) return '';
  const opener = value[0]!;
  const quoted = opener === "'" ? `\`${key}: "..."\`, a " or \\ inside it written \\" or \\\\` : `\`${key}: '...'\`, a ' inside it written twice`;
  const rewrite = `quote the whole value (${quoted}) or write it on the lines after \`${key}: |\`, indented`;
  const closed = closingEnd(value);
  if (
    closed !== undefined &&
    (column >= start + closed || (code === 'BLOCK_AS_IMPLICIT_KEY' && column === start)) &&
    value.slice(closed).trim() !== '' &&
    !value.slice(closed).trimStart().startsWith('#')
  ) {
    const what = opener === '[' ? 'a [ is read as a YAML list, which ends at its ]' : opener === '{' ? 'a { is read as a YAML map, which ends at its }' : `a ${opener} ends at its closing ${opener}`;
    return ` (the value of '${key}' starts with ${opener}, and a value that starts with ${what}, so the rest of the line cannot follow it; for text, such as a JSONata expression, ${rewrite})`;
  }
  if (closed !== undefined) return '';
  const colon = /:(?=[ \t]|$)/.exec(value);
  if (code !== 'BLOCK_AS_IMPLICIT_KEY' || column !== start || !colon) return '';
  return ` (the value of '${key}' holds ': ' at column ${start + colon.index}, which YAML reads as the start of a map: ${rewrite})`;
}

/**
 * valueHint's words for a value inside a `{ }` map on one line (`to: { broker: b, topic: 'orders.'
 * & $path.kind }`, the style the docs write targets in), which the parser's "Unexpected anchor at
 * node end" left unexplained: the entry at `column` whose quoted value closed before it.
 */
function flowValueHint(code: string, text: string, line: number, column: number): string {
  if (code !== 'UNEXPECTED_TOKEN') return '';
  const here = lineAt(text, line);
  const open: { map: boolean; entry: number }[] = [];
  let quote: string | undefined;
  for (let i = 0; i < column - 1 && i < here.length; i++) {
    const c = here[i]!;
    if (quote !== undefined) {
      if (quote === '"' && c === '\\') i++;
      else if (c === quote) {
        if (quote === "'" && here[i + 1] === "'") i++;
        else quote = undefined;
      }
    } else if (c === '#' && (i === 0 || /\s/.test(here[i - 1]!))) return '';
    else if (c === '"' || c === "'") quote = c;
    else if (c === '{' || c === '[') open.push({ map: c === '{', entry: i + 1 });
    else if (c === '}' || c === ']') open.pop();
    else if (c === ',' && open.length > 0) open[open.length - 1]!.entry = i + 1;
  }
  const map = open[open.length - 1];
  if (map === undefined || !map.map || quote !== undefined) return '';
  const entry = /^\s*([^\s:'"{}[\],]+):[ \t]+/.exec(here.slice(map.entry));
  if (!entry) return '';
  const start = map.entry + entry[0].length;
  const value = here.slice(start);
  const opener = value[0];
  const closed = closingEnd(value);
  if ((opener !== '"' && opener !== "'") || closed === undefined || column - 1 < start + closed) return '';
  const key = entry[1]!;
  const quoted = opener === "'" ? `\`${key}: "..."\`, a " or \\ inside it written \\" or \\\\` : `\`${key}: '...'\`, a ' inside it written twice`;
  return ` (the value of '${key}' in this { } map starts with ${opener}, and a value that starts with a ${opener} ends at its closing ${opener}, so the rest cannot follow it; for text, such as a JSONata expression, quote the whole value (${quoted}))`;
}

/**
 * Where a value that opens with a quote, `[` or `{` closes (the index after its closing
 * character, within its own line), or undefined when it opens otherwise or does not close there.
 */
function closingEnd(value: string): number | undefined {
  const opener = value[0];
  if (opener === '"' || opener === "'") {
    for (let i = 1; i < value.length; i++) {
      if (opener === '"' && value[i] === '\\') i++;
      else if (value[i] === opener) {
        if (opener === "'" && value[i + 1] === "'") i++;
        else return i + 1;
      }
    }
    return undefined;
  }
  if (opener !== '[' && opener !== '{') return undefined;
  let depth = 0;
  let quote: string | undefined;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (quote === '"' && c === '\\') i++;
    else if (quote !== undefined) {
      if (c === quote) quote = undefined;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[' || c === '{') depth++;
    else if ((c === ']' || c === '}') && --depth === 0) return i + 1;
  }
  return undefined;
}

/**
 * The parser's words for a key indented out of line ("Nested mappings are not allowed in compact
 * mappings", "All mapping items must start at the same column") name its grammar, not the
 * indentation a newcomer got wrong: say which lines disagree and how to line them up.
 */
function indentHint(code: string, text: string, line: number): string {
  const here = lineAt(text, line);
  if (code === 'BAD_INDENT') {
    const sibling = firstSiblingLine(text, line);
    if (sibling === undefined) return '';
    return ` (this key starts at column ${indentOf(here) + 1}, the first key of its map, on line ${sibling.line}, at column ${sibling.indent + 1}: keys of one map start at the same column)`;
  }
  if (code !== 'BLOCK_AS_IMPLICIT_KEY' && code !== 'MULTILINE_IMPLICIT_KEY') return '';
  const lines = text.split('\n');
  const next = lines.findIndex((l, i) => i >= line && l.trim() !== '' && !l.trimStart().startsWith('#'));
  if (next === -1 || indentOf(lines[next]!) <= indentOf(here)) return '';
  return ` (line ${next + 1} is indented deeper than the key on this line, so it reads as part of this line's value: keys of one map start at the same column)`;
}

/**
 * The first key of the map a misaligned key sits in: the line after the nearest line above that is
 * indented less (the map's parent key), when it is indented otherwise than `line`.
 */
function firstSiblingLine(text: string, line: number): { line: number; indent: number } | undefined {
  const lines = text.split('\n');
  const ownLine = lines[line - 1] ?? '';
  const own = indentOf(ownLine);
  // A key out of line with a list item's keys (`  - name: a` then `  from: ...`): the item's first
  // key starts after its `- `, so that is the column to compare with. Not when the line is an item itself.
  const keyIndent = /^\s*-\s/.test(ownLine) ? indentOf : (l: string) => indentOf(l) + (/^\s*-\s/.test(l) ? /^\s*-\s+/.exec(l)![0].length - indentOf(l) : 0);
  const content = (i: number) => lines[i]!.trim() !== '' && !lines[i]!.trimStart().startsWith('#');
  for (let i = line - 2; i >= 0; i--) {
    if (!content(i) || keyIndent(lines[i]!) >= own) continue;
    for (let j = i + 1; j < line - 1; j++) if (content(j)) return keyIndent(lines[j]!) === own ? undefined : { line: j + 1, indent: keyIndent(lines[j]!) };
    return undefined;
  }
  return undefined;
}

function lineAt(text: string, line: number): string {
  return text.split('\n')[line - 1] ?? '';
}

function indentOf(lineText: string): number {
  return lineText.length - lineText.trimStart().length;
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.replace(/ at line \d+, column \d+.*$/, '');
}

function findNode(doc: Document, path: readonly PathPart[]): { key?: YamlNode; value?: YamlNode; exact: boolean } {
  let key: YamlNode | undefined;
  let value = doc.contents as YamlNode | null | undefined;
  for (const part of path) {
    if (isMap(value)) {
      // A key may be an alias (`*name: 1`): it is found by the name it stands for.
      const pair = value.items.find((p) => {
        const k = isAlias(p.key) ? p.key.resolve(doc) : p.key;
        // A null key (`~`) is the empty name, as toJS makes it.
        return isScalar(k) && (k.value === null ? '' : String(k.value)) === String(part);
      });
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
  text: string,
  pos: PositionOf,
  { fromEnv, defaultsOnly, variableNames }: { fromEnv: Set<string>; defaultsOnly: Set<string>; variableNames: Map<string, readonly string[]> },
  diagnostics: Diagnostic[],
  envValues: Set<string>,
  quotedVariables: Set<string>,
  typedVariables: Map<string, string>,
  written: WeakMap<Scalar, Written>,
): void {
  visit(doc, {
    Scalar(_key, node, ancestors) {
      if (typeof node.value !== 'string' || !node.value.includes('${')) return;
      const source = node.value;
      const path = pathOf(ancestors, node);
      const expansion = expandVariables(source, env);
      if (node.type !== 'PLAIN' && expansion.whole) quotedVariables.add(formatPath(path));
      // `!!str ${TOPIC}` keeps the value a string, as `!!str 123` is one (TOPIC=123 was a number).
      const whole = node.type === 'PLAIN' && expansion.whole && node.tag !== 'tag:yaml.org,2002:str';
      for (const p of expansion.problems) {
        const { line, column } = pos(offsetInScalar(text, node as Scalar, source, p.index));
        diagnostics.push({ file, line, column, code: 'EG_CONFIG_ENV', path: formatPath(path), message: p.message });
      }
      // A variable a broker's clientId alone uses is no secret (isIdentityPath); another use of it adds it.
      if (!isIdentityPath(path)) for (const v of expansion.envValues) envValues.add(v);
      const missing = expansion.problems.length > 0;
      const replaced = expansion.value;
      if (missing || replaced === source) {
        if (!missing && replaced !== source) node.value = replaced;
        return;
      }
      fromEnv.add(formatPath(path));
      if (expansion.envValues.length === 0) defaultsOnly.add(formatPath(path));
      // A variable set empty gives no value to redact, but is named like the others.
      if (expansion.envNames.length > 0) variableNames.set(formatPath(path), [...new Set(expansion.envNames)]);
      if (whole && replaced.trim() !== '') {
        // `port: ${PORT}` takes the type of the value, as if it had been written there.
        const typed = plainScalar(replaced);
        if (typed === null || ['number', 'boolean'].includes(typeof typed)) {
          node.value = typed;
          typedVariables.set(formatPath(path), source);
          return;
        }
      }
      node.value = replaced;
      written.set(node as Scalar, { text: source, sourceIndex: expansion.sourceIndex });
    },
  });
}

/**
 * A variable's value read as one YAML scalar (`8081`, `true`), or undefined when it is more than
 * that: with a comment (`8081 # staging`, which was read as 8081), a tag, an anchor, a `---`, a
 * second line. The value is data, not YAML: only a value that is all one number, boolean or null
 * takes its type; anything else stays the string it is, and a field wanting a number says so.
 */
function plainScalar(text: string): unknown {
  const doc = parseDocument(text);
  const node = doc.contents;
  if (doc.errors.length > 0 || !isScalar(node) || node.type !== 'PLAIN' || node.anchor || node.tag || !node.range) return undefined;
  const start = text.length - text.trimStart().length;
  const end = text.trimEnd().length;
  return node.range[0] === start && node.range[1] === end ? node.value : undefined;
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

/** A file that cannot be read as YAML or JSON at all: no path in the config to name. */
function syntaxProblem(file: string, line: number, column: number, message: string): Diagnostic {
  return { file, line, column, code: 'EG_CONFIG_SYNTAX', path: '', message };
}

/**
 * A referenced JSON or YAML data file (a JSON Schema, an AsyncAPI document), parsed with
 * positions so problems inside it point into it. No `${VAR}` substitution: `${` is ordinary
 * text there. JSON files (`.json`, or `json` for one read as JSON whatever its name) get JSON's
 * own error messages, which name what was expected.
 */
export function parseDataFile(file: string, text: string, diagnostics: Diagnostic[], json = /\.json$/i.test(file)): SourceDocument | undefined {
  if (json) {
    const problem = jsonSyntaxProblem(text);
    if (problem) {
      diagnostics.push(syntaxProblem(file, problem.line, problem.column, `JSON syntax error: ${problem.message}`));
      return undefined;
    }
  }
  return parseSource(file, text, {}, diagnostics, { substitute: false });
}

/** A JSON Pointer (`/routes/0/to`, as ajv reports places) as a path; all-digit parts are list indexes. */
export function pathFromPointer(pointer: string): PathPart[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
}
