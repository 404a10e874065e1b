import type { Ajv, ErrorObject } from 'ajv';
import { schemaPattern } from '../expr/regex.js';
import { ajvModules } from '../core/ajv-modules.js';
import { pathFromPointer, type PathPart } from '../config/source.js';
import { enumHint } from '../config/suggest.js';
import type { SchemaCheck } from '../kinds/contracts.js';
import { isDateTime } from './date-time.js';
import { inlineDiscriminatedBranches } from './discriminated-branches.js';
import { compileBytesCheck } from './json-bytes.js';
import { schemaTypos } from './json-schema-typos.js';

/** A problem with a JSON Schema, at a path inside the schema. */
export interface SchemaProblem {
  path: PathPart[];
  message: string;
  /** The referred file (SchemaFile.name) the problem is in; the schema's own when absent. */
  file?: string;
}

/** A schema file, named by its URL: `$ref`s between such files resolve as JSON Schema says, against that URL. */
export interface SchemaFile {
  url: string;
  /** As the config names it (the key its problems are reported under). */
  name: string;
  value: unknown;
}

/**
 * One ajv per draft for the whole process, not per config load: a new instance compiles the
 * draft's meta-schema before it can check a schema, which was most of a reload's time on the event
 * loop (~50-80 ms on a busy machine for a config with one small schema). What a compile leaves in
 * ajv's cache is removed right after it, so reloads do not accumulate old schemas.
 */
const sharedAjvs = new Map<string, Ajv>();

const KNOWN_DRAFTS = 'http://json-schema.org/draft-04/schema#, http://json-schema.org/draft-07/schema#, https://json-schema.org/draft/2019-09/schema, https://json-schema.org/draft/2020-12/schema';

/**
 * Compiles user JSON Schemas (draft-04, draft-07, 2019-09, 2020-12 by `$schema`; 2020-12 unless told) with
 * formats. A schema that breaks the meta-schema is reported per offending keyword, so the
 * diagnostic can point at it rather than at the whole schema.
 */
export class JsonSchemaCompiler {
  private readonly ajvs = sharedAjvs;

  /**
   * `defaultDraft` applies when the schema has no `$schema`. `files`: the schema's own file
   * (`url`) and the files its `$ref`s reach (schema-refs.ts), so `$ref: node.yaml#/node` resolves,
   * also back to the schema's file (a recursive schema across files).
   */
  compile(
    schema: unknown,
    defaultDraft: '04' | '07' | '2019' | '2020' = '2020',
    files?: { url: string; others: readonly SchemaFile[] },
  ): { validate: SchemaCheck | undefined; problems: SchemaProblem[] } {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      return { validate: undefined, problems: [{ path: [], message: 'must be an object (a JSON Schema)' }] };
    }
    const declared = (schema as { $schema?: unknown }).$schema;
    // ajv throws on a `$schema` it cannot look up, and that was no diagnostic but the run's end
    // (`eventgate: $schema must be a string`, no file:line:col; a reload threw too).
    if (declared !== undefined && typeof declared !== 'string') return { validate: undefined, problems: [{ path: ['$schema'], message: `'$schema' must be a string (${KNOWN_DRAFTS}), or left out` }] };
    const draft = String(declared ?? '');
    const which =
      declared === undefined ? defaultDraft : draft.includes('draft-04') ? '04' : draft.includes('draft-07') || draft.includes('draft-06') ? '07' : draft.includes('2019-09') ? '2019' : '2020';
    // Removing a schema with an `$id` from ajv also drops that id, which could be one the shared
    // instance needs (a meta-schema's): such schemas get an instance of their own, as all did before.
    // Referred files are added under their URLs, which the shared instances must not keep either.
    // (Draft-04 names it `id`.)
    const ownId = (schema as { $id?: unknown }).$id !== undefined || (which === '04' && (schema as { id?: unknown }).id !== undefined) || files !== undefined;
    // A referred file that refers back needs the schema added under its URL as it is compiled.
    // The schemas are checked against their meta-schema on the shared instance: a new instance
    // compiled the meta-schema again (~25 of its ~30 ms), once per step naming a file.
    const meta = this.ajvFor(which);
    const ajv = ownId ? newAjv(which, { addUsedSchema: files !== undefined, validateSchema: false }) : meta;
    let valid: boolean;
    try {
      valid = meta.validateSchema(schema) as boolean;
    } catch {
      return { validate: undefined, problems: [{ path: ['$schema'], message: `'$schema' names no JSON Schema draft this gateway knows (${KNOWN_DRAFTS}); leave it out for 2020-12` }] };
    }
    if (!valid) return { validate: undefined, problems: metaProblems(schema, meta.errors ?? []) };
    const typos = schemaTypos(schema, meta);
    if (typos.length > 0) return { validate: undefined, problems: typos };
    const others = files?.others ?? [];
    // Draft-04 names a schema's base URI `id` (`$id` there is no keyword: no file $ref resolved).
    const idKey = which === '04' ? 'id' : '$id';
    for (const other of others) {
      // Each referred file is checked like the schema itself, its problems said in it.
      const inFile = (problems: SchemaProblem[]) => problems.map((p) => ({ ...p, file: other.name }));
      if (typeof other.value !== 'object' || other.value === null || Array.isArray(other.value)) {
        return { validate: undefined, problems: [{ path: [], message: 'must be an object (a JSON Schema), as a $ref names it', file: other.name }] };
      }
      if (!(meta.validateSchema(other.value) as boolean)) return { validate: undefined, problems: inFile(metaProblems(other.value, meta.errors ?? [])) };
      const otherTypos = schemaTypos(other.value, meta);
      if (otherTypos.length > 0) return { validate: undefined, problems: inFile(otherTypos) };
      // Under its URL as its own base URI: ajv resolved a `$ref` in a file reached through another
      // file's `{$ref: ../c.json}` against that other file's URL (`a/x.json` from a/x.json, not
      // from c.json), so the file was not found.
      ajv.addSchema({ [idKey]: other.url, ...(other.value as object) }, other.url);
    }
    // ajv's errors are said at the schemaPaths of what it compiled: a discriminated oneOf's `$ref`
    // branches are put in place, so that their errors can be cut to the tagged branch's.
    const root = inlineDiscriminatedBranches(files ? { ...schema, [idKey]: files.url } : schema, idKey, files);
    try {
      const validate: SchemaCheck = compileOn(ajv, root, () => (ownId ? undefined : newAjv(which, { addUsedSchema: true })));
      // Schemas in the subset json-bytes.ts reads can also be checked on a value's bytes.
      // (Not draft-04's: its boolean `exclusiveMaximum` means what the bytes check does not read.)
      if (which !== '04') validate.acceptsBytes ??= compileBytesCheck(schema);
      if (files && others.length > 0) validate.bundled = bundle(schema, files.url, others);
      else if (root !== schema) validate.bundled = schema;
      validate.draft = which;
      return { validate, problems: [] };
    } catch (err) {
      const message = (err as Error).message;
      const ref = /can't resolve reference (\S+)/.exec(message)?.[1];
      if (ref === undefined) {
        // ajv names a bad `pattern` by its text only: point at the keyword, in the file that holds it.
        const inOther = findBadPattern(schema) ? undefined : others.find((o) => findBadPattern(o.value));
        const path = findBadPattern(inOther ? inOther.value : schema) ?? [];
        return { validate: undefined, problems: [{ path, message, ...(inOther ? { file: inOther.name } : {}) }] };
      }
      const inOther = findRef(schema, ref) ? undefined : others.find((o) => findRef(o.value, ref));
      const path = findRef(inOther ? inOther.value : schema, ref) ?? [];
      const id = (schema as Record<string, unknown>)[idKey];
      const why = typeof id === 'string' && !files ? idBaseRef(ref, id, idKey) : unreadRef(ref);
      const problem = { path, message: `$ref '${ref}' points at nothing in this schema${others.length > 0 ? ' or the files it refers to' : ''}${why}` };
      return { validate: undefined, problems: [inOther ? { ...problem, file: inOther.name } : problem] };
    } finally {
      // The compiled function keeps what it needs; the shared instance's cache must not keep every reload's schemas.
      if (!ownId) ajv.removeSchema(root);
    }
  }

  private ajvFor(draft: string): Ajv {
    let ajv = this.ajvs.get(draft);
    if (!ajv) {
      ajv = newAjv(draft);
      this.ajvs.set(draft, ajv);
    }
    return ajv;
  }
}

/**
 * Compiles `schema` on `ajv`. With `addUsedSchema: false` (the shared instances', so they do not
 * keep every reload's schemas) ajv cannot resolve a `$ref` to the root of a schema without `$id`:
 * `{"properties": {"child": {"$ref": "#"}}}`, a valid recursive schema, fails with "can't resolve
 * reference # from id #". Such a schema is compiled again on an instance of its own (`fallback`),
 * which may add it; the first error stands when that fails too.
 */
function compileOn(ajv: Ajv, schema: object, fallback: () => Ajv | undefined): SchemaCheck {
  try {
    return ajv.compile(schema);
  } catch (err) {
    if (!/can't resolve reference #/.test((err as Error).message)) throw err;
    const own = fallback();
    if (!own) throw err;
    try {
      return own.compile(schema);
    } catch {
      throw err;
    }
  }
}

/** ajv is loaded with a config's first JSON Schema: a config without one never needs it. */
function newAjv(draft: string, { addUsedSchema = false, validateSchema = true } = {}): Ajv {
  const { Ajv: Ajv07, AjvDraft04, Ajv2019, Ajv2020, addFormats, fullFormats: formats } = ajvModules();
  const draftClass = draft === '04' ? AjvDraft04 : draft === '07' ? Ajv07 : draft === '2019' ? Ajv2019 : Ajv2020;
  // multipleOfPrecision: prices are decimals, and in binary floating point 19.99 / 0.01 is
  // 1998.9999999999998; a quotient within 1e-6 of an integer counts as one (ajv's option for it),
  // which is exact for cents up to about 10^8 and never accepts a tenth of a cent.
  // logger: false — ajv's warnings are free text on stderr; what they would say (an unknown format
  // or keyword) is a config error found by schemaTypos() instead.
  // code.regExp: `pattern` runs on client data; a backtracking engine alone let one string hold the event loop (schemaPattern).
  const opts = { allErrors: true, strict: false, validateSchema, addUsedSchema, multipleOfPrecision: 6, logger: false, code: { regExp: schemaPattern } } as const;
  const ajv = new draftClass(opts) as Ajv;
  addFormats(ajv);
  // The same date-time, without a regex split and two capturing regexes per value (date-time.ts).
  ajv.addFormat('date-time', { ...(formats['date-time'] as object), validate: isDateTime } as Parameters<Ajv['addFormat']>[1]);
  return ajv;
}

/** One problem per offending keyword: the meta-schema's `anyOf` branches say the same thing several ways. */
function metaProblems(schema: object, errors: ErrorObject[]): SchemaProblem[] {
  const byPath = new Map<string, ErrorObject[]>();
  for (const e of errors) byPath.set(e.instancePath, [...(byPath.get(e.instancePath) ?? []), e]);
  const out: SchemaProblem[] = [];
  for (const [pointer, list] of byPath) {
    const e = list.find((x) => x.keyword === 'enum') ?? list.find((x) => x.keyword !== 'anyOf' && x.keyword !== 'oneOf') ?? list[0]!;
    const path = pathFromPointer(pointer);
    const keyword = path.length > 0 ? String(path[path.length - 1]) : '';
    let message = `${keyword ? `'${keyword}' ` : ''}${e.message ?? e.keyword}`;
    if (e.keyword === 'enum') {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      const data = path.reduce<unknown>((v, p) => (v as Record<string, unknown> | undefined)?.[p as string], schema);
      message = `'${keyword}' must be one of ${allowed.map(String).join(', ')}, got ${JSON.stringify(data)}${enumHint(data, allowed)}`;
    }
    out.push({ path, message });
  }
  return out;
}

/** Keywords whose values are data, not schemas. */
const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example']);

/** Where a `pattern` (or a `patternProperties` key) is no regular expression as ajv reads it (Unicode mode). */
function findBadPattern(value: unknown, path: PathPart[] = []): PathPart[] | undefined {
  const bad = (re: string) => {
    try {
      new RegExp(re, 'u');
      return false;
    } catch {
      return true;
    }
  };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findBadPattern(value[i], [...path, i]);
      if (found) return found;
    }
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (DATA_KEYWORDS.has(k)) continue;
      if (k === 'pattern' && typeof v === 'string' && bad(v)) return [...path, k];
      if (k === 'patternProperties' && v && typeof v === 'object' && !Array.isArray(v)) {
        const key = Object.keys(v).find(bad);
        if (key !== undefined) return [...path, k, key];
      }
      const found = findBadPattern(v, [...path, k]);
      if (found) return found;
    }
  }
  return undefined;
}

/**
 * Why a `$ref` naming a file was not read (schema-refs.ts reads only relative paths): a schema
 * file's `schema:` path may be absolute, and "points at nothing" alone sent users looking at a
 * file that is there.
 */
function unreadRef(ref: string): string {
  const location = ref.split('#')[0]!;
  if (/^https?:/i.test(location)) return ' (remote $refs are not fetched: keep the file beside the schema and name it by a relative path)';
  if (/^file:/i.test(location) || location.startsWith('/') || location.startsWith('\\')) {
    return ' (a file is read only by a path relative to the schema file naming it, or to the directory of the config for an inline schema)';
  }
  return '';
}

/**
 * Why a relative `$ref` of a schema with an `$id` found no file (schemaFiles reads none for such
 * a schema): it resolves against the id, as JSON Schema says, not against the file holding it.
 */
function idBaseRef(ref: string, id: string, idKey: string): string {
  const location = ref.split('#')[0]!;
  if (location === '' || /^[a-z][a-z0-9+.-]*:/i.test(location)) return unreadRef(ref);
  return ` (it resolves against the schema's ${idKey} '${id}', not against its file, and no file is read for a schema with an ${idKey}: leave the ${idKey} out to have '${location}' read beside the schema file)`;
}

/** Path of the `$ref` whose value is `ref`, for pointing at it. */
function findRef(value: unknown, ref: string, path: PathPart[] = []): PathPart[] | undefined {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findRef(value[i], ref, [...path, i]);
      if (found) return found;
    }
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && v === ref) return [...path, k];
      const found = findRef(v, ref, [...path, k]);
      if (found) return found;
    }
  }
  return undefined;
}

/**
 * `schema` (whose URL is `url`) as one document: each referred file under `$defs` (keyed by its
 * name as the config writes it, `/` made `_`), and every `$ref` that names a file, in the schema or in a referred
 * file, a local one to where that file now is. A reader of the document (the AsyncAPI export, read
 * anywhere) then needs none of the files.
 */
export function bundle(schema: object, url: string, others: readonly SchemaFile[]): object {
  const defs = { ...((schema as { $defs?: object }).$defs ?? {}) } as Record<string, unknown>;
  const keys = new Map<string, string>();
  for (const o of others) {
    // No `/` or `~` in a key: the AsyncAPI parser runs out of stack on a cycle of `$ref`s with `~1` in them.
    const name = o.name.replace(/[^A-Za-z0-9._-]/g, '_');
    let key = name;
    for (let n = 2; key in defs || [...keys.values()].includes(key); n++) key = `${name}_${n}`;
    keys.set(o.url, key);
  }
  const pointer = (key: string) => `#/$defs/${key}`;
  const rewrite = (value: unknown, holder: string): unknown => {
    if (Array.isArray(value)) return value.map((v) => rewrite(v, holder));
    if (value === null || typeof value !== 'object') return value;
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => {
        if (k === '$ref' && typeof v === 'string') return [k, relocate(v, holder)];
        return [k, DATA_KEYWORDS.has(k) ? v : rewrite(v, holder)];
      }),
    );
  };
  const relocate = (ref: string, holder: string): string => {
    let target: URL;
    let fragment: string;
    try {
      target = new URL(ref, holder);
      fragment = decodeURIComponent(target.hash.slice(1));
    } catch {
      return ref;
    }
    target.hash = '';
    const base = target.href;
    // An `$anchor` (`#name`) is the document's wherever it sits: left as it is.
    if (fragment !== '' && !fragment.startsWith('/')) return base === url || keys.has(base) ? `#${fragment}` : ref;
    if (base === url) return `#${fragment}`;
    const key = keys.get(base);
    return key === undefined ? ref : `${pointer(key)}${fragment}`;
  };
  for (const o of others) {
    // Embedded, a file is no resource of its own: its `$id`/`$schema` would make it one.
    const { $id: _i, $schema: _s, ...rest } = o.value as Record<string, unknown>;
    defs[keys.get(o.url)!] = rewrite(rest, o.url);
  }
  const { $id: _id, ...root } = rewrite(schema, url) as Record<string, unknown>;
  return { ...root, $defs: defs };
}
