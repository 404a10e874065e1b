import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ORIGINAL, payloadContentEncoding, payloadMessage, sentHeaders, type Message } from '../../src/core/message.js';

describe('content-encoding', () => {
  const fields = (headers: Record<string, string>) => ({ headers, topic: 't', partition: null, offset: null, timestamp: 0 });

  it('makes a consumed payload its bytes, and goes on only while no step changed them', () => {
    const gz = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff]);
    const msg = payloadMessage(gz, fields({ 'content-encoding': 'gzip', 'x-a': '1' }));
    assert.equal(msg.value, gz);
    assert.equal(payloadContentEncoding(msg), 'gzip');
    assert.equal(sentHeaders(msg), msg.headers);
    const changed: Message = { ...msg, value: { changed: true } };
    assert.equal(changed[ORIGINAL], msg[ORIGINAL]);
    assert.equal(payloadContentEncoding(changed), undefined);
    assert.deepEqual({ ...sentHeaders(changed) }, { 'x-a': '1' });
  });

  it('leaves an identity coding, or none, to the usual decoding', () => {
    assert.deepEqual(payloadMessage(Buffer.from('{"a":1}'), fields({ 'content-encoding': 'identity' })).value, { a: 1 });
    const plain = payloadMessage(Buffer.from('{"a":1}'), fields({}));
    assert.deepEqual(plain.value, { a: 1 });
    assert.equal(sentHeaders(plain), plain.headers);
  });
});
