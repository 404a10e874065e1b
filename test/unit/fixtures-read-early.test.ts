/**
 * useNatsPeer read before its `before()` ran: a gateway config built at describe time must fail
 * saying so, not name `undefined` (useRabbit's fixture throws likewise).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { useNatsPeer } from '../helpers/peers.js';

describe('useNatsPeer read early', () => {
  const early: unknown[] = [];
  // Registered first, so it runs before the fixture's own before().
  before(() => {
    for (const read of [() => js.server, () => js.peer]) {
      try {
        early.push(read());
      } catch (err) {
        early.push((err as Error).message);
      }
    }
  });
  const js = useNatsPeer();

  it('throws naming what is missing, and gives both once its before() ran', () => {
    assert.deepEqual(early, ["useNatsPeer: no server yet (read outside a test, or before the block's before())", "useNatsPeer: no peer yet (read outside a test, or before the block's before())"]);
    assert.match(js.server.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(typeof js.peer.close, 'function');
  });
});
