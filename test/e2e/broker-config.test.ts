import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli, tempFiles } from '../helpers/gateway.js';

const config = `version: 1
brokers:
  devices:
    kind: mqtt
    url: http://wrong-scheme:1883
    qosByTopic:
      "a/#/b": 1
  rabbit:
    kind: amqp
    url: amqp://guest:guest@localhost:5672
    queues:
      legacy: { declare: false, bindings: [x] }
  nats:
    kind: nats
    servers: "nats://ok:4222, bad host"
    streams:
      ORDERS: { subjects: ["orders.>.x"] }
      bad.name: { subjects: [a] }
  qos:
    kind: mqtt
    url: mqtt://x
    qos: 3
`;

/** Config mistakes in mqtt, amqp and nats brokers: each one a diagnostic at its line and column, all in one pass, before anything connects. */
describe('mqtt, amqp and nats broker options under eventgate validate', () => {
  it('points at every mistake with file:line:col', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 6), [
      "gateway.yaml:5:10: 'http://wrong-scheme:1883' is not an MQTT server URL: expected mqtt://host:port (or mqtts, ws, wss)",
      "gateway.yaml:7:16: 'a/#/b' is not an MQTT topic filter: '#' must be a whole level, and the last one",
      "gateway.yaml:12:15: queue 'legacy' has declare: false (it must exist already), so it cannot also set bindings, deadLetterExchange or arguments",
      "gateway.yaml:15:14: 'bad host' is not a NATS server: expected nats://host:4222 or host:port",
      "gateway.yaml:17:28: 'orders.>.x' is not a NATS subject: dot-separated tokens, '*' a whole token, '>' only the last",
      "gateway.yaml:18:17: 'bad.name' cannot name a JetStream stream: use letters, digits, _ and -",
    ]);
    // qos: 3 is the schema's to refuse (its wording belongs to the config checker).
    assert.match(lines[6]!, /^gateway\.yaml:22:10: brokers\.qos\.qos must be one of 0, 1, 2/);
    assert.equal(lines.length, 7);
  });
});

/**
 * Topics a route names as they are, which the server would refuse: validate said `ok`, and at run
 * time mosquitto closed the publish connection on `a/+` (every publish in flight on it failed with
 * the route's, and /readyz flapped), refused the filter `a/#/b` (the route never consumed),
 * nats-server took a publish to `a.>` with a 200 that reached no subscriber of a concrete subject,
 * and refused a subscription to `a.>.b` (-ERR 'Invalid Subject') while the route said it was ready.
 */
describe('topics a route names that its mqtt or nats server would refuse', () => {
  const routes = `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  nt: { kind: nats, servers: "nats://127.0.0.1:4222" }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: a, from: { listener: api, path: /a }, to: { broker: mq, topic: "a/+" } }
  - { name: b, from: { listener: api, path: /b }, to: [{ broker: nt, topic: ok }, { broker: nt, topic: "a.>" }] }
  - { name: c, from: { broker: mq, topic: "a/#/b" }, to: { broker: nt, topic: x } }
  - { name: d, from: { broker: nt, topic: "a.>.b" }, to: { broker: mq, topic: x } }
  - { name: e, from: { broker: nt, topic: "fine.*" }, to: { broker: mq, topic: x }, deadletter: { broker: mq, topic: "dead/#" } }
  - { name: f, from: { broker: mq, topic: "s/+/t/#" }, to: { broker: nt, topic: "fine.x" }, deadletter: { broker: nt, topic: "dead.*" } }
`;

  it('are config errors at their line and column, in validate and run', async () => {
    const dir = tempFiles({ 'gateway.yaml': routes });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:8:76: 'a/+' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:9:104: 'a.>' cannot be a topic of nats broker 'nt': a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)",
      "gateway.yaml:10:43: 'a/#/b' cannot be a topic of mqtt broker 'mq': '#' must be a whole level, and the last one",
      "gateway.yaml:11:43: 'a.>.b' cannot be a topic of nats broker 'nt': a NATS subject is dot-separated tokens with no whitespace, '*' a whole token, '>' only the last",
      "gateway.yaml:12:118: 'dead/#' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:13:126: 'dead.*' cannot be a topic of nats broker 'nt': a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)",
    ]);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr + run.stdout, /'a\/\+' cannot be a topic of mqtt broker 'mq'/);
  });
});
