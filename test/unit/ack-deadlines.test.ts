import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { AckDeadlines, AckTimeout } from '../../src/kinds/brokers/acknowledgement.js';

const never = () => new Promise<never>(() => undefined);

describe("AckDeadlines (one timer for a broker's publishes)", () => {
  // Its timer never keeps a process alive (unref): something else must, while the tests wait for it.
  let alive: NodeJS.Timeout;
  before(() => {
    alive = setInterval(() => undefined, 1000);
  });
  after(() => clearInterval(alive));

  it('settles with the acknowledgement when it comes first, and with AckTimeout (calling onExpire) when the deadline does', async () => {
    const d = new AckDeadlines(30, 'b');
    let expired = 0;
    const acked = d.within(Promise.resolve('ack'), () => expired++);
    const refused = d.within(Promise.reject(new Error('nack')), () => expired++);
    const lost = d.within(never(), () => expired++);
    assert.equal(await acked, 'ack');
    await assert.rejects(refused, /nack/);
    await assert.rejects(lost, (err: Error) => err instanceof AckTimeout && /no acknowledgement from broker 'b' within 30 ms/.test(err.message));
    assert.equal(expired, 1);
  });

  it('lets go of a settled publish at once, not when its deadline would have passed', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const d = new AckDeadlines(60_000, 'b');
    // What a broker's publish does: the expiry callback closes over the message being published.
    const publish = () => {
      const message = { value: Buffer.alloc(8 * 1024 * 1024) };
      const deadline = d.add(() => void message.value.length);
      return { deadline, message: new WeakRef(message) };
    };
    const { deadline, message } = publish();
    const kept = publish();
    deadline.settled = true;
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(message.deref(), undefined, 'the settled publish is still held by its deadline');
    assert.notEqual(kept.message.deref(), undefined, 'an unsettled one is held until its acknowledgement or deadline');
    kept.deadline.settled = true;
  });

  it('keeps nothing of a settled publish, not even its own entry, while older publishes still wait', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const d = new AckDeadlines(60_000, 'b');
    let expired = 0;
    // An unanswered publish made first: the settled ones after it must not wait for it to go.
    const oldest = d.track({ expire: () => expired++ });
    // In a function of its own, so no variable of this test still holds the last one.
    const answered = () => {
      const deadline = d.track({ expire: () => expired++ });
      deadline.settled = true;
      return new WeakRef(deadline);
    };
    const settled = Array.from({ length: 1000 }, answered);
    await new Promise((r) => setImmediate(r));
    gc();
    assert.equal(settled.filter((w) => w.deref() !== undefined).length, 0, 'settled deadlines are still held');
    assert.equal(oldest.settled, false);
    oldest.settled = true;
    assert.equal(expired, 0);
  });

  it('expires every unanswered publish among thousands answered, in order, and keeps working after its queue was compacted', async () => {
    const d = new AckDeadlines(20, 'b');
    const order: number[] = [];
    const all: Promise<unknown>[] = [];
    for (let i = 0; i < 5000; i++) {
      const p = i % 1000 === 999 ? never() : Promise.resolve(i);
      all.push(d.within(p, () => order.push(i)).catch((err: Error) => assert.ok(err instanceof AckTimeout)));
    }
    await Promise.all(all);
    assert.deepEqual(order, [999, 1999, 2999, 3999, 4999]);
    // A later round, after the queue emptied and the timer stopped.
    await assert.rejects(d.within(never()), AckTimeout);
    assert.equal(await d.within(Promise.resolve('again')), 'again');
  });
});
