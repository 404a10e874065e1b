/** The header JetStream's duplicate window drops a second message by (nats-server reads this exact name only). */
export const MSG_ID = 'Nats-Msg-Id';

/** What begins every `Nats-Msg-Id` the gateway makes, so that a route reading it back knows it is not a publisher's. */
export const GATEWAY_MSG_ID = 'eventgate:';

/** A JetStream publish's `Nats-Msg-Id` (`id`, none: sent without one), in place of the message's header `replaces`. */
export interface MsgIdChange {
  id: string | undefined;
  replaces: string | undefined;
}

/**
 * The `Nats-Msg-Id` a JetStream publish of a message with `headers` sends, when it is not the
 * headers as they are (undefined):
 * - the message's own, set by its publisher (in any case): it wins, under the name nats-server
 *   reads (2.9 reads `Nats-Msg-Id` only, so the `nats-msg-id` an HTTP client's header becomes
 *   dropped nothing), unless `replacesOwn` (PublishOptions.replacesOwnId: a dead-letter write)
 *   and this write has an id of its own;
 * - one the gateway made (GATEWAY_MSG_ID: a route wrote the message to a stream this route reads):
 *   it named that write, and is never sent again; this write's replaces it, or none;
 * - otherwise this write's: `consumed` (a consume route's id of the message for this target,
 *   PublishOptions.messageId) and the subject, when there is one.
 */
export function msgIdChange(headers: Readonly<Record<string, string>>, consumed: string | undefined, subject: string, replacesOwn = false): MsgIdChange | undefined {
  const own = headers[MSG_ID] !== undefined ? MSG_ID : headers['nats-msg-id'] !== undefined ? 'nats-msg-id' : consumed === undefined ? undefined : ownName(headers);
  const ours = consumed === undefined ? undefined : `${GATEWAY_MSG_ID}${consumed}:${subject}`;
  if (own === undefined) return ours === undefined ? undefined : { id: ours, replaces: undefined };
  const value = headers[own]!;
  if (value.startsWith(GATEWAY_MSG_ID) || (replacesOwn && ours !== undefined)) return { id: ours, replaces: own };
  return own === MSG_ID ? undefined : { id: value, replaces: own };
}

/**
 * The `Nats-Msg-Id` a message's publisher set (in any case), if any: not one the gateway made
 * (GATEWAY_MSG_ID), which named another write.
 */
export function publisherMsgId(headers: Readonly<Record<string, string>>): string | undefined {
  const name = headers[MSG_ID] !== undefined ? MSG_ID : headers['nats-msg-id'] !== undefined ? 'nats-msg-id' : ownName(headers);
  const value = name === undefined ? undefined : headers[name];
  return value === undefined || value.startsWith(GATEWAY_MSG_ID) ? undefined : value;
}

/**
 * A message's identity by its publisher's `Nats-Msg-Id` `<P>` on `route`: `<route>:published/<P>`,
 * in place of a source identity (MessageContext.source) where the publisher's id, sent as it is,
 * would make a stream drop a copy as the duplicate of another (a fan-out's second target, a
 * dead-letter write: spec-checklist 99, 121). None without such an id.
 */
export function publishedIdentity(route: string, headers: Readonly<Record<string, string>>): string | undefined {
  const id = publisherMsgId(headers);
  return id === undefined ? undefined : `${route}:published/${id}`;
}

/** The message's `Nats-Msg-Id` header in a case other than the two usual ones, if any. */
function ownName(headers: Readonly<Record<string, string>>): string | undefined {
  for (const n in headers) if (n.length === MSG_ID.length && n.toLowerCase() === 'nats-msg-id') return n;
  return undefined;
}
