import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { fetch } from '../helpers/http.js';
import { freePort } from '../helpers/ports.js';
import { eventually, startGateway, useGateway, withLogsOnFailure, type RunningGateway } from '../helpers/gateway.js';
import { MosquittoSub, mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

/**
 * What an MQTT 5 server says of a message's life, of the QoS it takes and of retained messages, against the gateway:
 * - a consumed message's Message Expiry Interval goes on to an MQTT target as what is left of it
 *   (MQTT 5 §3.3.2.3.3, as a server passing a message on does); before, the copy never expired;
 * - a server's Maximum QoS (its CONNACK; mosquitto's `max_qos`) bounds the gateway's publishes;
 *   before, a QoS 2 publish to a server of QoS 1 made it cut the publish connection (0x9B), failing
 *   every publish in flight on it, and a consume route sent it again for ever; so did a retained
 *   publish to a server without retained messages (its CONNACK's Retain Available, 0x9A).
 */
describe("kind: mqtt, a consumed message's expiry, against mosquitto", () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });

  it('goes on to an MQTT target as what is left of it after the session kept it; a dead-letter copy and a message without one do not expire', { timeout: 120_000 }, async () => {
    const closed = await freePort();
    const config = `
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-expiry-${process.pid} }
routes:
  - name: copy
    from: { broker: devices, topic: "exp/#", qos: 1 }
    through: [{ transform: '{"copied": $}' }]
    to: { broker: devices, topic: exp-out }
  - name: undeliverable
    from: { broker: devices, topic: "expd/#", qos: 1 }
    to: { http: { url: "http://127.0.0.1:${closed}/down", retry: { attempts: 1 } } }
    deadletter: { broker: devices, topic: exp-dead }
`;
    const copies = await MosquittoSub.start(mqtt, 'exp-out');
    const dead = await MosquittoSub.start(mqtt, 'exp-dead');
    let gw: RunningGateway | undefined;
    try {
      gw = await startGateway(config);
      for (const route of ['copy', 'undeliverable']) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 15_000);
      await gw.stop();
      // The routes' sessions keep what comes while the gateway is down; mosquitto counts the time it held each message.
      await mosquittoPub(mqtt, 'exp/short', JSON.stringify('short'), { messageExpirySeconds: 1 });
      await mosquittoPub(mqtt, 'exp/long', JSON.stringify('long'), { messageExpirySeconds: 100 });
      await mosquittoPub(mqtt, 'exp/none', JSON.stringify('none'));
      await mosquittoPub(mqtt, 'expd/long', JSON.stringify('dead'), { messageExpirySeconds: 100 });
      const down = Date.now();
      // Waits out the short one's second (and a margin): a time in which it must expire, not an event.
      await new Promise((r) => setTimeout(r, 2100));
      const heldS = Math.floor((Date.now() - down) / 1000);
      gw = await startGateway(config);
      const running = gw;
      await withLogsOnFailure(
        () => [running],
        async () => {
          const got = await copies.until((m) => JSON.parse(m.payload).copied === 'none');
          const byValue = new Map(got.map((m) => [JSON.parse(m.payload).copied as string, m]));
          assert.deepEqual([...byValue.keys()].sort(), ['long', 'none'], 'the expired one is not delivered');
          const left = byValue.get('long')!.messageExpiryInterval;
          assert.ok(left !== undefined, 'the copy carries a Message Expiry Interval');
          assert.ok(left >= 1 && left <= 100 - heldS, `what is left of 100 s after ${heldS} s held: ${left}`);
          assert.equal(byValue.get('none')!.messageExpiryInterval, undefined);
          const [copy] = await dead.take(1, 30_000);
          assert.equal(JSON.parse(copy!.payload), 'dead');
          assert.match(copy!.userProperties._eventgate_error ?? '', /"route":"undeliverable"/);
          assert.equal(copy!.messageExpiryInterval, undefined, 'a dead-letter copy does not expire');
        },
      );
    } finally {
      await gw?.stop();
      copies.stop();
      dead.stop();
    }
  });
});

/** A config's start: the admin port and an http listener `web`. */
const WEB = `
version: 1
admin: { port: 0 }
listeners:
  web: { kind: http, port: 0 }`;

/** POSTs `{path}` to each path of listener `web`, one after the other: the status and problem detail of each. */
async function postEach(gw: RunningGateway, paths: string[]): Promise<Record<string, { status: number; detail?: string }>> {
  const answers: Record<string, { status: number; detail?: string }> = {};
  for (const path of paths) {
    const r = await fetch(gw.url('web', path), { method: 'POST', body: JSON.stringify({ path }), headers: { 'content-type': 'application/json' } });
    const text = await r.text();
    answers[path] = { status: r.status, ...(r.status === 200 ? {} : { detail: (JSON.parse(text) as { detail?: string }).detail }) };
  }
  return answers;
}

describe("kind: mqtt, a server's Maximum QoS below a route's, against mosquitto (max_qos 1)", () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto(undefined, ['max_qos 1']);
  });
  after(async () => {
    await mqtt?.stop();
  });
  const gw = useGateway();

  it('publishes QoS 2 at QoS 1, warned of once, the connection kept; a route asking QoS 2 is granted 1, warned of, and ready', { timeout: 90_000 }, async () => {
    const out = await MosquittoSub.start(mqtt, 'mq/out/#', 2);
    try {
      await gw.start(`${WEB}
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-maxqos-${process.pid} }
routes:
  - name: two
    from: { listener: web, path: /two }
    to: { broker: devices, topic: mq/out/two, qos: 2 }
  - name: one
    from: { listener: web, path: /one }
    to: { broker: devices, topic: mq/out/one, qos: 1 }
  - name: consume
    from: { broker: devices, topic: "mq/in/#", qos: 2 }
    to: { broker: devices, topic: mq/out/consumed, qos: 2 }
`);
      await withLogsOnFailure(
        () => [gw],
        async () => {
          const granted = await gw.waitForLog((l) => l.route === 'consume' && typeof l.msg === 'string' && l.msg.startsWith('mqtt server granted the subscription at QoS 1'), 15_000);
          assert.equal(granted.level, 'warn');
          for (let round = 0; round < 2; round++) assert.deepEqual(await postEach(gw, ['/two', '/one']), { '/two': { status: 200 }, '/one': { status: 200 } });
          // mosquitto_pub itself keeps to the server's Maximum QoS: at QoS 2 it sends nothing.
          await mosquittoPub(mqtt, 'mq/in/x', JSON.stringify({ path: 'consumed' }), { qos: 1 });
          const got = await out.take(5);
          assert.deepEqual(got.map((m) => `${m.topic} ${m.qos}`).sort(), ['mq/out/consumed 1', 'mq/out/one 1', 'mq/out/one 1', 'mq/out/two 1', 'mq/out/two 1']);
          const lowered = gw.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('mqtt server takes QoS 1 at most'));
          assert.equal(lowered.length, 1, 'warned of once');
          assert.equal(gw.logs.filter((l) => l.msg === 'mqtt connection lost; reconnecting').length, 0, 'the publish connection was kept');
          const ready = await fetch(`${gw.adminUrl}/readyz`);
          assert.equal(ready.status, 200, await ready.text());
        },
      );
    } finally {
      out.stop();
    }
  });

  it('refuses a QoS 1 publish to a server of QoS 0, and a retained one to a server without retained messages, as 503s that say so; a publish it takes still goes', { timeout: 90_000 }, async () => {
    const strict = await startMosquitto(undefined, ['max_qos 0', 'retain_available false']);
    const out = await MosquittoSub.start(strict, 'mq/out/#', 0);
    try {
      await gw.start(`${WEB}
brokers:
  plain: { kind: mqtt, url: "${strict.url}", clientId: eg-strict-${process.pid} }
  retained: { kind: mqtt, url: "${strict.url}", clientId: eg-strict-retained-${process.pid}, retain: true, qos: 0 }
routes:
  - name: one
    from: { listener: web, path: /one }
    to: { broker: plain, topic: mq/out/one, qos: 1 }
  - name: zero
    from: { listener: web, path: /zero }
    to: { broker: plain, topic: mq/out/zero, qos: 0 }
  - name: retained
    from: { listener: web, path: /retained }
    to: { broker: retained, topic: mq/out/retained }
`);
      await withLogsOnFailure(
        () => [gw],
        async () => {
          // Both brokers connected first: a publish before its CONNACK is a 503 of another kind.
          await eventually(async () => assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200), 15_000, 50);
          const answers = await postEach(gw, ['/one', '/retained', '/zero']);
          assert.equal(answers['/one']!.status, 503);
          assert.match(answers['/one']!.detail!, /the server takes QoS 0 only \(its CONNACK's Maximum QoS\), and a QoS 1 publish needs its acknowledgement/);
          assert.equal(answers['/retained']!.status, 503);
          assert.match(answers['/retained']!.detail!, /the server keeps no retained messages \(its CONNACK's Retain Available is 0\)/);
          assert.equal(answers['/zero']!.status, 200, JSON.stringify(answers));
          const [got] = await out.take(1);
          assert.equal(got!.topic, 'mq/out/zero');
          assert.equal(gw.logs.filter((l) => l.msg === 'mqtt connection lost; reconnecting').length, 0, 'no connection was cut');
        },
      );
    } finally {
      out.stop();
      await strict.stop();
    }
  });
});
