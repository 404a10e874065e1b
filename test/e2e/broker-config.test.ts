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
