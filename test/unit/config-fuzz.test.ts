import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { repoRoot } from '../helpers/gateway.js';
import { prng } from '../helpers/prng.js';
import { tempDir } from '../helpers/reaper.js';

/**
 * Seeded config fuzzing (the twenty-eighth session's bad-input audit): the examples and the whole
 * configs of docs/config.md, mutated line by line (keys deleted, duplicated, renamed, values
 * retyped, YAML oddities: tabs, anchors, merge keys, flow keys, deep nesting, `${VAR}` edge
 * cases, a BOM, CRLF, NUL and bytes that are not UTF-8), each loaded as `validate` loads it. A load
 * must never throw, and every problem must be at a FILE:LINE:COL and in the gateway's words: no
 * stack frame, no TypeError, no bare "Maximum call stack size exceeded", no process warning.
 * A failing case is replayed from SEED and its index.
 */
const SEED = 28;
const CASES = 150;

const WEIRD = [
  '1e400',
  '-0',
  '0x10',
  '.inf',
  '.nan',
  '99999999999999999999999',
  '~',
  'null',
  'true',
  '[]',
  '{}',
  '[1,[2,[3]]]',
  "''",
  '${',
  '${}',
  '${A',
  '${A:-${B}}',
  '$${A}',
  '${ A }',
  '${UNSET}',
  '${UNSET:-}',
  '${1}',
  '*nope',
  '&a x',
  '!!binary aGk=',
  '!foo bar',
  '!!timestamp 2020-01-01',
  '? x',
  '- - -',
  '|',
  '"\\x"',
  'schemas/../../../../etc/passwd',
  '/dev/zero',
  'nope.json',
  'schemas/',
  '.',
  '-1',
  '4294967296',
  '9007199254740993',
  '1.5',
  '"\\ud800"',
  `"${'a'.repeat(3000)}"`,
];
const KEYS = [
  'version',
  'include',
  'brokers',
  'listeners',
  'chains',
  'routes',
  'kind',
  'port',
  'path',
  'topic',
  'key',
  'from',
  'to',
  'through',
  'schema',
  'filter',
  'transform',
  'headers',
  '<<',
  '__proto__',
  'constructor',
  'toString',
  '',
];
const ODD_LINES = ['%YAML 1.1', '...', '---', '? [a]\n: 1', '[a]: 1', '{a: 1}: 2', '<<: *x', '<<: [1]'];

function mutate(text: string, rnd: () => number): Buffer {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  let lines = text.split('\n');
  const value = (li: number, f: (before: string, v: string) => string) => (lines[li] = lines[li]!.replace(/(:\s*)(\S.*)$/, (_, a: string, v: string) => f(a, v)));
  for (let n = 1 + Math.floor(rnd() * 3); n > 0; n--) {
    if (lines.length === 0) lines = [''];
    const li = Math.floor(rnd() * lines.length);
    const indent = /^\s*/.exec(lines[li]!)![0];
    switch (Math.floor(rnd() * 14)) {
      case 0:
        lines.splice(li, 1);
        break;
      case 1:
        lines.splice(li, 0, lines[li]!);
        break;
      case 2:
        lines[li] = `\t${lines[li]}`;
        break;
      case 3:
        value(li, (a) => a + pick(WEIRD));
        break;
      case 4:
        lines[li] = lines[li]!.replace(/^(\s*-?\s*)([\w<-]+):/, (_, a: string) => `${a}${pick(KEYS)}:`);
        break;
      case 5:
        value(li, (a, v) => `${a}&x ${v}`);
        lines.splice(Math.min(lines.length, li + 1 + Math.floor(rnd() * 5)), 0, `${indent}  y: *x`);
        break;
      case 6:
        value(li, (a) => a + '['.repeat(3000) + ']'.repeat(3000));
        break;
      case 7:
        lines = lines.slice(0, li);
        break;
      case 8:
        lines[li] = ` ${lines[li]}`;
        break;
      case 9:
        value(li, (a) => `${a}\${A:-${pick(WEIRD)}}`);
        break;
      case 10:
        lines.splice(li, 0, `${indent}${pick(KEYS)}: ${pick(WEIRD)}`);
        break;
      case 11:
        value(li, (a, v) => `${a}${JSON.stringify(v + pick(['\u0000', '\u2028', '\ufeff', '\u001b', 'é']))}`);
        break;
      case 12:
        lines.splice(li, 0, `${indent}${pick(ODD_LINES)}`);
        break;
      default:
        lines[li] = lines[li]!.slice(0, Math.floor(rnd() * lines[li]!.length));
    }
  }
  let out = lines.join('\n');
  const r = rnd();
  if (r < 0.05) out = `\ufeff${out}`;
  else if (r < 0.1) out = out.replace(/\n/g, '\r\n');
  let bytes = Buffer.from(out);
  if (rnd() < 0.05) {
    const at = Math.floor(rnd() * bytes.length);
    bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([pick([0x00, 0xff, 0xc3, 0x80, 0xed])]), bytes.subarray(at)]);
  }
  return bytes;
}

const NOT_OUR_WORDS = /\n\s+at |TypeError|ReferenceError|Cannot read prop|Maximum call stack|\[object Object\]|is not a function|is not iterable/;

describe('config fuzzing: a mutated config is refused with problems at FILE:LINE:COL, never an exception', () => {
  it(`${CASES} mutations of the examples and docs/config.md's configs (seed ${SEED})`, async () => {
    const dir = tempDir('config-fuzz');
    cpSync(join(repoRoot, 'examples'), dir, { recursive: true });
    // The AsyncAPI examples are left out: their parse runs in a thread and takes seconds (asyncapi-upload-fuzz fuzzes documents).
    const bases = ['gateway.yaml', 'bridge-mqtt-kafka-amqp.yaml', 'kafka.yaml', 'http-edge.yaml', 'nats-websocket.yaml'].map((f) => readFileSync(join(dir, f), 'utf8'));
    for (const m of readFileSync(join(repoRoot, 'docs', 'config.md'), 'utf8').matchAll(/```yaml\n([\s\S]*?)```/g)) if (/^version:/m.test(m[1]!) && !/^asyncapi:/m.test(m[1]!)) bases.push(m[1]!);
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const registry = defaultRegistry();
    const env = { A: 'x', KAFKA_BROKERS: 'localhost:9092' };
    const rnd = prng(SEED);
    const file = join(dir, 'fuzz.yaml');
    try {
      for (let i = 0; i < CASES; i++) {
        const text = mutate(bases[Math.floor(rnd() * bases.length)]!, rnd);
        writeFileSync(file, text);
        const where = `case ${i} (seed ${SEED}):\n${text.toString('utf8').slice(0, 2000)}`;
        const { diagnostics } = await loadPlan(file, { registry, env });
        for (const d of diagnostics) {
          assert.ok(d.file && Number.isInteger(d.line) && d.line >= 1 && Number.isInteger(d.column) && d.column >= 1, `${where}\nno FILE:LINE:COL: ${JSON.stringify(d)}`);
          assert.doesNotMatch(d.message, NOT_OUR_WORDS, where);
        }
      }
      // Process warnings are emitted on the next tick.
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(warnings, []);
    } finally {
      process.off('warning', onWarning);
    }
  });
});
