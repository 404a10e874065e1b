import { relative, resolve } from 'node:path';
import { parseAsyncApi, type AsyncApiDocument, type AsyncApiMessage } from '../asyncapi/document.js';
import { locateInDocuments } from '../asyncapi/locate.js';
import { lookup, type AsyncApiRef } from '../asyncapi/lookup.js';
import { MAX_DOCUMENT_BYTES } from '../asyncapi/refs.js';
import { canonical } from '../core/canonical.js';
import { formatPath } from '../config/diagnostics.js';
import type { PathPart } from '../config/source.js';
import type { MessageContract, SchemaCheck } from '../kinds/contracts.js';
import type { CompileContext } from './context.js';
import type { AsyncApiPlan } from './types.js';

/**
 * The config's AsyncAPI documents (`asyncapi:`), as the compile sees them: loaded before the
 * (synchronous) rest of the compile, then asked for the contracts a validate step names.
 */
export class AsyncApiCatalog {
  /** The documents that loaded; undefined without `asyncapi:`. */
  private documents: AsyncApiDocument[] | undefined;
  /** Some document did not load (its problems are reported in it): unknown names are then not news. */
  private failed: boolean;
  readonly plans: AsyncApiPlan[] = [];
  /** Each message's payload is compiled once per load, however many steps name it. */
  private readonly payloadChecks = new Map<AsyncApiMessage, SchemaCheck | undefined>();

  constructor(private readonly ctx: CompileContext) {
    this.failed = ctx.hidden.asyncapi;
  }

  /** Parses the `asyncapi:` documents (asynchronously: their `$ref`s are resolved). */
  async load(): Promise<void> {
    const ctx = this.ctx;
    const raw = ctx.config.asyncapi;
    if (raw === undefined) return;
    this.documents = [];
    const paths = typeof raw === 'string' ? [raw] : raw;
    const seen = new Map<string, number>();
    const loaded = await Promise.all(
      paths.map(async (asWritten, i) => {
        const at: PathPart[] = typeof raw === 'string' ? ['asyncapi'] : ['asyncapi', i];
        const file = resolve(ctx.dir, asWritten);
        if (seen.has(file)) {
          ctx.report(at, 'EG_CONFIG_CONFLICT', `AsyncAPI document '${asWritten}' is listed twice`);
          return undefined;
        }
        seen.set(file, i);
        const text = ctx.readFile(file, asWritten, at);
        if (text === undefined) return undefined;
        const files = [file];
        const parsed = await parseAsyncApi(
          file,
          text,
          (ref) => {
            if (!files.includes(ref)) files.push(ref);
            return ctx.readRegularText(ref, MAX_DOCUMENT_BYTES);
          },
          { root: resolve(ctx.dir), remote: ctx.config.asyncapiRemoteRefs },
          ctx.config.asyncapiParser,
        );
        for (const p of parsed.problems) {
          ctx.diagnostics.push({ file: ctx.display(p.file), line: p.line, column: p.column, code: 'EG_CONFIG_ASYNCAPI', path: formatPath(p.path), message: `AsyncAPI: ${p.message}` });
        }
        if (!parsed.document) return undefined;
        const d = parsed.document;
        const plan: AsyncApiPlan = {
          asWritten,
          file,
          text,
          files,
          version: d.version,
          title: d.title,
          messages: [...new Set(d.messages.flatMap((m) => m.ids))],
          channels: d.channels.map((ch) => ch.name),
        };
        return { document: d, plan };
      }),
    );
    for (const l of loaded) {
      if (!l) {
        this.failed = true;
        continue;
      }
      this.documents.push(l.document);
      this.plans.push(l.plan);
    }
  }

  /**
   * The contracts (payload check, message id, channel) of what a validate step names. What the step
   * takes from the documents (each message's id, channel and resolved payload) is appended to
   * `stepInputs`, part of the route key: an edit elsewhere in a document (another message, its
   * info) leaves the route as it is, so a consume route keeps its connection and subscription
   * (spec §6: components whose config did not change are kept).
   */
  contracts(ref: AsyncApiRef, at: PathPart[], stepInputs: string[]): MessageContract[] | undefined {
    const ctx = this.ctx;
    const what = 'message' in ref ? 'message' : 'channel';
    if (!this.documents) {
      if (this.failed) return undefined;
      ctx.report(at, 'EG_CONFIG_ASYNCAPI_REF', `'${what}' names an AsyncAPI ${what}, but the config has no AsyncAPI document; add 'asyncapi: <file>' at the top level`);
      return undefined;
    }
    if (this.failed) return undefined;
    const found = lookup(this.documents, ref);
    if (!found.ok) {
      ctx.report(at, 'EG_CONFIG_ASYNCAPI_REF', found.message);
      return undefined;
    }
    const contracts: MessageContract[] = [];
    for (const match of found.matches) {
      stepInputs.push(canonical({ id: match.id, channel: match.channel, payload: match.message.payload, draft: match.message.draft }));
      if (!this.payloadChecks.has(match.message)) {
        const origin = `AsyncAPI message '${match.id ?? '(anonymous)'}'`;
        this.payloadChecks.set(
          match.message,
          ctx.jsonSchema(match.message.payload, at, origin, match.message.draft, undefined, (path) => this.placeOf(match.message, path)),
        );
      }
      const check = this.payloadChecks.get(match.message);
      if (!check) return undefined;
      contracts.push({ check, message: match.id, channel: match.channel });
    }
    return contracts;
  }

  /** `FILE:LINE:COL` of a place in a message's payload as its documents write it, when it can be found there. */
  private placeOf(message: AsyncApiMessage, path: readonly PathPart[]): string | undefined {
    const plan = this.plans.find((p) => p.file === message.document);
    if (!plan || !message.payloadAt) return undefined;
    const ctx = this.ctx;
    const found = locateInDocuments(plan.file, plan.text, message.payloadAt, path, (abs) => {
      try {
        return ctx.readRegularText(abs, MAX_DOCUMENT_BYTES);
      } catch {
        return undefined;
      }
    });
    // Relative to gateway.yaml's directory, as `asyncapi:` names documents: an upload's answer shows no host path.
    return found && `${relative(ctx.dir, found.file)}:${found.line}:${found.column}`;
  }
}
