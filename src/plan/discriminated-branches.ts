import { pointerKeys } from '../core/json-pointer.js';

/** Keywords whose values are data, not schemas: nothing in them is a discriminator or a `$ref`. */
const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example']);

/** Keys a bare `$ref` branch may have beside it: annotations, which check nothing. */
const ANNOTATIONS = new Set(['$ref', '$comment', 'title', 'description', 'examples', 'example', 'deprecated', 'readOnly', 'writeOnly']);

/** Keywords that make a copy mean something else where it is put (a resource or an anchor of its own, a dynamic scope). */
const PLACE_BOUND = new Set(['$id', '$anchor', '$dynamicAnchor', '$recursiveAnchor', '$dynamicRef', '$recursiveRef']);

type Schema = Record<string, unknown>;

/**
 * The schema as ajv is to compile it: each branch of a discriminated `oneOf`/`anyOf` that is a
 * bare `$ref` within the schema (`oneOf: [{$ref: '#/$defs/Cat'}, ...]`) replaced by a copy of the
 * schema it refers to. ajv reports a `$ref`'s errors at the schema referred to, where
 * discriminated-errors.ts cannot tell one branch's from another's; in place they are under the
 * branch's schemaPath, and a value's tag cuts them. The checks are the same (a `$ref` applies its
 * schema in place). Left as written: `$ref`s to other files and to the root, targets with an
 * `$id`, anchor or dynamic reference in them, and schemas with an `$id` below the root (a `#`
 * there means another resource). Returns `schema` itself when nothing is replaced.
 */
export function inlineDiscriminatedBranches(schema: object, idKey: '$id' | 'id'): object {
  if (!hasInlinableBranch(schema) || hasInnerId(schema, idKey)) return schema;
  const out = structuredClone(schema) as Schema;
  const seen = new Set<object>();
  const walk = (node: unknown, chain: readonly string[]): void => {
    if (typeof node !== 'object' || node === null || seen.has(node)) return;
    seen.add(node);
    if (Array.isArray(node)) {
      for (const item of node) walk(item, chain);
      return;
    }
    const s = node as Schema;
    const keyword = discriminated(s);
    if (keyword !== undefined) {
      const branches = s[keyword] as unknown[];
      branches.forEach((branch, i) => {
        const ref = bareLocalRef(branch);
        if (ref === undefined || chain.includes(ref)) return;
        const target = resolve(schema, ref);
        if (target === undefined || boundToPlace(target)) return;
        branches[i] = structuredClone(target);
        walk(branches[i], [...chain, ref]);
      });
    }
    for (const [k, v] of Object.entries(s)) if (!DATA_KEYWORDS.has(k)) walk(v, chain);
  };
  walk(out, []);
  return out;
}

/** `oneOf` or `anyOf` when the schema has a discriminator beside one. */
function discriminated(s: Schema): 'oneOf' | 'anyOf' | undefined {
  const d = s.discriminator;
  const named = typeof d === 'string' || (typeof d === 'object' && d !== null && typeof (d as Schema).propertyName === 'string');
  if (!named) return undefined;
  return Array.isArray(s.oneOf) ? 'oneOf' : Array.isArray(s.anyOf) ? 'anyOf' : undefined;
}

/** The `$ref` of a branch that is only a `$ref` to a place in this schema below its root (`#/$defs/Cat`). */
function bareLocalRef(branch: unknown): string | undefined {
  if (typeof branch !== 'object' || branch === null || Array.isArray(branch)) return undefined;
  const ref = (branch as Schema).$ref;
  if (typeof ref !== 'string' || !ref.startsWith('#/')) return undefined;
  return Object.keys(branch).every((k) => ANNOTATIONS.has(k) || k.startsWith('x-')) ? ref : undefined;
}

/** The schema a local `$ref` names, following a target that is itself a bare local `$ref`. */
function resolve(root: object, ref: string, depth = 0): Schema | undefined {
  const keys = pointerKeys(ref.slice(1));
  if (keys === undefined || depth > 8) return undefined;
  let node: unknown = root;
  for (const key of keys) {
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Schema)[key];
  }
  if (typeof node !== 'object' || node === null || Array.isArray(node)) return undefined;
  const next = bareLocalRef(node);
  return next === undefined ? (node as Schema) : resolve(root, next, depth + 1);
}

function hasInlinableBranch(schema: object): boolean {
  return some(schema, (s) => {
    const keyword = discriminated(s);
    return keyword !== undefined && (s[keyword] as unknown[]).some((b) => bareLocalRef(b) !== undefined);
  });
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
