import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { eventually, startGateway, useGateway, type RunningGateway } from '../helpers/gateway.js';
import { openStream, parseEvents, untagged } from '../helpers/sse.js';

/**
 * A Last-Event-ID past the end of the route's topic is not a position it ever gave: the gateway
 * restarted (memory topics begin again at 0) or the Kafka topic was created again. Reading after
 * it skipped every event the topic now holds, silently; the client is told and gets them all.
 */
describe('SSE resume from an id past the end of the topic', () => {
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory, retain: 100 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: orders }
  - name: stream
    from: { broker: local, topic: orders }
    to: { listener: api, path: /orders/stream }
  - name: in-fresh
    from: { listener: api, path: /fresh }
    to: { broker: local, topic: fresh }
  - name: fresh-stream
    from: { broker: local, topic: fresh }
    to: { listener: api, path: /fresh/stream }
`,
  );

  it('says so in an eventgate.resume event and replays from the oldest retained event', async () => {
    for (const n of [1, 2, 3]) {
      const res = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
      assert.equal(res.status, 200);
    }
    // As a browser would after the gateway restarted: its last id was from the topic before.
    const ac = new AbortController();
    const res = await fetch(gw.url('api', '/orders/stream'), { headers: { accept: 'text/event-stream', 'last-event-id': '0:41' }, signal: ac.signal });
    assert.equal(res.status, 200);
    // One more event once the stream is open: it ends the read either way (before the fix it was
    // the first and only event the client got).
    const live = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 4 }) });
    assert.equal(live.status, 200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!parseEvents(text).some((e) => e.data === '{"n":4}')) {
      const { value, done } = await reader.read();
      assert.ok(!done, `stream ended early: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    ac.abort();
    const events = parseEvents(text);
    assert.equal(events[0]!.event, 'eventgate.resume');
    const notice = JSON.parse(events[0]!.data) as { resumed: boolean; gap: boolean; reason: string };
    assert.equal(notice.gap, true);
    assert.match(notice.reason, /past the end of the topic/);
    assertFourFromTheStart(events);
  });

  it('forgets a position past the end of an empty topic, and one on a partition it does not have: every live event reaches the client, with ids of its own', async () => {
    // A memory topic right after a restart holds nothing: the replay sends nothing, and the
    // client's old position (0:2) and a partition the topic never had (7:3) were kept as what it
    // had seen: live events up to offset 2 were held back from it as sent already, and every id
    // after carried 7:3.
    const ac = new AbortController();
    const res = await fetch(gw.url('api', '/fresh/stream'), { headers: { accept: 'text/event-stream', 'last-event-id': '0:2,7:3' }, signal: ac.signal });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    const until = async (done: (events: ReturnType<typeof parseEvents>) => boolean) => {
      while (!done(parseEvents(text))) {
        const { value, done: ended } = await reader.read();
        assert.ok(!ended, `stream ended early: ${text}`);
        text += decoder.decode(value, { stream: true });
      }
    };
    await until((events) => events.some((e) => e.event === 'eventgate.resume'));
    // Offset 3 reached the client before the fix too: reading up to it ends either way.
    for (const n of [1, 2, 3, 4]) {
      const r = await fetch(gw.url('api', '/fresh'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
      assert.equal(r.status, 200);
    }
    await until((events) => events.some((e) => e.data === '{"n":4}'));
    ac.abort();
    const events = parseEvents(text);
    assert.match(JSON.parse(events[0]!.data).reason, /past the end of the topic/);
    assertFourFromTheStart(events);
  });

  it('says so when the id names no partition of the topic (an id of another topic), and replays from the oldest retained event', async () => {
    // The four events of the first test; before, they came without a word, as if it were a resume.
    const stream = await openStream(gw.url('api', '/orders/stream'), { 'last-event-id': '7:3' });
    const sawFour = () => stream.events().some((e) => e.data === '{"n":4}');
    try {
      await eventually(() => assert.ok(sawFour(), stream.text()));
    } finally {
      stream.close();
    }
    const events = stream.events();
    assert.equal(events[0]!.event, 'eventgate.resume');
    assert.match(JSON.parse(events[0]!.data).reason, /^Last-Event-ID names no partition of this topic/);
    assertFourFromTheStart(events);
  });
});

describe('SSE resume after a restart with the id the earlier run gave (a memory topic begun again)', () => {
  const config = `
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: orders }
  - name: stream
    from: { broker: local, topic: orders }
    to: { listener: api, path: /orders/stream }
`;
  const post = async (gw: RunningGateway, n: number) => {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
  };
  let second: RunningGateway | undefined;
  after(() => second?.stop());

  it('names the restart in the notice, and sends the new run from its oldest retained event', async () => {
    // The earlier run: a browser saw the third event, then the gateway was restarted.
    const first = await startGateway(config);
    let lastId: string;
    try {
      const stream = await openStream(first.url('api', '/orders/stream'));
      for (const n of [1, 2, 3]) await post(first, n);
      await eventually(() => assert.equal(stream.events().length, 3));
      lastId = stream.events().at(-1)!.id!;
      stream.close();
    } finally {
      await first.stop();
    }
    second = await startGateway(config);
    for (const n of [1, 2, 3, 4]) await post(second, n);
    // The browser's reconnect to the restarted gateway, with the id it kept.
    const resumed = await openStream(second.url('api', '/orders/stream'), { 'last-event-id': lastId });
    try {
      await eventually(() =>
        assert.ok(
          resumed.events().some((e) => e.data === '{"n":4}'),
          resumed.text(),
        ),
      );
    } finally {
      resumed.close();
    }
    const events = resumed.events();
    assert.equal(events[0]!.event, 'eventgate.resume');
    const notice = JSON.parse(events[0]!.data) as { resumed: boolean; gap: boolean; reason: string };
    assert.equal(notice.gap, true);
    // It named a reload or another topic only, which the operator had not done: the restart is what a page's user sees.
    assert.match(notice.reason, /a memory topic of another instance or an earlier run of the gateway/);
    assertFourFromTheStart(events);
  });

  // Behind a load balancer a reconnecting browser may reach another instance, which a rolling
  // deploy makes likely: the notice named only an earlier run, and the operator had restarted nothing.
  it('names another instance in the notice, for an id of another instance running beside the restarted one', async () => {
    const other = await startGateway(config);
    let lastId: string;
    try {
      const stream = await openStream(other.url('api', '/orders/stream'));
      await post(other, 1);
      await eventually(() => assert.equal(stream.events().length, 1));
      lastId = stream.events()[0]!.id!;
      stream.close();
      const resumed = await openStream(second!.url('api', '/orders/stream'), { 'last-event-id': lastId });
      try {
        await eventually(() =>
          assert.ok(
            resumed.events().some((e) => e.data === '{"n":4}'),
            resumed.text(),
          ),
        );
      } finally {
        resumed.close();
      }
      const notice = JSON.parse(resumed.events()[0]!.data) as { resumed: boolean; gap: boolean; reason: string };
      assert.equal(notice.gap, true);
      assert.match(notice.reason, /a memory topic of another instance or an earlier run of the gateway/);
      assertFourFromTheStart(resumed.events());
    } finally {
      await other.stop();
    }
  });
});

/** After the resume notice: the four messages posted, each with an id of the topic as it is now (0:0 to 0:3). */
function assertFourFromTheStart(events: ReturnType<typeof parseEvents>): void {
  assert.deepEqual(
    events.slice(1).map((e) => [untagged(e.id), JSON.parse(e.data)]),
    [
      ['0:0', { n: 1 }],
      ['0:1', { n: 2 }],
      ['0:2', { n: 3 }],
      ['0:3', { n: 4 }],
    ],
  );
}
