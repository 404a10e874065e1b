import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { freezeProcess, readyz } from '../helpers/outage.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

// Room enough that no publish meant to be acknowledged meets its deadline on a loaded machine (in the burst below, 120 at once
// with the QoS 2 ones waiting for a window of 20, some waited past 1 s there); the deadline's own test reloads to DEADLINE_MS.
const ROOM_MS = 30_000;
const DEADLINE_MS = 1000;

describe('kind: mqtt, publishes the server refuses (MQTT 5 reason codes, mosquitto with an ACL) or leaves unanswered', () => {
  let mqtt: MessageServer;
  let config: (ackTimeoutMs: number) => string;

  before(async () => {
    // Anonymous clients may use open/# only: mosquitto answers a publish elsewhere with reason code 0x87 (Not authorized), in the PUBACK at QoS 1 and in the PUBREC at QoS 2.
    mqtt = await startMosquitto(['topic readwrite open/#']);
    config = (ackTimeoutMs: number) => `
version: 1
admin: { port: 0 }
brokers:
  acl:
    kind: mqtt
    url: ${mqtt.url}
    clientId: eg-refusals-${process.pid}
    ackTimeoutMs: ${ackTimeoutMs}
    qosByTopic: { "+/two": 2 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /to/:where/:level }
    to: { broker: acl, topic: { expression: '$path.where & "/" & $path.level' } }
`;
  });
  const gw = useGateway(() => config(ROOM_MS));
  before(async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
  });
  after(async () => {
    await mqtt?.stop();
  });

  it('answers 503 with the reason for a refused QoS 1 or QoS 2 publish, 200 for the accepted ones around it, on the same connection', async () => {
    const sub = await MosquittoSub.start(mqtt, 'open/#', 1);
    try {
      for (const level of ['one', 'two']) {
        const refused = await post(gw.url('api', `/to/closed/${level}`), { level });
        assert.equal(refused.status, 503, refused.text);
        assert.match(refused.text, /Not authorized/);
        const accepted = await post(gw.url('api', `/to/open/${level}`), { level });
        assert.equal(accepted.status, 200, accepted.text);
      }
      // Refused and accepted publishes interleaved, more QoS 2 ones than mosquitto's window of 20 in flight: each answered for what it was, none left waiting.
      const burst = await Promise.all(Array.from({ length: 120 }, (_, i) => post(gw.url('api', `/to/${i % 2 ? 'closed' : 'open'}/${i % 3 ? 'one' : 'two'}`), { i })));
      assert.deepEqual(
        burst.flatMap((r, i) => (r.status === (i % 2 ? 503 : 200) ? [] : [`#${i}: ${r.status} ${r.text}`])),
        [],
      );
      const got = await sub.take(2 + 60);
      assert.deepEqual(
        got
          .slice(2)
          .map((m) => (JSON.parse(m.payload) as { i: number }).i)
          .sort((a, b) => a - b),
        Array.from({ length: 60 }, (_, k) => 2 * k),
      );
    } finally {
      sub.stop();
    }
  });

  it('answers 503 once ackTimeoutMs passed without an acknowledgement, ignores the acknowledgements that come late, and goes on publishing', async () => {
    // A reload that changes only ackTimeoutMs applies it in place: the same connection, the next publish has the new deadline.
    assert.equal((await gw.reconfigure(config(DEADLINE_MS))).msg, 'config reloaded');
    // mosquitto stopped (SIGSTOP): the connection stays up, the publishes are written, no acknowledgement comes.
    await freezeProcess(mqtt.pid()!, false);
    let answers: Awaited<ReturnType<typeof post>>[];
    try {
      answers = await Promise.all(Array.from({ length: 30 }, (_, i) => post(gw.url('api', `/to/open/${i % 3 ? 'one' : 'two'}`), { late: i })));
    } finally {
      process.kill(mqtt.pid()!, 'SIGCONT');
    }
    assert.deepEqual(
      answers.map((r) => r.status),
      Array.from({ length: 30 }, () => 503),
    );
    assert.match(answers[0]!.text, new RegExp(`no acknowledgement from broker 'acl' within ${DEADLINE_MS} ms`));
    // The late acknowledgements arrive (and free the QoS 2 window); what follows, on the same connection with room again, is answered as acknowledged.
    assert.equal((await gw.reconfigure(config(ROOM_MS))).msg, 'config reloaded');
    const sub = await MosquittoSub.start(mqtt, 'open/after', 1);
    try {
      const after = await Promise.all(Array.from({ length: 30 }, (_, i) => post(gw.url('api', `/to/open/after`), { after: i })));
      assert.deepEqual(
        after.flatMap((r, i) => (r.status === 200 ? [] : [`#${i}: ${r.status} ${r.text}`])),
        [],
      );
      assert.equal((await sub.take(30)).length, 30);
    } finally {
      sub.stop();
    }
  });
});
