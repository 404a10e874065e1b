import { AsyncLocalStorage } from 'node:async_hooks';
import { createRequire } from 'node:module';
import kafkajs from './kafkajs.js';
import { CODEC_IDS, compress, decompress, DEFAULT_MAX_DECOMPRESSED_BYTES, type CodecName } from '../../../codecs/compression.js';
import { batchStandInHeaders } from './stand-ins.js';

const { CompressionCodecs } = kafkajs;
/** kafkajs' fetch decoder ends a partition's records quietly at this error (a truncated tail); its typings omit the message argument. */
const PartialFetch = kafkajs.KafkaJSPartialMessageError as unknown as new (message: string) => Error;
const require = createRequire(import.meta.url);
/** kafkajs' own record encoder (2.2.4, pinned): the exact inverse of the decoder that reads our stand-ins. */
const encodeRecord = require('kafkajs/src/protocol/recordBatch/record/v0') as (r: { offsetDelta: number; key: Buffer | null; value: Buffer | null; headers: Record<string, Buffer> }) => {
  buffer: Buffer;
};

/**
 * Installs the five codecs of src/codecs/compression.ts into kafkajs (a process-wide table), so
 * its producers write and its consumers read every codec Kafka defines. kafkajs ships only gzip
 * and answers the others with KafkaJSNotImplemented, which used to kill a consume route for good.
 *
 * A batch that cannot be decompressed (corrupt, or codec ids 5-7 that Kafka does not define) must
 * not fail the whole fetch: kafkajs would then stop every partition of that broker node, for ever.
 * Instead the codec answers with stand-in records, one per record the batch holds, that carry a
 * marker header only this process knows; the subscription sees them at the batch's offsets and
 * dead-letters the raw batch (or stops that partition): ./stand-ins.ts.
 */
export function registerCodecs(): void {
  const table = CompressionCodecs as unknown as Record<number, () => unknown>;
  for (const codec of ['gzip', 'snappy', 'lz4', 'zstd'] as const satisfies readonly CodecName[]) {
    table[CODEC_IDS[codec]] = () => ({
      // kafkajs hands compress() its encoder, whose buffer holds the encoded records.
      compress: (encoder: { buffer: Buffer }) => compress(codec, encoder.buffer),
      decompress: async (data: Buffer) => {
        const budget = budgets.getStore() ?? new DecodeBudget(DEFAULT_MAX_DECOMPRESSED_BYTES);
        const allowance = budget.allowance();
        let records: Buffer;
        try {
          records = await decompress(codec, data, { maxBytes: allowance.maxBytes });
        } catch (err) {
          if (!allowance.first) budget.defer();
          // A batch over the bound (a decompression bomb) is undecodable like a corrupt one.
          return standIns(data, (err as Error).message, err as Error);
        }
        budget.spent(records.length);
        return records;
      },
    });
  }
  for (const id of [5, 6, 7]) {
    table[id] = () => ({
      compress: () => Promise.reject(new Error(`codec id ${id} is not a Kafka codec`)),
      decompress: async (data: Buffer) => standIns(data, `the batch names codec id ${id}, which Kafka does not define`),
    });
  }
}

/**
 * What the fetch being decoded may still decompress. Each batch is bounded by the broker's
 * `consumer.maxBatchBytes`, and so are a fetch's batches together: one fetch (1 MiB per
 * partition) can hold hundreds of small batches that each stay under the bound, and kafkajs keeps
 * every record of a fetch until it is handled. A batch that does not decompress within what the
 * fetch has left ends that partition's part of the fetch as a truncated tail does (kafkajs keeps
 * the records before it and fetches the rest again from there), and so does every batch after it
 * in the fetch, undecompressed: nothing is skipped, and a fetch costs at most twice the bound. The
 * first batch of a fetch gets the whole bound, so a consumer always moves on, and only a batch
 * that fails as a first batch is undecodable.
 */
class DecodeBudget {
  private used = 0;
  private full = false;
  constructor(readonly maxBatchBytes: number) {}

  /** What the next batch may decompress to; throws (ending the partition's records) once the fetch is full. */
  allowance(): { maxBytes: number; first: boolean } {
    if (this.full) this.defer();
    return { maxBytes: this.maxBatchBytes - this.used, first: this.used === 0 };
  }

  spent(bytes: number): void {
    this.used += bytes;
  }

  /** The batch in hand did not fit in what was left: it and the rest of the fetch wait for later fetches. */
  defer(): never {
    this.full = true;
    throw new PartialFetch(`this fetch decompressed ${this.used} bytes of its bound (consumer.maxBatchBytes ${this.maxBatchBytes}); the rest is fetched again`);
  }
}

/**
 * The budget of the consumer whose fetch is being decoded. The codec table is kafkajs' and
 * process-wide, so a broker's `consumer.maxBatchBytes` travels with the consumer's async context
 * instead (withBatchBound): kafkajs decodes a fetch response in the continuation of the
 * consumer's own request, so the store seen here is that consumer's.
 */
const budgets = new AsyncLocalStorage<DecodeBudget>();

/**
 * Runs `fn` (a consumer's connect and run) so that what it fetches decompresses to at most
 * `maxBytes` per batch and per fetch; the consumer must call newFetchBudget on FETCH_START.
 */
export function withBatchBound<T>(maxBytes: number, fn: () => T): T {
  return budgets.run(new DecodeBudget(maxBytes), fn);
}

/**
 * A fresh budget for the fetch about to be sent: called from a consumer's FETCH_START listener,
 * which kafkajs runs synchronously right before the fetch whose response it then decodes in the
 * same async context, so the fetch and its decoding see the new budget.
 */
export function newFetchBudget(): void {
  const budget = budgets.getStore();
  if (budget) budgets.enterWith(new DecodeBudget(budget.maxBatchBytes));
}

// Record batch v2 (magic 2) layout before the records: the compressed section kafkajs hands a
// codec is the tail of the batch buffer, so the header sits right before it in the same memory.
const HEADER_BYTES = 61;
const AT_LENGTH = 8;
const AT_MAGIC = 16;
const AT_ATTRIBUTES = 21;
const AT_LAST_OFFSET_DELTA = 23;
const AT_RECORD_COUNT = 57;
/** A batch's length field counts the bytes after it: the rest of the header and the records. */
const AFTER_LENGTH = HEADER_BYTES - AT_LENGTH - 4;

/**
 * Stand-in records for the batch whose compressed section is `data`: as many as the batch says it
 * holds, the first carrying the raw batch, the last at the batch's last offset so committing it
 * moves past the whole batch. When the header cannot be found and checked, the error goes to
 * kafkajs after all (the route's consumer then restarts with backoff and reports it).
 */
function standIns(data: Buffer, reason: string, err: Error = new Error(reason)): Buffer {
  if (data.byteOffset < HEADER_BYTES) throw err;
  const batch = Buffer.from(data.buffer, data.byteOffset - HEADER_BYTES, HEADER_BYTES + data.length);
  const consistent = batch.readInt8(AT_MAGIC) === 2 && batch.readInt32BE(AT_LENGTH) === AFTER_LENGTH + data.length && (batch.readInt16BE(AT_ATTRIBUTES) & 0x07) !== 0;
  const count = consistent ? batch.readInt32BE(AT_RECORD_COUNT) : -1;
  const lastOffsetDelta = consistent ? batch.readInt32BE(AT_LAST_OFFSET_DELTA) : -1;
  if (count < 1 || lastOffsetDelta < count - 1) throw err;
  const headers = batchStandInHeaders(reason);
  const records: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const offsetDelta = i === count - 1 ? lastOffsetDelta : i;
    records.push(encodeRecord({ offsetDelta, key: null, value: i === 0 ? Buffer.from(batch) : null, headers }).buffer);
  }
  return Buffer.concat(records);
}
