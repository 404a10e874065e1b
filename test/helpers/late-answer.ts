import assert from 'node:assert/strict';
import { WsClient } from './clients.js';
import { eventually, type LogLine, type RunningGateway } from './gateway.js';
import { scrape, type Scrape } from './prometheus.js';
import type { TcpProxy } from './tcp-proxy.js';
import { fetch } from './http.js';

/**
 * The routes of a late-answer test: POST /in parks `{n}` on a memory topic, and the consume route
 * `out` publishes it, marked `routed` (so the tap's `output` differs from its `message`), to
 * `topic` of `broker` (which the test reaches through a proxy).
 */
export function lateAnswerRoutes(broker: string, topic: string): string {
  return `listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mem, topic: parked }
  - name: out
    from: { broker: mem, topic: parked }
    through:
      - transform: '$merge([$, {"routed": true}])'
    to: { broker: ${broker}, topic: ${topic} }
`;
}

/** The log line of a consume route's try whose write is still out when its ack deadline passes. */
export const PAST_DEADLINE = 'a write is still out past its ack deadline: the route waits for its answer';

/** Whether `l` says route `route`'s try reached its ack deadline (the old code logged `message failed` there). */
export function pastDeadline(l: LogLine, route: string): boolean {
  return l.route === route && (l.msg.startsWith(PAST_DEADLINE) || l.msg === 'message failed');
}

/**
 * What a user reads of a consume route's messages: its outcomes in `eventgate_route_messages_total`
 * (`received`, `delivered`, `failed`), the same in `/admin/stats`, and the consumer errors counted
 * for it (`eventgate_<kind>_consumer_errors_total{route}`, summed over kinds). Waits until `settled`
 * messages have an outcome (the last answer may reach the gateway after the server stored it).
 */
export async function routeCounts(
  gw: RunningGateway,
  route: string,
  settled: number,
): Promise<{ received: number; delivered: number; failed: number; consumerErrors: number; statsDelivered: number; statsFailed: number; scrape: Scrape }> {
  return eventually(
    async () => {
      const s = await scrape(gw.adminUrl);
      const outcome = (o: string) => s.value('eventgate_route_messages_total', { route, outcome: o }) ?? 0;
      const [delivered, failed] = [outcome('delivered'), outcome('failed')];
      assert.ok(delivered + failed >= settled, `${delivered} delivered + ${failed} failed of ${settled}`);
      let consumerErrors = 0;
      for (const [name] of s.types) if (/^eventgate_\w+_consumer_errors_total$/.test(name)) for (const x of s.series(name)) if (x.labels.route === route) consumerErrors += x.value;
      const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { routes: Record<string, { delivered: number; failed: number }> };
      return { received: outcome('received'), delivered, failed, consumerErrors, statsDelivered: stats.routes[route]!.delivered, statsFailed: stats.routes[route]!.failed, scrape: s };
    },
    10000,
    100,
  );
}

/**
 * Waits until route `route` has delivered its first `n` messages: the answers to their writes
 * reached the gateway. A test that holds the proxy's replies must wait for this, not for the
 * server to show the last one stored, or it may hold that answer too (nats-server's stream state
 * showed a message while its PubAck was still on its way to the gateway) and the route then waits
 * for that late answer instead of writing the next message.
 */
export async function delivered(gw: RunningGateway, route: string, n: number): Promise<void> {
  const counts = await routeCounts(gw, route, n);
  assert.deepEqual({ delivered: counts.delivered, failed: counts.failed }, { delivered: n, failed: 0 }, `the first ${n} messages of route ${route} delivered`);
}

/** `eventgate_<kind>_producer_errors_total` of broker `broker` (whatever its kind). */
export function producerErrors(s: Scrape, broker: string): number {
  let n = 0;
  for (const [name] of s.types) if (/^eventgate_\w+_producer_errors_total$/.test(name)) n += s.value(name, { broker }) ?? 0;
  return n;
}

/**
 * A consume route whose publish is taken by the server while the proxy holds the answer past the
 * broker's `ackTimeoutMs` (1 s in these tests): the route's try reaches the deadline, and it must
 * wait for that late answer rather than publish the message again. `server.count` is how many
 * copies the server has; `server.bodies` the `n` of each, in order, read once at the end (it may
 * consume them): `[0, 1, 2]`, message 1 once. What the user reads says so too: three messages
 * delivered and none failed (the late answer decided the try's outcome), no consumer error for
 * the route, one producer error for the target broker (the publish that missed its deadline), the
 * live tap's event of message 1 delivered with the copy its target took (`output`; before, none), and
 * no `message failed` line. Before, the try counted and logged as failed, never delivered.
 */
export async function storedOnceDespiteLateAnswer(gw: RunningGateway, proxy: TcpProxy, target: string, server: { count(): Promise<number>; bodies(): Promise<number[]> }): Promise<void> {
  const post = async (n: number) => {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
  };
  const storedAtLeast = async (count: number) => {
    const deadline = Date.now() + 10000;
    for (;;) {
      const now = await server.count();
      if (now >= count) return;
      if (Date.now() > deadline) throw new Error(`${now} of ${count} copies stored`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  await post(0);
  await storedAtLeast(1);
  // Message 0's answer has reached the gateway: the hold below catches message 1's only.
  await delivered(gw, 'out', 1);
  const tap = await WsClient.connect(`${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=out`);
  assert.equal((await tap.next()).type, 'hello');
  const from = gw.logs.length;
  proxy.holdReplies();
  await post(1);
  // The server took it; its answer waits in the proxy past the deadline.
  await storedAtLeast(2);
  await gw.waitForLog((l: LogLine) => pastDeadline(l, 'out'), 10000, from);
  proxy.releaseReplies();
  // The route says its publish was taken late, or (as before the fix) a second copy is stored.
  const late = gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('a write answered after its ack deadline was taken'), 10000, from);
  const again = storedAtLeast(3);
  await Promise.race([late, again]);
  for (const p of [late, again]) p.catch(() => undefined);
  await post(2);
  await storedAtLeast(3);
  assert.deepEqual(await server.bodies(), [0, 1, 2], 'message 1 once: its first publish, acknowledged late');
  try {
    const shown = await tap.next(10000);
    assert.deepEqual(
      { outcome: shown.outcome, message: shown.message.value, output: shown.output?.value, deliveries: shown.deliveries?.length },
      { outcome: 'delivered', message: { n: 1 }, output: { n: 1, routed: true }, deliveries: 1 },
      'the tap: message 1 delivered, with the copy its target took',
    );
  } finally {
    tap.close();
  }
  const counts = await routeCounts(gw, 'out', 3);
  assert.deepEqual(
    { received: counts.received, delivered: counts.delivered, failed: counts.failed, consumerErrors: counts.consumerErrors },
    { received: 3, delivered: 3, failed: 0, consumerErrors: 0 },
    'every message delivered once, message 1 by its late-answered try',
  );
  assert.deepEqual({ delivered: counts.statsDelivered, failed: counts.statsFailed }, { delivered: 3, failed: 0 }, '/admin/stats says the same');
  assert.equal(producerErrors(counts.scrape, target), 1, 'the publish that missed its deadline counts as a producer error');
  assert.deepEqual(
    gw.logs.slice(from).filter((l) => l.route === 'out' && l.msg === 'message failed'),
    [],
    'no `message failed` for a message its target took',
  );
}
