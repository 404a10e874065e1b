import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { bindingMatches } from '../../src/kinds/brokers/amqp/bindings.js';

/** Which bindings a routing key matches, as RabbitMQ routes it: what tells the amqp broker which declared queue an unroutable publish was meant for. */
describe('amqp bindingMatches', () => {
  it('topic: `*` is one word, `#` zero or more, the rest literal', () => {
    const cases: [string, string, boolean][] = [
      ['orders.*', 'orders.new', true],
      ['orders.*', 'orders', false],
      ['orders.*', 'orders.new.eu', false],
      ['orders.#', 'orders', true],
      ['orders.#', 'orders.new.eu', true],
      ['#', '', true],
      ['#', 'a.b.c', true],
      ['*', '', false],
      ['*', 'a', true],
      ['a.#.z', 'a.z', true],
      ['a.#.z', 'a.b.c.z', true],
      ['a.#.z', 'a.b.c', false],
      ['#.#', 'a', true],
      ['*.#.*', 'a', false],
      ['*.#.*', 'a.b', true],
      ['a..b', 'a..b', true],
      ['a.*.b', 'a..b', true],
      ['orders.new', 'orders.new', true],
      ['orders.new', 'orders.newer', false],
      ['', '', true],
      ['', 'a', false],
    ];
    for (const [pattern, key, expected] of cases) assert.equal(bindingMatches('topic', pattern, key), expected, `${pattern} ~ ${key}`);
  });

  it('topic: a pattern with many `#`s against a long key that it does not match (each `#` tried at every tail would not end)', () => {
    // Seven `#.*` pairs: the old search tried every way to split 120 words among them (~10^10).
    const pattern = [...Array.from({ length: 7 }, () => ['#', '*']).flat(), '#', 'c'].join('.');
    const key = Array.from({ length: 120 }, () => 'b').join('.');
    assert.equal(bindingMatches('topic', pattern, key), false);
    assert.equal(bindingMatches('topic', pattern, `${key}.c`), true);
  });

  it('direct: equal keys only; fanout and headers (a binding without arguments): every key', () => {
    assert.equal(bindingMatches('direct', 'orders.*', 'orders.new'), false);
    assert.equal(bindingMatches('direct', 'orders.new', 'orders.new'), true);
    assert.equal(bindingMatches('fanout', 'x', 'y'), true);
    assert.equal(bindingMatches('headers', 'x', 'y'), true);
  });
});
