import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatId, formatSources, parseId, parseSources, SOURCE_TAG_LENGTH, sourceTag } from '../../src/kinds/listeners/sse-ids.js';

describe('event-stream ids', () => {
  const kafka = sourceTag(JSON.stringify(['kafka', 'kafka', 'orders', null]))!;
  const moved = sourceTag(JSON.stringify(['kafka', 'kafka', 'orders-v2', null]))!;

  it('tag positions with a few base64url characters of the source, which URLs and EventSource keep as they are', () => {
    assert.equal(kafka.length, SOURCE_TAG_LENGTH);
    assert.notEqual(kafka, moved);
    const id = formatId({
      tag: kafka,
      at: new Map([
        [1, 17n],
        [0, 41n],
      ]),
    })!;
    assert.equal(id, `${kafka}~0:41,1:17`);
    // What a page's `?lastEventId=${encodeURIComponent(id)}` and the query's decoding make of it.
    assert.equal(decodeURIComponent(encodeURIComponent(id)), id);
    assert.equal(encodeURIComponent(id).startsWith(`${kafka}~`), true);
    assert.deepEqual(parseId(id), {
      tag: kafka,
      at: new Map([
        [0, 41n],
        [1, 17n],
      ]),
    });
  });

  it('read an id of the old form (no tag) as positions without a tag, and a tag of another length as a tag', () => {
    assert.deepEqual(parseId('0:41,1:17'), {
      tag: undefined,
      at: new Map([
        [0, 41n],
        [1, 17n],
      ]),
    });
    assert.deepEqual(parseId('abcdefgh~0:3'), { tag: 'abcdefgh', at: new Map([[0, 3n]]) });
    for (const bad of ['~0:3', 'ab+c~0:3', 'abcd~', 'abcd~x:1', 'abcd~0:1~0:2']) assert.equal(parseId(bad), undefined, bad);
  });

  it('carry the tag per route in a composite id, and read composite ids of the old form', () => {
    const sources = new Map([
      ['refunds', { tag: moved, at: new Map([[0, 5n]]) }],
      ['orders', { tag: kafka, at: new Map([[0, 41n]]) }],
    ]);
    const id = formatSources(sources)!;
    assert.equal(id, `orders=${kafka}~0:41;refunds=${moved}~0:5`);
    assert.deepEqual(parseSources(id), new Map([...sources].reverse()));
    assert.deepEqual(
      parseSources('orders=0:41;refunds=0:5'),
      new Map([
        ['orders', { tag: undefined, at: new Map([[0, 41n]]) }],
        ['refunds', { tag: undefined, at: new Map([[0, 5n]]) }],
      ]),
    );
  });
});
