import type { ErrorObject } from 'ajv';

/**
 * The errors of a `oneOf`/`anyOf` with a `discriminator` (AsyncAPI's, a property name, or
 * OpenAPI's `{propertyName}`), cut to the branch the value's tag names: `{"petType": "Dog",
 * "barks": -1}` is told `/barks: must be >= 0`, not also the Cat branch's errors and the `oneOf`'s
 * own. A branch names a tag by the `const` (or an `enum` holding it) of the tag's property, in
 * the branch or in one of its `allOf`. A tag no branch names, a value without one, or a branch
 * ajv reached through another file's `$ref` leaves every error (ajv's own `discriminator` option
 * would refuse such schemas instead, and takes no AsyncAPI form). Errors are ajv's, with `allErrors`.
 */
export function narrowToTaggedBranch(errors: ErrorObject[], schema: unknown, value: unknown): ErrorObject[] {
  let out = errors;
  for (const e of errors) {
    if (e.keyword !== 'oneOf' && e.keyword !== 'anyOf') continue;
    const parent = at(schema, e.schemaPath.slice(0, -e.keyword.length - 1));
    const property = discriminatorProperty(parent);
    const branches = parent?.[e.keyword];
    if (property === undefined || !Array.isArray(branches)) continue;
    const data = dataAt(value, e.instancePath);
    if (typeof data !== 'object' || data === null || !Object.hasOwn(data, property)) continue;
    const tag = (data as Record<string, unknown>)[property];
    const named = branches.flatMap((b, i) => (namesTag(b, property, tag, schema) ? [i] : []));
    if (named.length === 0) continue;
    const prefix = `${e.schemaPath}/`;
    out = out.filter((x) => {
      if (x === e) return false;
      if (!x.schemaPath.startsWith(prefix)) return true;
      const branch = Number(x.schemaPath.slice(prefix.length).split('/')[0]);
      return named.includes(branch);
    });
  }
  return out;
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
  if (!schemaPath.startsWith('#')) return undefined;
  let node = root;
  for (const raw of schemaPath.slice(1).split('/').slice(1)) {
    let key: string;
    try {
      key = decodeURIComponent(raw).replace(/~1/g, '/').replace(/~0/g, '~');
    } catch {
      return undefined;
    }
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
