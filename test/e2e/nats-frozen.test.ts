import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { freezeProcess, readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';

/**
 * A nats-server that stops answering without closing its connections (frozen: `kill -STOP`, or a
 * network path that silently drops everything). Each publish answered 503 at its `ackTimeoutMs`,
 * but /readyz said ready: nats.js pings every 2 minutes and gives up after two unanswered, so the
 * broker looked connected for 4 to 6 minutes and a load balancer kept sending traffic to an
 * instance that could only refuse it (spec §7: /readyz 503 unless every broker is connected).
 * Also a server put into lame duck mode (`nats-server --signal ldm`, a rolling restart), which says
 * so to its clients before it closes their connections.
 */
describe('kind: nats, a server that stops answering without closing the connection', () => {
  let nats: MessageServer;
  let frozen = false;
  const freeze = async (on: boolean) => {
    frozen = on;
    if (on) await freezeProcess(nats.pid()!);
    else process.kill(-nats.pid()!, 'SIGCONT');
  };
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    if (frozen) await freeze(false);
    await nats?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    reconnectTimeWaitMs: 200
    pingIntervalMs: 500
    ackTimeoutMs: 1000
    streams:
      FROZEN: { subjects: ["frozen.>"] }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: nats, topic: frozen.in }
`,
  );

  it('reports the broker in /readyz within a few ping intervals, answers 503, and recovers with every 200 stored once', async () => {
    const peer = await RawNats.connect(nats);
    const sid = await peer.subscribe('frozen.>');
    try {
      await eventually(async () => assert.equal((await post(gw.url('api', '/in'), { i: 0 })).status, 200), 15000);
      const acked = [0];

      await freeze(true);
      const from = gw.logs.length;
      const during = await post(gw.url('api', '/in'), { i: 1 });
      assert.equal(during.status, 503, during.text);
      assert.equal(during.body.code, 'EG_BROKER_UNAVAILABLE');
      // Two unanswered PINGs 500 ms apart: the client declares the connection lost and /readyz says so.
      await gw.waitForLog((l) => l.msg === 'nats connection lost; reconnecting', 15000, from);
      const down = await readyz(gw);
      assert.equal(down.status, 503);
      assert.ok(
        down.body.reasons.some((r: string) => r.startsWith('broker nats: unreachable')),
        JSON.stringify(down.body),
      );
      const refused = await post(gw.url('api', '/in'), { i: 2 });
      assert.equal(refused.status, 503, refused.text);

      await freeze(false);
      await eventually(async () => assert.equal((await readyz(gw)).status, 200), 20000, 100);
      for (let i = 3; i < 13; i++) {
        const reply = await post(gw.url('api', '/in'), { i });
        assert.equal(reply.status, 200, reply.text);
        acked.push(i);
      }
      // Every 200 is in the stream once; the 503s may be there too (the server read them once it woke).
      await eventually(() => assert.ok(peer.received(sid).some((m) => JSON.parse(m.payload).i === 12)), 10000);
      const seen = peer.received(sid).map((m) => (JSON.parse(m.payload) as { i: number }).i);
      for (const i of acked) assert.equal(seen.filter((n) => n === i).length, 1, `message ${i}: ${seen.join(',')}`);
    } finally {
      peer.close();
    }
  });

  // The server tells its clients at once (INFO `ldm: true`) and closes their connections after its
  // grace period (10 s). Before, the gateway said nothing until the connection was lost.
  it('warns when the server enters lame duck mode, still publishing until it closes the connection', async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 20000, 100);
    const from = gw.logs.length;
    await promisify(execFile)('nats-server', ['--signal', `ldm=${nats.pid()}`]);
    const line = await gw.waitForLog((l) => /lame duck mode/.test(l.msg), 10000, from);
    assert.equal(line.level, 'warn');
    assert.equal(line.broker, 'nats');
    const reply = await post(gw.url('api', '/in'), { i: 'ldm' });
    assert.equal(reply.status, 200, reply.text);
    // A server in lame duck mode takes its grace period to stop on SIGTERM too: ended at once.
    process.kill(-nats.pid()!, 'SIGKILL');
  });
});
