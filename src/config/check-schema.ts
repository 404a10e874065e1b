import type { ErrorObject, ValidateFunction } from 'ajv';
import { ajvModules } from '../core/ajv-modules.js';
import { exactlyOneKeys, forbiddenKeys } from '../kinds/define.js';
import { shownServerUrl } from '../kinds/brokers/server-url.js';
import { blobOriginHint, opaqueOriginWhy, urlOrigin } from '../kinds/listeners/cors.js';
import type { KindRegistry } from '../kinds/registry.js';
import { formatPath, type Diagnostic } from './diagnostics.js';
import { isSecretPath } from './secrets.js';
import { CONFIG_AJV_OPTIONS, precompiledValidator } from './precompiled-validator.js';
import { buildConfigSchema } from './schema.js';
import { FRAGMENT_SECTIONS } from './include.js';
import { pathFromPointer, type PathPart, type SourceDocument } from './source.js';
import { closest, didYouMean, enumHint } from './suggest.js';

const validators = new WeakMap<KindRegistry, ValidateFunction>();

/** ajv itself only when the build-time validator cannot serve (a test's own registry, a kind changed without a build). */
function compileSchema(schema: object): ValidateFunction {
  return new (ajvModules().Ajv2020)(CONFIG_AJV_OPTIONS).compile(schema);
}

function configValidator(registry: KindRegistry): ValidateFunction {
  let v = validators.get(registry);
  if (!v) {
    const schema = buildConfigSchema(registry, { acceptVariables: false });
    v = precompiledValidator(schema) ?? compileSchema(schema);
    validators.set(registry, v);
  }
  return v;
}

/**
 * Checks the document against the config schema (or, for a file pulled in with `include:`, the
 * fragment schema); each problem becomes a positioned diagnostic.
 */
export function checkSchema(src: SourceDocument, registry: KindRegistry, options: { fragment?: boolean } = {}): Diagnostic[] {
  if (options.fragment && (src.value === null || src.value === undefined)) return [];
  const validate = configValidator(registry);
  const raw = options.fragment ? fragmentErrors(src.value, validate) : validate(src.value) ? [] : (validate.errors ?? []);
  if (raw.length === 0) return [];
  // A key's own failure inside `propertyNames` (ajv marks it with `propertyName`) is said once, by the propertyNames error naming the key.
  const errors = withoutEchoes(relevant(exactlyOneRules(raw.filter((e) => e.propertyName === undefined))), registry);
  const seen = new Set<string>();
  const out: Diagnostic[] = [];
  for (const e of errors) {
    const d = toDiagnostic(src, e, registry, options.fragment === true);
    const key = `${d.line}:${d.column}:${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out.sort((a, b) => a.line - b.line || a.column - b.column);
}

/**
 * A file named by `include:` holds only some sections of the config, none required. It is checked
 * by the config's own (build-time) validator as a config of those sections: a schema of its own
 * compiled with ajv took seconds on a busy machine, at the start of a config with `include:` and
 * at the first reload that found a fragment (a glob matching its first file), far past the 500 ms
 * a change has to be live in. Keys that are no section are refused here, as that schema did.
 */
function fragmentErrors(value: unknown, validate: ValidateFunction): ErrorObject[] {
  if (!isPlainMap(value)) return validate(value) ? [] : (validate.errors ?? []).filter((e) => e.instancePath === '' && e.keyword === 'type');
  const sections = Object.fromEntries(FRAGMENT_SECTIONS.map((k) => [k, {}]));
  const errors: ErrorObject[] = Object.keys(value)
    .filter((k) => !(k in sections))
    .map((k) => ({ keyword: 'additionalProperties', instancePath: '', schemaPath: '#/additionalProperties', params: { additionalProperty: k }, parentSchema: { properties: sections }, data: value }));
  const kept = Object.fromEntries(Object.entries(value).filter(([k]) => k in sections));
  if (!validate({ ...kept, version: 1 })) errors.push(...(validate.errors ?? []));
  return errors;
}

/** The keyword a failed exactlyOne() rule (src/kinds/define.ts) becomes here. */
const EXACTLY_ONE = 'exactlyOne';

/**
 * A failed exactlyOne() rule is one error naming the keys; the `required` errors of its branches
 * would only repeat it.
 */
function exactlyOneRules(errors: ErrorObject[]): ErrorObject[] {
  const rules = new Map<ErrorObject, string[]>();
  for (const e of errors) {
    const keys = e.keyword === 'oneOf' ? exactlyOneKeys(e.parentSchema) : undefined;
    if (keys) rules.set(e, keys);
  }
  if (rules.size === 0) return errors;
  const isMap = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  // With several of the keys given, what each of them needs beside it is beside the point.
  const tooMany = new Set([...rules].filter(([r, keys]) => isMap(r.data) && given(r.data, keys).length > 1).map(([r]) => r.instancePath));
  return errors
    .filter((e) => ![...rules.keys()].some((r) => e.schemaPath.startsWith(`${r.schemaPath}/`)))
    .filter((e) => !(tooMany.has(e.instancePath) && (e.keyword === 'dependentRequired' || e.schemaPath.includes('/dependentSchemas/'))))
    .filter((e) => !rules.has(e) || isMap(e.data)) // a value that is no map has its type error already
    .map((e) => (rules.has(e) ? { ...e, keyword: EXACTLY_ONE, params: { keys: rules.get(e)! } } : e));
}

/** Which of `keys` the map `data` has. */
function given(data: unknown, keys: readonly string[]): string[] {
  return keys.filter((k) => Object.hasOwn((data ?? {}) as object, k));
}

function isPlainMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** 'a', 'b' and 'c' */
function andList(keys: readonly string[]): string {
  const q = keys.map((k) => `'${k}'`);
  return q.length < 2 ? q.join('') : `${q.slice(0, -1).join(', ')} and ${q[q.length - 1]}`;
}

/** 'a', 'b' or 'c' */
function orList(keys: readonly string[]): string {
  const q = keys.map((k) => `'${k}'`);
  return q.length < 2 ? q.join('') : `${q.slice(0, -1).join(', ')} or ${q[q.length - 1]}`;
}

const SUMMARY_KEYWORDS = new Set(['oneOf', 'anyOf', 'type', 'if']);

/**
 * ajv reports every failed branch of a oneOf. Keep the errors of the branch that matched the
 * value's shape: a summary error (oneOf, type) is dropped when a more specific one exists at the
 * same place, or any error below it (the value had the shape of a branch that looked inside it:
 * `filter: true` is one problem, not also a step and a `through` of the wrong shape).
 */
function relevant(errors: ErrorObject[]): ErrorObject[] {
  return errors.filter((e) => {
    if (!SUMMARY_KEYWORDS.has(e.keyword)) return !otherBranch(e, errors);
    if (errors.some((o) => o !== e && (o.instancePath.startsWith(e.instancePath + '/') || (o.instancePath === e.instancePath && !SUMMARY_KEYWORDS.has(o.keyword))))) return false;
    // Only shape errors here: the oneOf says it once ("a chain name, or a list ..."), not once per branch.
    return e.keyword === 'oneOf' || e.keyword === 'anyOf' || !errors.some((o) => (o.keyword === 'oneOf' || o.keyword === 'anyOf') && o.instancePath === e.instancePath);
  });
}

/**
 * Whether `e` is a oneOf branch's complaint about the value as a whole (`origins` must be `"*"`)
 * while another branch looked inside the value and found its mistake there (`origins[0]`): the
 * value has that branch's shape, so the first branch's words only mislead ("must be "*", got a
 * list", beside the entry that is wrong).
 */
function otherBranch(e: ErrorObject, errors: ErrorObject[]): boolean {
  const inBranch = errors.some((o) => (o.keyword === 'oneOf' || o.keyword === 'anyOf') && o.instancePath === e.instancePath && e.schemaPath.startsWith(`${o.schemaPath}/`));
  return inBranch && errors.some((o) => o.instancePath.startsWith(`${e.instancePath}/`));
}

/**
 * One mistake, one message: a missing `kind` is also a discriminator error, and a misspelt
 * required key (`prot:`) is also a missing one (`port`); keep only the more telling error.
 */
function withoutEchoes(errors: ErrorObject[], registry: KindRegistry): ErrorObject[] {
  return errors.filter((e) => {
    const missing = missingKeys(e);
    if (missing === undefined) return true;
    return !errors.some((o) => {
      if (o.instancePath !== e.instancePath) return false;
      if (o.keyword === 'discriminator') return missing.includes((o.params as { tag: string }).tag);
      if (o.keyword !== 'additionalProperties') return false;
      const extra = (o.params as { additionalProperty: string }).additionalProperty;
      const allowed = Object.keys(((o.parentSchema as { properties?: object }).properties ?? {}) as object);
      const meant = closest(extra, allowed);
      return meant !== undefined && missing.includes(meant) && !registry.steps.has(meant);
    });
  });
}

/** The keys an error says are missing: a required key, a key another one needs, or one of an exactlyOne() set none of which is there. */
function missingKeys(e: ErrorObject): string[] | undefined {
  if (e.keyword === 'required' || e.keyword === 'dependentRequired') return [(e.params as { missingProperty: string }).missingProperty];
  if (e.keyword !== EXACTLY_ONE) return undefined;
  const { keys } = e.params as { keys: string[] };
  return given(e.data, keys).length > 0 ? undefined : keys;
}

/**
 * ` (route 'orders-in')` for a path into a named route of a fragment: its index counts that file's
 * routes only, so the name says which route is meant wherever the reader looks it up.
 */
function routeName(src: SourceDocument, path: PathPart[]): string {
  if (path[0] !== 'routes' || typeof path[1] !== 'number' || !isPlainMap(src.value) || !Array.isArray(src.value.routes)) return '';
  const route: unknown = src.value.routes[path[1]];
  return isPlainMap(route) && typeof route.name === 'string' && route.name !== '' ? ` (route '${route.name}')` : '';
}

/**
 * A string as a diagnostic may quote it: a URL without its password (`user:***@`, as a broker's URL
 * is quoted) or query (`?...`, where an API key may be). A webhook URL the schema refuses used to
 * be quoted whole, in validate's output, the log and /admin/status.
 */
function shownValue(v: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(v)) return v;
  const query = v.search(/[?#]/);
  return shownServerUrl(query === -1 ? v : `${v.slice(0, query)}?...`);
}

function describeValue(v: unknown, secret = false): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  // A password of digits from the environment is a number: say so without printing it.
  if (secret) return `a ${typeof v}`;
  if (typeof v === 'string') {
    const shown = shownValue(v);
    return `string ${JSON.stringify(shown.length > 40 ? shown.slice(0, 37) + '...' : shown)}`;
  }
  return `${typeof v} ${String(v)}`;
}

/**
 * `port: 8081` under `listeners:` at a listener's indentation, below `push:` whose key it meant to
 * be: a listener (or broker) named `port` whose options are a number. Says so, naming the entry
 * above, where it is written, whose key it most likely is; undefined for anything else.
 */
function outdentedKey(src: SourceDocument, path: PathPart[], data: unknown): string | undefined {
  const [section, name] = path;
  if (path.length !== 2 || (section !== 'brokers' && section !== 'listeners') || isPlainMap(data)) return undefined;
  const names = Object.keys(((src.value as Record<string, unknown> | null)?.[section] ?? {}) as object);
  const above = names[names.indexOf(String(name)) - 1];
  if (above === undefined) return undefined;
  const what = section === 'brokers' ? 'broker' : 'listener';
  const { line } = src.locate([section, above], 'key');
  return `: indented as a ${what}'s name, so it reads as a ${what} named '${String(name)}'; if it is a key of ${what} '${above}' (line ${line}), indent it as far as that ${what}'s other keys`;
}

function toDiagnostic(src: SourceDocument, e: ErrorObject, registry: KindRegistry, fragment: boolean): Diagnostic {
  const path = pathFromPointer(e.instancePath);
  // A fragment's own top level is not the config's: `version` or `admin` there is refused as not a fragment's.
  const where = formatPath(path) + (fragment ? routeName(src, path) : '') || (fragment ? 'an included fragment' : 'the config');
  const at = (p: PathPart[], which: 'key' | 'value' = 'value') => {
    const { line, column } = src.locate(p, which);
    return { file: src.file, line, column, path: formatPath(p) };
  };
  switch (e.keyword) {
    case 'not': {
      // A rule written with withMessage() or forbidKeys() (src/kinds/define.ts) says what is wrong in its description.
      const rule = (e.parentSchema as { description?: string } | undefined)?.description;
      // The offending keys in the order they are written; the first is where the diagnostic points.
      const forbidden = forbiddenKeys(e.parentSchema) ?? [];
      const present = isPlainMap(e.data) ? Object.keys(e.data).filter((k) => forbidden.includes(k)) : [];
      const message = rule?.replace('{keys}', andList(present)).replace('{s}', present.length === 1 ? 's' : '');
      // A rule about a map points at the offending key (or the map's); one about a value, at the value.
      const place = present.length > 0 ? at([...path, present[0]!], 'key') : at(path, isPlainMap(e.data) ? 'key' : 'value');
      return { ...place, code: 'EG_CONFIG_SCHEMA', message: `${where}: ${message ?? e.message ?? 'is not allowed here'}` };
    }
    case 'pattern': {
      // A string made with stringMatching() names what it must be in its title.
      const what = (e.parentSchema as { title?: string } | undefined)?.title;
      const secret = isSecretPath(path);
      return {
        ...at(path),
        code: 'EG_CONFIG_SCHEMA',
        message: what ? `${where} must be ${what}, got ${describeValue(e.data, secret)}${secret ? '' : schemeHint(what, e.data)}` : `${where} ${e.message ?? e.keyword}`,
      };
    }
    case 'propertyNames': {
      const name = (e.params as { propertyName: string }).propertyName;
      const rule = (e.parentSchema as { propertyNames?: { title?: string; pattern?: string } } | undefined)?.propertyNames;
      const must = rule?.title ?? (rule?.pattern ? `match pattern "${rule.pattern}"` : 'be a valid name');
      return { ...at([...path, name], 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where}: key '${name}' must be ${must}` };
    }
    case 'dependentRequired': {
      const { property, missingProperty } = e.params as { property: string; missingProperty: string };
      return { ...at(path, 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where}: '${property}' needs a '${missingProperty}'` };
    }
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const allowed = Object.keys(((e.parentSchema as { properties?: object }).properties ?? {}) as object);
      const isStep = stepKinds(e, registry) !== undefined;
      const what = isStep ? `unknown step '${key}'` : `unknown key '${key}' in ${where}`;
      // A key other tools have and this object has not says why (the schema's `x-absentKeys`), rather than a near miss.
      const absent = (e.parentSchema as { 'x-absentKeys'?: Record<string, string> } | undefined)?.['x-absentKeys'];
      const hint = absent !== undefined && Object.hasOwn(absent, key) ? `: ${absent[key]}` : didYouMean(key, allowed);
      return { ...at([...path, key], 'key'), code: 'EG_CONFIG_UNKNOWN_KEY', message: `${what}${hint}; expected one of: ${allowed.join(', ')}` };
    }
    case 'required': {
      const key = (e.params as { missingProperty: string }).missingProperty;
      return { ...at(path, 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where} is missing required key '${key}'` };
    }
    case 'discriminator': {
      const { tagValue } = e.params as { tag: string; tagValue: unknown };
      const section = path[0] === 'brokers' ? 'broker' : 'listener';
      const known = [...(section === 'broker' ? registry.brokers.keys() : registry.listeners.keys())];
      if (tagValue === undefined) {
        // `knd: memory` is a misspelt `kind`, not a missing one: point at the key written and name it.
        const misspelt = isPlainMap(e.data) ? Object.keys(e.data).find((k) => closest(k, ['kind']) !== undefined) : undefined;
        if (misspelt !== undefined)
          return {
            ...at([...path, misspelt], 'key'),
            code: 'EG_CONFIG_UNKNOWN_KEY',
            message: `unknown key '${misspelt}' in ${where} (did you mean 'kind'?); a ${section} needs 'kind' (one of: ${known.join(', ')})`,
          };
        return { ...at(path, 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where} is missing required key 'kind' (one of: ${known.join(', ')})` };
      }
      return {
        ...at([...path, 'kind']),
        code: 'EG_CONFIG_SCHEMA',
        message: `unknown ${section} kind ${JSON.stringify(tagValue)}${didYouMean(String(tagValue), known)}; known kinds: ${known.join(', ')}`,
      };
    }
    case 'enum': {
      const allowed = (e.params as { allowedValues: unknown[] }).allowedValues;
      return {
        ...at(path),
        code: 'EG_CONFIG_SCHEMA',
        message: `${where} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${describeValue(e.data, isSecretPath(path))}${enumHint(e.data, allowed, (e.parentSchema as { 'x-aliases'?: Record<string, string> } | undefined)?.['x-aliases'])}`,
      };
    }
    case 'const': {
      // `version: "1"` is told to lose the quotes, as an enum's quoted number is.
      const allowed = (e.params as { allowedValue: unknown }).allowedValue;
      return {
        ...at(path),
        code: 'EG_CONFIG_SCHEMA',
        message: `${where} must be ${JSON.stringify(allowed)}${otherwise(e)}, got ${describeValue(e.data, isSecretPath(path))}${enumHint(e.data, [allowed])}${listHint(e)}`,
      };
    }
    case 'type': {
      if (path.length === 0 && e.data == null) return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: 'the config file is empty; it needs at least `version: 1`' };
      const t = (e.params as { type: string | string[] }).type;
      const expected = Array.isArray(t) ? t.join(' or ') : t;
      const outdented = outdentedKey(src, path, e.data);
      if (outdented) return { ...at(path, 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where} must be ${article(expected)}, got ${describeValue(e.data, isSecretPath(path))}${outdented}` };
      // A value from a ${VAR} has its own hint (quotingHints, plan/compile.ts); a secret is not repeated.
      const hint =
        isSecretPath(path) || src.fromEnv.has(formatPath(path))
          ? ''
          : typeHint(Array.isArray(t) ? t : [t], e.data) || expressionTypeHint(e.parentSchema, path, e.data) || nullOriginHint(e.parentSchema, e.data);
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} must be ${article(expected)}, got ${describeValue(e.data, isSecretPath(path))}${hint}` };
    }
    case 'minLength':
    case 'maxLength': {
      // ajv's "must NOT have fewer than 1 characters" for `schema: ""` reads as a riddle.
      const limit = (e.params as { limit: number }).limit;
      // A secret's length is not said either.
      const length = typeof e.data === 'string' && !isSecretPath(path) ? `, not ${[...e.data].length}` : '';
      const rule = e.keyword === 'minLength' ? (limit === 1 ? 'must not be empty' : `must be at least ${limit} characters long${length}`) : `must be at most ${limit} characters long${length}`;
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} ${rule}` };
    }
    case 'minProperties': {
      const kinds = stepKinds(e, registry);
      if (kinds) return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} is an empty step; a step is a map with one key, the step kind (one of: ${kinds.join(', ')})` };
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} must not be empty` };
    }
    case 'maxProperties': {
      const keys = Object.keys((e.data ?? {}) as object);
      if (stepKinds(e, registry))
        return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} has ${keys.length} keys (${keys.join(', ')}); a step has exactly one, so write each step as its own list item` };
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} ${e.message ?? e.keyword}` };
    }
    case EXACTLY_ONE: {
      const { keys } = e.params as { keys: string[] };
      const present = given(e.data, keys);
      if (present.length === 0) return { ...at(path, 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where} needs one of ${orList(keys)}` };
      return { ...at([...path, present[1]!], 'key'), code: 'EG_CONFIG_SCHEMA', message: `${where} takes only one of ${orList(keys)}, not ${present.map((g) => `'${g}'`).join(' and ')}` };
    }
    case 'oneOf':
    case 'anyOf': {
      const description = (e.parentSchema as { description?: string }).description;
      const expected = description ? `: expected ${description.charAt(0).toLowerCase()}${description.slice(1).replace(/\.$/, '')}` : '; see docs/config.md';
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} has the wrong shape (${describeValue(e.data, isSecretPath(path))})${expected}` };
    }
    default:
      return { ...at(path), code: 'EG_CONFIG_SCHEMA', message: `${where} ${e.message ?? e.keyword}` };
  }
}

/**
 * ` or <what else the value may be>`, for a constant that is one branch of a oneOf whose other
 * branch is of another shape (`origins: "*"` or a list): the schema's `x-otherwise`.
 */
function otherwise(e: ErrorObject): string {
  const other = (e.parentSchema as { 'x-otherwise'?: string } | undefined)?.['x-otherwise'];
  return other === undefined ? '' : ` or ${other}`;
}

/** For such a constant given one string, where the list was meant (`origins: https://a.example`): the list to write. */
function listHint(e: ErrorObject): string {
  if ((e.parentSchema as { 'x-otherwise'?: string } | undefined)?.['x-otherwise'] === undefined) return '';
  return typeof e.data === 'string' && e.data !== '' && !/[\s,]/.test(e.data) ? ` (write [${e.data}])` : '';
}

/** The step kinds when `e` is about a chain step's map, else undefined. */
function stepKinds(e: ErrorObject, registry: KindRegistry): string[] | undefined {
  const props = Object.keys(((e.parentSchema as { properties?: object }).properties ?? {}) as object);
  return props.length > 0 && props.every((k) => registry.steps.has(k)) ? props : undefined;
}

/**
 * A string where a number or boolean goes, that says one: quoted (`port: "8080"`, `"True"`, a
 * quoted `"${PORT}"`), or written as YAML 1.1 wrote them (`yes`, `off`, `1_000`), which YAML 1.2, as the
 * config is read, takes as strings.
 */
function typeHint(expected: readonly string[], data: unknown): string {
  if (typeof data !== 'string') return '';
  const text = data.trim();
  if (expected.includes('boolean')) {
    // YAML 1.2's core schema (and 1.1's) reads `True` and `FALSE` unquoted as booleans too.
    if (/^(true|True|TRUE|false|False|FALSE)$/.test(text)) return ` (write it without quotes: ${text.toLowerCase()})`;
    const yaml11 = /^(y|yes|on|n|no|off)$/i.exec(text);
    if (yaml11) return ` (YAML 1.1 read '${text}' as a boolean; the config is YAML 1.2, where it is a string: write ${/^(y|yes|on)$/i.test(text) ? 'true' : 'false'})`;
  }
  if (expected.includes('integer') || expected.includes('number')) {
    const n = Number(text);
    const fits = text !== '' && Number.isFinite(n) && !/^0[xob]/i.test(text) && (expected.includes('number') || Number.isInteger(n));
    if (fits) return ` (write it without quotes: ${n})`;
    const grouped = /^[-+]?\d{1,3}(_\d+)+$/.test(text) ? text.replace(/_/g, '') : undefined;
    if (grouped !== undefined) return ` (YAML 1.2, as the config is read, has no '_' in numbers: write ${Number(grouped)})`;
  }
  return '';
}

/**
 * A JSONata expression written unquoted as YAML: `transform: {"id": orderId}` and `filter: [a, b]`
 * are a YAML map and list, not the text of an expression. Say how to keep it text.
 */
function expressionTypeHint(schema: unknown, path: readonly PathPart[], data: unknown): string {
  if (typeof data !== 'object' || data === null) return '';
  const description = (schema as { description?: unknown } | undefined)?.description;
  if (typeof description !== 'string' || !description.includes('JSONata')) return '';
  const key = String(path[path.length - 1]);
  const opener = Array.isArray(data) ? '[ is read as a YAML list' : '{ is read as a YAML map';
  return ` (a value that starts with ${opener}, not as the text of a JSONata expression: quote the whole expression (\`${key}: '...'\`, a ' inside it written twice) or write it on the lines after \`${key}: |\`, indented)`;
}

function article(t: string): string {
  const nouns: Record<string, string> = { object: 'a map', array: 'a list', string: 'a string', integer: 'an integer', number: 'a number', boolean: 'true or false', null: 'null' };
  return nouns[t] ?? t;
}

/** `origins: [null]`, YAML's null where the origin `null` was meant, maybe: why that cannot be allowed. */
function nullOriginHint(schema: unknown, data: unknown): string {
  const what = (schema as { title?: unknown } | undefined)?.title;
  return data === null && typeof what === 'string' && /\borigin\b/.test(what) ? ` (if the origin "null" was meant: ${opaqueOriginWhy('null')})` : '';
}

/** `hooks.example.com/orders` where a URL must be: say to write the scheme, which newcomers leave out (the value is not repeated: it may hold a password). */
function schemeHint(what: string, value: unknown): string {
  if (!/\bURL\b|\borigin\b/.test(what) || typeof value !== 'string' || value === '' || /\s/.test(value)) return '';
  if (/\borigin\b/.test(what)) {
    // `null`, `file:///`: what any page can send, said why rather than how to write it; a blob: URL, whose page sends its creator's origin.
    const opaque = opaqueOriginWhy(value) ?? blobOriginHint(value);
    if (opaque !== undefined) return ` (${opaque})`;
    // `https://app.example.com/`, `capacitor://localhost/` (a page's address, not its origin): say the origin the browser sends.
    const origin = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) && URL.canParse(value) ? urlOrigin(new URL(value)) : undefined;
    if (origin !== undefined && origin !== value) return ` (an origin has no path: write "${origin}")`;
  }
  // `http:/host`, `https:host`, `http//host`: the scheme is there, its `://` is not (`https://` before it would make it worse).
  const misspelt = /^(https?)(:\/?(?!\/)|\/\/)/i.exec(value);
  if (misspelt) return ` (the scheme is written ${misspelt[1]!.toLowerCase()}://, colon and two slashes)`;
  // Some scheme (`ftp://`, `mailto:`) rather than none: the message says which ones are taken. `host:8080` is a port.
  if (/^[a-z][a-z0-9+.-]*:(?!\d)/i.test(value)) return '';
  const scheme = /^(localhost|127\.|\[::1\])/.test(value) ? 'http' : 'https';
  return ` (a URL starts with its scheme: write ${scheme}:// before it)`;
}
