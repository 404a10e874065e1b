import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually } from '../helpers/gateway.js';
import { openStream, useSseKafka } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

/**
 * A live event that arrives while a client is being replayed waits until the replay is over. Its
 * id must name what the client has seen by then, the replayed events included: it used to carry
 * the path's live positions of its arrival, which can be behind the replay on another partition,
 * and a reconnect with that id got the replayed events a second time.
 */
describe('SSE: a live event held during a resume', () => {
  const { kafka, gw } = useSseKafka('sse-held', 'sse-held-stream');

  /** POSTs `{n, room}`; the answer (its partition, once Kafka took it). */
  const publish = async (n: number, room: string) => {
    const res = await fetch(gw.url('api', '/ticks'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, room }) });
    assert.equal(res.status, 200);
    const { deliveries } = (await res.json()) as { deliveries: { partition: number }[] };
    return deliveries[0]!.partition;
  };
  const numbers = (events: { data: string }[]) => events.map((e) => JSON.parse(e.data).n as number);

  it('carries an id that covers the replayed events: a reconnect with it gets none of them again', async () => {
    // Which partition each room's key goes to; a slow room, and a fast one on another partition.
    const probe = await openStream(gw.url('api', '/ticks'));
    const partitionOf = new Map<string, number>();
    let n = 0;
    for (let r = 0; r < 12; r++) partitionOf.set(`r${r}`, await publish(++n, `r${r}`));
    const slow = 'r0';
    const fast = [...partitionOf.keys()].find((r) => partitionOf.get(r) !== partitionOf.get(slow))!;
    // Partition p's leader is broker p + 1 (useSseKafka).
    const slowBroker = partitionOf.get(slow)! + 1;
    await eventually(() => assert.equal(probe.events().length, n), 15000);

    // The slow partition's leader answers 2 s late from now on: the route's consumer gets B late,
    // and so does the resume below, which reads B. D, on the fast partition, arrives live while the
    // resume waits, so it is held, then sent after B.
    await kafka().delayAnswers(slowBroker, 2000);
    let slowAnswer: Promise<number> | undefined;
    try {
      let dId: string | undefined;
      // Tried again (at most three times) when the resume did not read B: on a loaded machine B
      // can still reach the partition after the resume read it, and then comes live, after D.
      for (let attempt = 1; dId === undefined; attempt++) {
        const lastId = probe.events().at(-1)!.id!;
        const b = ++n;
        const producesBefore = kafka().produceRequests();
        slowAnswer = publish(b, slow);
        // B must be in the partition before the resume reads it (the mock stores a record when its
        // request arrives, and answers late): under load the POST could reach it after the resume.
        await eventually(() => assert.ok(kafka().produceRequests() > producesBefore), 15000);
        const resumed = await openStream(gw.url('api', '/ticks'), { 'last-event-id': lastId });
        const d = ++n;
        await publish(d, fast);
        await eventually(() => assert.equal(resumed.events().length, 2), 20000);
        // The scenario happened as meant: live, D came before B.
        await eventually(() => assert.deepEqual(numbers(probe.events().slice(-2)), [d, b]), 20000);
        await slowAnswer;
        if (attempt < 3 && numbers(resumed.events())[0] === d) {
          resumed.close();
          continue;
        }
        // The resume read B, and D, live meanwhile, was held until it was over.
        assert.deepEqual(numbers(resumed.events()), [b, d]);
        dId = resumed.events().at(-1)!.id!;
        resumed.close();
      }
      await kafka().delayAnswers(slowBroker, 0);

      // A browser reconnecting with D's id: the next live event, and nothing it saw already.
      const again = await openStream(gw.url('api', '/ticks'), { 'last-event-id': dId });
      const e = ++n;
      await publish(e, fast);
      await eventually(() => assert.ok(numbers(again.events()).includes(e)), 15000);
      const events = again.events();
      again.close();
      assert.deepEqual(numbers(events), [e], `resumed after ${dId}: ${JSON.stringify(events)}`);
    } finally {
      probe.close();
      await kafka().delayAnswers(slowBroker, 0);
      await slowAnswer?.catch(() => undefined);
    }
  });
});
