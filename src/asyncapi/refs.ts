/**
 * What an AsyncAPI document may make the gateway read. Documents can be uploaded through the admin
 * API, so they are untrusted input: every `$ref` is confined to the config's directory (no
 * absolute path, no `..` or symlink leading out of it), remote references are off unless the
 * config names their origins (then fetched with a timeout and a size cap, no redirects), and
 * every document read — the upload, each file or URL it references — is held to a size cap and
 * YAML alias limits before the AsyncAPI parser (whose YAML reader has no alias bound) sees it.
 */
import { realpathSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { jsonSyntaxProblem } from '../config/json-syntax.js';
import { httpGet } from '../core/http-get.js';
import { pointerKeys, pointerOf } from '../core/json-pointer.js';
import { isPair, isScalar, isSeq, LineCounter, parseDocument, visit } from '../config/yaml.js';
import { MULTIPLE_DOCUMENTS, tagProblemsOf } from '../config/yaml-tags.js';

/** `asyncapiRemoteRefs` in gateway.yaml. */
export interface RemoteRefOptions {
  /** Origins (`https://schemas.example.com`) remote `$ref`s may point to; nothing else is fetched. */
  origins: string[];
  timeoutMs?: number;
  maxBytes?: number;
}

export interface RefPolicy {
  /** The config's directory: local `$ref`s must stay inside it. */
  root: string;
  /** Off (undefined) by default: no `$ref` reaches the network. */
  remote?: RemoteRefOptions;
}

/** Largest AsyncAPI document (uploaded, or a local file a `$ref` reads). */
export const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;
export const DEFAULT_REMOTE_TIMEOUT_MS = 5000;
export const DEFAULT_REMOTE_MAX_BYTES = 1024 * 1024;
/** Nodes an alias may expand to, summed over a document (the yaml library's exponential-expansion guard, as for gateway.yaml). */
const MAX_ALIAS_COUNT = 100;
/** Deepest nesting of a document: far beyond any real contract, well below what overflows a parser's stack. */
const MAX_NESTING = 256;
/**
 * Steps the AsyncAPI parser may take walking a document (parserSteps). Its circular-reference pass
 * (@asyncapi/parser 3.x, resolve-circular-refs.js) visits an array's items twice, once per loop,
 * so a value inside k arrays is visited 2^k times: 30 arrays nested in one extension held the
 * event loop for minutes. 2^23 steps are about two seconds; real contracts take a small fraction.
 */
const MAX_PARSER_STEPS = 2 ** 23;

/** A problem positioned in `file` (absolute path, 1-based). */
export interface RefProblem {
  file: string;
  line: number;
  column: number;
  path: (string | number)[];
  message: string;
}

/** Where a `$ref` was written, so a refusal found later (symlink, fetch) can point at it. */
export interface RefSite {
  file: string;
  line: number;
  column: number;
  path: (string | number)[];
  /** Arrays around the `$ref` (counting those around the document it is in): what it resolves to is walked 2^arrays times (parserSteps). */
  arrays?: number;
}

/**
 * Checks one document's text before anything parses it for real: its size, YAML aliases and
 * nesting, and every `$ref` in it (as written). Returns the problems and where each allowed
 * `$ref` leads (absolute file path or URL, without the fragment) → where it was written.
 */
export function checkDocument(
  file: string,
  text: string,
  policy: RefPolicy,
  maxBytes = MAX_DOCUMENT_BYTES,
  /** Arrays around the `$ref` that led here: the parser inlines this document there. */
  arraysAround = 0,
  /** The document itself, not one a `$ref` names: its `asyncapi` version is checked too. */
  root = false,
  /** A document a `$ref` of an AsyncAPI 2.x document names (the root's version says which rules apply). */
  asyncapi2 = false,
): { problems: RefProblem[]; targets: Map<string, RefSite>; asyncapi2?: boolean; sites?: CycleSite[] } {
  const problems: RefProblem[] = [];
  const targets = new Map<string, RefSite>();
  const at = (line = 1, column = 1, path: (string | number)[] = []) => ({ file, line, column, path });
  const size = Buffer.byteLength(text);
  if (size > maxBytes) {
    problems.push({ ...at(), message: `the document has ${size} bytes; at most ${maxBytes} are accepted` });
    return { problems, targets };
  }
  // The AsyncAPI parser reads a broken JSON document as YAML and reports nonsense at 1:0; JSON's own message, at its place.
  const json = /\.json$/i.test(file) ? jsonSyntaxProblem(text) : undefined;
  if (json) {
    problems.push({ ...at(json.line, json.column), message: `JSON syntax error: ${json.message}` });
    return { problems, targets };
  }
  const lineCounter = new LineCounter();
  let doc;
  try {
    doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: false });
  } catch (err) {
    problems.push({ ...at(), message: `the document cannot be read as YAML or JSON (${(err as Error).message})` });
    return { problems, targets };
  }
  const pos = (offset: number | undefined) => {
    const p = lineCounter.linePos(offset ?? 0);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    if (doc.errors.some((e) => e.message.includes('Maximum call stack'))) {
      problems.push({ ...at(), message: 'the document is nested too deeply' });
      return { problems, targets };
    }
    // Reported here, in the words config and schema files get, and never handed to the AsyncAPI
    // parser: it must not see anchors it could expand, and on some broken YAML (`asyncapi: [`) it
    // throws a TypeError of its own, or on tab indentation reports the half-read structure instead.
    const e = doc.errors[0]!;
    const { line, column } = pos(e.pos[0]);
    problems.push({ ...at(line, column), message: e.code === 'MULTIPLE_DOCS' ? MULTIPLE_DOCUMENTS : `YAML syntax error: ${e.message.split('\n')[0]}` });
    return { problems, targets };
  }
  // `!!binary`, `!!set`, `!!omap`, `!!timestamp`: the parser refused such a value at 1:1, as "a
  // type it does not expect"; a tag nothing resolves (`!Ref`, `!!int x`) it said in its own words
  // ("Unknown tag <!Ref>"), inside { } with errors at lines where nothing is wrong. Said at the
  // tag, in the words the config gets.
  const tags = tagProblemsOf(doc, text);
  if (tags.length > 0) {
    for (const t of tags) {
      const { line, column } = pos(t.at);
      problems.push({ ...at(line, column, t.path), message: t.message });
    }
    return { problems, targets };
  }
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    let offset = 0;
    visit(doc, {
      Alias(_key, node) {
        offset = node.range?.[0] ?? 0;
        return visit.BREAK;
      },
    });
    const { line, column } = pos(offset);
    const message = err instanceof RangeError ? `the document is nested too deeply` : `YAML error: ${(err as Error).message.split('\n')[0]}`;
    problems.push({ ...at(line, column), message });
    return { problems, targets };
  }
  const version = root && value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>).asyncapi : undefined;
  if (version !== undefined && (typeof version !== 'string' || !/^\d+\.\d+\.\d+/.test(version))) {
    // The parser reads the version with String.prototype.split: another value made it throw a
    // TypeError ("Cannot read properties of undefined (reading 'split')"), shown as it was.
    const node = doc.get('asyncapi', true) as { range?: [number, number, number] } | undefined;
    const { line, column } = pos(node?.range?.[0]);
    const written = node?.range ? text.slice(node.range[0], node.range[1]) : String(version);
    const what = versionValue(version, written);
    problems.push({
      ...at(line, column, ['asyncapi']),
      message: `\`asyncapi\` must be the version of the specification as a string, such as '3.0.0'; it is ${what}${typeof version === 'number' ? ` (YAML reads an unquoted ${written} as a number: write the whole version, or quote it)` : ''}`,
    });
    return { problems, targets };
  }
  if (depthOver(value, MAX_NESTING)) {
    problems.push({ ...at(), message: `the document is nested more than ${MAX_NESTING} levels deep` });
    return { problems, targets };
  }
  const steps = parserSteps(value, MAX_PARSER_STEPS, arraysAround);
  if (steps.over) {
    const node = doc.getIn(steps.path, true) as { range?: [number, number, number] } | undefined;
    const { line, column } = pos(node?.range?.[0]);
    problems.push({
      ...at(line, column, steps.path),
      message: `the document nests arrays inside arrays too deeply: the value at /${steps.path.join('/')} is inside ${steps.arrays} arrays${steps.viaRef || arraysAround > 0 ? ' (counting those around the $refs that inline it, as the parser reads it)' : ''}, and the AsyncAPI parser walks a value once more for every array around it, so such a document would hold it for minutes`,
    });
    return { problems, targets };
  }
  const v2 = root ? typeof version === 'string' && version.startsWith('2.') : asyncapi2;
  if (root) {
    const empty = emptyMessage(value);
    if (empty) {
      const node = doc.getIn(empty, true) as { range?: [number, number, number] } | undefined;
      const { line, column } = pos(node?.range?.[0]);
      problems.push({
        ...at(line, column, empty),
        message: `the message at ${pointerOf(empty)} is empty; write the message (or a $ref to one)`,
      });
      return { problems, targets };
    }
  }
  visit(doc, {
    Pair(_key, pair, path) {
      if (isPair(pair) && isScalar(pair.key) && pair.key.value === '__proto__') {
        // The parser copies maps by assignment: this key set the copy's prototype, and it failed
        // with Immer's "produce can only be called on things that are draftable ... Got '[object Object]'".
        const { line, column } = pos(pair.key.range?.[0]);
        const keys = [...path.filter(isPair).map((p) => (isScalar(p.key) ? String(p.key.value) : '?')), '__proto__'];
        problems.push({
          file,
          line,
          column,
          path: keys,
          message: `a \`__proto__\` key (at ${pointerOf(keys)}) cannot be read: the AsyncAPI parser would take it for the object's prototype; rename it`,
        });
        return;
      }
      if (v2 && isPair(pair) && isScalar(pair.key) && pair.key.value === 'message' && (pair.value === null || (isScalar(pair.value) && pair.value.value === null))) {
        // The parser's 2.x rules take every `message` key below a channel's operation (even one inside
        // a message's example or summary, once $refs are inlined) for a message and read its
        // `schemaFormat`: a null one made it throw a TypeError ("Cannot read properties of null").
        const { line, column } = pos((pair.value as { range?: [number, number, number] } | null)?.range?.[0] ?? pair.key.range?.[0]);
        const keys = [...path.filter(isPair).map((p) => (isScalar(p.key) ? String(p.key.value) : '?')), 'message'];
        problems.push({
          file,
          line,
          column,
          path: keys,
          message: `\`message\` is null at ${pointerOf(keys)}: the AsyncAPI parser's 2.x rules read every \`message\` key under a channel's operation (examples and $ref'd parts included) as a message and cannot read a null one; give it a value, or leave the key out`,
        });
        return;
      }
      if (!isPair(pair) || !isScalar(pair.key) || pair.key.value !== '$ref') return;
      if (!isScalar(pair.value) || typeof pair.value.value !== 'string') {
        // The parser calls String methods on every $ref: another value made it throw a TypeError ("path.startsWith is not a function").
        const { line, column } = pos((pair.value as { range?: [number, number, number] } | null)?.range?.[0] ?? pair.key.range?.[0]);
        problems.push({
          file,
          line,
          column,
          path: [...path.filter(isPair).map((p) => (isScalar(p.key) ? String(p.key.value) : '?')), '$ref'],
          message: '$ref must be a string: a path or URL, and a JSON pointer after #',
        });
        return;
      }
      const { line, column } = pos(pair.value.range?.[0]);
      const docPath = path.filter(isPair).map((p) => (isScalar(p.key) ? String(p.key.value) : '?'));
      const site = { file, line, column, path: [...docPath, '$ref'], arrays: arraysAround + path.filter(isSeq).length };
      const checked = checkRef(pair.value.value, file, policy);
      if ('problem' in checked) problems.push({ ...site, message: checked.problem });
      else if (checked.target !== undefined && !targets.has(checked.target)) targets.set(checked.target, site);
    },
  });
  if (problems.length > 0) return { problems, targets, asyncapi2: v2 };
  const sites = cycleSites(value, file, policy, (path) => pos((doc.getIn(path, true) as { range?: [number, number, number] } | undefined)?.range?.[0]));
  // The document's own cycles; those through other files once the parse read them (parse.ts).
  const cycle = refCycle(
    sites.filter((s) => s.to === file),
    root ? file : undefined,
    policy,
  );
  if (cycle) problems.push({ ...at(cycle.line, cycle.column, [...cycle.path, '$ref']), message: cycle.message });
  return { problems, targets, asyncapi2: v2, sites };
}

/** `$ref`s looked at by refCycle: a document with more is left to the parser (it has its own limits). */
const MAX_CYCLE_EDGES = 200_000;

/** A `$ref` to a place in a local file (its own or another), as refCycle reads it. */
export interface CycleSite {
  file: string;
  /** Where it is written (array indices as numbers), and as a JSON pointer. */
  path: (string | number)[];
  at: string;
  /** The file it leads to, and the keys of the place in it. */
  to: string;
  target: string[];
  ref: string;
  line: number;
  column: number;
}

/**
 * Every `$ref` of a document to a place in a local file, with where it is written (`place`).
 * Remote ones are left out: a cycle through them is the parser's to find.
 */
function cycleSites(value: unknown, file: string, policy: RefPolicy, place: (path: (string | number)[]) => { line: number; column: number }): CycleSite[] {
  const sites: CycleSite[] = [];
  const seen = new Set<object>();
  const stack: [unknown, (string | number)[]][] = [[value, []]];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    const ref = (v as { $ref?: unknown }).$ref;
    if (typeof ref === 'string') {
      const hash = ref.indexOf('#');
      const led = hash === 0 ? { target: undefined } : /^https?:/i.test(file) ? undefined : checkRef(ref, file, policy);
      const target = led && 'target' in led ? pointerKeys(hash === -1 ? '' : ref.slice(hash + 1)) : undefined;
      if (led && 'target' in led && target && (led.target === undefined || !/^https?:/i.test(led.target))) {
        const { line, column } = place([...path, '$ref']);
        sites.push({ file, path, at: pointerOf(path), to: led.target ?? file, target, ref, line, column });
      }
      continue;
    }
    if (Array.isArray(v)) v.forEach((x, i) => stack.push([x, [...path, i]]));
    else for (const [k, x] of Object.entries(v)) stack.push([x, [...path, k]]);
  }
  return sites;
}

/**
 * A cycle of `$ref`s the AsyncAPI parser cannot read, and the `$ref` that closes it:
 * - one through a message or channel (`$ref`s that bring a message or channel inside itself, such
 *   as a payload that is, through a schema, the message it belongs to): the parser ran out of stack
 *   on some ("Maximum call stack size exceeded", at no place) and read a message as a schema on
 *   others. Only through places of the root document (`root`: its file), whose paths say what a
 *   message or channel is. A schema referring to itself, directly or through other schemas, is a
 *   recursive schema and passes.
 * - `$ref`s that only name each other (`p: {$ref: '#/q'}`, `q: {$ref: '#/p'}`), which never reach
 *   a value: the parser went round them until its time limit.
 * `sites` are those of one document (its local `$ref`s), or of every local document a parse read
 * so far (a cycle through `$ref`s into other files: places are then named with their file, and
 * `$ref`s that only name each other are reported in `latest`, the document whose reading closed it).
 */
export function refCycle(sites: readonly CycleSite[], root: string | undefined, policy: RefPolicy, latest?: string): (CycleSite & { message: string }) | undefined {
  if (sites.length === 0) return undefined;
  const oneFile = sites.every((s) => s.file === sites[0]!.file && s.to === s.file);
  const key = (file: string, at: string) => `${file}\0${at}`;
  const name = (file: string, at: string) => (oneFile ? at || '/' : `${displayPath(file, policy)}${at ? `#${at}` : ''}`);
  const byPointer = new Map(sites.map((site, i) => [key(site.file, site.at), i]));
  // $refs that only name each other: each leads to one other $ref at most, so following them from
  // each one in turn (past those already followed) finds every such cycle.
  const state = new Uint8Array(sites.length); // 0 not yet followed, 1 on the chain being followed, 2 done
  for (let start = 0; start < sites.length; start++) {
    const chain: number[] = [];
    let i: number | undefined = start;
    while (i !== undefined && state[i] === 0) {
      state[i] = 1;
      chain.push(i);
      i = byPointer.get(key(sites[i]!.to, pointerOf(sites[i]!.target)));
    }
    if (i !== undefined && state[i] === 1) {
      const loop = chain.slice(chain.indexOf(i));
      // In the document read last, when it has one: its $ref is the one that closed the cycle.
      const mine = loop.filter((j) => sites[j]!.file === latest);
      const last = (mine.length > 0 ? mine : loop).reduce((a, b) => (key(sites[a]!.file, sites[a]!.at) > key(sites[b]!.file, sites[b]!.at) ? a : b));
      const names = loop.map((j) => name(sites[j]!.file, sites[j]!.at));
      return {
        ...sites[last]!,
        message: `$ref '${sites[last]!.ref}' closes a cycle of $refs that only name each other (${names.join(' → ')} → ${names[0]}) and never reach a value; the AsyncAPI parser would go round it until its time limit`,
      };
    }
    for (const j of chain) state[j] = 2;
  }
  if (root === undefined) return undefined;
  // Site j is inside what site i brings in when j's place starts with i's target: i → j.
  const keys = sites.map((s) => key(s.file, s.at));
  const order = sites.map((_, i) => i).sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));
  const sorted = order.map((i) => keys[i]!);
  const edges: number[][] = sites.map(() => []);
  let count = 0;
  for (let i = 0; i < sites.length; i++) {
    const t = key(sites[i]!.to, pointerOf(sites[i]!.target));
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid]! < t) lo = mid + 1;
      else hi = mid;
    }
    for (let k = lo; k < sorted.length && sorted[k]!.startsWith(t); k++) {
      if (sorted[k]!.length !== t.length && sorted[k]![t.length] !== '/') continue;
      edges[i]!.push(order[k]!);
      if (++count > MAX_CYCLE_EDGES) return undefined;
    }
  }
  const component = components(edges);
  const inRoot = (i: number) => sites[i]!.file === root;
  // An edge through a message or channel of the root document: one between its target and the $ref it reaches.
  const through = (i: number, j: number): string[] | undefined => {
    if (!inRoot(j)) return undefined;
    const path = sites[j]!.path.map(String);
    for (let n = sites[i]!.target.length; n <= path.length; n++) if (messageOrChannel(path.slice(0, n))) return path.slice(0, n);
    return undefined;
  };
  const ownPlace = (i: number) => inRoot(i) && messageOrChannel(sites[i]!.path.map(String));
  let found: { i: number; j: number; place: string[] } | undefined;
  for (let i = 0; i < sites.length; i++) {
    for (const j of edges[i]!) {
      if (component[i] !== component[j]) continue;
      const place = through(i, j);
      if (!place) continue;
      // A $ref in a message's or channel's own place (a channel's messages, an operation's channel) is how they are meant to be named: the one elsewhere closes the cycle.
      if (!found || (ownPlace(found.i) && !ownPlace(i))) found = { i, j, place };
    }
  }
  if (!found) return undefined;
  const { i, j, place } = found;
  const via = cyclePath(edges, component, j, i)
    .slice(0, -1)
    .map((k) => name(sites[k]!.file, sites[k]!.at));
  const what = place.at(-2) === 'channels' || place.at(-1) === 'channel' ? 'channel' : 'message';
  const holds = via.length === 0 ? 'which holds this $ref' : `which holds this $ref (through the $ref${via.length === 1 ? '' : 's'} at ${via.join(', ')})`;
  return {
    ...sites[i]!,
    message: `$ref '${sites[i]!.ref}' leads back to the ${what} at ${name(root, pointerOf(place))}, ${holds}: a $ref cycle through a message or channel, which the AsyncAPI parser cannot read (it runs out of stack, or takes the message for a schema); a schema may refer to itself, a message or channel may not`,
  };
}

/** Whether the keys name a message or a channel of an AsyncAPI document (2.x or 3.0), as written or in components. */
function messageOrChannel(keys: readonly string[]): boolean {
  const [a, b, c, d, e, f] = keys;
  const n = keys.length;
  if (a === 'channels')
    return n === 2 || (n === 4 && c === 'messages') || (n === 4 && (c === 'publish' || c === 'subscribe') && d === 'message') || (n === 6 && d === 'message' && e === 'oneOf' && f !== undefined);
  if (a === 'components') return n === 3 && (b === 'messages' || b === 'channels');
  if (a === 'operations') return (n === 3 && c === 'channel') || (n === 4 && c === 'messages');
  return false;
}

/** Strongly connected components of a graph (Tarjan's, iterative): each node's component number. */
function components(edges: readonly number[][]): number[] {
  const n = edges.length;
  const index = new Array<number>(n).fill(-1);
  const low = new Array<number>(n).fill(0);
  const component = new Array<number>(n).fill(-1);
  const onStack = new Array<boolean>(n).fill(false);
  const stack: number[] = [];
  let next = 0;
  let count = 0;
  for (let start = 0; start < n; start++) {
    if (index[start] !== -1) continue;
    const work: [number, number][] = [[start, 0]];
    index[start] = low[start] = next++;
    stack.push(start);
    onStack[start] = true;
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const [v, e] = top;
      if (e < edges[v]!.length) {
        top[1]++;
        const w = edges[v]![e]!;
        if (index[w] === -1) {
          index[w] = low[w] = next++;
          stack.push(w);
          onStack[w] = true;
          work.push([w, 0]);
        } else if (onStack[w]) low[v] = Math.min(low[v]!, index[w]!);
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const u = work[work.length - 1]![0];
        low[u] = Math.min(low[u]!, low[v]!);
      }
      if (low[v] === index[v]) {
        for (let w = stack.pop()!; ; w = stack.pop()!) {
          onStack[w] = false;
          component[w] = count;
          if (w === v) break;
        }
        count++;
      }
    }
  }
  return component;
}

/** The nodes from `from` to `to` (both included) along edges inside their component (breadth first: the shortest). */
function cyclePath(edges: readonly number[][], component: readonly number[], from: number, to: number): number[] {
  const previous = new Map<number, number>([[from, -1]]);
  const queue = [from];
  for (let q = 0; q < queue.length && !previous.has(to); q++) {
    for (const w of edges[queue[q]!]!) {
      if (component[w] !== component[from] || previous.has(w)) continue;
      previous.set(w, queue[q]!);
      queue.push(w);
    }
  }
  const path: number[] = [];
  for (let k: number | undefined = to; k !== undefined && k !== -1; k = previous.get(k)) path.unshift(k);
  return path;
}

/** What an `asyncapi` value that is no version string is, in words (`written`: as the document spells it). */
function versionValue(version: unknown, written: string): string {
  if (version === null) return 'empty';
  if (version === '') return 'an empty string';
  if (typeof version === 'string') return `'${version}'`;
  if (typeof version === 'number') return `the number ${written}`;
  if (Array.isArray(version)) return 'a list';
  if (typeof version === 'object') return 'a map';
  return `${typeof version} ${String(version)}`;
}

/**
 * The first message of an AsyncAPI 2.x document that is empty (`message:` with nothing after it):
 * the parser read its `schemaFormat` and threw a TypeError ("Cannot read properties of null").
 */
function emptyMessage(value: unknown): (string | number)[] | undefined {
  const obj = (v: unknown): Record<string, unknown> | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined);
  const root = obj(value);
  if (!root || typeof root.asyncapi !== 'string' || !root.asyncapi.startsWith('2.')) return undefined;
  for (const [name, channel] of Object.entries(obj(root.channels) ?? {})) {
    for (const op of ['publish', 'subscribe']) {
      const operation = obj(obj(channel)?.[op]);
      if (operation && 'message' in operation && operation.message === null) return ['channels', name, op, 'message'];
    }
  }
  for (const [name, message] of Object.entries(obj(obj(root.components)?.messages) ?? {})) if (message === null) return ['components', 'messages', name];
  return undefined;
}

/**
 * Where a `$ref` written in `from` (a file path or a URL) leads, or why it may not be followed.
 * `target` is undefined for a reference inside the same document (`#/...`).
 */
export function checkRef(ref: string, from: string, policy: RefPolicy): { target: string | undefined } | { problem: string } {
  const hash = ref.indexOf('#');
  const location = hash === -1 ? ref : ref.slice(0, hash);
  if (location === '') return { target: undefined };
  const fromUrl = /^https?:\/\//i.test(from);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(location)?.[1]?.toLowerCase();
  if (fromUrl || scheme === 'http' || scheme === 'https') {
    let url: URL;
    try {
      url = new URL(location, fromUrl ? from : undefined);
    } catch {
      return { problem: `$ref '${ref}' is not a valid URL` };
    }
    return remoteAllowed(url, policy) ? { target: url.href } : { problem: remoteRefused(ref, policy) };
  }
  if (scheme !== undefined && scheme.length > 1) return { problem: `$ref '${ref}' uses the '${scheme}:' scheme; only paths relative to the document (and allowed http(s) origins) are followed` };
  if (isAbsolute(location) || location.startsWith('\\') || scheme !== undefined)
    return { problem: `$ref '${ref}' is an absolute path; write it relative to the document, inside the config's directory` };
  let decoded: string;
  try {
    decoded = decodeURIComponent(location);
  } catch {
    return { problem: `$ref '${ref}' is not a valid path` };
  }
  const target = resolve(dirname(from), decoded);
  if (!inside(policy.root, target)) return { problem: `$ref '${ref}' leads outside the config's directory` };
  return { target };
}

/** A local file a `$ref` resolved to may be read: inside the config's directory, also once symlinks are followed. */
export function localReadAllowed(file: string, policy: RefPolicy): string | undefined {
  if (!inside(policy.root, file)) return `'${displayPath(file, policy)}' is outside the config's directory`;
  let real: string;
  try {
    real = realpathSync(file);
  } catch {
    return undefined; // missing: reading it fails with the usual "cannot read" problem
  }
  if (!inside(realRoot(policy.root), real)) return `'${displayPath(file, policy)}' is a link leading outside the config's directory`;
  return undefined;
}

export function remoteAllowed(url: URL, policy: RefPolicy): boolean {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  return (policy.remote?.origins ?? []).some((o) => sameOrigin(o, url));
}

function remoteRefused(ref: string, policy: RefPolicy): string {
  return policy.remote
    ? `$ref '${ref}' points to an origin not listed in asyncapiRemoteRefs.origins`
    : `$ref '${ref}' is remote, and remote references are off (list the origins to allow under asyncapiRemoteRefs.origins in gateway.yaml)`;
}

function sameOrigin(allowed: string, url: URL): boolean {
  try {
    return new URL(allowed).origin === url.origin;
  } catch {
    return false;
  }
}

/**
 * Fetches an allowed remote document: no redirects (they could lead anywhere), at most
 * `timeoutMs` for the whole answer and `maxBytes` of it. Failures are described without the
 * network's details (no addresses, no error codes): the answer goes to whoever uploaded the document.
 */
export async function fetchRemote(url: string, policy: RefPolicy): Promise<{ text: string } | { problem: string }> {
  const timeoutMs = policy.remote?.timeoutMs ?? DEFAULT_REMOTE_TIMEOUT_MS;
  const maxBytes = policy.remote?.maxBytes ?? DEFAULT_REMOTE_MAX_BYTES;
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    // Not fetch, which refuses the ports the Fetch standard blocks for browsers (src/core/http-get.ts).
    const res = await httpGet(url, { signal, maxBytes, headers: { accept: 'application/yaml, application/json, text/*' }, readBody: (status) => status >= 200 && status < 300 });
    if (res.status >= 300 && res.status < 400) return { problem: `cannot fetch '${url}': it redirects, and redirects are not followed` };
    if (res.status < 200 || res.status > 299) return { problem: `cannot fetch '${url}': HTTP ${res.status}` };
    if (res.tooLarge) return { problem: `cannot fetch '${url}': larger than ${maxBytes} bytes` };
    return { text: res.body.toString('utf8') };
  } catch {
    return { problem: signal.aborted ? `cannot fetch '${url}': no answer within ${timeoutMs} ms` : `cannot fetch '${url}': the request failed` };
  }
}

/** A path as the config's directory sees it (what errors show: never an absolute path). */
export function displayPath(file: string, policy: RefPolicy): string {
  const rel = relative(policy.root, file);
  return rel === '' ? '.' : rel;
}

function inside(root: string, file: string): boolean {
  const rel = relative(resolve(root), resolve(file));
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

function realRoot(root: string): string {
  try {
    return realpathSync(root);
  } catch {
    return resolve(root);
  }
}

/**
 * The visits the AsyncAPI parser's circular-reference pass makes (MAX_PARSER_STEPS): 2^k for each
 * value inside k arrays, on the document as the parser sees it, with every `$ref` to a place in the
 * same document (`#/...`) inlined where it is written (a reference back into itself, which the
 * parser leaves as it is, is not followed). `arraysAround`: arrays around the place the document is
 * inlined at. Stops at `max`, naming the path where it got there.
 */
function parserSteps(value: unknown, max: number, arraysAround = 0): { over: false } | { over: true; arrays: number; path: (string | number)[]; viaRef: boolean } {
  type Entry = { v: unknown; arrays: number; path: (string | number)[]; viaRef?: boolean; leave?: { node?: object; ref?: string } };
  const stack: Entry[] = [{ v: value, arrays: arraysAround, path: [] }];
  const open = new Set<object>(); // containers on the current path: a YAML alias can make a cycle
  const following = new Set<string>(); // `$ref`s being inlined on the current path
  let steps = 0;
  while (stack.length > 0) {
    const { v, arrays, path, viaRef = false, leave } = stack.pop()!;
    if (leave) {
      if (leave.node) open.delete(leave.node);
      if (leave.ref !== undefined) following.delete(leave.ref);
      continue;
    }
    steps += 2 ** Math.min(arrays, 60);
    if (steps > max) return { over: true, arrays, path, viaRef };
    if (typeof v !== 'object' || v === null || open.has(v)) continue;
    const ref = (v as { $ref?: unknown }).$ref;
    if (typeof ref === 'string' && ref.startsWith('#')) {
      const target = ref === '#' ? value : pointer(value, ref.slice(1));
      if (target !== undefined && !following.has(ref)) {
        following.add(ref);
        stack.push({ v: undefined, arrays, path, leave: { ref } }, { v: target, arrays, path, viaRef: true });
      }
      continue;
    }
    open.add(v);
    stack.push({ v: undefined, arrays, path, leave: { node: v } });
    const inner = Array.isArray(v) ? arrays + 1 : arrays;
    for (const [k, x] of Object.entries(v)) stack.push({ v: x, arrays: inner, path: [...path, Array.isArray(v) ? Number(k) : k], viaRef });
  }
  return { over: false };
}

/** The value a JSON pointer (`/components/schemas/a`, RFC 6901) names in `root`, or undefined. */
function pointer(root: unknown, ptr: string): unknown {
  if (!ptr.startsWith('/')) return undefined;
  let v = root;
  for (const raw of ptr.slice(1).split('/')) {
    let key: string;
    try {
      key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    } catch {
      return undefined;
    }
    if (typeof v !== 'object' || v === null || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** Whether `value` nests deeper than `max` (iterative: the point is not to overflow the stack). */
function depthOver(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  const seen = new Set<object>();
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    if (d > max) return true;
    seen.add(v);
    for (const x of Object.values(v)) stack.push([x, d + 1]);
  }
  return false;
}
