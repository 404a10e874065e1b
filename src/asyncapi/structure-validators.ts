/**
 * The AsyncAPI JSON Schema validators of @asyncapi/parser's document-structure rules, compiled at
 * build time. The parser checks every document against its version's AsyncAPI schema twice (the
 * `asyncapi-document-resolved` and `-unresolved` rules) through Spectral's `schema` function,
 * whose ajv compiles both schemas anew for each parse (its ajv instances live per document
 * inventory, so per parse): ~0.85 s of CPU in a process's first parse, ~0.4 s in each later one.
 * `npm run build` writes ajv's standalone code of those validators, made by Spectral's own ajv
 * instance (its options, formats and plugins), with a hash of each schema it was made from.
 *
 * The hook: Spectral's `schema` function gets its validators from `createAjvInstances()` in
 * @stoplight/spectral-functions/dist/schema/ajv.js, which it looks up on that module's exports at
 * each call. `useBuildTimeStructureValidators` wraps it: a schema whose `$id`, dialect and content
 * hash match the build's, asked for with `allErrors` (as the parser does), gets the build-time
 * validator; anything else goes to Spectral's ajv as before. The same ajv code validates either
 * way, so the errors, their paths and messages are the same. The hook relies on internals (that
 * module and its call, the parser's `getSchema` and format list at build time): the generated
 * files record the versions they were made with (@asyncapi/parser is pinned in package.json), and
 * with any other version installed nothing is wrapped. Each schema compiles the same alone or
 * after the other in one ajv instance (the standalone code of both orders was compared), so
 * serving one and compiling the other (a mismatch of one hash) changes nothing either.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';

/** An ajv validating function, as Spectral's `schema` function calls it. */
type Validate = ((data: unknown) => boolean) & { errors?: unknown };
type GetValidator = (schema: Record<string, unknown>, dialect: string, allErrors: boolean) => Validate | undefined;
/** @stoplight/spectral-functions/dist/schema/ajv.js: its exports, which the hook changes. */
export interface SpectralAjvModule {
  createAjvInstances: () => GetValidator;
}

/**
 * Spectral as the parser in use has it: its ajv module, what the generated validators `require`
 * (ajv's runtime helpers, ajv-formats' formats) as Spectral's ajv resolves it, and the versions of
 * the packages involved. The parser's bundle carries all three from the build (scripts/
 * bundle-vendor.js), so a bundle and the validators of one build always match, whatever an
 * `npm install` put in node_modules since; without a bundle, `spectralAsInstalled()`.
 */
export interface ParserSpectral {
  spectralAjv: SpectralAjvModule;
  validatorRequire: (id: string) => unknown;
  versions: Record<string, string>;
}

/** All the generated validators may `require` (the build checks its code against this list). */
export const VALIDATOR_REQUIRES = ['ajv-formats/dist/formats', 'ajv/dist/runtime/equal', 'ajv/dist/runtime/ucs2length'] as const;

/** What the build wrote: the versions it was made with and, per schema `$id`, its file and hash. */
interface Manifest {
  packages: Record<string, string>;
  schemas: Record<string, { file: string; export: string; dialect: string; hash: string }>;
  /** The rules' own small schemas (`{const: <latest version>}`, ...), by `ruleKey`. */
  rules: Record<string, { file: string }>;
}

const DIR = fileURLToPath(new URL('./structure-validators/', import.meta.url));
const MANIFEST = join(DIR, 'manifest.json');
/** The parser's module of the document-structure rules, and Spectral's module it gets its validators from. */
export const STRUCTURE_RULE = '@asyncapi/parser/cjs/ruleset/functions/documentStructure.js';
export const SPECTRAL_AJV = '@stoplight/spectral-functions/dist/schema/ajv.js';
const WRAPPED = Symbol.for('eventgate.structure-validators');

/** Where the parser's rule and Spectral's ajv module are, as the parser itself resolves them. */
function locate(): { rule: string; spectralAjv: string } {
  const rule = createRequire(import.meta.url).resolve(STRUCTURE_RULE);
  return { rule, spectralAjv: createRequire(rule).resolve(SPECTRAL_AJV) };
}

/**
 * The files of Spectral's ajv module and of what the validators require, and the packages'
 * versions, as installed (scripts/bundle-vendor.js puts them in the parser's bundle).
 */
export function spectralFiles(): { spectralAjv: string; requires: Record<string, string>; versions: Record<string, string> } {
  const { rule, spectralAjv } = locate();
  const fromSpectral = createRequire(spectralAjv);
  return { spectralAjv, requires: Object.fromEntries(VALIDATOR_REQUIRES.map((id) => [id, fromSpectral.resolve(id)])), versions: installedVersions(rule, spectralAjv) };
}

/** Spectral from node_modules (no bundle: a build that only ran tsc). */
export function spectralAsInstalled(): ParserSpectral {
  const { rule, spectralAjv } = locate();
  const fromSpectral = createRequire(spectralAjv);
  return { spectralAjv: fromSpectral(spectralAjv) as SpectralAjvModule, validatorRequire: (id) => fromSpectral(id), versions: installedVersions(rule, spectralAjv) };
}

/** The versions of every package whose code makes or runs the validators, each resolved from where its user resolves it. */
function installedVersions(rule: string, spectralAjv: string): Record<string, string> {
  const version = (from: string, name: string) => (createRequire(from)(`${name}/package.json`) as { version: string }).version;
  return {
    '@asyncapi/parser': version(rule, '@asyncapi/parser'),
    '@asyncapi/specs': version(rule, '@asyncapi/specs'),
    '@stoplight/spectral-functions': version(rule, '@stoplight/spectral-functions'),
    ajv: version(spectralAjv, 'ajv'),
    'ajv-formats': version(spectralAjv, 'ajv-formats'),
    'ajv-errors': version(spectralAjv, 'ajv-errors'),
  };
}

function schemaHash(schema: unknown): string {
  return createHash('sha256').update(JSON.stringify(schema)).digest('hex');
}

/** A rule schema's key: its content, dialect and whether all errors are asked for (ajv instances differ in that). */
function ruleKey(hash: string, dialect: string, allErrors: boolean): string {
  return `${hash}/${dialect}/${allErrors ? 'allErrors' : 'first'}`;
}

let servedCount = 0;

/** How many validators the build-time code has served in this process (tests, docs/performance.md). */
export function buildTimeValidatorsServed(): number {
  return servedCount;
}

let enabled = true;

/** Turns serving off and on (tests compare the diagnostics of both paths); on by default. */
export function setBuildTimeStructureValidators(on: boolean): void {
  enabled = on;
}

/**
 * Wraps the `createAjvInstances` of the parser's Spectral (the bundle's copy, or the package's)
 * so that the parser's structure schemas are served from the build-time code. Call before
 * parsing; does nothing when the build wrote no validators or they were made from other versions
 * than `parser.versions`. Returns whether the hook is in place.
 */
export function useBuildTimeStructureValidators(parser: ParserSpectral): boolean {
  const spectral = parser.spectralAjv;
  let manifest: Manifest;
  try {
    if (!existsSync(MANIFEST)) return false;
    manifest = JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest;
  } catch {
    return false;
  }
  if (JSON.stringify(parser.versions) !== JSON.stringify(manifest.packages)) return false;
  if (typeof spectral.createAjvInstances !== 'function') return false;
  if ((spectral.createAjvInstances as { [WRAPPED]?: true })[WRAPPED]) return true;

  /** Per schema object (the parser makes each once per process) and way asked: its build-time validator, or null. */
  const matched = new WeakMap<object, Map<string, Validate | null>>();
  const modules = new Map<string, Record<string, Validate>>();
  const load = (file: string, name: string): Validate | null => {
    let exports = modules.get(file);
    if (!exports) {
      try {
        exports = loadModule(join(DIR, file), parser.validatorRequire);
      } catch {
        return null; // a file gone since the build: Spectral's ajv compiles it
      }
      modules.set(file, exports);
    }
    return exports[name] ?? null;
  };
  const buildTime = (schema: Record<string, unknown>, dialect: string, allErrors: boolean): Validate | null => {
    let hash: string;
    try {
      hash = schemaHash(schema);
    } catch {
      return null; // a cyclic schema (a document's resolved payload): none of the build's
    }
    const entry = typeof schema.$id === 'string' ? manifest.schemas[schema.$id] : undefined;
    if (entry) return allErrors && entry.dialect === dialect && hash === entry.hash ? load(entry.file, entry.export) : null;
    const rule = manifest.rules[ruleKey(hash, dialect, allErrors)];
    return rule ? load(rule.file, 'default') : null;
  };

  const original = spectral.createAjvInstances;
  const wrapped = () => {
    const spectralValidator = original();
    return (schema: Record<string, unknown>, dialect: string, allErrors: boolean) => {
      if (enabled && typeof schema === 'object' && schema !== null) {
        let byWay = matched.get(schema);
        if (!byWay) matched.set(schema, (byWay = new Map()));
        const way = `${dialect}/${allErrors}`;
        let validate = byWay.get(way);
        if (validate === undefined) {
          validate = buildTime(schema, dialect, allErrors);
          byWay.set(way, validate);
        }
        if (validate) {
          servedCount++;
          return validate;
        }
      }
      return spectralValidator(schema, dialect, allErrors);
    };
  };
  spectral.createAjvInstances = Object.assign(wrapped, { [WRAPPED]: true as const });
  return true;
}

/** Writes one generated module, checking that it requires only what the parser's bundle can give it. */
function writeGenerated(file: string, source: string): void {
  const required = [...source.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]!);
  const unknown = required.filter((id) => !(VALIDATOR_REQUIRES as readonly string[]).includes(id));
  if (unknown.length > 0) throw new Error(`${file} requires ${unknown.join(', ')}: add it to VALIDATOR_REQUIRES`);
  // Escaped beyond Latin-1 so V8 keeps the source as a one-byte string (half the memory).
  const ascii = source.replace(/[^\0-\xff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  writeFileSync(join(DIR, file), `// Generated by \`npm run build\`; see src/asyncapi/structure-validators.ts.\n${ascii}\n`);
}

/** A generated module, run as CommonJS from Spectral's place (its `require`s are of Spectral's ajv and ajv-formats). */
function loadModule(file: string, require: (id: string) => unknown): Record<string, Validate> {
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(file, 'utf8')}\n})`, { filename: file });
  const module = { exports: {} as Record<string, Validate> };
  script.runInThisContext()(module.exports, require, module, file, dirname(file));
  return module.exports;
}

/**
 * Writes the validators of every AsyncAPI version the parser knows (scripts/precompile-asyncapi-
 * schemas.js, run by `npm run build`), one module per version with its resolved and unresolved
 * schema's, and one per schema of the parser's rules that Spectral's `schema` function runs.
 * Skipped when the files there were made from the same packages and schemas.
 */
export async function writeStructureValidators(): Promise<{ written: boolean; dir: string }> {
  const { rule, spectralAjv } = locate();
  const require = createRequire(rule);
  const packages = installedVersions(rule, spectralAjv);
  const { getSchema } = require(rule) as { getSchema: (formats: Set<unknown>, resolved: boolean) => Record<string, unknown> | undefined };
  const { AsyncAPIFormats } = require('@asyncapi/parser/cjs/ruleset/formats.js') as { AsyncAPIFormats: Map<string, unknown> };
  const spectral = require(spectralAjv) as SpectralAjvModule;
  const spectralRequire = createRequire(spectralAjv);
  const { detectDialect } = createRequire(require.resolve('@stoplight/spectral-functions'))('@stoplight/spectral-formats') as { detectDialect: (schema: unknown) => string | null };
  const standalone = (spectralRequire('ajv/dist/standalone') as { default: (ajv: unknown, refsOrValidate: unknown) => string }).default;
  const AjvClass = (spectralRequire('ajv') as { default: { prototype: { compile: (this: AjvLike, ...args: unknown[]) => unknown } } }).default;

  const versions = [...AsyncAPIFormats.keys()];
  const plan = versions.map((version) => {
    const formats = new Set([AsyncAPIFormats.get(version)]);
    const schemas = { resolved: getSchema(formats, true)!, unresolved: getSchema(formats, false)! };
    return { version, file: `asyncapi-${version}.generated.cjs`, schemas };
  });
  const manifest: Manifest = { packages, schemas: {}, rules: {} };
  for (const { file, schemas } of plan) {
    for (const [name, schema] of Object.entries(schemas)) {
      manifest.schemas[schema.$id as string] = { file, export: name, dialect: detectDialect(schema) ?? 'draft7', hash: schemaHash(schema) };
    }
  }
  // The rules' own schemas (`asyncapi-latest-version`'s `{const: ...}`, asked for in every parse,
  // in an ajv instance of its own): each in a module of its own.
  const ruleSchemas = new Map<string, { file: string; schema: Record<string, unknown>; dialect: string; allErrors: boolean }>();
  const schemaFunction = (createRequire(require.resolve('@stoplight/spectral-functions'))('@stoplight/spectral-functions') as { schema: unknown }).schema;
  for (const module of ['ruleset.js', 'v2/ruleset.js', 'v3/ruleset.js']) {
    for (const ruleset of Object.values(require(`@asyncapi/parser/cjs/ruleset/${module}`) as Record<string, unknown>)) {
      const rules = (ruleset as { rules?: Record<string, { then: unknown }> } | undefined)?.rules ?? {};
      for (const { then } of Object.values(rules)) {
        for (const t of [then].flat() as { function?: unknown; functionOptions?: { schema?: Record<string, unknown>; allErrors?: boolean; dialect?: string } }[]) {
          const options = t.functionOptions;
          if (t.function !== schemaFunction || typeof options?.schema !== 'object') continue;
          // As Spectral's `schema` function picks them.
          const dialect = (options.dialect === undefined || options.dialect === 'auto' ? detectDialect(options.schema) : options.dialect) ?? 'draft7';
          const allErrors = options.allErrors ?? false;
          const hash = schemaHash(options.schema);
          const file = `rule-${hash.slice(0, 16)}-${dialect}-${allErrors ? 'all-errors' : 'first-error'}.generated.cjs`;
          ruleSchemas.set(ruleKey(hash, dialect, allErrors), { file, schema: options.schema, dialect, allErrors });
        }
      }
    }
  }
  for (const [key, { file }] of ruleSchemas) manifest.rules[key] = { file };
  const files = [...plan.map(({ file }) => file), ...[...ruleSchemas.values()].map(({ file }) => file)];
  const upToDate = existsSync(MANIFEST) && readFileSync(MANIFEST, 'utf8') === `${JSON.stringify(manifest, null, 2)}\n` && files.every((file) => existsSync(join(DIR, file)));
  if (upToDate) return { written: false, dir: DIR };

  mkdirSync(DIR, { recursive: true });
  // Spectral's own ajv instance compiles each schema, as at run time: its `compile` is caught to
  // learn the instance and have it keep the source that standalone code is written from.
  interface AjvLike {
    opts: { code: { source?: boolean } };
  }
  const ownCompile = Object.hasOwn(AjvClass.prototype, 'compile');
  const compile = AjvClass.prototype.compile;
  let instance: AjvLike | undefined;
  AjvClass.prototype.compile = function (this: AjvLike, ...args: unknown[]) {
    instance = this;
    this.opts.code.source = true;
    return compile.apply(this, args);
  };
  try {
    for (const { version, file, schemas } of plan) {
      const validator = spectral.createAjvInstances();
      instance = undefined;
      // Resolved first, as the parser's rules run.
      for (const schema of [schemas.resolved, schemas.unresolved]) validator(schema, manifest.schemas[schema.$id as string]!.dialect, true);
      if (!instance) throw new Error(`no ajv compile seen for AsyncAPI ${version}`);
      writeGenerated(file, standalone(instance, { resolved: schemas.resolved.$id as string, unresolved: schemas.unresolved.$id as string }));
    }
    for (const { file, schema, dialect, allErrors } of ruleSchemas.values()) {
      instance = undefined;
      const validate = spectral.createAjvInstances()(schema, dialect, allErrors);
      if (!instance || !validate) throw new Error(`no ajv compile seen for the rule schema ${JSON.stringify(schema)}`);
      writeGenerated(file, standalone(instance, validate));
    }
  } finally {
    if (ownCompile) AjvClass.prototype.compile = compile;
    else delete (AjvClass.prototype as { compile?: unknown }).compile;
  }
  writeFileSync(MANIFEST, `${JSON.stringify(manifest, null, 2)}\n`);
  return { written: true, dir: DIR };
}
