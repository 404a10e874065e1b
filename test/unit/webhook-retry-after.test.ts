import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retryAfterDelay } from '../../src/kinds/targets/webhook.js';

/** `Retry-After` is delay-seconds or an HTTP-date (RFC 9110 §10.2.3); the e2e file checks that the wait is honoured. */
describe('webhook Retry-After values', () => {
  const now = Date.parse('2026-12-05T12:00:00Z');

  it('reads delay-seconds and the three HTTP-date forms, a date past as at once', () => {
    assert.equal(retryAfterDelay('0', now), 0);
    assert.equal(retryAfterDelay(' 120 ', now), 120_000);
    assert.equal(retryAfterDelay('Sat, 05 Dec 2026 12:00:30 GMT', now), 30_000);
    assert.equal(retryAfterDelay('Saturday, 05-Dec-26 12:00:30 GMT', now), 30_000);
    // asctime has no zone: it is GMT, whatever the gateway's time zone.
    assert.equal(retryAfterDelay('Sat Dec  5 12:00:30 2026', now), 30_000);
    assert.equal(retryAfterDelay('Sat, 05 Dec 2026 11:00:00 GMT', now), 0);
    assert.equal(retryAfterDelay(undefined, now), undefined);
  });

  it('ignores values that are neither (the backoff applies), where Date.parse saw a date in 2001 and retried at once', () => {
    for (const value of ['-1', '1.5', '+3', '-5', 'soon', '', '2026-12-05T12:00:30Z', '1e3', '5 seconds']) {
      assert.equal(retryAfterDelay(value, now), undefined, `Retry-After: ${value}`);
    }
  });
});
