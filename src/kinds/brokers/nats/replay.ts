import type { Consumer, DeliverPolicy, JetStreamManager, JsMsg, NatsConnection, StreamConfig } from 'nats';
import type { Message } from '../../../core/message.js';
import { chunksOf, FOREIGN_POSITIONS, holdsNothing, namesNoPartitionOf, type Retained, type RetainedChunk } from '../../contracts.js';

/** At most this many messages are read back per call; older ones count as no longer retained (as Kafka's replay). */
export const MAX_REPLAY_MESSAGES = 10_000;
/** A pull of a replay that has not brought its messages by then gives up (the client streams from now). */
const REPLAY_TIMEOUT_MS = 30_000;
/**
 * The idle heartbeat each pull asks of the server. A pull sent after the stream (or the replay's
 * consumer) was deleted gets no answer at all from nats-server (2.9.10: no status, no
 * heartbeat) until its expiry; two missed heartbeats make nats.js look the consumer up, and a
 * "stream not found" or "consumer not found" ends the pull within ~2 heartbeats, not 30 s.
 * (A pull waiting when the deletion comes gets the server's 409 "Consumer Deleted" at once.) Not
 * shorter: a missed heartbeat on a busy host costs a look-up and a pull asked again.
 */
const REPLAY_HEARTBEAT_MS = 2_000;
/**
 * What one pull may bring, as the replay's caller asks for them (Retained.chunks), in bytes (as
 * the server counts a message: subject, reply, headers and payload), and PULL_MESSAGES. A count alone (128 messages) let a pull of 1 MB messages hold 128 MB.
 */
const REPLAY_PULL_BYTES = 1024 * 1024;
/**
 * The messages nats.js asks of a pull bounded in bytes. When that many come within the bytes the
 * server ends the pull without a status, and nats.js' fetch waits for the pull's expiry (it
 * counts the bytes not taken as pending): the replay leaves the pull after the last of them.
 * Messages that fill the bytes exactly end it the same way (the messages not taken stay pending),
 * so the replay counts the bytes too (sizeOf).
 */
export const PULL_MESSAGES = 100;

/**
 * What an event-stream client missed on a JetStream subject (or filter): the stream's messages of
 * that filter after the client's position (`after.get(0)`, a stream sequence: JetStream messages
 * are partition 0, offset their sequence), up to the last one stored now. Read through an ordered
 * consumer of the replay's own (ephemeral, no acknowledgements): the route's durable consumer and
 * what it has acknowledged are not touched. Nothing to read back is found without waiting: the
 * last message of the filter is asked for first (`last_by_subj`), and the read stops there. The
 * messages are pulled REPLAY_PULL_BYTES at a time, each pull when the caller asks for it.
 */
export async function readStream(nc: NatsConnection, jsm: JetStreamManager, stream: string, filter: string, after: ReadonlyMap<number, bigint>, toMessage: (m: JsMsg) => Message): Promise<Retained> {
  const { state, created, config } = await jsm.streams.info(stream);
  const seen = after.get(0);
  const wanted = seen === undefined ? state.first_seq : Number(seen) + 1;
  // Past the stream's end: the stream was deleted and made again since the id was given. Reading
  // after it would skip, without a word, everything it holds now; resume from the oldest instead.
  const ahead = wanted > state.last_seq + 1;
  let from = ahead ? state.first_seq : Math.max(wanted, state.first_seq);
  let truncated = !ahead && wanted < state.first_seq;
  const last = await lastOf(jsm, stream, filter);
  const gap = () =>
    ahead
      ? `Last-Event-ID is past the end of stream '${stream}' (it was made again since); resuming from the oldest retained event`
      : namesNoPartitionOf(after, (p) => p === 0)
        ? FOREIGN_POSITIONS
        : truncated
          ? `some events after Last-Event-ID ${removedBy(config)}, or are more than ${MAX_REPLAY_MESSAGES} messages back; resuming from the oldest retained event`
          : undefined;
  // JetStream messages are partition 0: a position on another, or past the stream's end, is not this stream's.
  const forget = [...after.keys()].filter((p) => p !== 0 || ahead);
  const ends = new Map(last === undefined ? [] : [[0, BigInt(last)]]);
  if (last === undefined || last < from) return { chunks: chunksOf([]), close: holdsNothing, gap: gap(), forget, ends, partitions: [0] };
  if (last - from >= MAX_REPLAY_MESSAGES) {
    from = last - MAX_REPLAY_MESSAGES + 1;
    truncated = true;
  }
  const consumer = await nc.jetstream().consumers.get(stream, {
    // A string, not a list: nats-server before 2.10 knows only the one filter_subject.
    filterSubjects: filter,
    deliver_policy: 'by_start_sequence' as DeliverPolicy,
    opt_start_seq: from,
  });
  let deleted: Promise<void> | undefined;
  const close = () =>
    (deleted ??= consumer.delete().then(
      () => undefined,
      () => undefined,
    ));
  const same = () => sameStream(jsm, stream, created);
  return { chunks: pulls(consumer, stream, last, toMessage, close, same), close, gap: gap(), forget, ends, partitions: [0] };
}

/**
 * What removed a stream's oldest messages, as far as its config tells: nats-server keeps no record
 * of a purge, so a stream with limits may have lost them to either; one without limits (and
 * `limits` retention) only to a purge or deletes (spec-checklist 5076: `(its limits)` was said for an
 * operator's purge too). With `discard: new` a full stream refuses new messages instead of removing
 * old ones: only `max_age`, and `max_msgs_per_subject` without `discard_new_per_subject`, remove any.
 */
function removedBy(config: Pick<StreamConfig, 'name' | 'retention' | 'discard' | 'discard_new_per_subject' | 'max_msgs' | 'max_bytes' | 'max_age' | 'max_msgs_per_subject'>): string {
  const stream = `stream '${config.name}'`;
  if (config.retention === 'interest' || config.retention === 'workqueue') return `may no longer be in ${stream} (its ${config.retention} retention removes a message once consumed)`;
  const set = (v: number | undefined) => typeof v === 'number' && v > 0;
  const refusesNew = config.discard === 'new';
  const limited =
    set(config.max_age) || (set(config.max_msgs_per_subject) && !(refusesNew && config.discard_new_per_subject === true)) || (!refusesNew && (set(config.max_msgs) || set(config.max_bytes)));
  return limited ? `may no longer be retained by ${stream} (its limits, or a purge)` : `are no longer in ${stream} (purged or deleted: it has no limits that remove messages)`;
}

/**
 * The ordered consumer's messages up to sequence `last` (or one after which the filter has nothing
 * more: it was removed meanwhile), a pull per chunk; each pull continues where the last ended.
 * Done or ended early (the client gone), the consumer is deleted (`close`, Retained.close's, which
 * a caller that never began the pulls calls itself): left, the server kept it for its inactivity
 * threshold (nats.js' ordered consumers: 5 minutes), one per resume.
 */
async function* pulls(consumer: Consumer, stream: string, last: number, toMessage: (m: JsMsg) => Message, close: () => Promise<void>, same: () => Promise<void>): AsyncGenerator<RetainedChunk> {
  try {
    yield* pulled(consumer, stream, last, toMessage, same);
  } finally {
    await close();
  }
}

/**
 * pulls() without the deletion: a pull of at most REPLAY_PULL_BYTES per chunk. A message larger
 * than that ends a pull at once with none (the server's 409 "Message Size Exceeds MaxBytes"; the
 * message stays next): it is pulled alone, whole, as a Kafka read takes a first batch larger
 * than its bound. A pull that ends with nothing is followed by a look at the stream (`same`): the
 * ordered consumer ends a pull whose consumer went away (two missed heartbeats) with nothing, and
 * its next pull would make the consumer again on whatever stream has the name now (the broker
 * declares a deleted stream again), where it waits for the pull's expiry.
 */
async function* pulled(consumer: Consumer, stream: string, last: number, toMessage: (m: JsMsg) => Message, same: () => Promise<void>): AsyncGenerator<RetainedChunk> {
  const expired = () => new Error(`stream '${stream}' did not give back its messages up to sequence ${last} within ${REPLAY_TIMEOUT_MS} ms`);
  const pull = async (bound: { max_bytes: number } | { max_messages: number }) => {
    const batch = await consumer.fetch({ ...bound, expires: REPLAY_TIMEOUT_MS, idle_heartbeat: REPLAY_HEARTBEAT_MS }).catch((err: unknown) => {
      throw gone(err, stream);
    });
    const messages: Message[] = [];
    let bytes = 0;
    try {
      for await (const m of batch) {
        messages.push(toMessage(m));
        bytes += sizeOf(m);
        if (m.seq >= last || m.info.pending === 0) return { messages, reached: true };
        // The server ends the pull here and says nothing: nats.js would wait for its expiry (30 s).
        if (messages.length === PULL_MESSAGES || bytes >= REPLAY_PULL_BYTES) break;
      }
    } catch (err) {
      throw gone(err, stream);
    }
    return { messages, reached: false };
  };
  for (;;) {
    const asked = Date.now();
    let got = await pull({ max_bytes: REPLAY_PULL_BYTES });
    if (got.messages.length === 0 && !got.reached) {
      await same();
      // Nothing within the pull's expiry: the server did not give the messages back.
      if (Date.now() - asked >= REPLAY_TIMEOUT_MS) throw expired();
      got = await pull({ max_messages: 1 });
      if (got.messages.length === 0) throw expired();
    }
    yield { messages: got.messages };
    if (got.reached) return;
  }
}

/**
 * A pull's failure, said as what it means when the stream or the replay's consumer went away
 * under the read (nats.js' 404 "stream not found" / "consumer not found" after missed heartbeats,
 * the server's 409 "Consumer Deleted"): the gateway's log line names the deletion. Others as they are.
 */
function gone(err: unknown, stream: string): unknown {
  const { code, message } = err as { code?: unknown; message?: unknown };
  const said = typeof message === 'string' ? message.toLowerCase() : '';
  if (said === 'stream not found') return deleted(stream, err);
  if (said === 'consumer not found' || (code === '409' && said === 'consumer deleted')) return new Error(`the replay's consumer on stream '${stream}' was deleted while it read`, { cause: err });
  return err;
}

/** The read's end when its stream is gone, or is another of the same name (deleted and made again). */
function deleted(stream: string, cause: unknown): Error {
  return new Error(`stream '${stream}' was deleted while its events were being replayed`, { cause });
}

/** Throws deleted() when `stream` is not there, or is not the one made at `created` (the read's). */
async function sameStream(jsm: JetStreamManager, stream: string, created: string): Promise<void> {
  let now: string;
  try {
    now = (await jsm.streams.info(stream)).created;
  } catch (err) {
    if (/stream not found/i.test((err as Error).message)) throw deleted(stream, err);
    throw err;
  }
  if (now !== created) throw deleted(stream, `made again at ${now}`);
}

/**
 * A message's size as nats-server counts it against a pull's bytes: its subject, reply (the ack
 * subject), headers and payload, which nats.js' inner Msg gives (`size()`; the JsMsg type does not
 * show it). Without it (another nats.js), subject and payload only: a count that falls short
 * leaves a pull the server ended to its expiry, as before, never one early.
 */
export function sizeOf(m: JsMsg): number {
  const inner = (m as { msg?: { size?: () => number } }).msg;
  return typeof inner?.size === 'function' ? inner.size() : m.subject.length + m.data.length;
}

/** The sequence of the last message stored on `filter`, or undefined when the stream holds none. */
async function lastOf(jsm: JetStreamManager, stream: string, filter: string): Promise<number | undefined> {
  try {
    return (await jsm.streams.getMessage(stream, { last_by_subj: filter })).seq;
  } catch (err) {
    if ((err as { code?: unknown }).code === '404') return undefined;
    throw err;
  }
}
