/**
 * The parse of one AsyncAPI document by @asyncapi/parser, as the parser thread runs it
 * (parse-worker.ts): `$ref`s resolved through the caller's reader and the reference policy, the
 * parser's diagnostics turned into positioned problems, and the document indexed by the names a
 * config may use. It runs off the gateway's event loop: a parse takes a hundred milliseconds or
 * more of CPU (about a second for the first in a thread, which loads the parser), during which a
 * reload would otherwise hold every connection's traffic.
 */
import { bundled } from '../core/bundled.js';
import { avroToJsonSchema } from './avro.js';
import { hash } from '../core/canonical.js';
import { linkCircularRefs } from './circular-refs.js';
import type { AsyncApiChannel, AsyncApiDocument, AsyncApiMessage, ParsedAsyncApi } from './document.js';
import { pointerKeys, pointerOf } from '../core/json-pointer.js';
import { checkDocument, type CycleSite, displayPath, fetchRemote, localReadAllowed, refCycle, remoteAllowed, type RefPolicy, type RefProblem, type RefSite } from './refs.js';
import { type ParserSpectral, spectralAsInstalled, useBuildTimeStructureValidators } from './structure-validators.js';

/* The part of @asyncapi/parser used here (typed loosely: its typings pull in Spectral's). */
interface ParserDiagnostic {
  message: string;
  code: string | number;
  severity: number;
  source?: string;
  path: (string | number)[];
  range: { start: { line: number; character: number } };
}
interface Parser {
  parse(
    text: string,
    options: { source: string; __unstable: { resolver: { resolvers: { schema: string; order: number; read(uri: { path(): string; toString(): string }): string | Promise<string> }[] } } },
  ): Promise<{ document?: { json(): unknown }; diagnostics: ParserDiagnostic[] }>;
}

/** What the parser's bundle exports (scripts/bundle-vendor.js). */
export interface ParserModules extends ParserSpectral {
  Parser: new (options: { schemaParsers?: unknown[]; ruleset?: { recommended: boolean } }) => Parser;
  AvroSchemaParser: () => unknown;
}

let modules: ParserModules | undefined;

/**
 * The parser's packages, from one bundled file with its code cache (~800 module files otherwise;
 * without a bundle, the packages), with the AsyncAPI schemas' validators from the build in place
 * of compiling them in every parse (structure-validators.ts).
 */
export function parserModules(): ParserModules {
  modules ??= bundled<ParserModules>('asyncapi-parser', (require) => ({
    Parser: require('@asyncapi/parser').Parser,
    AvroSchemaParser: require('@asyncapi/avro-schema-parser').AvroSchemaParser,
    ...spectralAsInstalled(),
  }));
  useBuildTimeStructureValidators(modules);
  return modules;
}

let parserInstance: Parser | undefined;

/**
 * One parser per process, created on first use; the Avro schema parser is registered with it, its
 * conversion to JSON Schema replaced by avro.ts's (its own checks of the Avro schema are kept).
 */
function asyncApiParser(): Parser {
  const { Parser, AvroSchemaParser } = parserModules();
  const avro = AvroSchemaParser() as { parse(input: { data: unknown }): Promise<unknown> };
  const schemaParser = { ...avro, parse: async (input: { data: unknown }) => avroToJsonSchema(input.data) };
  // The "recommended" rules only give style advice (warnings), which is not reported: skip them.
  parserInstance ??= new Parser({ schemaParsers: [schemaParser], ruleset: { recommended: false } });
  return parserInstance;
}

/** Spectral severity 0; warnings and hints are style advice, not reasons to refuse a document. */
const ERROR = 0;
const SUMMARIES = [/must match "(then|else)" schema$/, /must match a schema in anyOf$/, /must match exactly one schema in oneOf$/, /must have required property "oneOf"$/];

/** A 2.x Message Object's fields: a `{oneOf: [...]}` message refuses each of them. */
const MESSAGE_FIELDS = new Set([
  'messageId',
  'headers',
  'payload',
  'correlationId',
  'schemaFormat',
  'contentType',
  'name',
  'title',
  'summary',
  'description',
  'tags',
  'externalDocs',
  'bindings',
  'examples',
  'traits',
]);

/**
 * An error of the branch a 2.x message did not take: a message is a Message Object or a `{oneOf:
 * [...]}` of them, and the parser lists the other shape's refusals beside the real error. A message
 * object's with an error of its own gets `Property "payload" is not expected to be here` for each of
 * its fields (with `must have required property "oneOf"`; a field holding a `$ref` said where the
 * `$ref` leads, another file's 1:1), and a `oneOf` whose message has an error gets `Property "oneOf" is not
 * expected to be here`: both sent readers to keys that are right.
 */
function isMessageBranchNoise(d: ParserDiagnostic, errors: readonly ParserDiagnostic[], messageIdField: boolean): boolean {
  const key = /^Property "(.+)" is not expected to be here$/.exec(d.message)?.[1];
  if (key === undefined || (key === 'messageId' && !messageIdField)) return false;
  const parent = d.path.slice(0, -1);
  if (key === 'oneOf') return d.path[d.path.length - 1] === 'oneOf' && parent[parent.length - 1] === 'message';
  if (!MESSAGE_FIELDS.has(key) && !key.startsWith('x-')) return false;
  const wantsOneOf = (at: readonly (string | number)[]) =>
    errors.some((e) => /must have required property "oneOf"$/.test(e.message) && e.path.length === at.length && e.path.every((k, i) => k === at[i]));
  // Said where a field's `$ref` leads (the root of another file, a place in the document): the
  // field is not in the path.
  if (d.path[d.path.length - 1] !== key) return errors.some((e) => /must have required property "oneOf"$/.test(e.message));
  return wantsOneOf(parent);
}

/**
 * What a refused `$ref` resolves to. The parser falls back to its own readers (which read any
 * file and fetch any URL) when ours throws, so a refusal must not throw: it is recorded, the
 * reference becomes this empty object, and the parse is reported as failed with the refusal.
 */
const REFUSED = '{}';

/** What a parse gives back: the result, and for one worth caching the local files it read with their hashes. */
export interface ParseOutcome {
  result: ParsedAsyncApi;
  refs?: [file: string, hash: string][];
}

/**
 * Parses one AsyncAPI document. `read` serves the document's `$ref`s to local files (the caller
 * learns, and can watch, every file the document depends on). `policy` says which references may
 * be followed (refs.ts); problems name files relative to its root.
 */
export async function parseDocument(file: string, written: string, read: (absPath: string) => Promise<string>, policy: RefPolicy): Promise<ParseOutcome> {
  const text = withoutBom(written);
  const first = checkDocument(file, text, policy, undefined, 0, true);
  if (first.problems.length > 0) return { result: { document: undefined, problems: first.problems } };
  const sites = new Map<string, RefSite>(first.targets);
  const refused: RefProblem[] = [];
  const refuse = (target: string, message: string) => {
    const site = sites.get(target) ?? { file, line: 1, column: 1, path: [] };
    refused.push({ ...site, message });
    return REFUSED;
  };
  /** The `$ref`s of every local document read so far, by file: a cycle may go through several. */
  const cycleSites = new Map<string, CycleSite[]>([[file, first.sites ?? []]]);
  /** Every document the parser was given, by path or URL: where a `$ref` it leaves as written stands (circular-refs.ts). */
  const texts = new Map<string, string>([[file, text]]);
  /** A document a `$ref` led to is checked like the first before the parser sees it. */
  const admit = (target: string, from: string, read: string, max?: number) => {
    const t = withoutBom(read);
    const checked = checkDocument(from, t, policy, max, sites.get(target)?.arrays ?? 0, false, first.asyncapi2);
    if (checked.problems.length > 0) {
      const site = sites.get(target);
      // Problems in a remote document are shown at the $ref that fetched it (a URL is no file to point into).
      for (const p of checked.problems) refused.push(site && from === target && /^https?:/.test(target) ? { ...site, message: `in '${target}': ${p.message}` } : p);
      return REFUSED;
    }
    for (const [k, v] of checked.targets) if (!sites.has(k)) sites.set(k, v);
    if (checked.sites && !cycleSites.has(from)) {
      cycleSites.set(from, checked.sites);
      // Before the parser follows it: one through a message went round until its time limit, or read the message as a schema.
      const cycle = checked.sites.some((s) => s.to !== from) ? refCycle([...cycleSites.values()].flat(), file, policy, from) : undefined;
      if (cycle) {
        refused.push({ file: cycle.file, line: cycle.line, column: cycle.column, path: [...cycle.path, '$ref'], message: cycle.message });
        return REFUSED;
      }
    }
    texts.set(from, t);
    return t;
  };

  const refs = new Map<string, string>();
  const parser = asyncApiParser();
  const remote = {
    order: 1,
    read: async (uri: { toString(): string }) => {
      const url = uri.toString();
      let allowed = false;
      try {
        allowed = remoteAllowed(new URL(url), policy);
      } catch {
        allowed = false;
      }
      if (!allowed) return refuse(url, `$ref '${url}' is not allowed: its origin is not listed in asyncapiRemoteRefs.origins`);
      const fetched = await fetchRemote(url, policy);
      if ('problem' in fetched) return refuse(url, fetched.problem);
      return admit(url, url, fetched.text, policy.remote?.maxBytes);
    },
  };
  const out = await parser.parse(text, {
    source: file,
    __unstable: {
      resolver: {
        resolvers: [
          {
            schema: 'file',
            order: 1, // before the parser's own file reader (0 would count as unset)
            read: async (uri) => {
              const path = decodeURIComponent(uri.path());
              const why = localReadAllowed(path, policy);
              if (why !== undefined) return refuse(path, `$ref refused: ${why}`);
              try {
                const t = await read(path);
                refs.set(path, hash(t));
                return admit(path, path, t);
              } catch (err) {
                refs.set(path, 'missing');
                // A file the gateway would not read (not a regular file, too large) is refused, never
                // thrown: the parser would fall back to its own reader, which reads it anyway.
                if (!/^E[A-Z]+: /.test((err as Error).message)) return refuse(path, `$ref refused: ${(err as Error).message}`);
                throw err;
              }
            },
          },
          { schema: 'http', ...remote },
          { schema: 'https', ...remote },
        ],
      },
    },
  });
  if (refused.length > 0) return { result: { document: undefined, problems: refused } };
  const errors = out.diagnostics.filter((d) => d.severity === ERROR);
  // A YAML syntax error makes the parser also report the half-read structure as invalid; the syntax error is the news.
  const syntax = errors.filter((d) => d.code === 'parser');
  // The AsyncAPI JSON Schema reports every failed branch of its if/then and oneOf besides the specific error.
  const summarised = errors.filter((d) => !SUMMARIES.some((re) => re.test(d.message)));
  // `messageId` is a Message Object field from 2.4 on: before, the message object refuses it too.
  const messageIdField = !/^\s*["']?asyncapi["']?\s*:\s*["']?2\.[0-3]\./m.test(text);
  const unbranched = summarised.filter((d) => !isMessageBranchNoise(d, errors, messageIdField));
  const specific = unbranched.length > 0 ? unbranched : summarised;
  const problems = (syntax.length > 0 ? syntax : specific.length > 0 ? specific : errors).map(
    (d) =>
      danglingRef(d, cycleSites, policy) ??
      unreadableRef(d, sites, policy) ??
      misspeltRefHolder(d, sites, policy) ?? {
        file: d.source ?? file,
        line: d.range.start.line + 1,
        column: Math.max(1, d.range.start.character + 1), // the parser says -1 when it has no place
        path: d.path,
        message: readableMessage(d.message, policy),
      },
  );
  if (problems.length > 0 || !out.document) {
    if (problems.length === 0) problems.push({ file, line: 1, column: 1, path: [], message: 'not an AsyncAPI document' });
    // Not cached: a failure may pass (a remote $ref that could not be fetched this time).
    return { result: { document: undefined, problems } };
  }
  const json = out.document.json() as Json;
  const dangling = linkCircularRefs(json, file, texts, policy).flatMap((d) => {
    const site = cycleSites.get(d.file)?.find((s) => s.at === pointerOf(d.keys));
    return site ? [danglingAt(site, displayPath(site.to, policy))] : [];
  });
  if (dangling.length > 0) return { result: { document: undefined, problems: dangling } };
  return { result: { document: indexDocument(file, json), problems: [] }, refs: [...refs] };
}

/**
 * A `$ref` to a place another file does not have: the parser says "'#/nope' does not exist @
 * '/abs/c.yaml'" at 1:1 of the file holding the `$ref`, with a path that is none. Said at that
 * `$ref`, found among the ones refCycle reads (`sites`, by file), when it is there.
 */
function danglingRef(d: ParserDiagnostic, sites: ReadonlyMap<string, CycleSite[]>, policy: RefPolicy): RefProblem | undefined {
  // `''` (no `#`): the whole of another file, which has nothing in it (empty, or being written).
  const m = /^'#?([^']*)' does not exist(?: @ '(.+)')?$/.exec(d.message);
  if (!m || d.range.start.line > 0) return undefined;
  const keys = pointerKeys(m[1]!);
  if (!keys) return undefined;
  const to = m[2];
  const names = (s: CycleSite) => s.target.length === keys.length && s.target.every((k, i) => k === keys[i]);
  // Without "@ file" it is a `$ref` inside its own file, and the parser's source may be another.
  const site = to ? sites.get(d.source ?? '')?.find((s) => s.to === to && names(s)) : [...sites.values()].flat().find((s) => s.ref.startsWith('#') && names(s));
  if (site && keys.length === 0)
    return { file: site.file, line: site.line, column: site.column, path: [...site.path, '$ref'], message: `$ref '${site.ref}' points at nothing: ${displayPath(site.to, policy)} is empty` };
  return site && danglingAt(site, displayPath(site.to, policy));
}

/**
 * A `$ref` to a file that cannot be read, in a file a `$ref` led to: the parser says it at 1:1 of
 * that file (in the root document it has the `$ref`'s place). Said at the `$ref` that names it.
 */
function unreadableRef(d: ParserDiagnostic, sites: ReadonlyMap<string, RefSite>, policy: RefPolicy): RefProblem | undefined {
  const m = FS_ERROR.exec(d.message);
  if (!m || d.range.start.line > 0) return undefined;
  const site = sites.get(m[2]!);
  return site && { file: site.file, line: site.line, column: site.column, path: site.path, message: readableMessage(d.message, policy) };
}

/**
 * A field the document's schema does not have, holding a `$ref` to another file (`paylod: {$ref:
 * x.yaml}`): the parser says it at 1:1 of that file, with no path. Said at the `$ref`, when the
 * first `$ref` to that file is the one under that field.
 */
function misspeltRefHolder(d: ParserDiagnostic, sites: ReadonlyMap<string, RefSite>, policy: RefPolicy): RefProblem | undefined {
  const key = /^Property "(.+)" is not expected to be here$/.exec(d.message)?.[1];
  if (key === undefined || d.path.length > 0 || d.source === undefined) return undefined;
  const site = sites.get(d.source);
  if (site === undefined || site.path[site.path.length - 2] !== key) return undefined;
  return { file: site.file, line: site.line, column: site.column, path: site.path, message: readableMessage(d.message, policy) };
}

/** A `$ref` whose place is not in its document, said at the `$ref`. */
function danglingAt(site: CycleSite, doc: string): RefProblem {
  return { file: site.file, line: site.line, column: site.column, path: [...site.path, '$ref'], message: `$ref '${site.ref}' points at nothing: ${doc} has no '#${pointerOf(site.target)}'` };
}

/** A file-system error the parser passes through: its code and the file. */
const FS_ERROR = /^(E[A-Z]+): .*, open '(.*)'$/;

/**
 * The parser passes file-system errors through as they are (`ENOENT: no such file or directory,
 * open '/x'`); they are shown with the path relative to the config's directory, and no other
 * message may carry an absolute path of it either.
 */
export function readableMessage(message: string, policy: RefPolicy): string {
  const fs = FS_ERROR.exec(message);
  if (fs) return `cannot read the file this $ref points to (${fs[1]}: ${displayPath(fs[2]!, policy)})`;
  const thrown = /^Error thrown during (.*?)\. Name: (\w+), message: ([\s\S]*?)(?:, stack: ([\s\S]*))?$/.exec(message);
  if (thrown) return parserFailure(thrown[1]!, thrown[3]!, thrown[4] ?? '', policy);
  return message.split(`${policy.root}/`).join('');
}

/**
 * An exception inside the parser (a JavaScript error of its code, on a document shape it does not
 * expect) is said in the gateway's words: what it was doing, what kind of value it met, and the
 * rule's JSONPath when its stack names one; never the error's class, its JavaScript words or the stack.
 */
function parserFailure(during: string, error: string, stack: string, policy: RefPolicy): string {
  const [what, look] = whatTheParserMet(error, policy);
  const rule = /\n\s+at (\$[^\s]*)/.exec(stack)?.[1];
  return `the AsyncAPI parser could not read this document: during ${during}${rule ? ` (the rule over ${rule.replace(/\[\?\(.*$/, '')})` : ''} ${what}; ${look}`;
}

const LOOK_FOR_A_VALUE = 'look for a null, empty or mistyped value there';

/** What the parser met, told by its exception's words, and where the author should look. */
function whatTheParserMet(error: string, policy: RefPolicy): [what: string, look: string] {
  const read = /^Cannot read properties of (null|undefined) \(reading '(.*)'\)/.exec(error);
  if (read) return [`it met ${read[1] === 'null' ? 'a null value' : 'a missing value'} where it expected a map with \`${read[2]}\``, LOOK_FOR_A_VALUE];
  if (/^Maximum call stack size exceeded/.test(error)) {
    return [
      'it ran out of stack, as it does on a $ref cycle through a message or channel (a payload that $refs the message it belongs to) or on nesting too deep',
      "look for such a $ref, or break the cycle with the schema's own $defs",
    ];
  }
  if (/ is not (a function|iterable)/.test(error)) return ['it met a value of a type it does not expect', LOOK_FOR_A_VALUE];
  return [`it failed (${error.split(`${policy.root}/`).join('').split('\n')[0]})`, / is not /.test(error) ? LOOK_FOR_A_VALUE : 'look for an odd value there'];
}

type Json = Record<string, any>;

interface MessageDraft {
  /** Where the root document first has it (components first), as written: its payload's problems are located from there. */
  at: (string | number)[];
  componentKeys: string[];
  channelKeys: string[];
  channels: string[];
  json: Json;
}

/**
 * Builds the index from the parser's resolved document. `$ref`s are resolved to shared objects,
 * so a message referenced from components and from several channels is one object: one message.
 */
function indexDocument(file: string, doc: Json): AsyncApiDocument {
  const v2 = String(doc.asyncapi).startsWith('2.');
  const drafts = new Map<object, MessageDraft>();
  const draft = (m: Json, at: (string | number)[]) => {
    let d = drafts.get(m);
    if (!d) drafts.set(m, (d = { at, componentKeys: [], channelKeys: [], channels: [], json: m }));
    return d;
  };
  for (const [key, m] of Object.entries((doc.components?.messages ?? {}) as Record<string, Json>)) {
    if (isObject(m)) draft(m, ['components', 'messages', key]).componentKeys.push(key);
  }
  const channelMessages = new Map<string, Json[]>();
  for (const [name, ch] of Object.entries((doc.channels ?? {}) as Record<string, Json>)) {
    if (!isObject(ch)) continue;
    const here: [Json, (string | number)[]][] = [];
    if (v2) {
      for (const op of ['publish', 'subscribe']) {
        const m = ch[op]?.message;
        if (!isObject(m)) continue;
        const at = ['channels', name, op, 'message'];
        if (!Array.isArray(m.oneOf)) here.push([m, at]);
        else for (const [i, one] of (m.oneOf as unknown[]).entries()) if (isObject(one)) here.push([one, [...at, 'oneOf', i]]);
      }
    } else {
      for (const [key, m] of Object.entries((ch.messages ?? {}) as Record<string, Json>)) {
        if (!isObject(m)) continue;
        draft(m, ['channels', name, 'messages', key]).channelKeys.push(key);
        here.push([m, ['channels', name, 'messages', key]]);
      }
    }
    for (const [m, at] of here) {
      const d = draft(m, at);
      if (!d.channels.includes(name)) d.channels.push(name);
    }
    channelMessages.set(name, [...new Set(here.map(([m]) => m))]);
  }

  const messages = new Map<object, AsyncApiMessage>();
  for (const d of drafts.values()) {
    // 3.x dropped messageId: a message's key in a channel's `messages` is its id there.
    const candidates = v2 ? [...d.componentKeys, d.json.messageId, d.json.name] : [...d.componentKeys, ...d.channelKeys, d.json.name];
    const ids = [...new Set(candidates.filter((id): id is string => typeof id === 'string' && id !== ''))];
    messages.set(d.json, { ids, channels: d.channels, document: file, ...payloadOf(d.json, v2, d.at) });
  }
  const channels: AsyncApiChannel[] = [...channelMessages].map(([name, ms]) => {
    const address = v2 ? undefined : (doc.channels[name] as Json).address;
    return { name, address: typeof address === 'string' && address !== name ? address : undefined, messages: ms.map((m) => messages.get(m)!) };
  });
  return { file, version: String(doc.asyncapi), title: String(doc.info?.title ?? ''), messages: [...messages.values()], channels };
}

/** Formats whose schemas are JSON Schema (AsyncAPI Schema Object is a superset of draft-07). */
const JSON_SCHEMA_FORMATS = ['application/vnd.aai.asyncapi', 'application/schema+json', 'application/schema+yaml'];

/**
 * The JSON Schema draft a `schemaFormat` names (`application/schema+json;version=draft-2020-12`):
 * the draft a payload without its own `$schema` is compiled as. The AsyncAPI Schema Object (the
 * default format), draft-07 and draft-06, and a version the gateway does not know, are draft-07.
 */
function draftOf(format: unknown): AsyncApiMessage['draft'] {
  if (typeof format !== 'string' || !/^application\/schema(\+json|\+yaml)?(;|$)/.test(format)) return '07';
  const version = /;\s*version=([^;\s]*)/.exec(format)?.[1] ?? '';
  return version === 'draft-2020-12' ? '2020' : version === 'draft-2019-09' ? '2019' : version === 'draft-04' ? '04' : '07';
}

function payloadOf(m: Json, v2: boolean, at: (string | number)[]): Pick<AsyncApiMessage, 'payload' | 'unsupportedFormat' | 'draft' | 'payloadAt'> {
  let schema: unknown = m.payload;
  let payloadAt = [...at, 'payload'];
  let format: unknown = v2 ? m.schemaFormat : undefined;
  // A schema parser (Avro) leaves the original behind when it converted a payload to JSON Schema.
  let converted = v2 && m['x-parser-original-payload'] !== undefined;
  if (!v2 && isObject(schema) && 'schemaFormat' in schema && 'schema' in schema) {
    // 3.x Multi Format Schema Object
    format = schema.schemaFormat;
    converted = schema['x-parser-original-payload'] !== undefined;
    schema = schema.schema;
    payloadAt = [...payloadAt, 'schema'];
  }
  if (schema === undefined || schema === true) return { payload: {}, unsupportedFormat: undefined, draft: '07' };
  if (typeof format === 'string' && !converted && !JSON_SCHEMA_FORMATS.some((f) => format.startsWith(f))) {
    return { payload: {}, unsupportedFormat: format, draft: '07' };
  }
  if (schema === false) return { payload: { not: {} }, unsupportedFormat: undefined, draft: '07' };
  // A converted payload (Avro) is the parser's JSON Schema, draft-07.
  // A converted payload is not the one written: its problems have no place in the document.
  return { payload: decycle(schema) as Record<string, unknown>, unsupportedFormat: undefined, draft: converted ? '07' : draftOf(format), payloadAt: converted ? undefined : payloadAt };
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The parser resolves a recursive schema (`children: {items: {$ref: '#/...node'}}`) into a cyclic
 * object, which ajv cannot compile; each back edge becomes a `$ref` to the JSON Pointer of the
 * schema it loops to. The parser's own `x-parser-*` annotations, and `$id`s below the root, are dropped on the way.
 */
export function decycle(root: unknown): unknown {
  let loopsToRoot = false;
  const walk = (base: string) => {
    const ancestors: object[] = [];
    const pointers: string[] = [];
    // `at`: what `v` is, a schema, an object of names (`properties`) or a value (`const`, `enum`).
    const visit = (v: unknown, pointer: string, at: 'schema' | 'names' | 'value' = 'schema'): unknown => {
      if (typeof v !== 'object' || v === null) return v;
      const loop = ancestors.indexOf(v);
      if (loop !== -1) {
        if (loop === 0) loopsToRoot = true;
        return { $ref: `#${pointers[loop]}` };
      }
      ancestors.push(v);
      pointers.push(pointer);
      const out = Array.isArray(v)
        ? v.map((x, i) => visit(x, `${pointer}/${i}`, at === 'value' ? 'value' : 'schema'))
        : Object.fromEntries(
            Object.entries(v)
              // A nested `$id` (a schema file with one, which the parser inlined) names a resource
              // of its own: twice in a payload (two properties of one `money.json`) ajv refused it
              // as "resolves to more than one schema", and the `$ref`s written here, pointers from
              // the payload's root, would resolve inside it. The parser resolved every `$ref` that
              // used it, so it goes; the payload's own `$id` stays. Only keywords go: a property
              // named `$id` and a `const`/`enum` value holding one are the payload's, kept.
              .filter(([k]) => at !== 'schema' || !(k.startsWith('x-parser-') || (k === '$id' && pointer !== '')))
              .map(([k, x]) => [k, visit(x, `${pointer}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`, childAt(at, k))]),
          );
      ancestors.pop();
      pointers.pop();
      return out;
    };
    return visit(root, base);
  };
  const plain = walk('');
  if (!loopsToRoot || typeof plain !== 'object' || plain === null) return plain;
  // ajv cannot resolve a bare `#` in a schema it does not register: the root moves under definitions.
  const inner = walk(`/definitions/${ROOT}`) as Record<string, unknown>;
  const wrapper: Record<string, unknown> = { $ref: `#/definitions/${ROOT}`, definitions: { [ROOT]: inner } };
  if (inner.$schema !== undefined) wrapper.$schema = inner.$schema;
  return wrapper;
}

const ROOT = 'eventgate-payload';

/**
 * What the value under key `k` of an object that is `at` is: in a schema, a keyword's value (data,
 * names or a schema); under names, always a schema, whatever the name (a property called
 * `default` or `const` is a schema like any other); in data, data.
 */
function childAt(at: 'schema' | 'names' | 'value', k: string): 'schema' | 'names' | 'value' {
  if (at !== 'schema') return at === 'names' ? 'schema' : 'value';
  return VALUE_KEYWORDS.has(k) ? 'value' : NAME_KEYWORDS.has(k) ? 'names' : 'schema';
}
/** Keywords whose value is an object of names (a property's, a definition's) to schemas. */
const NAME_KEYWORDS = new Set(['properties', 'patternProperties', 'definitions', '$defs', 'dependentSchemas', 'dependencies']);
/** Keywords whose value is data, not schemas. */
const VALUE_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example']);

/**
 * The text without the byte order mark an editor on Windows starts UTF-8 with: the parser counted
 * it as a column of every line (each place one short), as the config loader does not.
 */
function withoutBom(text: string): string {
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}
