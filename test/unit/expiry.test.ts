import assert from 'node:assert/strict';
import { describe, it, mock } from 'node:test';
import { expireAt, type Expiring, MAX_TIMER_MS } from '../../src/core/expiry.js';

describe('expireAt', () => {
  it('fires at the time given, in steps when it is further off than a timer can wait, and not after being replaced', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 0 });
    try {
      const holder: Expiring = { expiry: undefined };
      let fired = 0;
      // 60 days: more than two of the longest timers.
      const until = 60 * 24 * 3600 * 1000;
      expireAt(holder, until, () => fired++);
      mock.timers.tick(MAX_TIMER_MS);
      mock.timers.tick(MAX_TIMER_MS);
      assert.equal(fired, 0, 'not after 2 x 24.8 days');
      mock.timers.tick(until - 2 * MAX_TIMER_MS);
      assert.equal(fired, 1);
      assert.equal(holder.expiry, undefined);

      expireAt(holder, Date.now() + 1000, () => fired++);
      expireAt(holder, undefined, () => fired++);
      mock.timers.tick(5000);
      assert.equal(fired, 1, 'a replaced expiry does not fire');
    } finally {
      mock.timers.reset();
    }
  });
});
