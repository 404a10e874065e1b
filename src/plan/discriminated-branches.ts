import { pointerKeys } from '../core/json-pointer.js';

/** Keywords whose values are data, not schemas: nothing in them is a discriminator or a `$ref`. */
const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example']);

/** Keys a bare `$ref` branch may have beside it: annotations, which check nothing. */
const ANNOTATIONS = new Set(['$ref', '$comment', 'title', 'description', 'examples', 'example', 'deprecated', 'readOnly', 'writeOnly']);

/** Keywords that make a copy mean something else where it is put (a resource or an anchor of its own, a dynamic scope). */
const PLACE_BOUND = new Set(['$id', '$anchor', '$dynamicAnchor', '$recursiveAnchor', '$dynamicRef', '$recursiveRef']);

type Schema = Record<string, unknown>;

/** The schema's own URL and the files its `$ref`s reach, as json-schema.ts compiles them. */
interface Files {
  url: string;
  others: readonly { url: string; value: unknown }[];
}

/**
 * The schema as ajv is to compile it: each branch of a discriminated `oneOf`/`anyOf` that is a
 * bare `$ref` (`oneOf: [{$ref: '#/$defs/Cat'}, {$ref: 'dog.yaml'}]`), and each bare `$ref` below
 * such a branch (`name: {$ref: 'names.yaml#/$defs/name'}`), replaced by a copy of the schema it
 * refers to, a copy from another file with its `$ref`s made absolute (that file's URL, under
 * which ajv has it). ajv reports a `$ref`'s errors at the schema referred to, where
 * discriminated-errors.ts cannot tell one branch's from another's; in place they are under the
 * branch's schemaPath, and a value's tag cuts them. The checks are the same (a `$ref` applies its
 * schema in place). Left as written: `$ref`s to the root and those that recur (a `$ref` to a
 * place being copied), targets with an `$id`, anchor or dynamic reference in them, and schemas with an `$id` below the root (a `#` there means another
 * resource), and `$ref`s below a branch once the copies hold as many schema objects as the schema
 * itself (plus COPY_ALLOWANCE). Returns `schema` itself when nothing is replaced.
 */
export function inlineDiscriminatedBranches(schema: object, idKey: '$id' | 'id', files?: Files): object {
  if (!hasDiscriminatedBranch(schema) || hasInnerId(schema, idKey)) return schema;
  const out = structuredClone(schema) as Schema;
  const seen = new Set<object>();
  // Copies share nothing, so a schema whose `$ref`s share parts grows with each copy (a `$ref`
  // used by three properties of a type used by three ...): ajv then compiles each copy's code,
  // and one function too large for V8 to optimise checks every message. Copies may add up to
  // as much as the schema as written: its branches fit, `$ref`s below them as long as they do.
  let budget = COPY_ALLOWANCE + (objects(schema) + (files?.others.reduce((n, o) => n + objects(o.value), 0) ?? 0));
  // The value to put at a place, and the chain of places copied into it; `inBranch`: below a
  // discriminated branch, where a bare `$ref` is put in place too (its errors are the branch's);
  // one the chain already holds stays (a recursion).
  const place = (value: unknown, chain: readonly string[], inBranch: boolean): { value: unknown; chain: readonly string[] } => {
    const ref = inBranch ? bareRef(value) : undefined;
    const found = ref === undefined ? undefined : resolve(schema, ref, files);
    if (found === undefined || chain.includes(found.at) || boundToPlace(found.target)) return { value, chain };
    const size = objects(found.target);
    if (size > budget) return { value, chain };
    budget -= size;
    const { $schema: _s, ...copy } = structuredClone(found.target);
    return { value: found.url === undefined ? copy : absoluteRefs(copy, found.url), chain: [...chain, found.at] };
  };
  // A node's places are all filled before anything below them is: a oneOf's branches are copied
  // before the `$ref`s inside the first of them can use up the allowance.
  const visit = (node: unknown, chain: readonly string[], inBranch: boolean): void => {
    if (typeof node !== 'object' || node === null || seen.has(node)) return;
    seen.add(node);
    const below: { value: unknown; chain: readonly string[]; inBranch: boolean }[] = [];
    const fill = (v: unknown, branch: boolean) => {
      const placed = place(v, chain, branch);
      below.push({ ...placed, inBranch: branch });
      return placed.value;
    };
    if (Array.isArray(node)) {
      node.forEach((item, i) => {
        node[i] = fill(item, inBranch);
      });
    } else {
      const s = node as Schema;
      const keyword = discriminated(s);
      for (const [k, v] of Object.entries(s)) {
        if (DATA_KEYWORDS.has(k) || (inBranch && (k === '$defs' || k === 'definitions'))) continue;
        s[k] = k === keyword ? (v as unknown[]).map((branch) => fill(branch, true)) : fill(v, inBranch);
      }
    }
    for (const b of below) visit(b.value, b.chain, b.inBranch);
  };
  visit(out, [], false);
  return out;
}

/** Schema objects copies may add beside the schema's own count: a small schema's `$ref`s to shared types (money, address). */
const COPY_ALLOWANCE = 100;

/** The schema objects in `value` (data keywords' values not counted). */
function objects(value: unknown): number {
  let n = 0;
  some(value, () => {
    n++;
    return false;
  });
  return n;
}

/** `oneOf` or `anyOf` when the schema has a discriminator beside one. */
function discriminated(s: Schema): 'oneOf' | 'anyOf' | undefined {
  const d = s.discriminator;
  const named = typeof d === 'string' || (typeof d === 'object' && d !== null && typeof (d as Schema).propertyName === 'string');
  if (!named) return undefined;
  return Array.isArray(s.oneOf) ? 'oneOf' : Array.isArray(s.anyOf) ? 'anyOf' : undefined;
}

/** The `$ref` of a branch that is only a `$ref` (annotations beside it allowed), not to the root. */
function bareRef(branch: unknown): string | undefined {
  if (typeof branch !== 'object' || branch === null || Array.isArray(branch)) return undefined;
  const ref = (branch as Schema).$ref;
  if (typeof ref !== 'string' || ref === '' || ref === '#') return undefined;
  return Object.keys(branch).every((k) => ANNOTATIONS.has(k) || k.startsWith('x-')) ? ref : undefined;
}

/**
 * The schema a branch's `$ref` names (`at`: where, as an absolute reference), and the URL of the
 * file holding it when that is another file (`url`); a target that is itself a bare `$ref` is
 * followed. A `$ref` in the schema is local (`#/...`) or, with `files`, resolved against its URL;
 * one in a copy from another file is absolute already.
 */
function resolve(root: object, ref: string, files: Files | undefined, depth = 0): { target: Schema; at: string; url?: string } | undefined {
  if (depth > 8) return undefined;
  let url: string | undefined;
  let pointer: string;
  if (ref.startsWith('#')) pointer = ref.slice(1);
  else {
    if (files === undefined) return undefined;
    let target: URL;
    try {
      target = new URL(ref, files.url);
    } catch {
      return undefined;
    }
    pointer = decodeURIComponent(target.hash.slice(1));
    target.hash = '';
    url = target.href === files.url ? undefined : target.href;
  }
  const document = url === undefined ? root : files?.others.find((o) => o.url === url)?.value;
  const keys = pointerKeys(pointer);
  if (document === undefined || keys === undefined || (url === undefined && keys.length === 0)) return undefined;
  let node: unknown = document;
  for (const key of keys) {
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Schema)[key];
  }
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return undefined;
  const next = bareRef(node);
  if (next !== undefined) return resolve(root, url === undefined ? next : new URL(next, url).href, files, depth + 1);
  return { target: node as Schema, at: `${url ?? files?.url ?? ''}#${pointer}`, url };
}

/** `value` with each `$ref` in it resolved against `url`, the file it was copied from. */
function absoluteRefs(value: unknown, url: string): Schema {
  const rewrite = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(rewrite);
    if (typeof v !== 'object' || v === null) return v;
    return Object.fromEntries(
      Object.entries(v).map(([k, x]) => {
        if (k === '$ref' && typeof x === 'string') {
          try {
            return [k, new URL(x, url).href];
          } catch {
            return [k, x];
          }
        }
        return [k, DATA_KEYWORDS.has(k) ? x : rewrite(x)];
      }),
    );
  };
  return rewrite(value) as Schema;
}

function hasDiscriminatedBranch(schema: object): boolean {
  return some(schema, (s) => discriminated(s) !== undefined);
}

function boundToPlace(target: Schema): boolean {
  return some(target, (s) => Object.keys(s).some((k) => PLACE_BOUND.has(k) && typeof s[k] === 'string'));
}

function hasInnerId(schema: object, idKey: string): boolean {
  return some(schema, (s) => s !== schema && typeof s[idKey] === 'string');
}

/** Whether `test` holds for a schema object in `value` (data keywords' values not looked into). */
function some(value: unknown, test: (s: Schema) => boolean): boolean {
  const seen = new Set<object>();
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    if (Array.isArray(v)) {
      stack.push(...v);
      continue;
    }
    if (test(v as Schema)) return true;
    for (const [k, x] of Object.entries(v)) if (!DATA_KEYWORDS.has(k)) stack.push(x);
  }
  return false;
}
