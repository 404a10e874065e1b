import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { lateAnswerRoutes, pastDeadline, storedOnceDespiteLateAnswer } from '../helpers/late-answer.js';
import { MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

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
  let fanSub: MosquittoSub;
  let deadSub: MosquittoSub;

  before(async () => {
    mqtt = await startMosquitto();
    proxy = await TcpProxy.start(mqtt.port);
    sub = await MosquittoSub.start(mqtt, 'late/out', 1);
    fanSub = await MosquittoSub.start(mqtt, 'late/fan', 1);
    // The fan-out with a dead-letter topic: its first target's copies and its dead letters.
    deadSub = await MosquittoSub.start(mqtt, 'late/dead/#', 1);
  });
  after(async () => {
    sub?.stop();
    fanSub?.stop();
    deadSub?.stop();
    await Promise.all([proxy?.stop(), mqtt?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  devices: { kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: eg-late-${process.pid}, qos: 1, ackTimeoutMs: 1000 }
${lateAnswerRoutes('devices', 'late/out')}  - name: fan-in
    from: { listener: api, path: /fan }
    to: { broker: mem, topic: fanned }
  - name: fan
    from: { broker: mem, topic: fanned }
    to:
      - { broker: devices, topic: late/fan }
      - { broker: devices, topic: { expression: missing } }
  - name: fan-dead-in
    from: { listener: api, path: /fan-dead }
    to: { broker: mem, topic: fanned-dead }
  - name: fan-dead
    from: { broker: mem, topic: fanned-dead }
    to:
      - { broker: devices, topic: late/dead/taken }
      - { broker: devices, topic: { expression: missing } }
    deadletter: { broker: devices, topic: late/dead/letters }
`,
  );

  const copies = () => sub.all.map((m) => (JSON.parse(m.payload) as { n: number }).n);

  it('waits for the late PUBACK of its try: the message is published once', () =>
    storedOnceDespiteLateAnswer(gw, proxy, 'devices', { count: async () => copies().length, bodies: async () => copies() }));

  it('a fan-out whose late answer took the message: its failure names the target that did not, and counts the one that did', async () => {
    const from = gw.logs.length;
    proxy.holdReplies();
    const res = await fetch(gw.url('api', '/fan'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 7 }) });
    assert.equal(res.status, 200);
    // Target 1's topic expression fails at once; target 0's PUBACK waits in the proxy past the deadline.
    await eventually(() => assert.equal(fanSub.all.length, 1, "mosquitto took the fan-out's first copy"), 10000);
    await gw.waitForLog((l) => pastDeadline(l, 'fan'), 10000, from);
    proxy.releaseReplies();
    const first = await gw.waitForLog((l) => l.route === 'fan' && /^message (failed|dropped)$/.test(l.msg), 10000, from);
    // Before, the deadline's reading stood: target 0's timeout, `none of the 2 targets took it`,
    // though its late answer said it was taken.
    assert.equal(first.code, 'EG_EXPRESSION_FAILED', JSON.stringify(first));
    assert.match(String(first.detail), /^topic expression gave nothing.*; 1 of the 2 targets took it \(see deliveries\): a retry sends it to them again$/);
    assert.deepEqual(
      fanSub.all.map((m) => JSON.parse(m.payload) as unknown),
      [{ n: 7 }],
      'target 0 took it once: not sent it again',
    );
  });

  it("a fan-out dead-lettered once a late answer took it: the copy names the target that did not take it, not the deadline's", async () => {
    const from = gw.logs.length;
    proxy.holdReplies();
    assert.equal((await fetch(gw.url('api', '/fan-dead'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n: 8 }) })).status, 200);
    // At the deadline target 0 (its PUBACK held) is the first failure; its late answer then says it took the message.
    await gw.waitForLog((l) => pastDeadline(l, 'fan-dead'), 10000, from);
    proxy.releaseReplies();
    await eventually(() => assert.equal(deadSub.all.filter((m) => m.topic === 'late/dead/letters').length, 1, 'one dead letter'), 10000);
    const letter = deadSub.all.find((m) => m.topic === 'late/dead/letters')!;
    const error = JSON.parse(letter.userProperties._eventgate_error!) as Record<string, unknown>;
    assert.deepEqual([error.route, error.code, error.attempts, error.target], ['fan-dead', 'EG_EXPRESSION_FAILED', 1, 1], JSON.stringify(error));
    assert.deepEqual(
      deadSub.all.filter((m) => m.topic === 'late/dead/taken').map((m) => JSON.parse(m.payload) as unknown),
      [{ n: 8 }],
      'target 0 took it once',
    );
  });
});
