import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import jsonata from 'jsonata';
import { compileExpression, defaultExpressionLimits } from '../../src/expr/expression.js';
import { literalArgumentTypeProblem } from '../../src/expr/argument-types.js';
import { BUILTIN_FUNCTIONS, BUILTIN_SIGNATURES, boundNames, unknownFunctionCalls, unknownVariables, wrongArgumentCounts } from '../../src/expr/functions.js';

describe('calls to JSONata functions that do not exist', () => {
  it('knows exactly the functions the installed jsonata binds', async () => {
    const source = readFileSync(createRequire(import.meta.url).resolve('jsonata'), 'utf8');
    const bound = new Set([...source.matchAll(/\.bind\('([A-Za-z0-9]+)'/g)].map((m) => m[1]!));
    assert.deepEqual([...BUILTIN_FUNCTIONS].sort(), [...bound].sort());
    for (const name of BUILTIN_FUNCTIONS) assert.notEqual(await jsonata(`$${name}`).evaluate({}), undefined, `$${name} is bound`);
    assert.equal(await jsonata('$uppercse').evaluate({}), undefined);
  });

  it('accepts functions the expression defines and lambda parameters; names the unknown ones with a hint', () => {
    const calls = (src: string) => unknownFunctionCalls(jsonata(src).ast(), ['key']).map((c) => [c.name, c.index, c.message]);
    assert.deepEqual(calls('($f := function($g){ $g(1) }; $f($string))'), []);
    assert.deepEqual(calls('$uppercse(a)'), [['uppercse', 0, 'unknown function $uppercse (did you mean $uppercase?)']]);
    assert.deepEqual(calls('a ~> $nope'), [['nope', 5, 'unknown function $nope (did you mean $not?)']]);
    // Two edits from $pad as from $round: the hint is the name whose letters it keeps (it said $pad).
    assert.deepEqual(calls('$rnd(total * 100)'), [['rnd', 0, 'unknown function $rnd (did you mean $round?)']]);
  });
});

describe('calls of a JSONata function with a number of arguments it never takes', () => {
  it("knows the installed jsonata's signatures", async () => {
    for (const name of BUILTIN_FUNCTIONS) {
      const fn = (await jsonata(`$${name}`).evaluate({})) as { signature?: { definition?: string } };
      assert.equal(BUILTIN_SIGNATURES[name], fn.signature?.definition, `$${name}`);
    }
  });

  it('names the calls JSONata refuses whatever their arguments hold, and only those', async () => {
    const wrong = (src: string) => wrongArgumentCounts(jsonata(src).ast(), ['key']).map((c) => [c.name, c.index, c.message]);
    // Each passed the config check and failed every message with T0410.
    const refused: [string, number, string][] = [
      ['$uppercase(a, b)', 0, '$uppercase takes at most 1 argument, not 2: JSONata would refuse it for every message'],
      ['{"n": $map(xs)}', 6, '$map takes 2 arguments, not 1: JSONata would refuse it for every message'],
      ['$millis(1)', 0, '$millis takes no arguments, not 1: JSONata would refuse it for every message'],
      ['$zip()', 0, '$zip takes at least 1 argument, not 0: JSONata would refuse it for every message'],
      ['s ~> $substring(1, 2, 3)', 5, '$substring takes 1 to 3 arguments, not 4 (with the value before ~>): JSONata would refuse it for every message'],
    ];
    for (const [src, index, message] of refused) {
      assert.deepEqual(wrong(src), [[src.slice(index + 1, src.indexOf('(', index)), index, message]], src);
      await assert.rejects(jsonata(src).evaluate({ a: 'x', b: 'y', xs: [1], s: 'abc' }), { code: 'T0410' }, src);
    }
    // The context stands in for a `-` argument, `~>` gives its left side, `?` ones may be left
    // out, `+` takes any number more; a partial application and a function the expression binds
    // under a built-in's name are not the built-in's calls.
    for (const src of [
      '$uppercase()',
      'a ~> $substring(1)',
      '$substring(5, 1)',
      '$zip(xs, xs, xs)',
      '$join(xs)',
      '$substring(?, 1)',
      '($uppercase := function($a, $b){ $a & $b }; $uppercase("a", "b"))',
      'a.$lowercase()',
    ])
      assert.deepEqual(wrong(src), [], src);
  });
});

describe('calls of a JSONata function with a literal argument of a type its signature refuses (spec-checklist 1038)', () => {
  const typeProblem = (src: string) => {
    const p = literalArgumentTypeProblem(jsonata, src, jsonata(src).ast(), boundNames(jsonata(src).ast(), ['headers']));
    return p && [p.index, p.message];
  };
  const input = { s: 'abc', n: 3, xs: [1, 2], ss: ['a', 'b'], o: { k: 1 }, b: true, f: 'x' };

  it('names the calls JSONata refuses for their literal arguments (T0410, T0412), at the argument', async () => {
    const refused: [string, number, string, string][] = [
      ['$uppercase(1)', 11, '$uppercase does not take a number as argument 1 (its signature is <s-:s>)', 'T0410'],
      ['$uppercase(null)', 11, '$uppercase does not take a null as argument 1 (its signature is <s-:s>)', 'T0410'],
      ['{"k": $length([s])}', 14, '$length does not take an array as argument 1 (its signature is <s-:n>)', 'T0410'],
      ['$substring(s, "1")', 14, '$substring does not take a string as argument 2 (its signature is <s-nn?:s>)', 'T0410'],
      ['"a" ~> $lookup(1)', 15, '$lookup does not take a number as argument 2 (the value before ~> is argument 1; its signature is <x-s:x>)', 'T0410'],
      ['$map(xs, "x")', 9, '$map does not take a string as argument 2 (its signature is <af>)', 'T0410'],
      ['$contains(s, true)', 13, '$contains does not take a boolean as argument 2 (its signature is <s-(sf):b>)', 'T0410'],
      ['$match(s, "a")', 10, '$match does not take a string as argument 2 (its signature is <s-f<s:o>n?:a<o>>)', 'T0410'],
      ['$clone(-1)', 7, '$clone does not take a number as argument 1 (its signature is <(oa)-:o>)', 'T0410'],
      ['$each(o, {})', 9, '$each does not take an object as argument 2 (its signature is <o-f:a>)', 'T0410'],
      ['$join([1, 2], ",")', 6, '$join takes an array of strings as argument 1, not this array', 'T0412'],
      ['$sum("3")', 5, '$sum takes an array of numbers as argument 1, not this string', 'T0412'],
      ['$merge([{}, 1])', 7, '$merge takes an array of objects as argument 1, not this array', 'T0412'],
      // A computed item may hold anything: the literal one is of another type all the same.
      ['$join([s, 1])', 6, '$join takes an array of strings as argument 1, not this array', 'T0412'],
      ['$sum([n, "x", xs])', 5, '$sum takes an array of numbers as argument 1, not this array', 'T0412'],
      // One argument is a count the signature takes (the context filling the first), but not of these types.
      ['$formatInteger(1)', 0, '$formatInteger needs an argument 2, of the type its signature <n-s:s> takes there', 'T0410'],
      ['$match("a")', 0, '$match needs an argument 2, of the type its signature <s-f<s:o>n?:a<o>> takes there', 'T0410'],
      ['"3" ~> $max()', 0, '$max takes an array of numbers as argument 1, not this string (the value before ~> is argument 1)', 'T0412'],
    ];
    for (const [src, index, message, code] of refused) {
      assert.deepEqual(typeProblem(src), [index, `${message}: JSONata would refuse it for every message (${code})`], src);
      await assert.rejects(jsonata(src).evaluate(input), { code }, src);
    }
  });

  it('refuses no call the installed jsonata runs: paths may hold any type, the context fills a `-` argument', async () => {
    const legal = [
      '$uppercase("a")',
      '$uppercase(s)',
      '$uppercase()',
      '$string(1)',
      '$string({"a": 1}, true)',
      '$number("1")',
      '$number(true)',
      '$count(1)',
      '$count([])',
      '$sum(1)',
      '$sum([1, 2.5])',
      '$sum([])',
      '$max([n, 1])',
      '$join("a")',
      '$join(["a", "b"], ",")',
      '$join([s, "b"])',
      '$join(ss)',
      '$append(1, 2)',
      '$append([1], "a")',
      '$reverse(1)',
      '$distinct(1)',
      '$shuffle([1])',
      '$zip(1, [2], "a")',
      '$keys(1)',
      '$keys({})',
      '$spread(1)',
      '$lookup(o, "k")',
      '$lookup([o], "k")',
      '$exists(1)',
      '$not(1)',
      '$not(null)',
      '$boolean([])',
      '$type(null)',
      '$substring("abc", 1)',
      '$substring("abc", -1, 1)',
      '$substring(s, n)',
      '"abc" ~> $substring(1)',
      '$contains("a", /a/)',
      '$contains(s, "a")',
      '$split("a,b", ",")',
      '$split("a,b", /,/, 1)',
      '$match("ab", /b/)',
      '$replace("a", "a", "b")',
      '$replace(s, /a/, function($m){ "x" })',
      '$map([1, 2], function($v){ $v * 2 })',
      '$map(xs, $string)',
      '$filter([1], function($v){ $v > 0 })',
      '$reduce([1, 2], function($a, $b){ $a + $b }, 0)',
      '$sort([3, 1])',
      '$sort(xs, function($a, $b){ $a > $b })',
      '$single([1])',
      '$each(o, function($v, $k){ $k })',
      '$sift(o, function($v){ $v })',
      '$merge([{"a": 1}, {"b": 2}])',
      '$merge({"a": 1})',
      '$merge(o)',
      '$abs(-1)',
      '$round(1.5, 0)',
      '$power(2, 3)',
      '$sqrt(4)',
      '$formatBase(10, 2)',
      '$formatInteger(12, "w")',
      '$parseInteger("twelve", "w")',
      '$formatNumber(1, "#")',
      '$pad("a", 3)',
      '$pad("a", -3, "#")',
      '$trim(" a ")',
      '$length("ab")',
      '$base64encode("a")',
      '$encodeUrl("a b")',
      '$toMillis("2024-01-01T00:00:00Z")',
      '$fromMillis(0)',
      '$fromMillis(0, "[Y]", "+0100")',
      '$now()',
      '$millis()',
      '$eval("1 + 1")',
      '$eval("a", {"a": 1})',
      '$assert(true, "x")',
      '$clone({})',
      '$clone([1])',
      '$average([1, 2])',
      '$min([])',
      '$string(f)',
      '$random()',
      '$uppercase(a & 1)',
      '$uppercase(s ? "a" : 1)',
      '$uppercase($string(1))',
      '($uppercase := function($v){ $v }; $uppercase(1))',
      '$substring(?, 1)',
    ];
    for (const src of legal) {
      assert.equal(typeProblem(src), undefined, src);
      await jsonata(src)
        .evaluate(input)
        .catch((e: { code?: string }) => assert.ok(e.code !== 'T0410' && e.code !== 'T0412', `${src}: ${e.code}`));
    }
  });

  it('takes a literal filtered, grouped or bound for what it evaluates to, not what it writes out', async () => {
    // ["info", "warn"][level] is a string: refused as an array, a lookup table by index failed to load.
    const legal: [string, unknown][] = [
      ['$uppercase(["info", "warn"][$$.n - 2])', 'WARN'],
      ['$number(["1", "2"][0])', 1],
      ['$join([["a", "b"][0], "c"])', 'ac'],
      ['$uppercase(1[false])', undefined],
      ['$sum(["3"][false])', undefined],
      ['$fromMillis(0, ["[Y0001]", "[Q"][0])', '1970'],
      ['$fromMillis(0, "[Q"[false])', '1970-01-01T00:00:00.000Z'],
      ['$fromMillis(0, "[Y]", ["+0100", "XYZ"][0])', '1970'],
      ['$formatNumber(1, ["#", "##e##e"][0])', '1'],
      ['$eval("1 +"[false])', undefined],
    ];
    for (const [src, value] of legal) {
      assert.doesNotThrow(() => compileExpression(src), src);
      assert.deepEqual(await jsonata(src).evaluate(input), value, src);
    }
  });
});

describe("calls a message's value makes JSONata refuse", () => {
  it('name the argument the message got wrong, where JSONata counted from the wrong end or blamed the context', async () => {
    const refused = (src: string, input: unknown) =>
      compileExpression(src)
        .evaluate(input, {})
        .then(
          () => assert.fail(`${src} should fail`),
          (e: Error) => e.message,
        );
    // JSONata: "Argument 3 of function "substring" does not match function signature".
    assert.equal(await refused('$substring(id, 0, 3)', { id: 12345 }), '$substring does not take a number as argument 1 (its signature is <s-nn?:s>)');
    // JSONata: "Context value is not a compatible type with argument 1 of function "fromMillis"".
    assert.equal(await refused('$fromMillis(ts, "[Y]")', { ts: '2026' }), '$fromMillis does not take a string as argument 1 (its signature is <n-s?s?:s>)');
    // JSONata: "Argument 2 of function "pad" ...", and of formatNumber: the gateway's own functions too.
    assert.equal(await refused('$pad(n, 5)', { n: 1 }), '$pad does not take a number as argument 1 (its signature is <s-ns?:s>)');
    assert.equal(await refused('$formatNumber(s, "#0")', { s: '1' }), '$formatNumber does not take a string as argument 1 (its signature is <n-so?:s>)');
    assert.equal(await refused('n ~> $uppercase()', { n: 1 }), '$uppercase does not take a number as argument 1 (its signature is <s-:s>)');
    assert.equal(await refused('$substring(s, from)', { s: 'abc', from: '1' }), '$substring does not take a string as argument 2 (its signature is <s-nn?:s>)');
    // What JSONata says right stays in its words: the context refused, an array's items.
    assert.equal(await refused('$uppercase()', 1), 'Context value is not a compatible type with argument 1 of function "uppercase"');
    assert.equal(await refused('$join(a, ",")', { a: [1, 2] }), 'Argument 1 of function "join" must be an array of "strings"');
    // Calls that pass run as before, a function the expression binds itself is its own, and a
    // built-in passed as a value still works.
    assert.equal(await compileExpression('$substring(id, 0, 3) & $pad("a", 2) & $formatNumber(1, "#0")').evaluate({ id: 'abcdef' }, {}), 'abca 1');
    assert.equal(await compileExpression('($substring := function($s) { $s * 2 }; $substring(4))').evaluate({}, {}), 8);
    assert.deepEqual(await compileExpression('$map(xs, $uppercase) ~> $join(",") ~> $uppercase()').evaluate({ xs: ['a', 'b'] }, {}), 'A,B');
  });

  it("leaves $millis() the evaluation's time, not a time fixed at the first compile", async () => {
    const millis = compileExpression('$millis()');
    const compiled = Date.now();
    while (Date.now() <= compiled + 1) await new Promise((r) => setTimeout(r, 2));
    const before = Date.now();
    const at = (await millis.evaluate({}, {})) as number;
    assert.ok(at >= before && at <= Date.now(), `$millis() gave ${at}, evaluated after ${before}`);
  });
});

describe('variables nothing binds', () => {
  it("accepts the gateway's variables and what the expression binds; names the others where they are read", () => {
    const unbound = (src: string) => unknownVariables(jsonata(src).ast(), ['headers', 'path', 'ce']).map((c) => [c.name, c.index, c.message]);
    for (const src of [
      '$headers."x-source" = "a" and $path.room and $ce.type',
      '($x := 1; $f := function($v, $w){ $v + $w }; $f($x, 2))',
      'a@$o.b#$i.($o.x & $i)',
      '$map(xs, $string) ~> $join(",")',
      '$reduce(xs, function($acc, $v){ $acc + $v })',
      '$.a & $$.b',
      'a ~> $nope',
    ])
      assert.deepEqual(unbound(src), [], src);
    // JSONata reads each as no value, without an error: a filter on it dropped every message.
    assert.deepEqual(unbound('$header."x-source" = "a"'), [['header', 0, 'unknown variable $header (did you mean $headers?): nothing binds it, so it would have no value for any message']]);
    assert.deepEqual(unbound('{"room": $pth.room, "again": $pth}'), [['pth', 9, 'unknown variable $pth (did you mean $path?): nothing binds it, so it would have no value for any message']]);
  });
});

describe('$sift given no function when a message reaches it (spec-checklist 198)', () => {
  it("says so in the config check's words, not JSONata's TypeError; $sift with a function still works", async () => {
    const sift = '$sift needs a function to keep each entry by, e.g. $sift($obj, function($v, $k) { $v > 0 }) (it was given none)';
    for (const src of ['$sift(obj)', 'obj ~> $sift']) {
      // Before: "Cannot read properties of undefined (reading 'arity')".
      await assert.rejects(compileExpression(src).evaluate({ obj: { a: 1 } }, {}), { message: sift }, src);
    }
    assert.deepEqual({ ...((await compileExpression('$sift(obj, function($v) { $v > 1 })').evaluate({ obj: { a: 1, b: 2 } }, {})) as object) }, { b: 2 });
  });
});

describe('$replace given a function replacement with a string pattern', () => {
  it("fails the message, where JSONata wrote the function's JavaScript source into the text; a regex pattern or a string replacement works", async () => {
    const problem = (pattern: string) =>
      `$replace: a function replacement needs a regex pattern (/.../), not the string ${JSON.stringify(pattern)}; give a string replacement, or the pattern as a regex`;
    // Before: "Hellasync function (...params) {...} W...rld", JSONata's wrapper of the lambda, in the message.
    await assert.rejects(compileExpression('$replace(s, "o", function($m) { "0" })').evaluate({ s: 'Hello World' }, {}), { message: problem('o') });
    await assert.rejects(compileExpression('s ~> $replace("o", function($m) { "0" }, 1)').evaluate({ s: 'foo' }, {}), { message: problem('o') });
    await assert.rejects(compileExpression('$replace(s, p, $uppercase)').evaluate({ s: 'Hello', p: 'l' }, {}), { message: problem('l') });
    // In the text a `$eval` runs, which the config check never sees.
    await assert.rejects(compileExpression('$eval(t)').evaluate({ t: '$replace("foo", "o", function($m) { "0" })' }, {}), (err: Error) => err.message.includes(problem('o')));
    assert.equal(await compileExpression('$replace(s, /o/, function($m) { "0" })').evaluate({ s: 'Hello World' }, {}), 'Hell0 W0rld');
    assert.equal(await compileExpression('$replace(s, "o", "0", 1)').evaluate({ s: 'Hello World' }, {}), 'Hell0 World');
    assert.equal(await compileExpression('$replace(missing, "o", function($m) { "0" })').evaluate({}, {}), undefined);
  });
});

describe('the fields of its input an expression reads by name (inputFields)', () => {
  const fields = (source: string) => compileExpression(source).inputFields.map((f) => `${f.name}@${f.index}`);
  it('are the names read from the input at the top: in paths, operators, calls, conditions, blocks, objects, arrays, `$.`, after `~>`', () => {
    assert.deepEqual(fields('streetlightI'), ['streetlightI@0']);
    assert.deepEqual(fields('$string(lumen) & a.b'), ['lumen@8', 'a@17']);
    assert.deepEqual(fields('x > 1 and `y z` = 2'), ['x@0', 'y z@10']);
    assert.deepEqual(fields('{"k": a, "n": [b, -c]}'), ['a@6', 'b@15', 'c@19']);
    assert.deepEqual(fields('p ? q : r'), ['p@0', 'q@4', 'r@8']);
    assert.deepEqual(fields('($v := m; $v + n)'), ['m@7', 'n@15']);
    assert.deepEqual(fields('$.foo'), ['foo@2']);
    assert.deepEqual(fields('s ~> $substring(n)'), ['s@0', 'n@16']);
  });
  it('leave out names read from something else: later steps of a path, filters, sorts, function bodies, variables', () => {
    assert.deepEqual(fields('items[price > 1].qty'), ['items@0']);
    assert.deepEqual(fields('items^(price)'), ['items@0']);
    assert.deepEqual(fields('$map(items, function($v) { $v.x + y })'), ['items@5']);
    assert.deepEqual(fields('$headers.x & $topic'), []);
    assert.deepEqual(fields('"literal" & 1'), []);
  });
  it('take `$$.name` wherever it is written: `$$` is the input in filters and function bodies too', () => {
    assert.deepEqual(fields('items[sku = $$.kind].qty'), ['items@0', 'kind@15']);
    assert.deepEqual(fields('$map(xs, function($v) { $v & $$.sep })'), ['xs@5', 'sep@32']);
    assert.deepEqual(fields('$$.a & $$'), ['a@3']);
  });
});

describe('the `field != literal` comparisons a message without the field makes false (missingFieldComparisons)', () => {
  const found = (source: string) => compileExpression(source).missingFieldComparisons.map((c) => `${c.name}@${c.index} ${c.field} [${c.text}]${c.whole ? ' whole' : ''}`);
  it('are those where the truth is read (the root, parentheses, `and` / `or`), each field once, as written', () => {
    assert.deepEqual(found('status != "test"'), ['status@0 status [status != "test"] whole']);
    assert.deepEqual(found('((status != 1))'), ['status@2 status [status != 1] whole']);
    assert.deepEqual(found('a > 1 and (`order state` != "new" or b)'), ['order state@11 `order state` [`order state` != "new"]']);
    assert.deepEqual(found('$.s != true'), ['s@0 $.s [$.s != true] whole']);
    assert.deepEqual(found('s != "a" and s != "b"'), ['s@0 s [s != "a"]']);
  });
  it('leave out =, in, != null (the messages without a value are meant to go), a literal on the left, a field read elsewhere (a guard), a path, and a comparison inside a function or condition', () => {
    for (const source of [
      's = "a"',
      's in ["a"]',
      's != null',
      '(`order state` != null)',
      '"a" != s',
      '$exists(s) and s != "a"',
      's and s != "a"',
      's != "a" or $not($exists(s))',
      'a.b != "x"',
      's != t',
      '$not(s != "a")',
      's != "a" ? 1 : 0',
      '$boolean(s != "a")',
    ])
      assert.deepEqual(found(source), [], source);
  });
});

describe('the variables only some places bind, as an expression reads them (placeReads)', () => {
  const reads = (source: string) => compileExpression(source).placeReads.map((r) => `${r.name}${r.member === undefined ? '' : `.${r.member}`}@${r.index}`);
  it('names the field read of each by name, wherever it is, and leaves out names the expression binds itself', () => {
    assert.deepEqual(reads('$path.room & $query.`a b` & $principal'), ['path.room@0', 'query.a b@13', 'principal@28']);
    assert.deepEqual(reads('$claims.sub ? $map(xs, function($v) { $path }) : $lookup($query, "q")'), ['claims.sub@0', 'path@38', 'query@57']);
    assert.deepEqual(reads('($principal := "me"; $principal) & $headers.x & $topic'), []);
    assert.deepEqual(reads('$message & $channel & $key'), ['message@0', 'channel@11']);
  });
});

describe('$eval', () => {
  it('says a failure inside nested $evals once: the message does not double at each level', async () => {
    // At maxDepth 25 JSONata's own $eval made a message of 16 MB here; at the default 500 it ran out of memory.
    const expr = compileExpression('$eval(code, $)', { ...defaultExpressionLimits, maxDepth: 25 });
    const err = await expr.evaluate({ code: '$$.code ~> $eval' }, {}).then(
      () => assert.fail('it should fail'),
      (e: Error) => e,
    );
    assert.ok(err.message.length < 300, `${err.message.length} characters: ${err.message.slice(0, 200)}`);
    assert.equal(err.message, 'the text given to $eval failed: expression recursed deeper than 25 levels and was stopped');
    assert.equal(await compileExpression('$eval(code)').evaluate({ code: '$eval("$$.x")', x: 5 }, {}), 5);
  });
  it("says a failure inside its text in the words it gets outside it, not JSONata's wrapper's", async () => {
    const failure = (code: string) =>
      compileExpression('$eval(code)', { ...defaultExpressionLimits, timeoutMs: 100 })
        .evaluate({ code }, {})
        .then(
          () => assert.fail('it should fail'),
          (e: Error) => e.message,
        );
    assert.equal(await failure('($f := function($n){ $f($n + 1) }; $f(1))'), 'the text given to $eval failed: expression ran longer than 100 ms and was stopped');
    assert.equal(await failure('$error("no")'), 'the text given to $eval failed: no');
    assert.equal(await failure('$eval("(")'), 'the text given to $eval does not compile: Expected ")" before end of expression');
    // A client's text nested past JavaScript's stack: said as such a config expression is, not in V8's words.
    assert.equal(
      await failure(`${'('.repeat(20_000)}1${')'.repeat(20_000)}`),
      'the text given to $eval does not compile: the expression nests too deeply to be read (JavaScript ran out of stack): write it flatter, or bind parts to variables with :=',
    );
  });
});

describe('the text of a failure', () => {
  it('is cut at 1024 characters, saying how many were left out: $error of a whole body went into the detail, the log and a dead letter', async () => {
    const err = await compileExpression('$error("bad order: " & $string($))')
      .evaluate({ note: 'x'.repeat(100_000) }, {})
      .then(
        () => assert.fail('it should fail'),
        (e: Error) => e,
      );
    assert.equal(err.message, `bad order: {"note":"${'x'.repeat(1024 - 20)}... (${100_022 - 1024} more characters)`);
  });
});
