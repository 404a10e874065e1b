import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { approxMessageBytes, approxValueBytes } from '../../src/core/heap-size.js';

describe('approxValueBytes: the heap estimate behind memory-topic retention bounds', () => {
  it('counts 2 bytes a character and 16 a scalar, 72 a container plus its keys', () => {
    assert.equal(approxValueBytes('ab'), 20);
    assert.equal(approxValueBytes(7), 16);
    assert.equal(approxValueBytes(null), 16);
    assert.equal(approxValueBytes({ a: 'xy', b: 1 }), 72 + 2 + 20 + 2 + 16);
    assert.equal(approxValueBytes([1, [2, 'z']]), 72 + 16 + 72 + 16 + 18);
    assert.equal(approxValueBytes(Buffer.alloc(10)), 82);
    assert.equal(approxValueBytes({ b: Buffer.alloc(10), n: null, u: undefined }), 72 + 2 + 82 + 2 + 16 + 2 + 16);
  });

  it('counts an object without a prototype (as transforms build them) as a plain one', () => {
    const bare = Object.setPrototypeOf({}, null) as Record<string, unknown>;
    bare.streetlightId = 7;
    bare.nested = { x: [true, 'yes'] };
    assert.equal(approxValueBytes(bare), approxValueBytes({ streetlightId: 7, nested: { x: [true, 'yes'] } }));
    assert.equal(approxValueBytes(bare), 72 + 26 + 16 + 12 + 72 + 2 + 72 + 16 + 22);
  });

  it('walks deep values without recursion', () => {
    let deep: unknown = 0;
    for (let i = 0; i < 100_000; i++) deep = [deep];
    assert.equal(approxValueBytes(deep), 100_000 * 72 + 16);
  });

  it('adds the key and each header to the value', () => {
    const msg = { value: { a: 1 }, key: 'k', headers: { h: 'vv' }, topic: null, partition: null, offset: null, timestamp: 0 };
    assert.equal(approxMessageBytes(msg), 72 + 2 + 16 + 18 + 2 * (1 + 2) + 16);
  });
});
