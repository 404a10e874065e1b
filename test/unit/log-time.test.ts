import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isoTime } from '../../src/log.js';
import { prng } from '../helpers/prng.js';

// The log's `time` must read exactly as pino's isoTime (Date#toISOString) did.
describe('log time', () => {
  const pinoIsoTime = (t: number) => `,"time":"${new Date(t).toISOString()}"`;

  it('writes the same text as toISOString at the edges of days, months, leap years and centuries', () => {
    const edges = [
      0,
      Date.UTC(1999, 11, 31, 23, 59, 59, 999),
      Date.UTC(2000, 1, 29, 12, 0, 0, 1),
      Date.UTC(2024, 1, 29, 0, 0, 0, 0),
      Date.UTC(2100, 2, 1, 0, 0, 0, 0),
      Date.UTC(9999, 11, 31, 23, 59, 59, 999),
      Date.UTC(1, 0, 1),
    ];
    for (const t of edges) assert.equal(isoTime(t), pinoIsoTime(t), String(t));
  });

  it('writes the same text as toISOString for 100,000 times between 1970 and 2200', () => {
    const next = prng(42);
    for (let i = 0; i < 100_000; i++) {
      const t = Math.floor(next() * Date.UTC(2200, 0, 1));
      assert.equal(isoTime(t), pinoIsoTime(t));
    }
  });

  it('is now by default', () => {
    const before = Date.now();
    const t = Date.parse(isoTime().slice(9, -1));
    assert.ok(t >= before && t <= Date.now());
  });
});
