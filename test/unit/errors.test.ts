import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ErrorCodes, problem, problemBody } from '../../src/core/errors.js';
import { repoRoot } from '../helpers/gateway.js';

/** Rows of docs/errors.md's tables: code → the status cell. */
function documented(): Map<string, string> {
  const text = readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8');
  const rows = new Map<string, string>();
  for (const m of text.matchAll(/^\| `(EG_[A-Z_]+)` \| ([^|]+) \|/gm)) rows.set(m[1]!, m[2]!.trim());
  return rows;
}

describe('error codes', () => {
  it('every code in src/core/errors.ts is documented in docs/errors.md, with its HTTP status', () => {
    const docs = documented();
    for (const [code, def] of Object.entries(ErrorCodes)) {
      assert.ok(docs.has(code), `${code} is missing from docs/errors.md`);
      const status = (def as { status?: number }).status;
      assert.equal(docs.get(code), status === undefined ? '—' : String(status), `${code}: docs/errors.md says ${docs.get(code)}, src/core/errors.ts says ${status ?? 'no status'}`);
    }
  });

  it('docs/errors.md documents no code that src/core/errors.ts does not have', () => {
    const known = new Set(Object.keys(ErrorCodes));
    assert.deepEqual(
      [...documented().keys()].filter((c) => !known.has(c)),
      [],
    );
  });

  it('a problem body has the RFC 9457 members, the code, and errors only when there are some', () => {
    assert.deepEqual(problemBody(problem('EG_INVALID_MESSAGE', 'two errors', { errors: ['/a: x', '/b: y'] })), {
      type: 'urn:eventgate:problem:EG_INVALID_MESSAGE',
      title: 'Message failed validation',
      status: 400,
      detail: 'two errors',
      code: 'EG_INVALID_MESSAGE',
      errors: ['/a: x', '/b: y'],
    });
    assert.equal('errors' in problemBody(problem('EG_NOT_FOUND', 'no route')), false);
  });
});
