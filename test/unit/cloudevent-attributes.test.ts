import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { attributeErrors, attributesOf } from '../../src/codecs/cloudevents.js';

describe('CloudEvent attributes of a message ($ce, the cloudevent step)', () => {
  const headers = { ce_specversion: '1.0', ce_id: 'x', ce_source: '/s', ce_type: 't', 'content-type': 'application/json' };

  it('are its ce_ headers, with content-type as datacontenttype', () => {
    assert.deepEqual({ ...attributesOf(headers) }, { specversion: '1.0', id: 'x', source: '/s', type: 't', datacontenttype: 'application/json' });
    assert.equal(attributesOf({ ce_id: 'x' }), undefined, 'no ce_specversion: not a CloudEvent');
  });

  it('keep a ce___proto__ header (any protocol can carry one) as an attribute, which the checks refuse by name', () => {
    const attrs = attributesOf({ ...headers, ce___proto__: 'v' })!;
    assert.ok(Object.hasOwn(attrs, '__proto__'), 'the attribute is there');
    assert.equal(Object.getOwnPropertyDescriptor(attrs, '__proto__')?.value, 'v');
    assert.deepEqual(attributeErrors(attrs), ["'__proto__' is not a valid attribute name (lower-case letters and digits only)"]);
  });
});
