/**
 * Recursive schemas across files. The AsyncAPI parser resolves a `$ref` that loops back inside its
 * own file into a cyclic object (decycle() in parse.ts turns those into JSON pointers), but one
 * that loops back through another file (the payload's file refers to `node.yaml#/node`, whose
 * `up` refers to `light-measured.yaml`) is left as written. Such a `$ref` is relative to the file
 * it stands in, which the resolved document no longer says, so the gateway's schema compiler found
 * it "pointing at nothing". Walking the resolved document beside the documents the parse read
 * tells, for each such `$ref`, its file and the place it leads to; it is replaced by the value
 * resolved from that place, which makes it a cycle like a local one.
 */
import { parse } from '../config/yaml.js';
import { pointerKeys, pointerOf } from '../core/json-pointer.js';
import { checkRef, type RefPolicy } from './refs.js';

type Node = Record<string, unknown>;

/** `$ref`s followed in a row from one place (a chain of `$ref`s to `$ref`s); refCycle refuses endless ones before the parse. */
const MAX_HOPS = 256;

/** A `$ref` left as written that names a place its document does not have: the object holding it, by file and keys. */
export interface DanglingRef {
  file: string;
  keys: string[];
}

/**
 * Links the `$ref`s the parser left in `doc` (resolved from `file`) to what they name. `texts`: every
 * document the parse read (the root one, local files, fetched URLs), by absolute path or URL.
 * Returns those that name a place their document does not have; one whose place cannot be told
 * otherwise stays as written (the schema compiler then says so).
 */
export function linkCircularRefs(doc: Node, file: string, texts: ReadonlyMap<string, string>, policy: RefPolicy): DanglingRef[] {
  if (!hasRef(doc)) return [];
  const raws = new Map<string, unknown>();
  const rawOf = (f: string): unknown => {
    if (!raws.has(f)) {
      const text = texts.get(f);
      let value: unknown;
      try {
        value = text === undefined ? undefined : parse(text, { maxAliasCount: 100, uniqueKeys: false });
      } catch {
        value = undefined;
      }
      raws.set(f, value);
    }
    return raws.get(f);
  };
  /** `file#pointer` of a place a document defines → the value the parser resolved from it. */
  const resolvedAt = new Map<string, object>();
  const left: { parent: Node; key: string; target: string; file: string; ref: string }[] = [];
  const dangling: DanglingRef[] = [];
  const seen = new Set<object>();
  const stack: [value: unknown, parent: Node | undefined, key: string, file: string, raw: unknown, keys: string[]][] = [[doc, undefined, '', file, rawOf(file), []]];
  while (stack.length > 0) {
    let [value, parent, key, f, raw, keys] = stack.pop()!;
    if (!isNode(value)) continue;
    // The raw side may be a $ref (or a chain of them) to where the value was resolved from.
    for (let hops = 0; isNode(raw) && typeof raw.$ref === 'string' && hops < MAX_HOPS; hops++) {
      const ref = raw.$ref;
      const target = placeOf(ref, f, policy);
      if (value.$ref === ref) {
        // Left as written here, in file f.
        if (target && texts.has(target.file) && at(rawOf(target.file), target.keys) === undefined) dangling.push({ file: f, keys });
        else if (target && parent) left.push({ parent, key, target: target.key, file: f, ref });
        raw = undefined;
        break;
      }
      if (!target) {
        raw = undefined;
        break;
      }
      f = target.file;
      keys = target.keys;
      raw = at(rawOf(f), keys);
    }
    const place = placeKey(f, keys);
    if (!resolvedAt.has(place)) resolvedAt.set(place, value);
    if (seen.has(value) || !isNode(raw)) continue;
    seen.add(value);
    for (const [k, x] of Object.entries(value)) {
      if (!k.startsWith('x-parser-') && Object.hasOwn(raw, k)) stack.push([x, value, k, f, raw[k], [...keys, k]]);
    }
  }
  for (const { parent, key, target, file: from, ref } of left) {
    const value = resolvedAt.get(target) ?? readPlace(ref, from, policy, rawOf, resolvedAt);
    if (value !== undefined && !(typeof (value as Node).$ref === 'string')) parent[key] = value;
  }
  return dangling;
}

/**
 * The value of a place the walk of the resolved document never reached, read from its file as
 * written, its own `$ref`s followed the same way: the parser also leaves as written a `$ref` back
 * into a file it came through (`lib/common.yaml`'s message, whose payload file refers to
 * `../common.yaml#/components/schemas/money`), and such a place is not in the root document's
 * resolved tree when only that `$ref` uses it. Each place read is kept in `resolvedAt` before its
 * members are, so a schema that refers to itself becomes a cycle, as the parser's own are.
 */
function readPlace(ref: string, from: string, policy: RefPolicy, rawOf: (file: string) => unknown, resolvedAt: Map<string, object>): object | undefined {
  let target = placeOf(ref, from, policy);
  // A chain of `$ref`s to `$ref`s (refCycle refused endless ones before the parse).
  for (let hops = 0; target && hops < MAX_HOPS; hops++) {
    const known = resolvedAt.get(target.key);
    if (known !== undefined) return known;
    const raw = at(rawOf(target.file), target.keys);
    if (!isNode(raw)) return undefined;
    if (typeof raw.$ref !== 'string') return copyPlace(raw, target.file, target.key, policy, rawOf, resolvedAt);
    target = placeOf(raw.$ref, target.file, policy);
  }
  return undefined;
}

function copyPlace(raw: Node, file: string, key: string, policy: RefPolicy, rawOf: (file: string) => unknown, resolvedAt: Map<string, object>): object {
  const out: Node = Array.isArray(raw) ? ([] as unknown as Node) : {};
  resolvedAt.set(key, out);
  for (const [k, x] of Object.entries(raw)) {
    const place = `${key}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
    if (!isNode(x)) out[k] = x;
    else if (typeof x.$ref === 'string') out[k] = readPlace(x.$ref, file, policy, rawOf, resolvedAt) ?? x;
    else out[k] = resolvedAt.get(place) ?? copyPlace(x, file, place, policy, rawOf, resolvedAt);
  }
  return out;
}

/** Whether a `$ref` is anywhere in `value` (which may be cyclic). */
function hasRef(value: object): boolean {
  const seen = new Set<object>();
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (!isNode(v) || seen.has(v)) continue;
    seen.add(v);
    if (typeof v.$ref === 'string') return true;
    for (const x of Object.values(v)) stack.push(x);
  }
  return false;
}

/** Where a `$ref` written in `from` leads: its document and the keys of the place in it. */
function placeOf(ref: string, from: string, policy: RefPolicy): { file: string; keys: string[]; key: string } | undefined {
  const led = checkRef(ref, from, policy);
  if (!('target' in led)) return undefined;
  const hash = ref.indexOf('#');
  const keys = pointerKeys(hash === -1 ? '' : ref.slice(hash + 1));
  if (!keys) return undefined;
  const file = led.target ?? from;
  return { file, keys, key: placeKey(file, keys) };
}

function placeKey(file: string, keys: readonly string[]): string {
  return `${file}#${pointerOf(keys)}`;
}

function at(root: unknown, keys: readonly string[]): unknown {
  let v = root;
  for (const k of keys) {
    if (!isNode(v) || !Object.hasOwn(v, k)) return undefined;
    v = v[k];
  }
  return v;
}

function isNode(v: unknown): v is Node {
  return typeof v === 'object' && v !== null;
}
