import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { MosquittoPubStream, MosquittoSub, mosquittoPub, type MqttReceived } from '../helpers/peers.js';
import { SlowEndpoint } from '../helpers/slow-endpoint.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

/** mosquitto's default `max_inflight_messages`: only messages it sent and saw no acknowledgement for can come again. */
const MOSQUITTO_INFLIGHT = 20;
const PER_PART = 400;

/** How often each message of `stream` arrived at the verifier. */
function counts(received: readonly MqttReceived[], stream: string): Map<number, number> {
  const seen = new Map<number, number>();
  for (const m of received) {
    const { s, i } = JSON.parse(m.payload) as { s: string; i: number };
    if (s === stream) seen.set(i, (seen.get(i) ?? 0) + 1);
  }
  return seen;
}

describe('kind: mqtt consume routes survive a gateway crash (SIGKILL) without losing a message', () => {
  let mqtt: MessageServer;
  let verifier: MosquittoSub | undefined;
  let gw: RunningGateway | undefined;
  /** The webhook of route `hooks`, which has several messages in hand at once. */
  let hook: SlowEndpoint;

  before(async () => {
    [mqtt, hook] = await Promise.all([startMosquitto(), SlowEndpoint.start()]);
  });
  after(async () => {
    verifier?.stop();
    await gw?.stop('SIGKILL');
    await Promise.all([mqtt?.stop(), hook?.stop()]);
  });

  it('QoS 1 and QoS 2 routes with persistent sessions: every message reaches the target after a restart, repeats bounded by the in-flight window; a message taken while an earlier one was held comes again', async (t) => {
    const config = `
version: 1
admin: { port: 0 }
brokers:
  devices:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-crash-${process.pid}
    reconnectPeriodMs: 200
    qos: 1
    qosByTopic: { "stream/q2": 2 }
routes:
  - name: q1
    from: { broker: devices, topic: stream/q1 }
    to: { broker: devices, topic: out/q1 }
  - name: q2
    from: { broker: devices, topic: stream/q2 }
    to: { broker: devices, topic: out/q2 }
  - name: hooks
    from: { broker: devices, topic: stream/hooks }
    to: { http: { url: "${hook.url}/in", headers: { x-key: k }, concurrency: 4 } }
`;
    const ready = (g: RunningGateway) => Promise.all(['q1', 'q2', 'hooks'].map((route) => g.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 20000)));
    verifier = await MosquittoSub.start(mqtt, 'out/#', 1);
    gw = await startGateway(config);
    await ready(gw);

    // Route `hooks` (QoS 1, up to 4 in hand): message 0 is held at the webhook, message 1 after it
    // is taken at once. Its PUBACK waits for message 0's (acknowledgements go in the order the
    // messages came, MQTT §4.6): so mosquitto sends both again after the kill, neither lost.
    hook.onArrival = (h) => (h.n === 0 ? hook.held.push(h) : h.res.end());
    await mosquittoPub(mqtt, 'stream/hooks', JSON.stringify({ n: 0, k: 'a' }));
    await mosquittoPub(mqtt, 'stream/hooks', JSON.stringify({ n: 1, k: 'b' }));
    await eventually(() => assert.deepEqual({ arrived: hook.arrivals.map((a) => a.n), inFlight: hook.inFlight }, { arrived: [0, 1], inFlight: 1 }), 20000, 50);

    const streams = { q1: MosquittoPubStream.start(mqtt, 'stream/q1', 1), q2: MosquittoPubStream.start(mqtt, 'stream/q2', 2) };
    const part = (n: number) => {
      for (const [s, pub] of Object.entries(streams)) pub.write(Array.from({ length: PER_PART }, (_, k) => JSON.stringify({ s, i: n * PER_PART + k })));
    };

    // Part 1 flows through the gateway; it is killed once both routes are under way.
    part(0);
    await eventually(
      () => {
        const got = verifier!.all;
        assert.ok(counts(got, 'q1').size >= 50 && counts(got, 'q2').size >= 50, `verifier has ${got.length}`);
      },
      60000,
      50,
    );
    await gw.stop('SIGKILL');
    const atKill = { q1: counts(verifier.all, 'q1').size, q2: counts(verifier.all, 'q2').size };
    t.diagnostic(`delivered when killed: q1 ${atKill.q1}, q2 ${atKill.q2} of ${3 * PER_PART} each`);

    // Part 2 arrives while no gateway runs: mosquitto keeps it for the routes' persistent sessions.
    part(1);
    hook.onArrival = (h) => h.res.end();
    gw = await startGateway(config);
    await ready(gw);
    // Part 3 after the restart; the publishers then wait for the server's acknowledgement of everything.
    part(2);
    await Promise.all(Object.values(streams).map((p) => p.end()));
    // Both of route `hooks` came again: the one held at the kill, and the one taken while it was held.
    await eventually(() => assert.deepEqual(hook.arrivals.map((a) => a.n).sort(), [0, 0, 1, 1]), 30000, 100);

    for (const s of ['q1', 'q2']) {
      const seen = await eventually(
        () => {
          const c = counts(verifier!.all, s);
          assert.equal(c.size, 3 * PER_PART, `${s}: ${c.size} distinct messages at the target`);
          return c;
        },
        90000,
        100,
      );
      const missing = Array.from({ length: 3 * PER_PART }, (_, i) => i).filter((i) => !seen.has(i));
      assert.deepEqual(missing, [], `${s}: lost`);
      const repeated = [...seen].filter(([, n]) => n > 1).map(([i]) => i);
      t.diagnostic(`${s}: ${repeated.length} delivered twice (${repeated.join(', ')})`);
      // Only messages mosquitto had sent and not seen acknowledged before the kill can come again.
      assert.ok(repeated.length <= MOSQUITTO_INFLIGHT, `${s}: ${repeated.length} repeats`);
      assert.ok(
        [...seen.values()].every((n) => n <= 2),
        `${s}: a message arrived more than twice`,
      );
    }
  });
});
