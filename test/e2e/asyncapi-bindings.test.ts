import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, mosquittoPub, RawNats } from '../helpers/peers.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';

/** An AsyncAPI 3.0 document whose channels carry MQTT, AMQP and NATS bindings (channel, operation and message level). */
const plant = `asyncapi: 3.0.0
info: { title: Plant, version: 1.0.0 }
channels:
  temperatures:
    address: sensors/{sensor}/temperature
    parameters: { sensor: { description: sensor id } }
    messages:
      reading:
        payload: { type: object, required: [celsius], properties: { celsius: { type: number } } }
        bindings: { mqtt: { bindingVersion: 0.2.0 } }
  orders:
    address: orders.created
    messages:
      created:
        payload: { type: object, required: [id], properties: { id: { type: integer } } }
        bindings: { amqp: { contentEncoding: utf-8, messageType: order.created, bindingVersion: 0.3.0 } }
    bindings:
      amqp:
        is: routingKey
        exchange: { name: events, type: topic, durable: true, autoDelete: false, vhost: / }
        bindingVersion: 0.3.0
  batches:
    address: sensors/batch
    messages:
      batch:
        payload: { type: array, items: { type: number } }
        bindings: { mqtt: { bindingVersion: 0.2.0 } }
  labels:
    address: labels
    messages:
      labels:
        payload: { type: object, additionalProperties: { type: integer } }
  presence:
    address: presence.online
    messages:
      online:
        payload: { type: object, required: [user], properties: { user: { type: string } } }
operations:
  readTemperatures:
    action: receive
    channel: { $ref: '#/channels/temperatures' }
    bindings: { mqtt: { qos: 1, bindingVersion: 0.2.0 } }
  sendOrder:
    action: send
    channel: { $ref: '#/channels/orders' }
    bindings: { amqp: { deliveryMode: 2, mandatory: true, bindingVersion: 0.3.0 } }
  announcePresence:
    action: send
    channel: { $ref: '#/channels/presence' }
    bindings: { nats: { queue: presence, bindingVersion: 0.1.0 } }
`;

describe('validate: {channel} on AsyncAPI channels with MQTT, AMQP and NATS bindings', () => {
  let mqtt: MessageServer;
  let nats: MessageServer;
  let config: string;

  before(async () => {
    [mqtt, nats] = await Promise.all([startMosquitto(), startNats()]);
    config = `
version: 1
asyncapi: plant.yaml
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: "eg-bindings-${process.pid}" }
  nats: { kind: nats, servers: "${nats.url}" }
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: readings
    from: { broker: devices, topic: "sensors/+/temperature" }
    through:
      - validate: { channel: temperatures, onInvalid: tag }
      - transform: '{"channel": $channel, "valid": $not($exists($headers._asyncapi_eg_validation_error)), "celsius": celsius}'
    to: { broker: devices, topic: checked }
  - name: orders
    from: { listener: api, path: /orders }
    through: [{ validate: { channel: orders.created } }]
    to: { broker: local, topic: orders }
  - name: batches
    from: { listener: api, path: /batches }
    through: [{ validate: { channel: batches, onInvalid: tag } }]
    to: { broker: devices, topic: batches }
  - name: batches-strict
    from: { listener: api, path: /batches-strict }
    through: [{ validate: { channel: batches } }]
    to: { broker: devices, topic: batches }
  - name: labels
    from: { listener: api, path: /labels }
    through: [{ validate: { channel: labels, onInvalid: tag } }]
    to: { broker: devices, topic: labels/tagged }
  - name: labels-dead
    from: { listener: api, path: /labels-dead }
    through: [{ validate: { channel: labels, onInvalid: deadletter, deadletter: { broker: devices, topic: labels/dead } } }]
    to: { broker: devices, topic: labels/ok }
  - name: presence
    from: { listener: api, path: /presence }
    through: [{ validate: { channel: presence } }]
    to: { broker: nats, topic: presence.online }
`;
  });
  const gw = useGateway(
    () => config,
    () => ({ files: { 'plant.yaml': plant } }),
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'readings', 15000);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop()]);
  });

  it('eventgate validate accepts the config and its bindings', async () => {
    const dir = tempFiles({ 'gateway.yaml': config, 'plant.yaml': plant });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), 'ok');
  });

  it('checks MQTT messages against the channel named by its key, whatever concrete topic they came on', async () => {
    const sub = await MosquittoSub.start(mqtt, 'checked');
    try {
      await mosquittoPub(mqtt, 'sensors/s1/temperature', '{"celsius": 20}');
      await mosquittoPub(mqtt, 'sensors/s2/temperature', '{"celsius": "warm"}');
      const got = (await sub.take(2)).map((m) => JSON.parse(m.payload));
      assert.deepEqual(got, [
        { channel: 'temperatures', valid: true, celsius: 20 },
        { channel: 'temperatures', valid: false, celsius: 'warm' },
      ]);
    } finally {
      sub.stop();
    }
  });

  it('lists at most 100 errors of a message with thousands: the tagged one reaches MQTT, whose user property takes 65535 bytes (point 653)', async () => {
    // 30,000 wrong items, 150 kB: ajv finds 30,000 errors; all of them made a 1.2 MB header, a 503 from the broker.
    const batch = Array.from({ length: 30000 }, () => 'x');
    const first100 = batch.slice(0, 100).map((_, i) => `/${i}: must be number`);
    const strict = await post(gw.url('api', '/batches-strict'), batch);
    assert.equal(strict.status, 400);
    assert.equal(strict.body.detail, 'the message does not match its schema (30000 errors; the first 100 are listed)');
    assert.deepEqual(strict.body.errors, first100);
    const sub = await MosquittoSub.start(mqtt, 'batches');
    try {
      const tagged = await post(gw.url('api', '/batches'), batch);
      assert.equal(tagged.status, 200, tagged.text);
      assert.equal(tagged.body.tagged, true);
      const [got] = await sub.take(1);
      assert.equal(got!.payload.length, JSON.stringify(batch).length);
      assert.deepEqual(JSON.parse(got!.userProperties._asyncapi_eg_validation_error!).errors, first100);
    } finally {
      sub.stop();
    }
  });

  it('escapes a C1 control or non-character an error quotes from the message in the headers it writes, which MQTT 5 then carries (point 654)', async () => {
    // A property name is any JSON string; the error names it, and JSON.stringify left U+0085 and U+FFFE as they are.
    const value = { 'a\u0085b\ufffe': 'x' };
    const sub = await MosquittoSub.start(mqtt, 'labels/#');
    try {
      const tagged = await post(gw.url('api', '/labels'), value);
      assert.deepEqual([tagged.status, tagged.body.tagged], [200, true], tagged.text);
      const dead = await post(gw.url('api', '/labels-dead'), value);
      assert.deepEqual([dead.status, dead.body.deadlettered], [200, true], dead.text);
      const got = await sub.take(2);
      assert.deepEqual(
        got.map((m) => m.topic),
        ['labels/tagged', 'labels/dead'],
      );
      const header = got[0]!.userProperties._asyncapi_eg_validation_error!;
      assert.match(header, /"errors":\["\/a\\u0085b\\ufffe: must be integer"\]/);
      assert.deepEqual(JSON.parse(header).errors, ['/a\u0085b\ufffe: must be integer']);
      assert.deepEqual(JSON.parse(got[1]!.userProperties._eventgate_error!).errors, ['/a\u0085b\ufffe: must be integer']);
      assert.deepEqual(JSON.parse(got[1]!.userProperties._asyncapi_eg_validation_error!).errors, ['/a\u0085b\ufffe: must be integer']);
    } finally {
      sub.stop();
    }
  });

  it('checks HTTP publishes against channels with AMQP (by address) and NATS bindings', async () => {
    assert.equal((await post(gw.url('api', '/orders'), { id: 1 })).status, 200);
    const bad = await post(gw.url('api', '/orders'), { id: 'one' });
    assert.equal(bad.status, 400, bad.text);
    const peer = await RawNats.connect(nats);
    try {
      const sid = await peer.subscribe('presence.online');
      assert.equal((await post(gw.url('api', '/presence'), { user: 'ana' })).status, 200);
      assert.deepEqual(JSON.parse((await peer.take(sid, 1))[0]!.payload), { user: 'ana' });
      assert.equal((await post(gw.url('api', '/presence'), { name: 'no user' })).status, 400);
    } finally {
      peer.close();
    }
  });
});
