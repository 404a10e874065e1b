import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { compileExpression, NOT_SYNC } from '../../src/expr/expression.js';
import { compileFastPath, FALLBACK } from '../../src/expr/fast-path.js';

/** Expressions with a fast path: each must give JSONata's result for every input below, or step aside. */
const FAST = [
  'lumens',
  'a.b.c',
  'a.b',
  '`x-source`',
  'constructor',
  'lumens > 0',
  'lumens >= 500',
  'lumens < 10',
  'lumens <= "m"',
  '"abc" < sentAt',
  'lumens = 5',
  'lumens != 5',
  'a = null',
  'lumens = "5"',
  'lumens = a',
  'lumens > 0 and $headers."x-source" != "test"',
  'lumens or a',
  'lumens and a.b',
  'a or lumens > 1',
  '$key',
  '$key = null',
  '$headers',
  '$headers."x-source"',
  '$path.room',
  '$query.a',
  '$query.b',
  '$topic',
  '$route',
  '"lit"',
  '5',
  '-2.5',
  'true',
  'null',
  '$string(id)',
  '$string(lumens)',
  '$string(a)',
  '$string($key)',
  '"/streetlights/" & $string(id)',
  'sentAt & "!"',
  'lumens & "x"',
  'a & lumens',
  '{ "streetlightId": id, "lumens": lumens, "sentAt": sentAt, "bright": lumens >= 500 }',
  '{"a": {"b": lumens, "c": $path.room}}',
  '{"1": lumens, "b": id, "0": a}',
  '{"__proto__": lumens, "x": 1}',
  '{}',
  // Names and strings that need quoting in the generated source, and names objects already have.
  '`a"b`',
  '`a\\b`',
  '"a\\"b"',
  '"\\u2028\\ud800é☃"',
  '`é☃`.`0`',
  '`0`',
  '`1e3`',
  '`-1`',
  '`__proto__`',
  '`__proto__`.x',
  '`constructor`.name',
  '`toString`',
  '`"]; throw 1; //`',
  '$headers."a\\"b"',
  '"\\"); throw 1; (\\"" & lumens',
  '{"a\\"b": `a"b`, "\\\\": `a\\b`, "constructor": lumens, "toString": 1, "0": `0`, "1e3": `1e3`, "-1": `-1`, "\\u2028": 1, "é☃": `é☃`}',
  '{"__proto__": `__proto__`, "x": `"]; throw 1; //`}',
];

/** Shapes whose semantics are JSONata's alone. */
const NOT_FAST = [
  'a[0]',
  '$sum(a)',
  'a.b[c > 1]',
  '$',
  '$$.a',
  '$.a',
  '{"a": 1, "a": 2}',
  'a ? b : c',
  '[a, b]',
  '-lumens',
  'a + 1',
  'a.*',
  '**.a',
  '$string()',
  '$uppercase(a)',
  'a in [1]',
  '$millis() > 0',
  '{"a": 1}.a',
  'a{"k": b}',
  '$x := 1',
];

const INPUTS: unknown[] = [
  {},
  { lumens: 5 },
  { lumens: 0 },
  { lumens: -1 },
  { lumens: '5' },
  { lumens: 'zebra' },
  { lumens: '' },
  { lumens: null },
  { lumens: true },
  { lumens: [1, 2] },
  { lumens: [3] },
  { lumens: { x: 1 } },
  { lumens: {} },
  { lumens: 1.5 },
  { lumens: 1 / 3 },
  { lumens: 1e21 },
  { id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' },
  { id: 7.25, lumens: 640, sentAt: 'abc' },
  { id: 'seven', lumens: 640, a: 'x' },
  { a: { b: { c: 1 } } },
  { a: { b: [{ c: 1 }, { c: 2 }] } },
  { a: [{ b: { c: 1 } }] },
  { a: { b: null } },
  { a: null, lumens: 2 },
  { a: 'str', lumens: 5 },
  { a: 5, lumens: 5 },
  { a: false, lumens: 0 },
  { a: { b: 'x' }, lumens: 640 },
  JSON.parse('{"__proto__": 1, "lumens": 3}'),
  { constructor: 1 },
  { 'x-source': 'sensor' },
  { 'a"b': 1, 'a\\b': 'two', '0': 3, '1e3': 4, '-1': null, 'é☃': { '0': 'zero' }, '"]; throw 1; //': 'x', lumens: 9 },
  { 'a"b': { x: 1 }, 'a\\b': true, '0': [1], '1e3': 'x', 'é☃': 5 },
  JSON.parse('{"__proto__": {"x": 1}, "constructor": {"name": "n"}, "toString": "s"}'),
  [3, 4],
  'a string',
  42,
  null,
  true,
  [{ lumens: 5 }],
  [],
  undefined,
];

const BINDINGS: Record<string, unknown>[] = [
  { key: null, headers: { 'x-source': 'test' }, topic: null, route: 'r', path: { room: 'kitchen' }, query: { a: '1', b: ['1', '2'] } },
  { key: 'k1', headers: {}, topic: 'light', route: 'r2', path: {}, query: {} },
  { key: '12', headers: { 'x-source': 'sensor' }, topic: 't', route: 'r', path: { room: 7 }, query: { a: ['x'] } },
  { key: 'k', headers: { 'a"b': 'quoted' }, topic: null, route: 'r', path: {}, query: {} },
];

type Settled = { ok: true; value: unknown } | { ok: false; code: string | undefined };

/**
 * What JSONata itself gives for `source` on `input` with `bindings`: each source parsed once, and
 * each case evaluated once for both tests that compare against it (an expression evaluates every
 * call in a frame of its own, so parsing it again per case changes nothing but the CPU spent).
 */
const parsed = new Map<string, ReturnType<typeof jsonata>>();
const settled = new Map<string, Promise<Settled>>();
function viaJsonata(source: string, input: unknown, bindings: Record<string, unknown>): Promise<Settled> {
  const key = `${source}\0${INPUTS.indexOf(input)}\0${BINDINGS.indexOf(bindings)}`;
  let result = settled.get(key);
  if (!result) {
    let expr = parsed.get(source);
    if (!expr) parsed.set(source, (expr = jsonata(source)));
    result = expr.evaluate(input, bindings).then(
      (value): Settled => ({ ok: true, value }),
      (err): Settled => ({ ok: false, code: (err as { code?: string }).code }),
    );
    settled.set(key, result);
  }
  return result;
}

describe('JSONata fast paths', () => {
  it('give exactly the result JSONata gives, or leave the input to JSONata', async () => {
    for (const source of FAST) {
      const fast = compileFastPath(jsonata(source).ast());
      assert.ok(fast, `expected a fast path for ${source}`);
      let answered = 0;
      for (const input of INPUTS) {
        for (const bindings of BINDINGS) {
          const expected = await viaJsonata(source, input, bindings);
          const got = fast(input, bindings);
          if (got === FALLBACK) continue;
          answered++;
          const where = `${source} on ${JSON.stringify(input)} with ${JSON.stringify(bindings)}`;
          assert.ok(expected.ok, `${where}: JSONata raised ${(expected as { code?: string }).code} but the fast path answered ${JSON.stringify(got)}`);
          // deepStrictEqual also compares prototypes: JSONata's objects have none, and neither may ours.
          assert.deepStrictEqual(got, expected.value, where);
        }
      }
      assert.ok(answered > 0, `the fast path for ${source} never answered`);
    }
  });

  it('answer every plain case of the README chain without JSONata', () => {
    const b = BINDINGS[0]!;
    const input = { id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' };
    for (const source of ['lumens > 0', '{ "streetlightId": id, "lumens": lumens, "sentAt": sentAt, "bright": lumens >= 500 }', '"/streetlights/" & $string(id)', '$headers."x-source" != "test"']) {
      assert.notEqual(compileFastPath(jsonata(source).ast())!(input, b), FALLBACK, source);
    }
  });

  it('step aside for arrays, mixed-type comparisons and non-integer numbers turned into strings', () => {
    const b = BINDINGS[0]!;
    assert.equal(compileFastPath(jsonata('lumens').ast())!({ lumens: [1, 2] }, b), FALLBACK);
    assert.equal(compileFastPath(jsonata('lumens > 0').ast())!({ lumens: '5' }, b), FALLBACK);
    assert.equal(compileFastPath(jsonata('$string(lumens)').ast())!({ lumens: 1.5 }, b), FALLBACK);
    assert.equal(compileFastPath(jsonata('lumens').ast())!([{ lumens: 1 }], b), FALLBACK);
  });

  it('are not built for shapes whose semantics need JSONata', () => {
    for (const source of NOT_FAST) assert.equal(compileFastPath(jsonata(source).ast()), undefined, source);
  });
});

describe('compiled expressions', () => {
  it('refuse an expression nested too deeply to read, at its start, in words', () => {
    // The parser took 4000 terms of `+`; the fast path's recursion ran out of stack (RangeError, no place).
    for (const source of [Array(4000).fill('1').join('+'), `$string(${'('.repeat(4000)}"a"${')'.repeat(4000)})`]) {
      assert.throws(() => compileExpression(source), { message: /^the expression nests too deeply to be read/, position: 0 });
    }
  });

  it('evaluate to what JSONata evaluates, through the fast path or not', async () => {
    for (const source of [...FAST, ...NOT_FAST.filter((s) => s !== '$x := 1')]) {
      const expr = compileExpression(source);
      for (const input of INPUTS) {
        for (const bindings of BINDINGS) {
          const expected = await viaJsonata(source, input, bindings);
          let got: Settled;
          try {
            got = { ok: true, value: await expr.evaluate(input, bindings) };
          } catch (err) {
            got = { ok: false, code: (err as { code?: string }).code };
          }
          assert.deepStrictEqual(got, expected, `${source} on ${JSON.stringify(input)}`);
        }
      }
    }
  });

  it('evaluate with JSONata where code generation from strings is disallowed', () => {
    // The fast paths are generated code; a node run with this flag cannot build them.
    const script = `const { compileExpression, NOT_SYNC } = await import(${JSON.stringify(new URL('../../src/expr/expression.js', import.meta.url).href)});
const e = compileExpression('{"lux": lumens, "bright": lumens >= 500}');
process.stdout.write(JSON.stringify([e.evaluateSync({ lumens: 640 }, {}) === NOT_SYNC, await e.evaluate({ lumens: 640 }, {})]));`;
    const out = execFileSync(process.execPath, ['--disallow-code-generation-from-strings', '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.deepStrictEqual(JSON.parse(out), [true, { lux: 640, bright: true }]);
  });

  it('answer synchronously only where the fast path can, and then with the same value', async () => {
    const b = BINDINGS[0]!;
    const filter = compileExpression('lumens > 0');
    assert.equal(filter.evaluateSync({ lumens: 5 }, b), true);
    assert.equal(filter.evaluateSync({ lumens: '5' }, b), NOT_SYNC);
    assert.equal(compileExpression('$sum(a)').evaluateSync({ a: [1, 2] }, b), NOT_SYNC);
    const transform = compileExpression('{"lux": lumens}');
    assert.deepStrictEqual(transform.evaluateSync({ lumens: 5 }, b), await jsonata('{"lux": lumens}').evaluate({ lumens: 5 }, b));
  });
});
