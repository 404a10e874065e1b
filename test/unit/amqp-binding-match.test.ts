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
    for (const [pattern, key, expected] of cases) assert.equal(bindingMatches('topic', { routingKey: pattern }, key), expected, `${pattern} ~ ${key}`);
  });

  it('topic: a pattern with many `#`s against a long key that it does not match (each `#` tried at every tail would not end)', () => {
    // Seven `#.*` pairs: the old search tried every way to split 120 words among them (~10^10).
    const pattern = [...Array.from({ length: 7 }, () => ['#', '*']).flat(), '#', 'c'].join('.');
    const key = Array.from({ length: 120 }, () => 'b').join('.');
    assert.equal(bindingMatches('topic', { routingKey: pattern }, key), false);
    assert.equal(bindingMatches('topic', { routingKey: pattern }, `${key}.c`), true);
  });

  it('direct: equal keys only; fanout and headers (a binding without arguments): every key', () => {
    assert.equal(bindingMatches('direct', { routingKey: 'orders.*' }, 'orders.new'), false);
    assert.equal(bindingMatches('direct', { routingKey: 'orders.new' }, 'orders.new'), true);
    assert.equal(bindingMatches('fanout', { routingKey: 'x' }, 'y'), true);
    assert.equal(bindingMatches('headers', { routingKey: 'x' }, 'y'), true);
    assert.equal(bindingMatches('headers', { routingKey: 'x' }, 'y', { region: 'eu' }), true);
  });

  it('headers: the arguments against the headers, by type and value: all (the default) or any; x- names only with -with-x', () => {
    const eu = { routingKey: '', arguments: { region: 'eu', priority: 1 } };
    const any = { routingKey: '', arguments: { 'x-match': 'any', region: 'eu', priority: 1 } } as const;
    const cases: [typeof eu | typeof any, Record<string, unknown>, boolean][] = [
      [eu, { region: 'eu', priority: 1, other: 'x' }, true],
      [eu, { region: 'eu' }, false],
      [eu, { region: 'eu', priority: '1' }, false], // a string is not the number
      [eu, { region: Buffer.from('eu'), priority: 1 }, false], // bytes are not the string
      [any, { region: 'us', priority: 1 }, true],
      [any, { region: 'us' }, false],
      [any, {}, false],
    ];
    for (const [binding, headers, expected] of cases)
      assert.equal(bindingMatches('headers', binding, 'any.key', headers), expected, `${JSON.stringify(binding.arguments)} ~ ${JSON.stringify(headers)}`);
    // `x-` arguments are not matched (RabbitMQ's own), unless x-match says -with-x; no other argument: all matches, any does not.
    assert.equal(bindingMatches('headers', { routingKey: '', arguments: { 'x-tenant': 'a' } }, '', {}), true);
    assert.equal(bindingMatches('headers', { routingKey: '', arguments: { 'x-match': 'all-with-x', 'x-tenant': 'a' } }, '', {}), false);
    assert.equal(bindingMatches('headers', { routingKey: '', arguments: { 'x-match': 'any-with-x', 'x-tenant': 'a' } }, '', { 'x-tenant': 'a' }), true);
    // Headers not known (the config's checks): any message may match.
    assert.equal(bindingMatches('headers', eu, 'k'), true);
  });
});
