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

  it('substitutes inside block scalars as in any other string', () => {
    assert.equal(load('expr: |\n  $x = "${V}"\n', { V: 'v' }).value.expr, '$x = "v"\n');
  });
});
