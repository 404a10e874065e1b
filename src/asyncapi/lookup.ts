import { basename } from 'node:path';
import { canonical } from '../core/canonical.js';
import { didYouMean } from '../config/suggest.js';
import type { AsyncApiDocument, AsyncApiMessage } from './document.js';

/** What a `validate` step names: one message, or every message of one channel. */
export type AsyncApiRef = { message: string } | { channel: string };

/** A message the step accepts, with the metadata expressions see as `$message` and `$channel`. */
export interface MessageMatch {
  message: AsyncApiMessage;
  /** The message's preferred id (components key, else messageId, else name); null for an anonymous message. */
  id: string | null;
  /** Key of the channel: the one named, or the message's only channel (null when it has several or none). */
  channel: string | null;
}

export type LookupResult = { ok: true; matches: MessageMatch[] } | { ok: false; message: string };

const LISTED = 12;

/** Finds what `ref` names across the config's documents; when nothing (or more than one thing) fits, says why. */
export function lookup(documents: readonly AsyncApiDocument[], ref: AsyncApiRef): LookupResult {
  const where = documents.length === 1 ? `the AsyncAPI document` : `the AsyncAPI documents`;
  if ('message' in ref) {
    const id = ref.message;
    const all = documents.flatMap((d) => d.messages);
    const found = all.filter((m) => m.ids.includes(id));
    if (found.length === 0) {
      const known = [...new Set(all.flatMap((m) => m.ids))];
      return { ok: false, message: `AsyncAPI message '${id}' is not defined in ${where}${didYouMean(id, known)}${list('messages', known)}` };
    }
    if (found.length > 1 && !sameContract(found)) {
      return { ok: false, message: `AsyncAPI message id '${id}' names ${found.length} different messages (${found.map((m) => describe(m, id)).join('; ')}); give them distinct ids` };
    }
    const m = found[0]!;
    const channels = new Set(found.flatMap((x) => x.channels));
    return unsupported([m], id) ?? { ok: true, matches: [{ message: m, id: m.ids[0] ?? null, channel: channels.size === 1 ? [...channels][0]! : null }] };
  }
  const name = ref.channel;
  const all = documents.flatMap((d) => d.channels.map((channel) => ({ channel, file: basename(d.file) })));
  // A key names one channel of its document, so it comes first: a 3.x channel keyed `orders` stays
  // nameable when another one's address is `orders`.
  const byKey = all.filter(({ channel: c }) => c.name === name);
  const found = byKey.length > 0 ? byKey : all.filter(({ channel: c }) => c.address === name);
  if (found.length === 0) {
    const known = [...new Set(all.flatMap(({ channel: c }) => (c.address ? [c.name, c.address] : [c.name])))];
    return { ok: false, message: `AsyncAPI channel '${name}' is not defined in ${where}${didYouMean(name, known)}${list('channels', known)}` };
  }
  if (found.length > 1) {
    const places = found.map(({ channel: c, file }) => (c.name === name ? `in ${file}` : `key '${c.name}' of ${file}`)).join('; ');
    const fix = byKey.length > 0 ? 'rename one in its document, or name it by its address' : 'name one by its key';
    return { ok: false, message: `AsyncAPI channel '${name}' names ${found.length} channels (${places}); ${fix}` };
  }
  const channel = found[0]!.channel;
  if (channel.messages.length === 0) return { ok: false, message: `AsyncAPI channel '${name}' declares no messages to validate against` };
  return unsupported(channel.messages) ?? { ok: true, matches: channel.messages.map((m) => ({ message: m, id: m.ids[0] ?? null, channel: channel.name })) };
}

/**
 * Whether the messages an id names are one message of several documents: each in a document of its
 * own, with one contract (payload, draft, format), as when the documents `$ref` one shared
 * definition (`common.yaml#/components/messages/OrderPlaced`). They were told to "give them
 * distinct ids", which a shared definition cannot. Two messages of one document stay two.
 */
function sameContract(found: readonly AsyncApiMessage[]): boolean {
  if (new Set(found.map((m) => m.document)).size !== found.length) return false;
  const contract = (m: AsyncApiMessage) => canonical({ payload: m.payload, draft: m.draft, format: m.unsupportedFormat ?? null });
  const first = contract(found[0]!);
  return found.every((m) => contract(m) === first);
}

/** A message whose payload eventgate cannot check; `asked`: the id the step named it by (its messageId, say), named so rather than by its preferred id. */
function unsupported(messages: readonly AsyncApiMessage[], asked?: string): LookupResult | undefined {
  const m = messages.find((x) => x.unsupportedFormat !== undefined);
  if (!m) return undefined;
  const id = asked ?? m.ids[0];
  return {
    ok: false,
    message: `AsyncAPI message ${id ? `'${id}'` : `of channel '${m.channels[0]}'`} has a payload in schema format '${m.unsupportedFormat}', which eventgate cannot validate (supported: JSON Schema / AsyncAPI Schema, and Avro)`,
  };
}

/** Where a message `id` names is; by its preferred id too when that is another, as two messages of one channel differ only so. */
function describe(m: AsyncApiMessage, id: string): string {
  const which = m.ids[0] !== undefined && m.ids[0] !== id ? `'${m.ids[0]}' ` : '';
  return `${which}${m.channels.length > 0 ? `in channel '${m.channels[0]}' of ${basename(m.document)}` : `in components of ${basename(m.document)}`}`;
}

function list(what: string, names: string[]): string {
  if (names.length === 0) return `, which defines no ${what}`;
  const shown = names.slice(0, LISTED).join(', ');
  return `; defined ${what}: ${shown}${names.length > LISTED ? `, ... (${names.length - LISTED} more)` : ''}`;
}
