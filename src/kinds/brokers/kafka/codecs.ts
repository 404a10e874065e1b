import { AsyncLocalStorage } from 'node:async_hooks';
import kafkajs, { decideCrcChecks } from './kafkajs.js';
import { CODEC_IDS, compress, decompress, DEFAULT_MAX_DECOMPRESSED_BYTES, type CodecName } from '../../../codecs/compression.js';
import { UndecodableBatch } from './stand-ins.js';

const { CompressionCodecs } = kafkajs;
/** kafkajs' fetch decoder ends a partition's records quietly at this error (a truncated tail); its typings omit the message argument. */
const PartialFetch = kafkajs.KafkaJSPartialMessageError as unknown as new (message: string) => Error;

/**
 * Installs the five codecs of src/codecs/compression.ts into kafkajs (a process-wide table), so
 * its producers write and its consumers read every codec Kafka defines. kafkajs ships only gzip
 * and answers the others with KafkaJSNotImplemented, which used to kill a consume route for good.
 *
 * A batch that cannot be decompressed (corrupt, or codec ids 5-7 that Kafka does not define) must
 * not fail the whole fetch: kafkajs would then stop every partition of that broker node, for ever.
 * Instead the codec answers UndecodableBatch, and the batch decoder (kafkajs.ts' decodeBatch)
 * hands the consumer stand-in records at the batch's offsets, with a marker header only this
 * process knows; the subscription dead-letters the raw batch (or stops that partition): ./stand-ins.ts.
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
          throw new UndecodableBatch((err as Error).message);
        }
        budget.spent(records.length);
        return records;
      },
    });
  }
  decideCrcChecks(() => budgets.getStore()?.checkCrcs ?? true);
  for (const id of [5, 6, 7]) {
    table[id] = () => ({
      compress: () => Promise.reject(new Error(`codec id ${id} is not a Kafka codec`)),
      decompress: () => Promise.reject(new UndecodableBatch(`the batch names codec id ${id}, which Kafka does not define`)),
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
  /** `checkCrcs`: the consumer's `consumer.checkCrcs`, which travels with its budget (kafkajs.ts' decodeBatch asks it). */
  constructor(
    readonly maxBatchBytes: number,
    readonly checkCrcs = true,
  ) {}

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
 * `maxBatchBytes` per batch and per fetch, its batches' CRC-32C checked unless `checkCrcs` is
 * false; the consumer must call newFetchBudget on FETCH_START.
 */
export function withBatchBound<T>(consumer: { maxBatchBytes: number; checkCrcs: boolean }, fn: () => T): T {
  return budgets.run(new DecodeBudget(consumer.maxBatchBytes, consumer.checkCrcs), fn);
}

/**
 * A fresh budget for the fetch about to be sent: called from a consumer's FETCH_START listener,
 * which kafkajs runs synchronously right before the fetch whose response it then decodes in the
 * same async context, so the fetch and its decoding see the new budget.
 */
export function newFetchBudget(): void {
  const budget = budgets.getStore();
  if (budget) budgets.enterWith(new DecodeBudget(budget.maxBatchBytes, budget.checkCrcs));
}
