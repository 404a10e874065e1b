import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { MosquittoSub } from '../helpers/peers.js';
import { scrape } from '../helpers/prometheus.js';
import { type MessageServer, startMosquitto } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/** Longer than a consume route's five tries of a message (100 + 200 + 400 + 800 ms). */
const LONGER_THAN_THE_ROUTES_TRIES_MS = 2500;

/**
 * A consume route whose target broker has not connected yet (the gateway just started) is not in
 * an outage: it waits for that first connection before it tries a message, so nothing goes to the
 * dead-letter topic or counts as failed, however long the server takes to answer the first time.
 * The mqtt target is reached through a proxy that holds every connection until released.
 */
describe('a consume route waits for the first connection of the brokers it sends to', () => {
  let mqtt: MessageServer;
  let proxy: TcpProxy;
  let sub: MosquittoSub;

  before(async () => {
    mqtt = await startMosquitto();
    proxy = await TcpProxy.start(mqtt.port);
    proxy.cutAndHold();
    sub = await MosquittoSub.start(mqtt, 'out/jobs', 1);
  });
  // Registered after the before() above, so the config can name the proxy's port.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  t: { kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: first-connect, reconnectPeriodMs: 200 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: enqueue
    from: { listener: api, path: /enqueue }
    to: { broker: local, topic: jobs }
  - name: bridge
    from: { broker: local, topic: jobs }
    to: { broker: t, topic: out/jobs }
    deadletter: { broker: local, topic: dead }
`,
  );
  after(async () => {
    sub?.stop();
    await proxy?.stop();
    await mqtt?.stop();
  });

  it('takes no message before, and delivers every one once after, a first connection that came later than its five tries', async () => {
    const consumer = async () => ((await gw.status()).routes as { name: string; consumer: { ready: boolean; detail?: string } }[]).find((r) => r.name === 'bridge')!.consumer;
    assert.deepEqual(await consumer(), { ready: false, detail: "waiting for the first connection of broker 't' before consuming" });
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.ok(probe.body.reasons.includes('broker t: connecting'), JSON.stringify(probe.body));
    assert.ok(probe.body.reasons.includes("route bridge: waiting for the first connection of broker 't' before consuming"), JSON.stringify(probe.body));

    const total = 20;
    for (let i = 0; i < total; i++) assert.equal((await post(gw.url('api', '/enqueue'), { job: i })).status, 200);
    // The server stays out of reach for longer than the route would have tried the first message.
    await new Promise((r) => setTimeout(r, LONGER_THAN_THE_ROUTES_TRIES_MS));
    proxy.release();

    // A sentinel sent last and received next: nothing was delivered twice before it.
    assert.equal((await post(gw.url('api', '/enqueue'), { job: 'sentinel' })).status, 200);
    const received = await sub.take(total + 1);
    assert.deepEqual(
      received.map((m) => JSON.parse(m.payload).job),
      [...Array.from({ length: total }, (_, i) => i), 'sentinel'],
    );
    await eventually(async () => assert.deepEqual(await consumer(), { ready: true }));

    const metrics = await scrape(gw.adminUrl);
    const outcome = (name: string) => metrics.value('eventgate_route_messages_total', { route: 'bridge', outcome: name });
    assert.equal(outcome('delivered'), total + 1);
    assert.equal(outcome('deadlettered'), 0, 'nothing went to the dead-letter topic');
    assert.equal(outcome('failed'), 0, 'no try failed');
    assert.deepEqual(
      gw.logs.filter((l) => l.route === 'bridge' && (l.level === 'warn' || l.level === 'error')),
      [],
      'no failure was logged',
    );
  });
});
