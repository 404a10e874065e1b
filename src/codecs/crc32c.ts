import { crc32c as native } from '@node-rs/crc32';

/**
 * CRC-32C (Castagnoli), the checksum of Kafka record batches: every produce request the gateway
 * writes and every batch the kafka listener checks or rebuilds goes through it. @node-rs/crc32 is
 * a napi build with prebuilt binaries on npm (hardware CRC instructions where the CPU has them):
 * 2.6 GB/s here, against 0.4 for slicing-by-8 in JavaScript and ~0.06 for @aws-crypto/crc32c.
 */
export function crc32c(data: Uint8Array): number {
  return native(data as Buffer);
}
