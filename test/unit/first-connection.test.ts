import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FirstConnection } from '../../src/kinds/brokers/first-connection.js';

/** Settles with 'pending' when `p` has not settled once the microtasks queued now have run. */
const state = (p: Promise<unknown>) => Promise.race([p.then(() => 'resolved'), new Promise((r) => setImmediate(() => r('pending')))]);

describe('a broker first connection', () => {
  it('is true once made, and resolves the waiters of before', async () => {
    const first = new FirstConnection();
    const never = new Promise<void>(() => undefined);
    const waiting = first.when(never);
    assert.notEqual(waiting, true);
    assert.equal(await state(waiting as Promise<void>), 'pending');
    first.connected();
    assert.equal(await state(waiting as Promise<void>), 'resolved');
    assert.equal(first.when(never), true);
  });

  it('forgets a waiter whose route stopped first: the connection no longer resolves it', async () => {
    const first = new FirstConnection();
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const waiting = first.when(stopped) as Promise<void>;
    stop();
    await stopped;
    first.connected();
    assert.equal(await state(waiting), 'pending');
  });
});
