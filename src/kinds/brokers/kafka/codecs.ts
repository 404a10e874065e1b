import kafkajs from 'kafkajs';
import { CODEC_IDS, compress, decompress, type CodecName } from '../../../codecs/compression.js';

const { CompressionCodecs } = kafkajs;

/**
 * Installs the five codecs of src/codecs/compression.ts into kafkajs (a process-wide table), so
 * its producers write and its consumers read every codec Kafka defines. kafkajs ships only gzip
 * and answers the others with KafkaJSNotImplemented, which used to kill a consume route for good.
 */
export function registerCodecs(): void {
  for (const codec of ['gzip', 'snappy', 'lz4', 'zstd'] as const satisfies readonly CodecName[]) {
    const table = CompressionCodecs as unknown as Record<number, () => unknown>;
    table[CODEC_IDS[codec]] = () => ({
      // kafkajs hands compress() its encoder, whose buffer holds the encoded records.
      compress: (encoder: { buffer: Buffer }) => compress(codec, encoder.buffer),
      decompress: (data: Buffer) => decompress(codec, data),
    });
  }
}
