import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, afterEach, before, describe, it } from 'node:test';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { MosquittoPubStream } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

const BACKLOG = 40;

/**
 * A route's persistent session holds a backlog when the gateway starts: mosquitto sends the
 * queued messages right after CONNACK, ahead of the SUBACK of the route's subscription, and
 * mqtt.js reads one packet at a time, the next once the route is done with the one before. A
 * stop (reload or SIGTERM) while the route is in that backlog gives the rest back unacknowledged;
 * its connection must still end, so the reload is applied and the gateway exits 0 (spec §6, §7).
 */
describe('kind: mqtt, a consume route stopped inside the backlog its session kept', () => {
  let mqtt: MessageServer;
  let receiver: WebhookReceiver;
  let gw: RunningGateway | undefined;
  /** While set, the endpoint answers nothing; `release()` answers what it holds and goes on answering. */
  let held: ServerResponse[] | undefined;
  const release = () => {
    for (const res of held ?? []) res.end('ok');
    held = undefined;
  };

  before(async () => {
    mqtt = await startMosquitto();
    receiver = await WebhookReceiver.start();
    receiver.respond = (_r, res) => (held ? held.push(res) : res.end('ok'));
  });
  afterEach(async () => {
    release();
    // A gateway stuck in its shutdown must not outlive the test.
    const killer = setTimeout(() => gw?.process.kill('SIGKILL'), 20000);
    await gw?.stop();
    clearTimeout(killer);
    gw = undefined;
  });
  after(async () => {
    await receiver?.stop();
    await mqtt?.stop();
  });

  // The route has up to its webhook's default concurrency (16) in hand (point 520). Sixteen transforms
  // started together on a gateway just started, on a loaded machine, outlasted the default 1 s
  // expression timeout (wall clock: each one's time includes the others' and the start-up's), and
  // were dropped: a long timeout keeps this test to the stop it is about (point 526).
  const config = (tag: string) => `
version: 1
admin: { port: 0, drainTimeoutMs: 2000 }
expressions: { timeoutMs: 10000 }
brokers:
  devices: { kind: mqtt, url: ${mqtt.url}, clientId: eg-backlog-${process.pid}, reconnectPeriodMs: 200 }
routes:
  - name: relay
    from: { broker: devices, topic: backlog/# }
    through: [{ transform: '$merge([$, {"config": "${tag}"}])' }]
    to: { http: { url: "${receiver.url}/relay" } }
`;

  /** Queues messages `first`..`first + BACKLOG - 1` for the route's persistent session while no gateway runs. */
  async function backlog(first: number): Promise<void> {
    const g = await startGateway(config('session'));
    await g.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'relay', 20000);
    assert.deepEqual(await g.stop(), { code: 0, signal: null });
    const pub = MosquittoPubStream.start(mqtt, 'backlog/x', 1);
    pub.write(Array.from({ length: BACKLOG }, (_, k) => JSON.stringify({ i: first + k })));
    await pub.end();
  }

  /** Starts a gateway whose route is inside its backlog: the endpoint holds the route's first message. */
  async function startInBacklog(): Promise<RunningGateway> {
    held = [];
    const before = receiver.requests.length;
    const g = await startGateway(config('a'));
    await receiver.received(before + 1, 20000);
    return g;
  }

  const ids = (from: number) => new Set(receiver.requests.map((r) => (JSON.parse(r.body) as { i: number }).i).filter((i) => i >= from && i < from + BACKLOG));

  it('applies a reload that rebuilds the route, whose successor gets every message given back', async () => {
    await backlog(0);
    gw = await startInBacklog();
    const from = gw.logs.length;
    const reloaded = gw.reconfigure(config('b'));
    await gw.waitForLog((l) => l.msg === 'config change detected', 10000, from);
    // The message in hand is accepted; the next one is given back as the old route stops.
    release();
    const line = await reloaded;
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await eventually(() => assert.equal(ids(0).size, BACKLOG), 30000, 100);
    assert.ok(receiver.requests.some((r) => (JSON.parse(r.body) as { config: string }).config === 'b'));
  });

  it('exits 0 on SIGTERM, and the next run gets every message given back', async () => {
    await backlog(1000);
    gw = await startInBacklog();
    const g = gw;
    const from = g.logs.length;
    const stopping = g.stop();
    await g.waitForLog((l) => l.msg === 'shutting down: draining', 10000, from);
    release();
    // Bounded by drainTimeoutMs; a shutdown that never ends is killed after 20 s by afterEach's guard.
    const killer = setTimeout(() => g.process.kill('SIGKILL'), 20000);
    const exit = await stopping;
    clearTimeout(killer);
    assert.deepEqual(exit, { code: 0, signal: null }, `shutdown did not finish; last lines: ${JSON.stringify(g.logs.slice(-3).map((l) => l.msg))}`);

    gw = await startGateway(config('c'));
    await eventually(() => assert.equal(ids(1000).size, BACKLOG), 30000, 100);
  });
});
