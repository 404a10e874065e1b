import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { freezeProcess, publishThroughOutage, readyz } from '../helpers/outage.js';
import { scrape, scrapeUntil, type Scrape } from '../helpers/prometheus.js';
import { eventually, startGateway, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { answerSideBySide, arrivedSideBySide, SlowEndpoint } from '../helpers/slow-endpoint.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { RawNats, type NatsReceived } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';

// Room enough that no publish meant to be stored meets its deadline on a loaded machine (one of the 200 concurrent
// publishes below took between 1 and 2.5 s there, against the 1.5 s it had).
const ROOM_MS = 30_000;

// The kind's cases on one gateway with many routes (publishing, headers, consuming, core subjects),
// an outage of nats-server, and streams that must exist. A JetStream route interrupted (targets
// failing, a stop, a rebuild) is in nats-jetstream-interruptions.test.ts; reloads and rolling
// updates that change a route's startFrom or subject in nats-jetstream-reloads.test.ts.

describe('kind: nats (against nats-server with JetStream)', () => {
  let nats: MessageServer;
  let config: string;
  let peer: RawNats;
  /** The webhook of route `hooked` (several JetStream messages in hand at once). */
  let hook: SlowEndpoint;
  const ORDERED = 'concurrency: 8, orderBy: $headers.k, retry: { attempts: 3, backoffMs: 10 }';

  before(async () => {
    nats = await startNats();
    hook = await SlowEndpoint.start();
    config = `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    reconnectTimeWaitMs: 200
    ackTimeoutMs: ${ROOM_MS}
    streams:
      ORDERS: { subjects: ["orders.>"], maxAgeMs: 3600000, duplicateWindowMs: 30000 }
      SCRATCH: { subjects: ["scratch.>"] }
      CONC: { subjects: ["conc.>"] }
      SHAREDLAG: { subjects: ["sharedlag.>"] }
  # The same server without message ids: its dead-letter writes are told they are such all the same.
  natsplain:
    kind: nats
    servers: ${nats.url}
    messageIds: false
    streams:
      ORDERS: { subjects: ["orders.>"], declare: false }
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: orders
    from: { listener: api, path: /orders/:region }
    to: { broker: nats, topic: { expression: '"orders." & $path.region & ".created"' } }
  - name: presence
    from: { listener: api, path: /presence }
    to: { broker: nats, topic: presence.online }
  - name: scratch
    from: { listener: api, path: /scratch }
    to: { broker: nats, topic: scratch.one }
  - name: computed
    from: { listener: api, path: /computed }
    to: { broker: nats, topic: { expression: '"computed." & name' } }
  - name: audit
    from: { broker: nats, topic: "orders.*.created" }
    through:
      - transform: '{"subject": $topic, "order": $, "by": $headers."x-user"}'
    to: { broker: nats, topic: audit.orders }
  - name: stamped
    from: { broker: nats, topic: stamp.in }
    to: { broker: nats, topic: orders.stamp.copy }
    deadletter: { broker: nats, topic: orders.stamp.dead }
  # A step that asks of the copy's stream what the consumed message had asked of its own.
  - name: restamped
    from: { broker: nats, topic: restamp.in }
    through:
      - headers: { set: { Nats-Expected-Stream: '"ORDERS"' } }
    to: { broker: nats, topic: orders.restamp.copy }
  # The same step's message passed on through a memory topic: the next route did not set the header.
  - name: restamp-relay
    from: { broker: nats, topic: relay.in }
    through:
      - headers: { set: { Nats-Expected-Stream: '"ORDERS"' } }
    to: { broker: local, topic: relay }
  - name: relayed
    from: { broker: local, topic: relay }
    to: { broker: nats, topic: orders.relay.copy }
  - name: expect-dead
    from: { listener: api, path: /expect-dead }
    through:
      - validate: { schema: { type: object, required: [n] }, onInvalid: deadletter }
    to: { broker: natsplain, topic: orders.expect-dead.ok }
    deadletter: { broker: natsplain, topic: orders.expect-dead.dead }
  # A JetStream message's copy into another stream, and to WebSocket clients.
  - name: copied
    from: { broker: nats, topic: orders.copy.in }
    to: [{ broker: nats, topic: scratch.copied }, { listener: ws, path: /copied, format: envelope }]
    deadletter: { broker: nats, topic: scratch.copied.dead }
  - name: rolled
    from: { broker: nats, topic: roll.in }
    through:
      - validate: { schema: { type: object, required: [n] }, onInvalid: deadletter }
    to: { broker: nats, topic: orders.roll.copy }
    deadletter: { broker: nats, topic: orders.roll.dead }
  - name: bytes
    from: { broker: nats, topic: bytes.in }
    to: { broker: nats, topic: bytes.out }
  - name: chat-in
    from: { listener: ws, path: /chat }
    to: { broker: nats, topic: chat.room1 }
  - name: chat-out
    from: { broker: nats, topic: "chat.>" }
    to: { listener: ws, path: /chat-feed, format: envelope }
  - name: wrapped
    from: { broker: nats, topic: wrap.in }
    through:
      - cloudevent: { source: /nats, type: wrapped }
    to: { listener: ws, path: /wrapped, format: cloudevent }
  - name: hooked
    from: { broker: nats, topic: conc.in }
    to: { http: { url: "${hook.url}/in", headers: { x-key: $headers.k }, ${ORDERED} } }
  # Two readers of one group's consumer, as two instances are.
  - { name: shared-a, from: { broker: nats, topic: sharedlag.in, group: sharedlag }, to: { broker: nats, topic: sharedlag-out.a } }
  - { name: shared-b, from: { broker: nats, topic: sharedlag.in, group: sharedlag }, to: { broker: nats, topic: sharedlag-out.b } }
`;
  });
  // Registered after the before() that starts nats-server, so the config can name it.
  const gw = useGateway(() => config);
  before(async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'audit', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'chat-out', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'bytes', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stamped', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'restamped', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'restamp-relay', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copied', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'rolled', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hooked', 15000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'wrapped', 15000);
    // natsplain only checks ORDERS (declare: false), which broker nats declares beside it at the
    // start: checked first, it is found at a recheck, with backoff, and its publishes (expect-dead's)
    // are 503 until then. Its first check is logged before its 'nats connected'.
    await gw.waitForLog((l) => l.msg === 'nats connected' && l.broker === 'natsplain', 15000);
    if (gw.logs.some((l) => l.broker === 'natsplain' && String(l.msg).startsWith("nats stream 'ORDERS' not found")))
      await gw.waitForLog((l) => l.msg === "nats stream 'ORDERS' found" && l.broker === 'natsplain', 15000);
    peer = await RawNats.connect(nats);
  });
  after(async () => {
    await hook?.stop();
    peer?.close();
    await nats?.stop();
  });

  /**
   * Waits until route `audit` has copied every order published so far (its consumer has none
   * undelivered or unacknowledged, and it acknowledges a message once its copy was published): the
   * tests before publish orders and do not wait for their copies, which a subscription to
   * audit.orders made meanwhile would take for the ones it waits for.
   */
  const auditedSoFar = () => eventually(async () => assert.deepEqual(await peer.consumerInfo('ORDERS', 'eventgate-audit').then((c) => [c.num_ack_pending, c.num_pending]), [0, 0]), 15000, 100);

  it('answers 200 with the JetStream sequence once the stream stored the message; headers become NATS headers', async () => {
    const res = await post(gw.url('api', '/orders/eu'), { id: 1 }, { 'x-user': 'ana' });
    assert.equal(res.status, 200, res.text);
    const [d] = res.body.deliveries;
    assert.equal(d.topic, 'orders.eu.created');
    assert.ok(Number(d.offset) >= 1, JSON.stringify(d));
    const stored = await peer.storedMessage('ORDERS', Number(d.offset));
    assert.deepEqual(stored && { subject: stored.subject, value: JSON.parse(stored.data) }, { subject: 'orders.eu.created', value: { id: 1 } });
  });

  // nats-server 2.9 reads these headers by their exact spelling, and an HTTP client's arrive in
  // lower case: the server ignored them and stored every message, 200 (spec-checklist 2980).
  it("holds an HTTP client's Nats-Expected-* headers to what the stream has: a publish whose expectation does not hold is refused, 400, and not stored", async () => {
    const first = await post(gw.url('api', '/orders/expect'), { n: 1 });
    assert.equal(first.status, 200, first.text);
    const seq = first.body.deliveries[0].offset as string;
    const held = await post(gw.url('api', '/orders/expect'), { n: 2 }, { 'Nats-Expected-Last-Subject-Sequence': seq, 'Nats-Expected-Stream': 'ORDERS' });
    assert.equal(held.status, 200, held.text);
    const last = held.body.deliveries[0].offset as string;
    const stale = await post(gw.url('api', '/orders/expect'), { n: 3 }, { 'Nats-Expected-Last-Subject-Sequence': seq });
    assert.equal(stale.status, 400, stale.text);
    assert.equal(stale.body.code, 'EG_INVALID_MESSAGE');
    assert.equal(stale.body.detail, `JetStream refused the message: its Nats-Expected-Last-Sequence or Nats-Expected-Last-Subject-Sequence header does not hold (wrong last sequence: ${last})`);
    const other = await post(gw.url('api', '/orders/expect'), { n: 4 }, { 'nats-expected-stream': 'INVOICES' });
    assert.equal(other.status, 400, other.text);
    assert.match(other.body.detail, /its Nats-Expected-Stream header does not hold \(expected stream does not match\)/);
    // Nats-Rollup too (read by that spelling only): ORDERS allows no rollups, so the server refuses it.
    const rollup = await post(gw.url('api', '/orders/expect'), { n: 5 }, { 'nats-rollup': 'sub' });
    assert.equal(rollup.status, 400, rollup.text);
    assert.equal(rollup.body.detail, 'JetStream refused the message: its Nats-Rollup header asks a rollup the stream does not allow (allow_rollup_hdrs) (rollup not permitted)');
    const info = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', {})) as { state: { last_seq: number } };
    assert.equal(info.state.last_seq, Number(last), 'the refused publishes were not stored');
    // A rollup value nats-server does not know got no answer at all from a stream that allows
    // rollups (a 503 at ackTimeoutMs, retried for ever by a consume route): refused before it is sent.
    const { config } = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', {})) as { config: Record<string, unknown> };
    assert.equal((await peer.jsApi('$JS.API.STREAM.UPDATE.ORDERS', { ...config, allow_rollup_hdrs: true })).error, undefined);
    try {
      const unknown = await post(gw.url('api', '/orders/expect'), { n: 6 }, { 'nats-rollup': 'subject' });
      assert.equal(unknown.status, 400, unknown.text);
      assert.equal(unknown.body.code, 'EG_INVALID_MESSAGE');
      assert.equal(
        unknown.body.detail,
        `broker 'nats' cannot carry the message's headers: header "nats-rollup": nats-server takes a Nats-Rollup of \`sub\` or \`all\` only, not "subject" (it answers no other value)`,
      );
      // The values it takes, in any case, go (a real rollup: the subject keeps only this message).
      const rolled = await post(gw.url('api', '/orders/expect'), { n: 7 }, { 'Nats-Rollup': 'SUB' });
      assert.equal(rolled.status, 200, rolled.text);
      const after = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', { subjects_filter: 'orders.expect.created' })) as { state: { last_seq: number; subjects: Record<string, number> } };
      assert.equal(after.state.last_seq, Number(last) + 1, 'only the rollup was stored');
      assert.deepEqual(after.state.subjects, { 'orders.expect.created': 1 });
    } finally {
      const restored = await peer.jsApi('$JS.API.STREAM.UPDATE.ORDERS', config);
      assert.equal(restored.config?.allow_rollup_hdrs, false, JSON.stringify(restored));
    }
    // A consume route's copy does not ask its stream what the consumed message asked of its source
    // (before, ORDERS refused it, 400, and it was dead-lettered): it is stored, without the header.
    peer.publish('stamp.in', '{"n":6}', { 'Nats-Expected-Stream': 'INVOICES' });
    const copy = await eventually(async () => {
      const got = (await peer.jsApi('$JS.API.STREAM.MSG.GET.ORDERS', { last_by_subj: 'orders.stamp.copy' })) as { message?: { data: string; hdrs?: string } };
      assert.ok(got.message, JSON.stringify(got));
      return got.message;
    }, 10000);
    assert.equal(Buffer.from(copy.data, 'base64').toString(), '{"n":6}');
    assert.doesNotMatch(Buffer.from(copy.hdrs ?? '', 'base64').toString(), /nats-expected/i);
    // An HTTP route's dead-letter copy carries its client's expectation without asking it of the
    // dead-letter topic's stream, also through a broker without message ids (before, it was asked
    // there as spelled, refused, and the request failed).
    const invalid = await post(gw.url('api', '/expect-dead'), { m: 1 }, { 'Nats-Expected-Stream': 'INVOICES' });
    assert.equal(invalid.status, 200, invalid.text);
    assert.equal(invalid.body.deadlettered, true, invalid.text);
    assert.equal(invalid.body.deliveries[0].topic, 'orders.expect-dead.dead', invalid.text);
    const dead = (await peer.jsApi('$JS.API.STREAM.MSG.GET.ORDERS', { last_by_subj: 'orders.expect-dead.dead' })) as { message?: { data: string; hdrs: string } };
    assert.ok(dead.message, JSON.stringify(dead));
    assert.equal(Buffer.from(dead.message.data, 'base64').toString(), '{"m":1}');
    const deadHeaders = Buffer.from(dead.message.hdrs, 'base64').toString();
    assert.match(deadHeaders, /\r\nnats-expected-stream: INVOICES\r\n/);
    assert.match(deadHeaders, /the message does not match its schema/);
  });

  // A consumed JetStream message's `Nats-Expected-*` were asked of its own stream when it was
  // stored: a copy asked them of its stream, which refused it (another stream, another sequence),
  // and every such message was dead-lettered (spec-checklist 3107).
  it('copies a JetStream message stored with Nats-Expected-* headers into another stream without them; WebSocket clients still see every header, and Nats-Msg-Id stays', async () => {
    const client = await WsClient.connect(gw.url('ws', '/copied', 'ws'));
    try {
      const first = await peer.jsPublish('orders.copy.in', '{"n":1}');
      const headers = { 'Nats-Expected-Stream': 'ORDERS', 'Nats-Expected-Last-Subject-Sequence': String(first.seq), 'Nats-Msg-Id': 'copy-2' };
      await peer.jsPublish('orders.copy.in', '{"n":2}', headers);
      const copy = await eventually(async () => {
        const got = (await peer.jsApi('$JS.API.STREAM.MSG.GET.SCRATCH', { last_by_subj: 'scratch.copied' })) as { message?: { data: string; hdrs?: string } };
        assert.equal(got.message && Buffer.from(got.message.data, 'base64').toString(), '{"n":2}', JSON.stringify(got));
        return got.message!;
      }, 10000);
      const copyHeaders = Buffer.from(copy.hdrs ?? '', 'base64').toString();
      assert.doesNotMatch(copyHeaders, /nats-expected/i);
      assert.match(copyHeaders, /\r\nNats-Msg-Id: copy-2\r\n/);
      assert.deepEqual((await client.next(10000)).value, { n: 1 });
      const seen = (await client.next(10000)) as { value: unknown; headers: Record<string, string> };
      assert.deepEqual(seen.value, { n: 2 });
      assert.deepEqual(Object.fromEntries(Object.entries(seen.headers).filter(([k]) => /^nats-/i.test(k))), headers);
      const dead = (await peer.jsApi('$JS.API.STREAM.INFO.SCRATCH', { subjects_filter: 'scratch.copied.dead' })) as { state: { subjects?: Record<string, number> } };
      assert.equal(dead.state.subjects, undefined, 'nothing was dead-lettered');
    } finally {
      client.close();
    }
  });

  // The consumed header and the step's were told apart by their value alone: a step that set the
  // value the message came with had its header dropped from the copy (spec-checklist 3609).
  it('sends a Nats-Expected-* header a step sets, also to the value the consumed message had', async () => {
    for (const [n, consumed] of [
      [1, 'ORDERS'],
      [2, 'INVOICES'],
    ] as const) {
      peer.publish('restamp.in', JSON.stringify({ n }), { 'Nats-Expected-Stream': consumed });
      const copy = await eventually(async () => {
        const got = (await peer.jsApi('$JS.API.STREAM.MSG.GET.ORDERS', { last_by_subj: 'orders.restamp.copy' })) as { message?: { data: string; hdrs?: string } };
        assert.equal(got.message && Buffer.from(got.message.data, 'base64').toString(), JSON.stringify({ n }), JSON.stringify(got));
        return got.message!;
      }, 10000);
      assert.match(Buffer.from(copy.hdrs ?? '', 'base64').toString(), /\r\nNats-Expected-Stream: ORDERS\r\n/, `consumed with ${consumed}`);
    }
  });

  // The mark of a header a step set to its consumed value is the stepping route's: a message it
  // wrote to a memory topic carried it to the route reading that topic, which then sent the header
  // it had consumed, as if a step of its own had set it.
  it("leaves out a header a route consumed as it came, though an earlier route's step set it before a memory topic", async () => {
    peer.publish('relay.in', JSON.stringify({ n: 1 }), { 'Nats-Expected-Stream': 'ORDERS' });
    const copy = await eventually(async () => {
      const got = (await peer.jsApi('$JS.API.STREAM.MSG.GET.ORDERS', { last_by_subj: 'orders.relay.copy' })) as { message?: { data: string; hdrs?: string } };
      assert.equal(got.message && Buffer.from(got.message.data, 'base64').toString(), JSON.stringify({ n: 1 }), JSON.stringify(got));
      return got.message!;
    }, 10000);
    assert.doesNotMatch(Buffer.from(copy.hdrs ?? '', 'base64').toString(), /Nats-Expected-Stream/i);
  });

  // A consumed `Nats-Rollup: sub` made every copy, and every dead letter before the dead-letter
  // write spelled it in lower case, replace the earlier ones of its subject in a stream that allows
  // rollups: only the last was kept (spec-checklist 3124).
  it('keeps every copy and every dead letter of messages consumed with Nats-Rollup in a stream that allows rollups', async () => {
    const { config } = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', {})) as { config: Record<string, unknown> };
    assert.equal((await peer.jsApi('$JS.API.STREAM.UPDATE.ORDERS', { ...config, allow_rollup_hdrs: true })).error, undefined);
    try {
      for (const value of ['{"n":1}', '{"bad":1}', '{"n":2}', '{"bad":2}']) peer.publish('roll.in', value, { 'Nats-Rollup': 'sub' });
      await eventually(
        async () => {
          const info = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', { subjects_filter: 'orders.roll.>' })) as { state: { subjects?: Record<string, number> } };
          assert.deepEqual(info.state.subjects, { 'orders.roll.copy': 2, 'orders.roll.dead': 2 });
        },
        10000,
        100,
      );
      const dead = (await peer.jsApi('$JS.API.STREAM.MSG.GET.ORDERS', { last_by_subj: 'orders.roll.dead' })) as { message: { data: string; hdrs: string } };
      assert.equal(Buffer.from(dead.message.data, 'base64').toString(), '{"bad":2}');
      const deadHeaders = Buffer.from(dead.message.hdrs, 'base64').toString();
      assert.doesNotMatch(deadHeaders, /nats-rollup/i);
      assert.match(deadHeaders, /the message does not match its schema/);
    } finally {
      const restored = await peer.jsApi('$JS.API.STREAM.UPDATE.ORDERS', config);
      assert.equal(restored.config?.allow_rollup_hdrs, false, JSON.stringify(restored));
    }
  });

  // nats-server closed the connection for its protocol line (`Maximum Control Line Exceeded`):
  // that publish and every other in flight 503, every route's subscription lost, at each retry.
  it('refuses a computed subject longer than the protocol line nats-server takes, before sending it: the connection kept', async () => {
    const from = gw.logs.length;
    const long = await post(gw.url('api', '/computed'), { name: 'a'.repeat(5000) });
    assert.equal(long.status, 500, long.text);
    assert.match(long.body.detail, /^topic expression gave "computed\.a{191}"… \(5009 bytes\), which is not a topic of broker 'nats': a NATS subject is at most 3840 bytes here/);
    const next = await post(gw.url('api', '/scratch'), { after: 'long' });
    assert.equal(next.status, 200, next.text);
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => /nats (connection lost|error)/.test(l.msg)),
      [],
    );
  });

  // nats-server took `PUB computed.a<NUL>b`: a 200 for a message no subscriber of the subject meant would get.
  it('refuses a computed subject holding a control character before sending it', async () => {
    const sid = await peer.subscribe('computed.>');
    const bad = await post(gw.url('api', '/computed'), { name: 'a\u0000b' });
    // The control character is the client's data: an invalid message (1428), not a failed expression.
    assert.equal(bad.status, 400, bad.text);
    assert.equal(bad.body.code, 'EG_INVALID_MESSAGE');
    assert.match(bad.body.detail, /^topic expression gave "computed\.a\\u0000b", which is not a topic of broker 'nats': a NATS subject cannot hold the control character U\+0000/);
    const next = await post(gw.url('api', '/computed'), { name: 'fine' });
    assert.equal(next.status, 200, next.text);
    const [m] = await peer.take(sid, 1);
    assert.equal(m!.subject, 'computed.fine');
  });

  it('declares its streams as configured: maxAgeMs and duplicateWindowMs', async () => {
    const info = (await peer.jsApi('$JS.API.STREAM.INFO.ORDERS', {})) as { config: { max_age: number; duplicate_window: number } };
    assert.deepEqual({ maxAge: info.config.max_age, window: info.config.duplicate_window }, { maxAge: 3600e9, window: 30e9 });
  });

  it('publishes core subjects at most once, confirmed by the server, with headers', async () => {
    const sid = await peer.subscribe('presence.*');
    const res = await post(gw.url('api', '/presence'), { user: 'bo' }, { 'x-session': 's1' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.deliveries[0].offset, '-1');
    const [m] = await peer.take(sid, 1);
    assert.equal(m!.subject, 'presence.online');
    assert.deepEqual(JSON.parse(m!.payload), { user: 'bo' });
    assert.equal(m!.headers['x-session'], 's1');
  });

  it('pipelines concurrent publishes: each 200 names the stream sequence holding its own message, and every core publish reaches a subscriber', async () => {
    const sid = await peer.subscribe('presence.online');
    const [stored, core] = await Promise.all([
      Promise.all(Array.from({ length: 100 }, (_, i) => post(gw.url('api', '/scratch'), { i }))),
      Promise.all(Array.from({ length: 100 }, (_, i) => post(gw.url('api', '/presence'), { i }))),
    ]);
    for (const r of [...stored, ...core]) assert.equal(r.status, 200, r.text);
    const offsets = stored.map((r) => Number(r.body.deliveries[0].offset));
    assert.equal(new Set(offsets).size, 100, 'each publish has a sequence of its own');
    const held = await Promise.all(offsets.map((seq) => peer.storedMessage('SCRATCH', seq)));
    assert.deepEqual(
      held.map((m) => JSON.parse(m!.data)),
      Array.from({ length: 100 }, (_, i) => ({ i })),
    );
    const got = await peer.take(sid, 100);
    assert.deepEqual(new Set(got.map((m) => (JSON.parse(m.payload) as { i: number }).i)), new Set(Array.from({ length: 100 }, (_, i) => i)));
  });

  // SCRATCH is read by no route: before, nothing declared it again (a server restarted with its store
  // wiped lost it the same way), and every publish to it was a 503 for as long as the gateway ran.
  it('answers 503 naming the subject when no stream stores it any more (the stream was deleted under the gateway), and declares the stream again', async () => {
    const inbox = `_INBOX.del.${Math.random().toString(36).slice(2)}`;
    const sid = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.DELETE.SCRATCH', '', {}, inbox);
    assert.match((await peer.take(sid, 1))[0]!.payload, /"success":true/);
    const res = await post(gw.url('api', '/scratch'), { lost: false });
    assert.equal(res.status, 503, res.text);
    assert.equal(res.body.code, 'EG_BROKER_UNAVAILABLE');
    assert.match(res.body.detail, /no JetStream stream stores subject 'scratch\.one'/);
    const again = await eventually(
      async () => {
        const r = await post(gw.url('api', '/scratch'), { after: 'declared again' });
        assert.equal(r.status, 200, r.text);
        return r;
      },
      15000,
      200,
    );
    assert.equal((await peer.storedMessage('SCRATCH', Number(again.body.deliveries[0].offset)))?.data, '{"after":"declared again"}');
    await gw.waitForLog((l) => l.msg === "nats stream 'SCRATCH' found" && l.route === undefined);
  });

  it('consumes a JetStream wildcard subject with $topic and $headers, and acknowledges it', async () => {
    await auditedSoFar();
    const sid = await peer.subscribe('audit.orders');
    const ack = await peer.jsPublish('orders.us.created', '{"id":2}', { 'x-user': 'raw-client' });
    assert.equal(ack.stream, 'ORDERS');
    const [m] = await peer.take(sid, 1);
    assert.deepEqual(JSON.parse(m!.payload), { subject: 'orders.us.created', order: { id: 2 }, by: 'raw-client' });
    // Its consumer's lag, like a Kafka group's: nothing left once the message is acknowledged.
    await scrapeUntil(gw.adminUrl, (s) => s.value('eventgate_nats_consumer_lag', { route: 'audit', topic: 'orders.*.created', partition: '0' }) === 0, 10000);
  });

  // A route's lag was the consumer's undelivered count as of the route's own last delivery: what
  // was left then went to the other reader, and one route said 1 or more for as long as nothing
  // more came to it (walked with two instances: 1 after all 1,500 messages were delivered).
  it('brings the lag of every reader of a JetStream consumer a group shares back to 0 once every message was taken', async () => {
    await Promise.all(['shared-a', 'shared-b'].map((route) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 15000)));
    const sid = await peer.subscribe('sharedlag-out.*');
    let sent = 0;
    let taken: NatsReceived[] = [];
    // Until each reader took some (a route that took none has no lag yet).
    await eventually(async () => {
      await Promise.all(Array.from({ length: 10 }, () => peer.jsPublish('sharedlag.in', JSON.stringify({ n: sent++ }))));
      taken = await peer.take(sid, sent);
      assert.deepEqual(new Set(taken.map((m) => m.subject)), new Set(['sharedlag-out.a', 'sharedlag-out.b']));
    }, 15000);
    assert.equal(new Set(taken.map((m) => JSON.parse(m.payload).n)).size, sent);
    const lag = (s: Scrape, route: string) => s.value('eventgate_nats_consumer_lag', { route, topic: 'sharedlag.in', partition: '0' });
    await scrapeUntil(gw.adminUrl, (s) => lag(s, 'shared-a') === 0 && lag(s, 'shared-b') === 0, 10000);
  });

  it('relays a consumed payload byte for byte: bytes that are not UTF-8, and JSON as it was written', async () => {
    const notUtf8 = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3]);
    const spaced = Buffer.from('{ "a" : 1.0 }');
    const sid = await peer.subscribe('bytes.out');
    peer.publish('bytes.in', notUtf8);
    peer.publish('bytes.in', spaced);
    const got = await peer.take(sid, 2);
    assert.deepEqual(
      got.map((m) => m.bytes.toString('hex')),
      [notUtf8.toString('hex'), spaced.toString('hex')],
    );
  });

  it('wraps a plain message into a CloudEvent whose datacontenttype is the content type it came with, bytes as bytes', async () => {
    const feed = await WsClient.connect(gw.url('ws', '/wrapped', 'ws'));
    try {
      // Before, the step took only the value's kind: XML was `text/plain`, and these bytes a lossy UTF-8 string under `text/plain`.
      const bytes = Buffer.from([0x00, 0xff, 0x01, 0x80]);
      peer.publish('wrap.in', '<order id="1"/>', { 'content-type': 'application/xml' });
      peer.publish('wrap.in', bytes, { 'content-type': 'application/octet-stream' });
      peer.publish('wrap.in', 'just text');
      peer.publish('wrap.in', '{"n":1}', { 'content-type': 'application/vnd.shop+json' });
      const got = [await feed.next(10000), await feed.next(10000), await feed.next(10000), await feed.next(10000)];
      assert.deepEqual(
        got.map((e) => [e.specversion, e.source, e.type, e.datacontenttype, e.data, e.data_base64]),
        [
          // Data of a type that is neither JSON nor text/plain is its bytes, as a consumed binary-mode event's (http-edge.md).
          ['1.0', '/nats', 'wrapped', 'application/xml', undefined, Buffer.from('<order id="1"/>').toString('base64')],
          ['1.0', '/nats', 'wrapped', 'application/octet-stream', undefined, bytes.toString('base64')],
          ['1.0', '/nats', 'wrapped', 'text/plain', 'just text', undefined],
          ['1.0', '/nats', 'wrapped', 'application/vnd.shop+json', { n: 1 }, undefined],
        ],
      );
      assert.equal(new Set(got.map((e) => e.id)).size, 4, 'each wrapped message has an id of its own');
    } finally {
      feed.close();
    }
  });

  it('bridges WebSocket and NATS both ways', async () => {
    const feed = await WsClient.connect(gw.url('ws', '/chat-feed', 'ws'));
    const chat = await WsClient.connect(gw.url('ws', '/chat', 'ws'));
    try {
      const sid = await peer.subscribe('chat.room1');
      chat.send({ text: 'hello' });
      const [seen] = await peer.take(sid, 1);
      assert.deepEqual(JSON.parse(seen!.payload), { text: 'hello' });
      const frame = await feed.next(10000);
      assert.equal(frame.topic, 'chat.room1');
      assert.deepEqual(frame.value, { text: 'hello' });
      peer.publish('chat.room2', '{"text":"from raw"}', { lang: 'en' });
      const next = await feed.next(10000);
      assert.equal(next.topic, 'chat.room2');
      assert.equal(next.headers.lang, 'en');
      // A binary-mode CloudEvent as the NATS protocol binding carries it (§3.1.3): `ce-<name>`
      // headers, names in any case (Go writes `Ce-Id`), values percent-encoded, datacontenttype
      // among them. It was a plain message: no `ce` in the envelope, `$ce` undefined to steps.
      peer.publish('chat.room3', '{"text":"an event"}', {
        'ce-specversion': '1.0',
        'Ce-Id': 'n-1',
        'ce-source': '/chat',
        'ce-type': '"chat.said"', // a quoted-string, as earlier binding versions allowed: unquoted
        'ce-subject': 'caf%C3%A9 au lait',
        'ce-time': '2026-12-01T17:00:00Z',
        'ce-datacontenttype': 'application/json',
        lang: 'fr',
      });
      const event = await feed.next(10000);
      assert.deepEqual(event.value, { text: 'an event' });
      assert.deepEqual(event.ce, {
        specversion: '1.0',
        id: 'n-1',
        source: '/chat',
        type: 'chat.said',
        subject: 'café au lait',
        time: '2026-12-01T17:00:00Z',
        datacontenttype: 'application/json',
      });
      assert.equal(event.headers.lang, 'fr');
    } finally {
      chat.close();
      feed.close();
    }
  });

  // RFC 8259 §8.1: a parser may ignore a byte order mark, but none may be sent on. The chain read
  // the JSON past it, and the bytes went on to NATS with it: no consumer read them as JSON (the
  // feed below got a string), strict JSON parsers refuse them outright.
  it('sends a frame or a body that starts with a byte order mark on to NATS as the JSON the chain read, without the mark', async () => {
    const feed = await WsClient.connect(gw.url('ws', '/chat-feed', 'ws'));
    const chat = await WsClient.connect(gw.url('ws', '/chat', 'ws'));
    try {
      const room = await peer.subscribe('chat.room1');
      const scratch = await peer.subscribe('scratch.one');
      chat.send('\ufeff{"text": "marked"}');
      const [seen] = await peer.take(room, 1);
      assert.equal(seen!.bytes.toString('hex'), Buffer.from('{"text": "marked"}').toString('hex'), 'the frame as written, less the mark');
      assert.deepEqual((await feed.next(10000)).value, { text: 'marked' });
      assert.equal((await post(gw.url('api', '/scratch'), '\ufeff{"n": 1}')).status, 200);
      const [body] = await peer.take(scratch, 1);
      assert.equal(body!.bytes.toString('hex'), Buffer.from('{"n": 1}').toString('hex'), 'the body as written, less the mark');
    } finally {
      chat.close();
      feed.close();
    }
  });

  it('makes its JetStream consumer again when it is deleted on the server, going on without handing the messages it handled again', async () => {
    await auditedSoFar();
    const sid = await peer.subscribe('audit.orders');
    await peer.jsPublish('orders.eu.created', '{"id":30}');
    await peer.take(sid, 1);
    const from = gw.logs.length;
    assert.equal((await peer.jsApi('$JS.API.CONSUMER.DELETE.ORDERS.eventgate-audit', {})).success, true);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'audit', 20000, from);
    await peer.jsPublish('orders.eu.created', '{"id":31}');
    await eventually(() => assert.ok(peer.received(sid).some((m) => JSON.parse(m.payload).order.id === 31)), 10000, 100);
    // Every order is audited once: the earlier ones are not handed to the route again.
    const ids = peer.received(sid).map((m) => JSON.parse(m.payload).order.id as number);
    assert.deepEqual(ids, [30, 31]);
    await eventually(async () => assert.equal((await peer.consumerInfo('ORDERS', 'eventgate-audit')).num_ack_pending, 0), 10000);
  });

  it("has up to a webhook's `concurrency` JetStream messages in hand (orderBy: one per key, in order, a failed try retried first), each acknowledged; a reload to another concurrency keeps the consumer and applies it", async () => {
    const keys = ['k0', 'k1', 'k2'];
    const total = 30;
    hook.reset();
    answerSideBySide(hook, keys, total / keys.length, 'k1');
    for (let n = 0; n < total; n++) await peer.jsPublish('conc.in', JSON.stringify({ n }), { k: keys[n % keys.length]! });
    await arrivedSideBySide(hook, keys, total, 'k1');
    const acked = () => scrapeUntil(gw.adminUrl, (s) => s.value('eventgate_nats_consumer_lag', { route: 'hooked', topic: 'conc.in', partition: '0' }) === 0, 10000);
    await acked();
    assert.deepEqual(await peer.consumerInfo('CONC', 'eventgate-hooked').then((c) => [c.num_ack_pending, c.num_pending]), [0, 0]);
    // Another concurrency, no orderBy: the rebuilt route takes the consumer's read over.
    const from = gw.logs.length;
    assert.equal((await gw.reconfigure(config.replace(ORDERED, 'concurrency: 2'))).msg, 'config reloaded');
    await gw.waitForLog((l) => l.route === 'hooked' && l.msg === 'subscription handed over to the rebuilt route', 15000, from);
    await hook.takesInWindowsOf(2, [100, 101, 102, 103, 104, 105], async () => {
      for (let n = 100; n < 106; n++) await peer.jsPublish('conc.in', JSON.stringify({ n }), { k: 'k0' });
    });
    await eventually(async () => assert.deepEqual(await peer.consumerInfo('CONC', 'eventgate-hooked').then((c) => [c.num_ack_pending, c.num_pending]), [0, 0]), 10000, 100);
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'nats connected'),
      [],
    );
  });

  it('keeps the connection and consumers of unchanged routes through a reload', async () => {
    const feed = await WsClient.connect(gw.url('ws', '/chat-feed', 'ws'));
    try {
      const from = gw.logs.length;
      const reload = await gw.reconfigure(`${config}  - name: added
    from: { listener: api, path: /added }
    to: { broker: nats, topic: added.subject }
`);
      assert.equal(reload.msg, 'config reloaded');
      peer.publish('chat.after-reload', '{"still":"here"}');
      const frame = await feed.next(10000);
      assert.deepEqual(frame.value, { still: 'here' });
      assert.equal((await post(gw.url('api', '/added'), { n: 1 })).status, 200);
      const reopened = gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' || l.msg === 'nats connected');
      assert.deepEqual(reopened, []);
      assert.equal(feed.closed, undefined, 'the WebSocket client stayed connected');

      // The forward route renamed without a group takes the running subscription over, in its old
      // group: no unsubscribe and subscribe (a core subject loses what comes between), no new
      // consumer starting at the latest message (spec-checklist 1239), and no group left or joined.
      const renaming = gw.logs.length;
      const renamed = `${config}  - name: added\n    from: { listener: api, path: /added }\n    to: { broker: nats, topic: added.subject }\n`.replace('- name: chat-out', '- name: chat-feed');
      assert.equal((await gw.reconfigure(renamed)).msg, 'config reloaded');
      const line = await gw.waitForLog((l) => l.msg === 'renamed route took over the subscription of the route it replaces', 15000, renaming);
      assert.deepEqual([line.route, line.renamedFrom], ['chat-feed', 'chat-out']);
      assert.match(String(line.group), /^eventgate-chat-out-/);
      peer.publish('chat.after-rename', '{"renamed":true}');
      assert.deepEqual((await feed.next(10000)).value, { renamed: true });
      assert.deepEqual(
        gw.logs.slice(renaming).filter((l) => l.msg === 'consumer ready'),
        [],
      );
      assert.equal(feed.closed, undefined, 'the WebSocket client stayed connected');
    } finally {
      feed.close();
    }
  });

  it('bounds what a core route holds while its target stalls (corePendingBytes): keeps the oldest, drops the rest with a warning and a count, then goes on', async () => {
    const target = await HeldTarget.start();
    const markers = await WebhookReceiver.start();
    const slow = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${nats.url}, corePendingBytes: 20000 }
routes:
  - name: stalled
    from: { broker: nats, topic: stalled.in }
    to: { http: { url: "${target.url}", timeoutMs: 120000 } }
  - name: marker
    from: { broker: nats, topic: stalled.marker }
    to: { http: { url: "${markers.url}" } }
`);
    try {
      await slow.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stalled', 15000);
      await slow.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'marker', 15000);
      const pad = 'x'.repeat(1000);
      // The target holds message 0; 2000 messages of ~1 KB arrive meanwhile, 20 KB of room.
      for (let i = 0; i < 2000; i++) peer.publish('stalled.in', JSON.stringify({ i, pad }));
      // The gateway reads its one connection in order: once the marker published after them is
      // through, each of the 2000 has been kept or dropped (under load it reads them seconds after
      // nats-server took them, and a count read earlier is not the final one).
      peer.publish('stalled.marker', '{"after":2000}');
      await markers.received(1, 60000);
      const drop = await slow.waitForLog((l) => l.msg.startsWith('nats core messages dropped'), 15000);
      assert.equal(drop.level, 'warn');
      const errors = async () => (await scrape(slow.adminUrl)).value('eventgate_nats_consumer_errors_total', { broker: 'nats', route: 'stalled' }) ?? 0;
      // Every message is either kept (at most ~20 KB of them) or counted as dropped.
      assert.ok((await errors()) >= 1950, `dropped ${await errors()}`);
      // Each dropped message is counted in a warn line: the first at once, the others in the line
      // that ends the 10 s interval they fell in, though no drop comes after them.
      const dropped = await errors();
      await eventually(
        () => {
          const lines = slow.logs.filter((l) => l.msg.startsWith('nats core messages dropped'));
          assert.equal(lines[0]!.dropped, 1);
          assert.equal(
            lines.reduce((n, l) => n + (l.dropped as number), 0),
            dropped,
          );
        },
        25000,
        200,
      );
      target.release();
      const kept = 2000 - (await errors());
      await eventually(() => assert.equal(target.bodies.length, kept), 15000, 50);
      // The oldest are the ones kept, in order.
      assert.deepEqual(
        target.bodies.map((b) => (JSON.parse(b) as { i: number }).i),
        Array.from({ length: kept }, (_, i) => i),
      );
      peer.publish('stalled.in', '{"i":"after"}');
      await eventually(() => assert.equal(target.bodies.at(-1), '{"i":"after"}'), 15000, 50);
    } finally {
      await slow.stop();
      await target.stop();
      await markers.stop();
    }
  });

  it('says "consumer ready" for a core route only once nats-server has its subscription: a message published right after it arrives', async () => {
    const hook = await WebhookReceiver.start();
    const route = (name: string, subject: string) => `  - name: ${name}\n    from: { broker: nats, topic: ${subject} }\n    to: { http: { url: "${hook.url}/${name}" } }\n`;
    const head = `version: 1\nadmin: { port: 0 }\nbrokers:\n  nats: { kind: nats, servers: ${nats.url} }\nroutes:\n`;
    const late = await startGateway(head + route('first', 'ready.first'));
    await late.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'first', 15000);
    // nats-server stopped (SIGSTOP) while a reload adds a route: its SUB waits in the socket, unread.
    await freezeProcess(nats.pid()!, false);
    try {
      const from = late.logs.length;
      assert.equal((await late.reconfigure(head + route('first', 'ready.first') + route('added', 'ready.added'))).msg, 'config reloaded');
      // Said at once, "consumer ready" came before the server could know the subscription.
      const early = late.logs.slice(from).filter((l) => l.msg === 'consumer ready' && l.route === 'added');
      assert.deepEqual(early, [], 'consumer ready while nats-server had not read the SUB');
      process.kill(nats.pid()!, 'SIGCONT');
      await late.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'added', 30000, from);
      peer.publish('ready.added', '{"right":"after"}');
      const [got] = await hook.received(1, 30000);
      assert.equal(got!.body, '{"right":"after"}');
    } finally {
      process.kill(nats.pid()!, 'SIGCONT');
      await late.stop();
      await hook.stop();
    }
  });

  it('answers 503 while nats-server is down, reports it in /readyz, loses no stored message, and resumes consuming', async () => {
    peer.close();
    const load = await publishThroughOutage(
      (i) => post(gw.url('api', '/orders/load'), { i }),
      () => nats.down(),
    );
    const acked = load.acked.map(({ i, reply }) => ({ i, seq: Number(reply.body.deliveries[0].offset) }));
    const refused = load.refused;
    // Counted like Kafka's: eventgate_<kind>_producer_errors_total{broker}.
    assert.ok((await scrape(gw.adminUrl)).value('eventgate_nats_producer_errors_total', { broker: 'nats' })! >= refused);
    const down = await readyz(gw);
    assert.equal(down.status, 503);
    assert.ok(
      down.body.reasons.some((r: string) => r.startsWith('broker nats:')),
      JSON.stringify(down.body),
    );

    await nats.up();
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000, 100);
    peer = await RawNats.connect(nats);
    // Every message answered 200 is in the stream, at the sequence the answer gave.
    for (const { i, seq } of acked) {
      const stored = await peer.storedMessage('ORDERS', seq);
      assert.deepEqual(stored && JSON.parse(stored.data), { i }, `message ${i} (seq ${seq})`);
    }
    // The durable consumer picked up where it was.
    const sid = await peer.subscribe('audit.orders');
    await peer.jsPublish('orders.after.created', '{"after":"outage"}');
    await eventually(() => assert.ok(peer.received(sid).some((m) => (JSON.parse(m.payload) as { subject: string }).subject === 'orders.after.created')), 30000, 100);
  });
});

/**
 * A stream the config says exists already (`declare: false`) but that the server does not have: the
 * broker says so in the log and /admin/status, publishes to it are refused (503 naming the stream,
 * never a 200 for a message no stream stored), and once an operator creates the stream they are
 * stored, by themselves. The broker stays ready (no route reads the stream; one that does is not
 * ready: test/e2e/missing-topology).
 */
describe('kind: nats, a stream that must exist (declare: false) and does not yet', () => {
  let nats: MessageServer;
  let peer: RawNats;
  before(async () => {
    nats = await startNats();
    peer = await RawNats.connect(nats);
  });
  const config = (more = { streams: '', routes: '' }) => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    ackTimeoutMs: ${ROOM_MS}
    streams:
      EVENTS: { subjects: ["events.>"], declare: false }${more.streams}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: events
    from: { listener: api, path: /events }
    to: { broker: nats, topic: events.one }${more.routes}
`;
  const gw = useGateway(() => config());
  after(async () => {
    peer?.close();
    await nats?.stop();
  });

  it('says why, refuses publishes to it with 503, and stores them once the stream exists', async () => {
    const warned = await gw.waitForLog((l) => l.msg === "nats stream 'EVENTS' not found; waiting for it (tried again with backoff)", 15000);
    assert.equal(warned.level, 'warn');
    assert.match(String(warned.detail), /stream not found/i);
    assert.equal((await readyz(gw)).status, 200);
    const broker = (await gw.status()).brokers.find((b: { name: string }) => b.name === 'nats');
    assert.deepEqual(broker, { name: 'nats', kind: 'nats', ready: true, detail: "stream 'EVENTS' not found on broker 'nats': stream not found" });

    const refused = await post(gw.url('api', '/events'), { n: 1 });
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.equal(refused.body.code, 'EG_BROKER_UNAVAILABLE');
    assert.equal(refused.body.detail, "broker 'nats' did not acknowledge the message: stream 'EVENTS' not found on broker 'nats': stream not found");

    // An operator creates the stream (the JetStream API, as the nats CLI does).
    const inbox = `_INBOX.create.${Math.random().toString(36).slice(2)}`;
    const sid = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.CREATE.EVENTS', JSON.stringify({ name: 'EVENTS', subjects: ['events.>'], storage: 'memory' }), {}, inbox);
    const [created] = await peer.take(sid, 1);
    assert.doesNotMatch(created!.payload, /"error"/, created!.payload);

    await gw.waitForLog((l) => l.msg === "nats stream 'EVENTS' found", 15000);
    const stored = await post(gw.url('api', '/events'), { n: 2 });
    assert.equal(stored.status, 200, JSON.stringify(stored.body));
    assert.deepEqual(await peer.storedMessage('EVENTS', 1), { subject: 'events.one', data: '{"n":2}' });
  });

  // A work-queue stream (an operator's) takes one consumer per subject: the second group's was
  // refused at every try, and the route read nothing while /readyz said ready (spec-checklist 2985).
  it("is not ready while the server refuses a route's consumer, saying why: a work-queue stream takes one consumer per subject", async () => {
    const inbox = `_INBOX.wq.${Math.random().toString(36).slice(2)}`;
    const created = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.CREATE.WQ', JSON.stringify({ name: 'WQ', subjects: ['wq.>'], retention: 'workqueue', storage: 'memory' }), {}, inbox);
    assert.doesNotMatch((await peer.take(created, 1))[0]!.payload, /"error"/);
    const out = await peer.subscribe('wq-out.>');
    const both = `
  - { name: wq-a, from: { broker: nats, topic: wq.x, group: wq-a }, to: { broker: nats, topic: wq-out.a } }
  - { name: wq-b, from: { broker: nats, topic: wq.x, group: wq-b }, to: { broker: nats, topic: wq-out.b } }`;
    await gw.reconfigure(config({ streams: '\n      WQ: { subjects: ["wq.>"], declare: false }', routes: both }));
    const refused = await eventually(async () => {
      const r = await readyz(gw);
      assert.equal(r.status, 503, JSON.stringify(r.body));
      return r.body;
    }, 15000);
    // One of the two made its consumer first; the other is refused.
    const second = /^route wq-(a|b):/.exec(String(refused.reasons))?.[1];
    const first = second === 'a' ? 'b' : 'a';
    assert.deepEqual(refused.reasons, [`route wq-${second}: consumer could not start, retrying`]);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === `wq-${first}`, 15000);
    const route = (await gw.status()).routes.find((r: { name: string }) => r.name === `wq-${second}`);
    assert.match(JSON.stringify(route), /filtered consumer not unique on workqueue stream/);
    await peer.jsPublish('wq.x', '{"n":1}');
    assert.equal((await peer.take(out, 1))[0]!.subject, `wq-out.${first}`);
    // Back to the config without them: ready again.
    await gw.reconfigure(config());
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
  });

  // An operator's max_deliver and backoff on the group's consumer were replaced by the route's
  // without a word (nats-server 2.9 takes the update): now a warning says so (spec-checklist 3596).
  it("warns that an operator's max_deliver and backoff on the group's consumer are replaced by the route's, which retries by itself", async () => {
    const inbox = `_INBOX.ops.${Math.random().toString(36).slice(2)}`;
    const answers = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.CREATE.OPS', JSON.stringify({ name: 'OPS', subjects: ['ops.>'], storage: 'memory' }), {}, inbox);
    const consumer = { durable_name: 'ops', filter_subject: 'ops.x', ack_policy: 'explicit', ack_wait: 1e9, max_deliver: 3, backoff: [1e9, 2e9] };
    peer.publish('$JS.API.CONSUMER.DURABLE.CREATE.OPS.ops', JSON.stringify({ stream_name: 'OPS', config: consumer }), {}, inbox);
    for (const answer of await peer.take(answers, 2)) assert.doesNotMatch(answer.payload, /"error"/, answer.payload);
    const from = gw.logs.length;
    await gw.reconfigure(
      config({
        streams: '\n      OPS: { subjects: ["ops.>"], declare: false }',
        routes: '\n  - { name: ops, from: { broker: nats, topic: ops.x, group: ops }, to: { broker: nats, topic: ops-out.x } }',
      }),
    );
    const warned = await gw.waitForLog((l) => l.route === 'ops' && typeof l.msg === 'string' && l.msg.startsWith("the consumer's max_deliver and backoff set on the server are replaced"), 15000, from);
    assert.equal(warned.level, 'warn');
    assert.equal(warned.maxDeliver, 3);
    assert.deepEqual(warned.backoffMs, [1000, 2000]);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'ops', 15000, from);
    const info = await peer.jsApi('$JS.API.CONSUMER.INFO.OPS.ops', {});
    assert.equal(info.config.max_deliver, -1);
    assert.equal(info.config.backoff, undefined);
    await gw.reconfigure(config());
  });

  // A publish the server answers with no stream made the broker take the stream for gone and
  // check it again; an operator's stream there, storing other subjects than the config says, was
  // then found again at once, and so on at every publish: a warning and an info line and a look at
  // the stream each time, the 503 naming a stream 'not found' that was there.
  it("answers 503 naming the subject when the operator's stream is there but stores other subjects, without taking the stream for gone at each publish", async () => {
    const inbox = `_INBOX.narrow.${Math.random().toString(36).slice(2)}`;
    const created = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.CREATE.NARROW', JSON.stringify({ name: 'NARROW', subjects: ['narrow.real.>'], storage: 'memory' }), {}, inbox);
    assert.doesNotMatch((await peer.take(created, 1))[0]!.payload, /"error"/);
    const from = gw.logs.length;
    await gw.reconfigure(
      config({
        streams: '\n      NARROW: { subjects: ["narrow.>"], declare: false }',
        routes: '\n  - { name: narrow, from: { listener: api, path: /narrow }, to: { broker: nats, topic: narrow.x } }',
      }),
    );
    for (let n = 0; n < 5; n++) {
      const res = await post(gw.url('api', '/narrow'), { n });
      assert.equal(res.status, 503, res.text);
      assert.match(res.body.detail, /no JetStream stream stores subject 'narrow\.x'/);
    }
    // The reload's lines come after any the publishes made (one process, one stdout).
    await gw.reconfigure(config());
    const narrow = gw.logs.slice(from).filter((l) => typeof l.msg === 'string' && l.msg.startsWith("nats stream 'NARROW'"));
    assert.deepEqual(
      narrow.map((l) => l.msg),
      [],
    );
  });

  // The log said `nats stream 'MEM' not found` of a stream that was there (spec-checklist 2992).
  it('says a declared stream the server refuses to update as declared is not ready, not that it is not found; a reload that declares it so is rejected at once', async () => {
    const inbox = `_INBOX.mem.${Math.random().toString(36).slice(2)}`;
    const created = await peer.subscribe(inbox);
    peer.publish('$JS.API.STREAM.CREATE.MEM', JSON.stringify({ name: 'MEM', subjects: ['mem.>'], storage: 'memory' }), {}, inbox);
    assert.doesNotMatch((await peer.take(created, 1))[0]!.payload, /"error"/);
    const from = gw.logs.length;
    const line = await gw.reconfigure(config({ streams: '\n      MEM: { subjects: ["mem.>"] }', routes: '' }));
    // The running broker has no such stream: the reload does not swap in one the server refuses it to.
    assert.equal(line.msg, 'reload rejected; the running config keeps serving', JSON.stringify(line));
    assert.match(
      String(line.diagnostic),
      /could not start broker 'nats': refused with its new options \(the running one keeps serving\): the server refused stream 'MEM' as declared: stream configuration update can not change storage type$/,
    );
    const warned = await gw.waitForLog((l) => /^nats stream 'MEM' /.test(l.msg), 15000, from);
    assert.equal(warned.msg, "nats stream 'MEM' not ready; waiting for it (tried again with backoff)");
    assert.equal(warned.detail, "stream 'MEM' not ready on broker 'nats': stream configuration update can not change storage type");
    // The running config is config() still: the file put back changes nothing.
    const back = gw.logs.length;
    gw.write('gateway.yaml', config());
    await gw.waitForLog((l) => l.msg === 'config unchanged', 15000, back);
  });
});
