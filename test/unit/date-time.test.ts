import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fullFormats } from 'ajv-formats/dist/formats.js';
import { isDateTime } from '../../src/plan/date-time.js';
import { JsonSchemaCompiler } from '../../src/plan/json-schema.js';
import { prng } from '../helpers/prng.js';

/** ajv-formats' own date-time, the definition eventgate's must match exactly. */
const reference = (fullFormats['date-time'] as { validate: (s: string) => boolean }).validate;

const VALID = [
  '2026-11-23T10:00:00Z',
  '2026-11-23t10:00:00z',
  '2026-11-23 10:00:00+01:00',
  '2024-02-29T23:59:59.123456789-05:30',
  '2016-12-31T23:59:60Z',
  '2016-12-31T18:59:60-0500',
  '2017-01-01T00:59:60+01:00',
  '1999-12-31T23:59:59.9+23:59',
  '2000-02-29T00:00:00+00',
  '2026-11-23\u00a010:00:00Z',
];

/** Characters that matter to the grammar, and some that look like they might. */
const ALPHABET = ['0', '1', '2', '3', '4', '5', '6', '9', ':', '-', '+', '.', 'T', 't', 'Z', 'z', ' ', '\t', '\n', '\u00a0', '\u2028', '\ufeff', 'x', '/', '٣', '０', ''];

describe('date-time format', () => {
  it('accepts what ajv-formats accepts and nothing else', () => {
    const next = prng(20261201);
    const pick = <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]!;
    const cases = new Set<string>(VALID);
    for (const base of VALID) {
      // Every single-character change, insertion and deletion of every valid example.
      for (let i = 0; i <= base.length; i++) {
        for (const c of ALPHABET) {
          cases.add(base.slice(0, i) + c + base.slice(i + 1));
          cases.add(base.slice(0, i) + c + base.slice(i));
        }
      }
    }
    // Random edits stacked on random examples, and digits anywhere (days, months, leap years, offsets).
    for (let n = 0; n < 60000; n++) {
      let s = pick(VALID);
      for (let k = 1 + Math.floor(next() * 4); k > 0; k--) {
        const i = Math.floor(next() * (s.length + 1));
        const c = next() < 0.7 ? String(Math.floor(next() * 10)) : pick(ALPHABET);
        s = next() < 0.8 ? s.slice(0, i) + c + s.slice(i + 1) : s.slice(0, i) + c + s.slice(i);
      }
      cases.add(s);
    }
    let accepted = 0;
    for (const s of cases) {
      assert.equal(isDateTime(s), reference(s), JSON.stringify(s));
      if (reference(s)) accepted++;
    }
    // The comparison is only worth something if both sides were exercised.
    assert.ok(accepted > 1000 && accepted < cases.size - 1000, `${accepted} of ${cases.size} accepted`);
  });

  it('is the date-time of compiled JSON Schemas, with formatMinimum still working', () => {
    const { validate } = new JsonSchemaCompiler().compile({ type: 'string', format: 'date-time', formatMinimum: '2026-01-01T00:00:00Z' });
    assert.equal(validate!('2026-02-30T00:00:00Z'), false);
    assert.equal(validate!('2026-11-23T10:00:00Z'), true);
    assert.equal(validate!('2025-11-23T10:00:00Z'), false);
  });
});
