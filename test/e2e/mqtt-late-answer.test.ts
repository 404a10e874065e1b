import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { useGateway, type LogLine } from '../helpers/gateway.js';
import { MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A consume route (memory → mqtt) whose PUBACK comes after `ackTimeoutMs`: mosquitto took the
 * publish, the proxy holds its answer. The route's try fails at the deadline and the route waits
 * for that publish's acknowledgement (mqtt.js keeps it out) before trying again: it comes once the
 * proxy lets it through, so the message is delivered and not published a second time. Before, the
 * route published it again 100 ms after the deadline: two copies (docs/spec-checklist.md, point 62).
 */
describe('mqtt: a consume route whose PUBACK comes late', () => {
  let mqtt: MessageServer;
  let proxy: TcpProxy;
  let sub: MosquittoSub;

  before(async () => {
    mqtt = await startMosquitto();
    proxy = await TcpProxy.start(mqtt.port);
    sub = await MosquittoSub.start(mqtt, 'late/out', 1);
  });
  after(async () => {
    sub?.stop();
    await Promise.all([proxy?.stop(), mqtt?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  devices: { kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: eg-late-${process.pid}, qos: 1, ackTimeoutMs: 1000 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mem, topic: parked }
  - name: out
    from: { broker: mem, topic: parked }
    to: { broker: devices, topic: late/out }
`,
  );

  const post = (n: number) => fetch(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
  const seen = () => sub.all.map((m) => (JSON.parse(m.payload) as { n: number }).n);

  it('waits for the late PUBACK of its try: the message is published once', async () => {
    assert.equal((await post(0)).status, 200);
    await sub.until((m) => m.payload.includes('"n":0'));
    const from = gw.logs.length;
    proxy.holdReplies();
    assert.equal((await post(1)).status, 200);
    // The publish reached mosquitto; its PUBACK waits in the proxy past the 1 s deadline.
    const isOne = (m: { payload: string }) => m.payload.includes('"n":1');
    const first = (await sub.until(isOne)).find(isOne);
    await gw.waitForLog((l: LogLine) => l.route === 'out' && l.msg === 'message failed', 10000, from);
    proxy.releaseReplies();
    // The route says its publish was taken late, or (as before the fix) a second copy arrives.
    const late = gw.waitForLog((l) => l.route === 'out' && l.msg.startsWith('a write answered after its ack deadline was taken'), 10000, from);
    const again = sub.until((m) => m !== first && isOne(m), 10000);
    await Promise.race([late, again]);
    for (const p of [late, again]) p.catch(() => undefined);
    assert.equal((await post(2)).status, 200);
    await sub.until((m) => m.payload.includes('"n":2'));
    assert.deepEqual(seen(), [0, 1, 2], 'message 1 once: its first publish, acknowledged late');
  });
});
