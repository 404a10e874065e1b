import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pairedRatio, slicing } from '../../bench/compare.js';

describe('bench slicing (alternating rounds per side)', () => {
  it('gives an odd number of rounds, up to five, of at least 1.5 s each, so the paired median is one pair', () => {
    const rounds = (d: number) => slicing(d).rounds;
    assert.deepEqual([1, 2, 3, 4, 5, 6, 8, 10, 20].map(rounds), [1, 1, 1, 1, 3, 3, 5, 5, 5]);
    for (const d of [1, 5, 7, 10, 60]) {
      const s = slicing(d);
      assert.equal(s.rounds % 2, 1);
      assert.ok(s.seconds >= 1 && Math.abs(s.seconds * s.rounds - d) < 1e-9);
    }
  });

  it('reports the middle pair of three, not the worse one', () => {
    const s = { subject: [75, 100, 122], baseline: [100, 100, 100] };
    assert.equal(
      pairedRatio(s, (r) => r),
      1,
    );
  });
});
