import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { crc32c } from '../../src/codecs/crc32c.js';

/** The definition, one bit at a time: what the sliced tables must agree with. */
function bitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('CRC-32C', () => {
  it('gives the check values of the standard (RFC 3720 B.4 and the "123456789" check)', () => {
    assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
    assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
    assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
    assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
    assert.equal(crc32c(Buffer.alloc(0)), 0);
  });

  it('agrees with the bitwise definition at every length and offset, views into larger buffers included', () => {
    const data = randomBytes(2100);
    for (let length = 0; length < 70; length++) for (const from of [0, 1, 3, 7]) assert.equal(crc32c(data.subarray(from, from + length)), bitwise(data.subarray(from, from + length)));
    for (const length of [511, 1024, 2049]) assert.equal(crc32c(data.subarray(5, 5 + length)), bitwise(data.subarray(5, 5 + length)));
  });
});
