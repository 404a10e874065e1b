import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, type LogLine, type RunningGateway, startGateway, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { MosquittoSub, mosquittoPub } from '../helpers/peers.js';
import { scrapeUntil } from '../helpers/prometheus.js';
import { type MessageServer, startMosquitto } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/** Longer than a consume route's five tries of a message (100 + 200 + 400 + 800 ms): the old code dead-lettered it by then. */
const LONGER_THAN_THE_ROUTES_TRIES_MS = 2500;
const longerThanTheRoutesTries = () => new Promise((r) => setTimeout(r, LONGER_THAN_THE_ROUTES_TRIES_MS));

/**
 * A consume route whose target broker has not connected yet (the gateway just started, or a reload
 * replaced the broker) is not in an outage: it waits for that first connection before it tries a
 * message, so nothing goes to the dead-letter topic or counts as failed, however long the server
 * takes to answer the first time. The mqtt target is reached through a proxy that holds every
 * connection until released; the verifier subscribes to mosquitto directly.
 */
describe('a consume route waits for the first connection of the brokers it sends to', () => {
  let mqtt: MessageServer;
  const proxies: TcpProxy[] = [];
  const subs: MosquittoSub[] = [];
  const gw = useGateway();

  before(async () => {
    mqtt = await startMosquitto();
  });
  afterEach(() => {
    for (const s of subs.splice(0)) s.stop();
  });
  after(async () => {
    for (const p of proxies) await p.stop();
    await mqtt?.stop();
  });

  /** A proxy to mosquitto holding every connection until release(). */
  const heldProxy = async (): Promise<TcpProxy> => {
    const proxy = await TcpProxy.start(mqtt.port);
    proxies.push(proxy);
    proxy.cutAndHold();
    return proxy;
  };
  const subscribe = async (topic: string): Promise<MosquittoSub> => {
    const sub = await MosquittoSub.start(mqtt, topic, 1);
    subs.push(sub);
    return sub;
  };
  const consumer = async (g: RunningGateway, route: string) => ((await g.status()).routes as { name: string; consumer: { ready: boolean; detail?: string } }[]).find((r) => r.name === route)!.consumer;
  const routeProblems = (logs: LogLine[], route: string) => logs.filter((l) => l.route === route && (l.level === 'warn' || l.level === 'error'));
  const jobs = (received: readonly { payload: string }[]) => received.map((m) => JSON.parse(m.payload).job);

  /** A memory topic fed over HTTP, read by route `bridge` into mqtt broker `t` (at `tUrl`); dead letters to memory. */
  const memoryBridge = (tUrl: string, topic: string) => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  t: { kind: mqtt, url: "${tUrl}", clientId: first-connect-${topic.replace('/', '-')}, reconnectPeriodMs: 200 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: enqueue
    from: { listener: api, path: /enqueue }
    to: { broker: local, topic: jobs }
  - name: bridge
    from: { broker: local, topic: jobs }
    to: { broker: t, topic: ${topic} }
    deadletter: { broker: local, topic: dead }
`;

  /** Sends `total` jobs and a sentinel, waits longer than the route's tries before `connect()`, and checks every job arrived once, in order, and nothing failed. */
  const deliversAllOnceConnected = async (sub: MosquittoSub, total: number, connect: () => void, already = 0) => {
    for (let i = 0; i < total; i++) assert.equal((await post(gw.url('api', '/enqueue'), { job: i })).status, 200);
    await longerThanTheRoutesTries();
    connect();
    // A sentinel sent last and received next: nothing was delivered twice before it.
    assert.equal((await post(gw.url('api', '/enqueue'), { job: 'sentinel' })).status, 200);
    const received = (await sub.take(already + total + 1)).slice(already);
    assert.deepEqual(jobs(received), [...Array.from({ length: total }, (_, i) => i), 'sentinel']);
    await eventually(async () => assert.deepEqual(await consumer(gw, 'bridge'), { ready: true }));
    // The verifier may see the sentinel before the gateway has its acknowledgement and counts it.
    const metrics = await scrapeUntil(gw.adminUrl, (m) => m.value('eventgate_route_messages_total', { route: 'bridge', outcome: 'delivered' }) === already + total + 1);
    const outcome = (name: string) => metrics.value('eventgate_route_messages_total', { route: 'bridge', outcome: name });
    assert.equal(outcome('delivered'), already + total + 1);
    assert.equal(outcome('deadlettered'), 0, 'nothing went to the dead-letter topic');
    assert.equal(outcome('failed'), 0, 'no try failed');
    assert.deepEqual(routeProblems(gw.logs, 'bridge'), [], 'no failure was logged');
  };

  it('at startup: takes no message before, and delivers every one once after, a first connection that came later than its five tries', async () => {
    const proxy = await heldProxy();
    const sub = await subscribe('out/start');
    await gw.start(memoryBridge(`mqtt://127.0.0.1:${proxy.port}`, 'out/start'));
    assert.deepEqual(await consumer(gw, 'bridge'), { ready: false, detail: "waiting for the first connection of broker 't' before consuming" });
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.ok(probe.body.reasons.includes('broker t: connecting'), JSON.stringify(probe.body));
    assert.ok(probe.body.reasons.includes("route bridge: waiting for the first connection of broker 't' before consuming"), JSON.stringify(probe.body));
    await deliversAllOnceConnected(sub, 20, () => proxy.release());
  });

  it('after a reload that replaced its target broker: waits for the new broker as at startup', async () => {
    const proxy = await heldProxy();
    const sub = await subscribe('out/reload');
    await gw.start(memoryBridge(mqtt.url, 'out/reload'));
    assert.equal((await post(gw.url('api', '/enqueue'), { job: 'before' })).status, 200);
    assert.deepEqual(jobs(await sub.take(1)), ['before']);
    // The broker's url changes: it is replaced, and the route rebuilt on the new one, which cannot connect yet.
    assert.equal((await gw.reconfigure(memoryBridge(`mqtt://127.0.0.1:${proxy.port}`, 'out/reload'))).msg, 'config reloaded');
    assert.deepEqual(await consumer(gw, 'bridge'), { ready: false, detail: "waiting for the first connection of broker 't' before consuming" });
    await deliversAllOnceConnected(sub, 10, () => proxy.release(), 1);
  });

  it('stops at once when SIGTERM comes while it waits, leaving its message in hand in the source (MQTT) for the next run', async () => {
    const proxy = await heldProxy();
    const sub = await subscribe('out/stop');
    const config = (tUrl: string) => `
version: 1
admin: { port: 0, drainTimeoutMs: 20000 }
brokers:
  local: { kind: memory }
  src: { kind: mqtt, url: "${mqtt.url}", clientId: first-connect-src, reconnectPeriodMs: 200 }
  t: { kind: mqtt, url: "${tUrl}", clientId: first-connect-t, reconnectPeriodMs: 200 }
routes:
  - name: bridge
    from: { broker: src, topic: in/stop }
    to: { broker: t, topic: out/stop }
    deadletter: { broker: local, topic: dead }
`;
    const first = await gw.start(config(`mqtt://127.0.0.1:${proxy.port}`));
    await first.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'bridge');
    await mosquittoPub(mqtt, 'in/stop', JSON.stringify({ job: 'held' }), { qos: 1 });
    await longerThanTheRoutesTries();
    assert.deepEqual(await first.stop('SIGTERM'), { code: 0, signal: null });
    assert.ok(first.logs.some((l) => l.msg === 'shutdown complete'));
    assert.deepEqual(
      first.logs.filter((l) => /did not stop within drainTimeoutMs/.test(l.msg)),
      [],
      'the waiting route stopped without holding up the drain',
    );
    assert.deepEqual(routeProblems(first.logs, 'bridge'), [], 'no failure was logged');

    // The next run, its target reachable: the message the first run had in hand arrives, once.
    proxy.release();
    const second = await startGateway(config(`mqtt://127.0.0.1:${proxy.port}`));
    try {
      await mosquittoPub(mqtt, 'in/stop', JSON.stringify({ job: 'sentinel' }), { qos: 1 });
      assert.deepEqual(jobs(await sub.take(2)), ['held', 'sentinel']);
    } finally {
      await second.stop();
      rmSync(second.dir, { recursive: true, force: true });
    }
  });
});
