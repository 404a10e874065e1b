import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { repoRoot, runCli, startGateway } from '../helpers/gateway.js';
import { startKafka } from '../helpers/kafka.js';
import { mosquittoPub, pikaConsume, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';

const example = (name: string) => readFileSync(join(repoRoot, 'examples', name), 'utf8');
const PORTS = { HTTP_PORT: '0', WS_PORT: '0', ADMIN_PORT: '0' };

describe('the MQTT, AMQP and NATS examples, run as the README says against local servers', () => {
  it('examples/nats-websocket.yaml: browser frames are stored in JetStream (acked), and chat subjects reach /feed', async () => {
    const nats = await startNats();
    const gw = await startGateway(example('nats-websocket.yaml'), { env: { ...PORTS, NATS_URL: nats.url } });
    try {
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'nats-to-browsers', 15000);
      const feed = await WsClient.connect(gw.url('ws', '/feed', 'ws'));
      const browser = await WsClient.connect(gw.url('ws', '/chat', 'ws'));
      browser.send({ room: 'lobby', text: 'hello from a browser' });
      const ack = await browser.next(10000);
      assert.equal(ack.type, 'ack', JSON.stringify(ack));
      const frame = await feed.next(10000);
      assert.equal(frame.topic, 'chat.lobby');
      assert.equal(frame.value.text, 'hello from a browser');
      assert.equal(frame.value.room, 'lobby');

      const peer = await RawNats.connect(nats);
      await peer.jsPublish('chat.ops', '{"text":"from a service"}');
      peer.close();
      const fromService = await feed.next(10000);
      assert.equal(fromService.topic, 'chat.ops');
      assert.deepEqual(fromService.value, { text: 'from a service' });
      browser.close();
      feed.close();
    } finally {
      await gw.stop();
      await nats.stop();
    }
  });

  it('examples/bridge-mqtt-kafka-amqp.yaml: an MQTT reading travels through Kafka to a RabbitMQ queue', async () => {
    const [mqtt, kafka, rabbit] = await Promise.all([startMosquitto(), startKafka({ brokers: 1 }), sharedRabbit()]);
    const env = { ...PORTS, MQTT_URL: mqtt.url, KAFKA_BROKERS: kafka.bootstrap, AMQP_URL: rabbit.url, HOSTNAME: `test-${process.pid}` };
    try {
      const valid = await runCli(['validate', '-c', 'examples/bridge-mqtt-kafka-amqp.yaml'], { env });
      assert.equal(valid.stdout.trim(), 'ok', valid.stdout + valid.stderr);
      const gw = await startGateway(example('bridge-mqtt-kafka-amqp.yaml'), { env });
      try {
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'devices-to-kafka', 30000);
        await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'hot-to-rabbit', 60000);
        await gw.waitForLog((l) => l.msg === 'amqp connected', 60000);
        await mosquittoPub(mqtt, 'plant/l1/m7/temperature', '{"celsius": 20}');
        await mosquittoPub(mqtt, 'plant/l1/m7/temperature', '{"celsius": 91.5}');
        const [alert] = await pikaConsume(rabbit, 'maintenance', 1, 60);
        assert.ok(alert, 'an alert reached the maintenance queue');
        assert.equal(alert.routingKey, 'alerts.l1');
        assert.equal(alert.headers.severity, 'high');
        const body = JSON.parse(alert.body) as Record<string, unknown>;
        assert.deepEqual({ line: body.line, machine: body.machine, celsius: body.celsius }, { line: 'l1', machine: 'm7', celsius: 91.5 });
      } finally {
        await gw.stop();
      }
    } finally {
      await Promise.all([mqtt.stop(), kafka.stop(), rabbit.stop()]);
    }
  });
});
