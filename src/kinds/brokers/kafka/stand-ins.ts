import { randomBytes } from 'node:crypto';
import type { KafkaMessage } from 'kafkajs';

/**
 * Stand-in records: what kafkajs' decoding hands the consumer in place of records it cannot
 * decode, so that the fetch goes on (a throw there fails the whole fetch response: every partition
 * of that broker node) and the subscription, seeing one at its offset, dead-letters the raw bytes
 * or halts that partition. A batch that cannot be decoded (no codec can decompress it, its records do not
 * match its header) stands in as a record at its first offset, holding its bytes, and one at its
 * last, so that committing it moves past the whole batch (kafkajs.ts' decodeBatch); a record that cannot be read (its header count impossible, its fields past its
 * end) as one record (kafkajs.ts' decodeRecord).
 */

/** Headers of a batch's and a record's stand-ins: random per process, so no record from a topic can pose as one. */
const BATCH_MARKER = `eventgate-undecodable-${randomBytes(8).toString('hex')}`;
const RECORD_MARKER = `${BATCH_MARKER}-record`;
const LAST_OFFSET = `${BATCH_MARKER}-last-offset`;

/** What a stand-in stands for, as the subscription learns of it. */
export interface StandIn {
  /** A whole record batch (its records' stand-ins share it), or the one record at the stand-in's offset. */
  unit: 'batch' | 'record';
  reason: string;
  /** The bytes as the cluster sent them: a batch's on its first stand-in only, a record's on its own. */
  bytes: Buffer | undefined;
  /** With `bytes`: the last offset the batch covers, as its header says, bounded by the next batch of its fetch (a record's is its own offset). */
  lastOffset?: string;
}

/**
 * A codec's answer for a batch it cannot decompress (corrupt, past its bound, a codec id Kafka does
 * not define): the batch decoder (kafkajs.ts) stands the batch in rather than fail the fetch.
 */
export class UndecodableBatch extends Error {
  override name = 'UndecodableBatch';
}

/** The headers of a batch's stand-ins: why, and the last offset the batch covers (its header's, or bounded by the next batch). */
export function batchStandInHeaders(reason: string, lastOffset: string): Record<string, Buffer> {
  return { [BATCH_MARKER]: Buffer.from(reason), [LAST_OFFSET]: Buffer.from(lastOffset) };
}

/** The headers of a record's stand-in. */
export function recordStandInHeaders(reason: string): Record<string, Buffer> {
  return { [RECORD_MARKER]: Buffer.from(reason) };
}

/** The stand-in's story when `message` is one, else undefined. */
export function undecodable(message: KafkaMessage): StandIn | undefined {
  const headers = message.headers;
  if (headers === undefined) return undefined;
  const batch = headers[BATCH_MARKER];
  if (batch !== undefined) {
    const bytes = message.value ?? undefined;
    // From the batch decoder, not kafkajs' Batch.lastOffset(): that is the last of the whole fetch,
    // which on a cluster holds the batches after it too.
    const lastOffset = bytes && String(headers[LAST_OFFSET]);
    return { unit: 'batch', reason: String(batch), bytes, lastOffset };
  }
  const record = headers[RECORD_MARKER];
  if (record !== undefined) return { unit: 'record', reason: String(record), bytes: message.value ?? undefined };
  return undefined;
}
