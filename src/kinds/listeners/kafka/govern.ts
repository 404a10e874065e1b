/**
 * What a kafka listener's routes do to a Produce request: every record of a governed topic goes
 * through its route's chain. Any record the chain refuses refuses the whole request with
 * INVALID_RECORD (nothing is forwarded, so a client never has to guess which records landed);
 * records the chain changed (a validation tag, a transform, edited headers) are written back into
 * their batch, which is rebuilt with the same codec, record count and producer fields; batches
 * with no change, and topics no route names, go on as the client's own bytes.
 */
import { splitBatches, decodeRecords, encodeBatch, isControlBatch, verifyCrc, type BatchCompression, type KafkaRecord, type RawBatch, type RecordHeader } from '../../../codecs/record-batch.js';
import { ErrorCode, readProduceRequest, writeProduceError, writeProduceRequest, type PartitionError, type ProducePartition, type RequestHeader } from '../../../codecs/kafka-protocol/messages.js';
import { ProtocolError } from '../../../codecs/kafka-protocol/wire.js';
import type { RouteEntry } from '../../contracts.js';
import { decodeValue, encodeValue, type Message, type MessageContext } from '../../../core/message.js';
import type { Outcome } from '../../../core/outcome.js';

export type Governed =
  /** Send `body` upstream (the client's own bytes when nothing changed); `acks` 0 means no response will come. */
  | { forward: Buffer; acks: number }
  /** Answer the client with this response body (null for acks=0: the client expects none). */
  | { respond: Buffer | null };

export interface GovernContext {
  /** The route governing a topic now (looked up per request, so a reload applies to the next one). */
  route(topic: string): RouteEntry | undefined;
  compression: BatchCompression;
  remoteAddress: string | undefined;
}

/** Throws ProtocolError when the request itself cannot be read (the connection is then closed). */
export function governProduce(header: RequestHeader, body: Buffer, ctx: GovernContext): Governed | Promise<Governed> {
  const req = readProduceRequest(body, header);
  const routed = req.topics.flatMap((t) => {
    const route = ctx.route(t.name);
    return route ? [{ topic: t.name, partitions: t.partitions, route }] : [];
  });
  if (routed.length === 0) return { forward: body, acks: req.acks };
  return (async (): Promise<Governed> => {
    const refused = new Map<string, PartitionError>();
    let changed = false;
    await Promise.all(
      routed.flatMap(({ topic, partitions, route }) =>
        partitions.map(async (p) => {
          const result = await governPartition(topic, p, route, ctx);
          if ('refused' in result) refused.set(`${topic}\0${p.index}`, result.refused);
          else if (result.records !== p.records) {
            p.records = result.records;
            changed = true;
          }
        }),
      ),
    );
    if (refused.size > 0) {
      const response = writeProduceError(header, req, ErrorCode.INVALID_RECORD, refused, 'not written: another record of this produce request was refused');
      return { respond: req.acks === 0 ? null : response };
    }
    return { forward: changed ? writeProduceRequest(body, header, req) : body, acks: req.acks };
  })();
}

type PartitionResult = { records: Buffer | null } | { refused: PartitionError };

async function governPartition(topic: string, p: ProducePartition, route: RouteEntry, ctx: GovernContext): Promise<PartitionResult> {
  if (p.records === null || p.records.length === 0) return { records: p.records };
  let batches: RawBatch[];
  try {
    // The CRC is checked only for batches rebuilt here (below); the broker checks the others.
    batches = splitBatches(p.records, { checkCrc: false });
  } catch (err) {
    return { refused: { recordErrors: [], message: `route '${route.name}' cannot read these records: ${(err as Error).message}` } };
  }
  const recordErrors: { index: number; message: string }[] = [];
  const rebuilt: (Buffer | undefined)[] = await Promise.all(
    batches.map(async (batch) => {
      if (isControlBatch(batch.attributes)) return undefined;
      let records: KafkaRecord[];
      try {
        records = await decodeRecords(batch, ctx.compression);
      } catch (err) {
        recordErrors.push({ index: 0, message: `cannot read the batch: ${err instanceof ProtocolError ? err.message : (err as Error).message}` });
        return undefined;
      }
      const baseTimestamp = Number(batch.baseTimestamp);
      const mctx = context(route, ctx);
      const messages: Message[] = new Array(records.length);
      const pending: (Outcome | Promise<Outcome>)[] = new Array(records.length);
      let waits = false;
      for (let i = 0; i < records.length; i++) {
        const m = (messages[i] = toMessage(records[i]!, topic, p.index, baseTimestamp));
        const o = (pending[i] = route.checkRecord ? route.checkRecord(m, mctx) : route.handle(m, mctx));
        if (o instanceof Promise) waits = true;
      }
      // Only a chain with an asynchronous step costs a promise per record.
      const outcomes = waits ? await Promise.all(pending) : (pending as Outcome[]);
      let edited: KafkaRecord[] | undefined;
      outcomes.forEach((outcome, i) => {
        if (outcome.outcome === 'delivered') {
          const next = outcome.message ? applyChanges(records[i]!, messages[i]!, outcome.message) : records[i]!;
          if (next !== records[i]) (edited ??= records.slice())[i] = next;
        } else if (outcome.outcome !== 'filtered') {
          recordErrors.push({ index: i, message: describe(outcome) });
        }
      });
      if (!edited || recordErrors.length > 0) return undefined;
      // Never launder a corrupted batch into one with a good CRC.
      try {
        verifyCrc(batch);
      } catch (err) {
        recordErrors.push({ index: 0, message: (err as Error).message });
        return undefined;
      }
      return encodeBatch(batch, edited, ctx.compression);
    }),
  );
  if (recordErrors.length > 0) {
    const first = recordErrors[0]!;
    const more = recordErrors.length > 1 ? ` (and ${recordErrors.length - 1} more)` : '';
    return { refused: { recordErrors, message: `route '${route.name}' refused record ${first.index}: ${first.message}${more}` } };
  }
  if (rebuilt.every((b) => b === undefined)) return { records: p.records };
  return { records: Buffer.concat(batches.map((b, i) => rebuilt[i] ?? b.bytes)) };
}

function context(route: RouteEntry, ctx: GovernContext): MessageContext {
  return { route: route.name, remoteAddress: ctx.remoteAddress };
}

const NO_HEADERS: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** A record as a message (spec §3): JSON values parsed, headers as UTF-8 strings (the last of repeated names). */
function toMessage(rec: KafkaRecord, topic: string, partition: number, baseTimestamp: number): Message {
  // Steps never change a message in place (they return new ones), so records without headers can share one object.
  let headers = NO_HEADERS;
  if (rec.headers.length > 0) {
    headers = {};
    for (const h of rec.headers) headers[h.key] = h.value === null ? '' : h.value.toString('utf8');
  }
  return {
    value: rec.value === null ? null : decodeValue(rec.value.toString('utf8')),
    key: rec.key === null ? null : rec.key.toString('utf8'),
    headers,
    topic,
    partition,
    offset: null,
    timestamp: baseTimestamp + rec.timestampDelta,
  };
}

/**
 * The record with what the chain changed: a new value, headers set or removed. Headers the chain
 * left alone keep their original bytes and order (repeated names and binary values included).
 * Returns the record itself when nothing changed, so its batch keeps the client's bytes.
 */
function applyChanges(rec: KafkaRecord, before: Message, out: Message): KafkaRecord {
  if (out.value === before.value && out.headers === before.headers) return rec;
  // Steps that keep a value pass the same object on; a transform makes a new one.
  const valueChanged = out.value !== before.value;
  const names = Object.keys(out.headers);
  let headers: RecordHeader[] | undefined;
  if (names.length !== Object.keys(before.headers).length || names.some((n) => before.headers[n] !== out.headers[n])) {
    headers = [];
    const written = new Set<string>();
    for (const h of rec.headers) {
      if (!(h.key in out.headers)) continue;
      if (before.headers[h.key] === out.headers[h.key]) headers.push(h);
      else if (!written.has(h.key)) headers.push({ key: h.key, value: Buffer.from(out.headers[h.key]!, 'utf8') });
      written.add(h.key);
    }
    for (const n of names) if (!written.has(n)) headers.push({ key: n, value: Buffer.from(out.headers[n]!, 'utf8') });
  }
  if (!valueChanged && !headers) return rec;
  return {
    ...rec,
    value: valueChanged ? (out.value === null ? null : Buffer.from(encodeValue(out.value), 'utf8')) : rec.value,
    headers: headers ?? rec.headers,
  };
}

function describe(outcome: Exclude<Outcome, { outcome: 'delivered' | 'filtered' }>): string {
  if (outcome.outcome === 'deadlettered') return outcome.errors.join('; ');
  const p = outcome.problem;
  return p.errors && p.errors.length > 0 ? `${p.detail}: ${p.errors.join('; ')}` : p.detail;
}
