import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { answerFor, deliveredJson, repeatedAnswer } from '../../src/core/answer.js';
import type { Delivery } from '../../src/core/message.js';

describe('deliveredJson: the HTTP 200 body of a delivered message, written by hand', () => {
  const cases: { name: string; deliveries: Delivery[]; tagged: boolean }[] = [
    { name: 'one broker delivery', deliveries: [{ broker: 'local', topic: 'light-measured', partition: 0, offset: '41' }], tagged: false },
    { name: 'none (a kafka-listener route)', deliveries: [], tagged: false },
    { name: 'tagged', deliveries: [{ broker: 'k', topic: 't', partition: 2, offset: '-1' }], tagged: true },
    {
      name: 'names that need escaping',
      deliveries: [{ broker: 'b"\\', topic: 'line\nbreak\u0001 é 😀 \ud800', partition: 1, offset: '9007199254740993123' }],
      tagged: false,
    },
    {
      name: 'every kind of delivery, in order',
      deliveries: [
        { broker: 'local', topic: 'a', partition: 0, offset: '1' },
        { listener: 'push', path: '/rooms/1', clients: 3 },
        { endpoint: 'https://example.com/hook', status: 202, attempts: 2 },
        { broker: 'kafka', topic: 'b', partition: 7, offset: '123' },
      ],
      tagged: false,
    },
  ];
  it('is right for each of a run of deliveries that change broker, topic or partition (the prefix is kept between them)', () => {
    const runs: Delivery[] = [
      { broker: 'local', topic: 'a', partition: 0, offset: '1' },
      { broker: 'local', topic: 'a', partition: 0, offset: '2' },
      { broker: 'local', topic: 'a', partition: 1, offset: '3' },
      { broker: 'local', topic: 'b', partition: 1, offset: '4' },
      { broker: 'other', topic: 'b', partition: 1, offset: '5' },
      { broker: 'local', topic: 'a', partition: 0, offset: '6' },
    ];
    for (const d of runs) assert.equal(deliveredJson([d], false), JSON.stringify({ deliveries: [d] }));
  });

  for (const c of cases) {
    it(`is the text JSON.stringify gives: ${c.name}`, () => {
      const expected = JSON.stringify(answerFor({ outcome: 'delivered', deliveries: c.deliveries, tagged: c.tagged }).body);
      const text = deliveredJson(c.deliveries, c.tagged);
      assert.equal(text, expected);
      assert.deepEqual(JSON.parse(text), JSON.parse(expected));
    });
  }
});

describe('repeatedAnswer: the answer of a frozen delivery, kept between requests', () => {
  const expected = (d: Delivery, tagged: boolean) => JSON.stringify(answerFor({ outcome: 'delivered', deliveries: [d], tagged }).body);
  it('is the text JSON.stringify gives, with its length in bytes, for each of a run of frozen deliveries and tags', () => {
    const a = Object.freeze({ broker: 'mqtt', topic: 'bench/light', partition: 0, offset: '-1' });
    const b = Object.freeze({ broker: 'mqtt', topic: 'é/😀 "quoted"', partition: 0, offset: '-1' });
    const c = Object.freeze({ broker: 'amqp', topic: 'bench/light', partition: 0, offset: '-1' });
    for (const [d, tagged] of [
      [a, false],
      [a, false],
      [a, true],
      [b, true],
      [b, false],
      [c, false],
      [a, false],
    ] as const) {
      const answer = repeatedAnswer([d], tagged);
      assert.ok(answer);
      assert.equal(answer.text, expected(d, tagged));
      assert.equal(answer.bytes, Buffer.byteLength(expected(d, tagged)));
    }
  });
  it('leaves other outcomes to deliveredJson: a delivery that is not frozen (one per message, with its offset), none, several', () => {
    const frozen = Object.freeze({ broker: 'mqtt', topic: 't', partition: 0, offset: '-1' });
    assert.ok(repeatedAnswer([frozen], false));
    // The same fields as the frozen one, but a new object that may still change: not taken for it.
    assert.equal(repeatedAnswer([{ broker: 'mqtt', topic: 't', partition: 0, offset: '-1' }], false), undefined);
    assert.equal(repeatedAnswer([{ broker: 'local', topic: 't', partition: 0, offset: '7' }], false), undefined);
    assert.equal(repeatedAnswer([], false), undefined);
    assert.equal(repeatedAnswer([frozen, frozen], false), undefined);
  });
});
