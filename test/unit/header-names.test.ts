import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadletterMessage } from '../../src/core/deadletter.js';
import { headersWith, ORIGINAL, payloadContentEncoding, payloadMessage, sentHeaders, setHeader, type Message } from '../../src/core/message.js';
import { singleValued } from '../../src/kinds/brokers/acknowledgement.js';
import { forwardedHeaders } from '../../src/kinds/listeners/http-request.js';

/** The own `__proto__` property (a plain read gives the prototype when there is none). */
const proto = (o: object) => Object.getOwnPropertyDescriptor(o, '__proto__')?.value;

function withProto(value: string, rest: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...rest };
  setHeader(h, '__proto__', value);
  return h;
}

describe('a header named __proto__', () => {
  it('is an own header wherever headers are built or copied, and pollutes nothing', () => {
    const h = withProto('p', { a: '1' });
    assert.equal(proto(h), 'p');
    assert.equal(Object.getPrototypeOf(h), Object.prototype);
    assert.equal(proto(headersWith(h, 'b', '2')), 'p');
    const msg: Message = { value: 1, key: null, headers: h, topic: null, partition: null, offset: null, timestamp: 0 };
    const dead = deadletterMessage(msg, 'r', { status: 400, code: 'EG_INVALID_MESSAGE', detail: 'x', errors: [] });
    assert.equal(proto(dead.headers), 'p');
    assert.equal(proto(singleValued([['__proto__', ['x', 'y']]])), 'y');
    assert.equal(JSON.stringify(h), '{"a":"1","__proto__":"p"}');
    assert.equal(({} as { a?: unknown }).a, undefined);
  });

  it("is taken from node's raw request headers, which drop it from request.headers", () => {
    const out = forwardedHeaders({ 'x-a': '1', host: 'h' }, ['Host', 'h', '__PROTO__', 'one', 'X-A', '1', '__proto__', 'two']);
    assert.equal(proto(out), 'one, two');
    assert.equal(out['x-a'], '1');
    assert.equal(out.host, undefined);
  });
});

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
    assert.deepEqual(sentHeaders(changed), { 'x-a': '1' });
  });

  it('leaves an identity coding, or none, to the usual decoding', () => {
    assert.deepEqual(payloadMessage(Buffer.from('{"a":1}'), fields({ 'content-encoding': 'identity' })).value, { a: 1 });
    const plain = payloadMessage(Buffer.from('{"a":1}'), fields({}));
    assert.deepEqual(plain.value, { a: 1 });
    assert.equal(sentHeaders(plain), plain.headers);
  });
});
