import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HandledSequences, holdHandled } from '../../src/kinds/brokers/nats/handled.js';

/**
 * A JetStream consumer's memory of handled stream sequences (kinds/brokers/nats/handled.ts): shared
 * by the subscriptions that read the consumer, kept after the last one's release for the next (a
 * reload's rebuilt route), and bounded in sequences per consumer and in consumers nobody reads.
 */
describe('nats handled sequences', () => {
  it('forgets the oldest sequence past its bound, and tells the lowest it holds', () => {
    const seqs = new HandledSequences(3);
    for (const n of [5, 2, 9]) seqs.add(n);
    assert.equal(seqs.oldest(), 2);
    seqs.add(10);
    assert.deepEqual(
      [5, 2, 9, 10].map((n) => seqs.has(n)),
      [false, true, true, true],
    );
    assert.equal(seqs.oldest(), 2);
  });

  it("is the consumer's: a subscription of the same stream (as created) and consumer has what one before it handled", () => {
    const first = holdHandled('ORDERS', '2026-12-07T10:00:00.000000001Z', 'eventgate-a');
    first.sequences.add(7);
    first.release();
    const next = holdHandled('ORDERS', '2026-12-07T10:00:00.000000001Z', 'eventgate-a');
    assert.equal(next.sequences.has(7), true);
    // Another consumer, or the stream made again (its sequences name other messages): nothing.
    assert.equal(holdHandled('ORDERS', '2026-12-07T10:00:00.000000001Z', 'eventgate-b').sequences.has(7), false);
    assert.equal(holdHandled('ORDERS', '2026-12-07T11:00:00.000000001Z', 'eventgate-a').sequences.has(7), false);
    next.release();
  });

  it('keeps the memories of the last 16 consumers nobody reads, and every one still read', () => {
    const read = holdHandled('HELD', 'c', 'eventgate-read');
    read.sequences.add(1);
    for (let i = 0; i < 17; i++) {
      const h = holdHandled('LEFT', 'c', `eventgate-${i}`);
      h.sequences.add(1);
      h.release();
      h.release(); // a second release changes nothing
    }
    assert.equal(holdHandled('LEFT', 'c', 'eventgate-0').sequences.has(1), false, 'the 17th consumer left pushed out the first');
    assert.equal(holdHandled('LEFT', 'c', 'eventgate-1').sequences.has(1), true);
    assert.equal(holdHandled('HELD', 'c', 'eventgate-read').sequences.has(1), true);
    read.release();
  });
});
