import type { ErrorObject } from 'ajv';
import { pointerKeys } from '../../core/json-pointer.js';

/**
 * The errors of a `oneOf`/`anyOf` with a `discriminator` (AsyncAPI's, a property name, or
 * OpenAPI's `{propertyName}`), cut to the branch the value's tag names: `{"petType": "Dog",
 * "barks": -1}` is told `/barks: must be >= 0`, not also the Cat branch's errors and the `oneOf`'s
 * own. A branch names a tag by the `const` (or an `enum` holding it) of the tag's property, in
 * the branch or in one of its `allOf`. A tag no branch names, a value without one, a tagged
 * branch with no error under the `oneOf`'s schemaPath (it passed, and another branch too; or its
 * errors are a `$ref`'s, reported at the schema referred to), and a branch that is still a `$ref`
 * (the compiler puts them in place, src/plan/discriminated-branches.ts, except a recursion),
 * leave every error (ajv's own `discriminator` option would refuse such schemas instead, and
 * takes no AsyncAPI form). Errors
 * are ajv's, with `allErrors`; a child's in a recursive schema are cut by the child's own tag.
 */
export function narrowToTaggedBranch(errors: ErrorObject[], schema: unknown, value: unknown): ErrorObject[] {
  const evaluations = taggedEvaluations(errors, schema, value);
  if (evaluations.size === 0) return errors;
  const judged = errors.map((x) => ({ x, owners: ownersOf(x, evaluations) }));
  // A tag's branch whose errors all lie elsewhere (another file's or a `$ref`'s schemaPath), or
  // that passed (a oneOf that other branches matched too): nothing to cut to, every error stays.
  for (const { owners } of judged) for (const { evaluation, branch } of owners) if (evaluation.named.includes(branch)) evaluation.cut = true;
  return judged
    .filter(({ x, owners }) => {
      if ((x.keyword === 'oneOf' || x.keyword === 'anyOf') && evaluations.get(x.schemaPath)?.get(x.instancePath)?.cut) return false;
      return !owners.some(({ evaluation, branch }) => evaluation.cut && !evaluation.named.includes(branch));
    })
    .map(({ x }) => x);
}

/** One failed `oneOf`/`anyOf` of a discriminated schema, for one value: the branches its tag names (none: every error stays). */
interface Evaluation {
  named: number[];
  cut: boolean;
}

/** The failed discriminated `oneOf`/`anyOf`s, by schemaPath, then by the instancePath of the value each judged. */
function taggedEvaluations(errors: ErrorObject[], schema: unknown, value: unknown): Map<string, Map<string, Evaluation>> {
  const out = new Map<string, Map<string, Evaluation>>();
  for (const e of errors) {
    if (e.keyword !== 'oneOf' && e.keyword !== 'anyOf') continue;
    const parent = at(schema, e.schemaPath.slice(0, -e.keyword.length - 1));
    const property = discriminatorProperty(parent);
    const branches = parent?.[e.keyword];
    if (property === undefined || !Array.isArray(branches)) continue;
    const data = dataAt(value, e.instancePath);
    const tagged = typeof data === 'object' && data !== null && Object.hasOwn(data, property);
    const tag = tagged ? (data as Record<string, unknown>)[property] : undefined;
    // A branch still a `$ref` (a recursion, or one the compiler did not put in place) has its
    // errors at the schema it names, where they cannot be told from another branch's: none is cut.
    const placed = branches.every((b) => typeof b !== 'object' || b === null || !Object.hasOwn(b, '$ref'));
    const named = tagged && placed ? branches.flatMap((b, i) => (namesTag(b, property, tag, schema) ? [i] : [])) : [];
    let byValue = out.get(e.schemaPath);
    if (byValue === undefined) out.set(e.schemaPath, (byValue = new Map()));
    byValue.set(e.instancePath, { named, cut: false });
  }
  return out;
}

/**
 * The evaluations an error is a branch's error of, and which branch: its schemaPath is under the
 * `oneOf`'s, and of those the evaluation is the one of the nearest value holding it. A recursive
 * schema (`children: {items: {$ref: '#'}}`) reports a child's branch errors under the same
 * schemaPath as its parent's: they are the child's to cut, by the child's tag.
 */
function ownersOf(x: ErrorObject, evaluations: Map<string, Map<string, Evaluation>>): { evaluation: Evaluation; branch: number }[] {
  const out: { evaluation: Evaluation; branch: number }[] = [];
  for (const [schemaPath, byValue] of evaluations) {
    const prefix = `${schemaPath}/`;
    if (!x.schemaPath.startsWith(prefix)) continue;
    const evaluation = nearest(byValue, x.instancePath);
    if (evaluation !== undefined) out.push({ evaluation, branch: Number(x.schemaPath.slice(prefix.length).split('/')[0]) });
  }
  return out;
}

/** The evaluation of `instancePath` or of the nearest value holding it. */
function nearest(byValue: Map<string, Evaluation>, instancePath: string): Evaluation | undefined {
  for (let p = instancePath; ; p = p.slice(0, p.lastIndexOf('/'))) {
    const found = byValue.get(p);
    if (found !== undefined || p === '') return found;
  }
}

type Schema = Record<string, unknown>;

function discriminatorProperty(parent: Schema | undefined): string | undefined {
  const d = parent?.discriminator;
  if (typeof d === 'string') return d;
  if (typeof d === 'object' && d !== null && typeof (d as Schema).propertyName === 'string') return (d as Schema).propertyName as string;
  return undefined;
}

/** Whether `branch` (or an `allOf` of it, or a local `$ref` it is) asks the tag's property for `tag`. */
function namesTag(branch: unknown, property: string, tag: unknown, root: unknown, depth = 0): boolean {
  if (typeof branch !== 'object' || branch === null || depth > 8) return false;
  const b = branch as Schema;
  if (typeof b.$ref === 'string' && b.$ref.startsWith('#') && namesTag(at(root, b.$ref), property, tag, root, depth + 1)) return true;
  const p = (b.properties as Schema | undefined)?.[property] as Schema | undefined;
  if (typeof p === 'object' && p !== null) {
    if (Object.hasOwn(p, 'const') && same(p.const, tag)) return true;
    if (Array.isArray(p.enum) && p.enum.some((v) => same(v, tag))) return true;
  }
  return Array.isArray(b.allOf) && b.allOf.some((s) => namesTag(s, property, tag, root, depth + 1));
}

const same = (a: unknown, b: unknown) => a === b || (typeof a === 'object' && a !== null && JSON.stringify(a) === JSON.stringify(b));

/** The schema at an ajv `schemaPath` of the root schema (`#/properties/pet`); undefined for another file's. */
function at(root: unknown, schemaPath: string): Schema | undefined {
  const keys = schemaPath.startsWith('#') ? pointerKeys(schemaPath.slice(1)) : undefined;
  if (keys === undefined) return undefined;
  let node = root;
  for (const key of keys) {
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Schema)[key];
  }
  return typeof node === 'object' && node !== null && !Array.isArray(node) ? (node as Schema) : undefined;
}

/** The value at an ajv `instancePath` (a JSON Pointer; the root is ""). */
function dataAt(value: unknown, instancePath: string): unknown {
  let node = value;
  for (const raw of instancePath.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (typeof node !== 'object' || node === null || !Object.hasOwn(node, key)) return undefined;
    node = (node as Schema)[key];
  }
  return node;
}
