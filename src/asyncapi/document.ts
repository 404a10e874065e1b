/**
 * AsyncAPI documents as the gateway uses them: parsed and validated by @asyncapi/parser (AsyncAPI
 * 2.0–3.1, YAML or JSON, `$ref`s to other files resolved, Avro payloads converted to JSON Schema),
 * then indexed by the names a config may use for a message or a channel.
 *
 * The parser is heavy (it builds a Spectral ruleset and pulls in hundreds of modules, and a parse
 * is hundreds of milliseconds of CPU), so it runs in a thread of its own (parser-thread.ts, the
 * parse itself in parse.ts), started on first use: a config without `asyncapi:` never loads it.
 */
import { canonical, hash } from '../core/canonical.js';
import { parseInThread, type ParserLimits } from './parser-thread.js';
import type { RefPolicy } from './refs.js';

/** A problem the parser found, positioned (1-based) in the file it is in: the document or a file it `$ref`s. */
export interface AsyncApiProblem {
  file: string;
  line: number;
  column: number;
  /** Where in the document, e.g. `['channels', 'light', 'publish']`. */
  path: (string | number)[];
  message: string;
}

export interface AsyncApiMessage {
  /**
   * Every name a config may use for it, the preferred first: its key under `components.messages`,
   * then (2.x) `messageId` or (3.x) its key in a channel's `messages`, then `name`.
   */
  readonly ids: readonly string[];
  /** Keys of the channels that carry it. */
  readonly channels: readonly string[];
  /** Its payload as a JSON Schema (`{}`, anything, when the message declares none). */
  readonly payload: Record<string, unknown>;
  /** The payload's `schemaFormat` when it is one eventgate cannot validate (neither JSON Schema nor converted by a schema parser). */
  readonly unsupportedFormat: string | undefined;
  /**
   * The JSON Schema draft its `schemaFormat` names (`application/schema+json;version=draft-2020-12`),
   * which a payload without a `$schema` of its own is compiled as; draft-07 (the AsyncAPI Schema
   * Object's) otherwise.
   */
  readonly draft: '04' | '07' | '2019' | '2020';
  /** Absolute path of the document that defines it. */
  readonly document: string;
  /**
   * Where its payload schema is written in `document`, `$ref`s not followed
   * (`components.messages.x.payload`); undefined for a converted one (Avro), which is not written there.
   */
  readonly payloadAt?: readonly (string | number)[];
}

export interface AsyncApiChannel {
  /** Its key under `channels`. */
  readonly name: string;
  /** 3.x `address`, when it differs from the key. */
  readonly address: string | undefined;
  readonly messages: readonly AsyncApiMessage[];
}

export interface AsyncApiDocument {
  /** Absolute path. */
  readonly file: string;
  /** The `asyncapi` version the document declares, e.g. `2.6.0`. */
  readonly version: string;
  readonly title: string;
  readonly messages: readonly AsyncApiMessage[];
  readonly channels: readonly AsyncApiChannel[];
}

export interface ParsedAsyncApi {
  document: AsyncApiDocument | undefined;
  problems: AsyncApiProblem[];
}

/** Reads a file for the parser's `$ref` resolution; throws when it cannot (the parser reports it at the `$ref`). */
export type FileReader = (absPath: string) => string;

interface CacheEntry {
  result: ParsedAsyncApi;
  /** Every local file the parse read through `$ref`, with the hash of what it read. */
  refs: Map<string, string>;
}

/**
 * Parsing takes a few hundred milliseconds, and a reload of gateway.yaml re-parses documents that
 * did not change; a parse is reused while the document's text and every file it read are the same.
 */
const cache = new Map<string, CacheEntry>();
const CACHE_SIZE = 32;

/**
 * Parses one AsyncAPI document. `read` serves the document's `$ref`s to local files (so the
 * caller learns, and can watch, every file the document depends on). `policy` says which
 * references may be followed (refs.ts); problems name files relative to its root.
 */
export async function parseAsyncApi(file: string, text: string, read: FileReader, policy: RefPolicy, limits?: Partial<ParserLimits>): Promise<ParsedAsyncApi> {
  const key = `${file}\0${hash(text)}\0${canonical(policy)}`;
  const cached = cache.get(key);
  if (cached && [...cached.refs].every(([ref, h]) => readHash(read, ref) === h)) return cached.result;
  // A parse the limits cut short is not cached (it has no refs): a document parsed within them is the same document under others.
  const { result, refs } = await parseInThread(file, text, read, policy, limits);
  if (refs) {
    cache.delete(key);
    cache.set(key, { result, refs: new Map(refs) });
    if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  }
  return result;
}

function readHash(read: FileReader, file: string): string {
  try {
    return hash(read(file));
  } catch {
    return 'missing';
  }
}
