import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { deadletterMessage } from '../../src/core/deadletter.js';
import { copyHeaders, headersWith, newHeaders, type Message } from '../../src/core/message.js';
import { singleValued } from '../../src/kinds/brokers/acknowledgement.js';
import { forwardedHeaders } from '../../src/kinds/listeners/http-request.js';

/** The own `__proto__` property (a plain read gives the prototype when there is none). */
const proto = (o: object) => Object.getOwnPropertyDescriptor(o, '__proto__')?.value;

function withProto(value: string, rest: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...rest };
  Object.defineProperty(h, '__proto__', { value, enumerable: true, writable: true, configurable: true });
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

  it('is assigned as any other name in a header object newHeaders made, whose prototype has no setter for it', () => {
    const h = newHeaders();
    const name = '__proto__'; // as a header name comes: a string from the wire
    h[name] = 'p';
    h.a = '1';
    const headerMap = Object.getPrototypeOf(h);
    assert.equal(Object.getPrototypeOf(headerMap), null);
    assert.deepEqual(Reflect.ownKeys(headerMap), []);
    assert.equal(proto(h), 'p');
    assert.equal(JSON.stringify(h), '{"__proto__":"p","a":"1"}');
    // Copies are header objects of their own, the header kept.
    const copy = copyHeaders(withProto('q', { b: '2' }));
    assert.equal(Object.getPrototypeOf(copy), headerMap);
    assert.equal(proto(copy), 'q');
    assert.equal(Object.getPrototypeOf(headersWith(h, 'c', '3')), headerMap);
  });

  it("is taken from node's raw request headers, which drop it from request.headers", () => {
    const out = forwardedHeaders({ 'x-a': '1', host: 'h' }, ['Host', 'h', '__PROTO__', 'one', 'X-A', '1', '__proto__', 'two']);
    assert.equal(proto(out), 'one, two');
    assert.equal(out['x-a'], '1');
    assert.equal(out.host, undefined);
  });
});
