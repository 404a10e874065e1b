import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Diagnostic } from '../../src/config/diagnostics.js';
import { parseSource, type Env } from '../../src/config/source.js';

function load(text: string, env: Env = {}): { value: any; diagnostics: Diagnostic[]; fromEnv: Set<string> } {
  const diagnostics: Diagnostic[] = [];
  const src = parseSource('gateway.yaml', text, env, diagnostics);
  return { value: src?.value, diagnostics, fromEnv: src?.fromEnv ?? new Set() };
}

describe('${VAR} substitution', () => {
  it('replaces a variable inside a string', () => {
    assert.deepEqual(load('a: "tcp://${HOST}:9092"', { HOST: 'kafka' }).value, { a: 'tcp://kafka:9092' });
  });

  it('gives a plain scalar that is exactly ${VAR} the type of its value', () => {
    const { value } = load('port: ${PORT}\non: ${ON}\nratio: ${RATIO}\nname: ${NAME}', { PORT: '8080', ON: 'true', RATIO: '0.5', NAME: 'api' });
    assert.deepEqual(value, { port: 8080, on: true, ratio: 0.5, name: 'api' });
  });

  it('keeps a quoted ${VAR} a string', () => {
    assert.deepEqual(load('port: "${PORT}"\nother: \'${PORT}\'', { PORT: '8080' }).value, { port: '8080', other: '8080' });
  });

  it('keeps a value that is not a plain YAML number or boolean a string, even when whole', () => {
    assert.deepEqual(load('a: ${A}\nb: ${B}', { A: '[1, 2]', B: 'x: 1' }).value, { a: '[1, 2]', b: 'x: 1' });
    // A value is data, not YAML: `PORT="8081 # staging"` was read as 8081 without a word, and a
    // tag, an anchor or a document marker in a value as the number after it.
    const more = { C: '8081 # staging', D: '!!int 1', E: '&a 1', F: '--- 1', G: '1\n...', H: ' 8081 ' };
    assert.deepEqual(load('c: ${C}\nd: ${D}\ne: ${E}\nf: ${F}\ng: ${G}\nh: ${H}', more).value, { ...Object.fromEntries(Object.entries(more).map(([k, v]) => [k.toLowerCase(), v])), h: 8081 });
  });

  it('does not type a variable that is only part of a scalar', () => {
    assert.deepEqual(load('a: ${N}0', { N: '1' }).value, { a: '10' });
  });

  it('uses the default of ${VAR:-default} when the variable is unset or empty, and the variable when set', () => {
    assert.deepEqual(load('a: ${X:-fallback}\nb: ${Y:-1}\nc: ${Z:-}', { Y: '' }).value, { a: 'fallback', b: 1, c: '' });
    assert.deepEqual(load('a: ${X:-fallback}', { X: 'set' }).value, { a: 'set' });
  });

  // Regression: `${VAR:-}` (an explicit empty default) became null, which no string option accepts.
  it('keeps an empty value an empty string, not null', () => {
    assert.deepEqual(load('a: ${A:-}\nb: ${B}', { B: '' }).value, { a: '', b: '' });
  });

  it('gives the typed default for a whole variable: `port: ${PORT:-8080}` is a number', () => {
    assert.equal(load('port: ${PORT:-8080}').value.port, 8080);
  });

  it('reports an unset variable without default, with its name and exact position, once per use', () => {
    const { diagnostics } = load('a:\n  b: pre-${MISSING}-post\n  c: ${MISSING}');
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.column, d.path, d.code]),
      [
        [2, 10, 'a.b', 'EG_CONFIG_ENV'],
        [3, 6, 'a.c', 'EG_CONFIG_ENV'],
      ],
    );
    assert.match(diagnostics[0]!.message, /environment variable 'MISSING' is not set and has no default/);
  });

  it('reports two keys of one map that a ${VAR} made the same, rather than keeping the later one without a word', () => {
    const text = 'brokers:\n  ${B:-local}: { kind: memory }\n  local: { kind: memory, retain: 5 }\n  ${C}: { kind: memory }';
    const { diagnostics } = load(text, { C: 'other' });
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.column, d.code, d.message]),
      [[3, 3, 'EG_CONFIG_CONFLICT', "key 'local' is given twice in this map: here (local) and at line 2 (${B:-local}), once their ${VAR}s are replaced"]],
    );
    assert.deepEqual(load(text, { B: 'memory', C: 'other' }).diagnostics, []);
    // Merge keys may repeat (`<<: *a` then `<<: *b`): not names.
    assert.deepEqual(load('a: &a { k: 1 }\nb: &b { p: 2 }\nc:\n  <<: *a\n  <<: *b').diagnostics, []);
  });

  it("reports a key that is an alias of another key's name in its map (YAML compares alias keys as nodes, and the later replaced the other)", () => {
    const conflicts = (text: string) => load(text).diagnostics.map((d) => [d.line, d.column, d.code, d.message]);
    const alias = 'an alias standing for the name its anchor holds: the second would replace the first';
    assert.deepEqual(conflicts('name: &n local\nbrokers:\n  *n : { kind: memory }\n  local: { kind: memory, retain: 5 }'), [
      [4, 3, 'EG_CONFIG_CONFLICT', `key 'local' is given twice in this map: here (local) and at line 3 (*n), ${alias}`],
    ]);
    assert.deepEqual(conflicts('name: &n local\nbrokers:\n  *n : { kind: memory }\n  *n : { kind: memory, retain: 5 }'), [
      [4, 3, 'EG_CONFIG_CONFLICT', `key 'local' is given twice in this map: here (*n) and at line 3 (*n), ${alias}`],
    ]);
    // An alias key alone in its map is its name, as before.
    assert.deepEqual(load('name: &n local\nbrokers:\n  *n : { kind: memory }').value, { name: 'local', brokers: { local: { kind: 'memory' } } });
    // Two `.nan` keys are no name (said as a number that is not finite), not "a string and a number".
    assert.deepEqual(
      load('m:\n  .nan: 1\n  .NaN: 2').diagnostics.map((d) => d.code),
      ['EG_CONFIG_SCHEMA', 'EG_CONFIG_SCHEMA'],
    );
  });

  it('reports every missing variable in one scalar', () => {
    const { diagnostics } = load('url: "${SCHEME}://${HOST}"');
    assert.deepEqual(
      diagnostics.map((d) => [d.column, /'(\w+)'/.exec(d.message)![1]]),
      [
        [7, 'SCHEME'],
        [19, 'HOST'],
      ],
    );
  });

  it('treats $${VAR} as a literal ${VAR}', () => {
    const { value, diagnostics } = load('a: "$${NOT_A_VAR} and ${X}"', { X: 'x' });
    assert.deepEqual(diagnostics, []);
    assert.equal(value.a, '${NOT_A_VAR} and x');
  });

  it('leaves text without variables alone, and a lone $ or { is just text', () => {
    assert.deepEqual(load('a: "cost: $5 {x}"\nb: $path.room').value, { a: 'cost: $5 {x}', b: '$path.room' });
  });

  it('records which values came from the environment (they are secrets in status output)', () => {
    const { fromEnv } = load('admin:\n  token: ${TOKEN}\n  port: 9000\nlist:\n  - ${A:-x}', { TOKEN: 't' });
    assert.deepEqual([...fromEnv].sort(), ['admin.token', 'list[0]']);
  });

  it('reads a default that holds a reference, as shells and Docker Compose do', () => {
    const text = 'host: ${PRIMARY:-${FALLBACK:-localhost}}\nport: ${P:-${Q:-8080}}\ntopic: "t-${A:-${B}-x}.y"';
    assert.deepEqual(load(text, { B: 'b' }).value, { host: 'localhost', port: 8080, topic: 't-b-x.y' });
    assert.deepEqual(load(text, { FALLBACK: 'f', Q: '9090', B: 'b' }).value, { host: 'f', port: 9090, topic: 't-b-x.y' });
    assert.deepEqual(load(text, { PRIMARY: 'p', FALLBACK: 'f', P: '1', A: 'a' }).value, { host: 'p', port: 1, topic: 't-a.y' });
  });

  it("reports a default's own missing variable only when the default is used, at that variable", () => {
    assert.deepEqual(load('a: ${A:-${MISSING}}', { A: 'set' }).diagnostics, []);
    const { diagnostics } = load('a: ${A:-${MISSING}}');
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.column, /'(\w+)'/.exec(d.message)![1]]),
      [[1, 9, 'MISSING']],
    );
  });

  it('counts an environment value reached through a default as a secret', () => {
    const diagnostics: Diagnostic[] = [];
    const src = parseSource('gateway.yaml', 'token: ${A:-${TOKEN}}', { TOKEN: 's3cret' }, diagnostics);
    assert.deepEqual([...src!.envValues], ['s3cret']);
  });

  it('keeps $${...} literal to its closing brace, nested references included', () => {
    assert.equal(load('a: "$${A:-${B}} ${C}"', { C: 'c' }).value.a, '${A:-${B}} c');
  });

  // Before, these stayed in the value as text: `${HOST` became a host named "${HOST".
  it('reports a reference it cannot read at its place, instead of keeping it as text', () => {
    const { diagnostics } = load('a: ${1X}\nb: "x ${HOST"\nc: ${A:-x\nd: ${A:?required}\ne: ${A-x}\nf: ${}');
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.column, d.message]),
      [
        [1, 4, "'${1X}' is not a variable reference: a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)"],
        [2, 7, "'${HOST' is not closed: a reference ends with } (write $${ for a literal ${)"],
        [3, 4, "'${A:-x' is not closed: a reference ends with } (write $${ for a literal ${)"],
        [4, 4, "'${A:?required}' is not a reference this config takes: write ${A} or ${A:-default}"],
        [5, 4, "'${A-x}' is not a reference this config takes: write ${A} or ${A:-default}"],
        [6, 4, "'${}' is not a variable reference: a name is letters, digits and _, not starting with a digit (write $${ for a literal ${)"],
      ],
    );
  });

  it('substitutes inside block scalars as in any other string', () => {
    assert.equal(load('expr: |\n  $x = "${V}"\n', { V: 'v' }).value.expr, '$x = "v"\n');
  });
});
