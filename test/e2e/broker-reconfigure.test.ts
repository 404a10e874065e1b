import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { post } from '../helpers/clients.js';
import { eventually, useGateway, type GatewayFixture } from '../helpers/gateway.js';
import { MosquittoPubStream, MosquittoSub, pikaConsume, pikaDeclareQueue, pikaPublish, pikaQueueConsumers, RawNats } from '../helpers/peers.js';
import { startMosquittoLogged, type LoggedMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit, type SharedRabbit } from '../helpers/shared-rabbit.js';
import { everyOnceInOrder, WebhookReceiver } from '../helpers/webhook-receiver.js';
import { freezeProcess } from '../helpers/outage.js';

/**
 * Points 280-283 of docs/spec-checklist.md: a reload that changes only a broker key read per
 * publish (`ackTimeoutMs` here) replaced the whole broker: new connections, and every consume
 * route on it subscribed again, so an at-most-once route (core NATS, MQTT QoS 0) lost what was
 * published meanwhile. The broker is now reconfigured in place: the connections and
 * subscriptions stay, every message of a stream published across the reloads comes once, and the
 * next publish has the new deadline. A key that shapes the connection still replaces the broker.
 */

/** Publishes numbered messages with `publish(n)`, one about every millisecond, while `reloads` runs and for 300 more after it: how many were published. */
async function numberedStream(publish: (n: number) => void, reloads: () => Promise<void>): Promise<number> {
  let done = false;
  const reloading = reloads().finally(() => (done = true));
  let n = 0;
  while (!done) {
    publish(n++);
    await sleep(1);
  }
  await reloading;
  for (let i = 0; i < 300; i++) {
    publish(n++);
    await sleep(1);
  }
  return n;
}

/** Reloads with each of `timeouts` as the broker's ackTimeoutMs, each applied. */
async function reloadTimeouts(gw: GatewayFixture, config: (ackTimeoutMs: number) => string, timeouts: number[]): Promise<void> {
  for (const ms of timeouts) {
    await sleep(150);
    const line = await gw.reconfigure(config(ms));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
  }
}

/** A publish to each of `urls` while the server is frozen (`kill -STOP`: no acknowledgement comes) answers 503 naming `ms`, the deadline in force. */
async function timesOutAt(server: MessageServer, urls: string[], ms: number): Promise<void> {
  await freezeProcess(server.pid()!);
  try {
    for (const reply of await Promise.all(urls.map((url) => post(url, { frozen: true })))) {
      assert.equal(reply.status, 503, reply.text);
      assert.match(reply.text, new RegExp(`within ${ms} ms`), reply.text);
    }
  } finally {
    process.kill(-server.pid()!, 'SIGCONT');
  }
}

describe('kind: mqtt, a reload that changes only ackTimeoutMs', () => {
  let mqtt: LoggedMosquitto;
  let receiver: WebhookReceiver;
  const clientId = `eg-reconf-${process.pid}`;
  before(async () => {
    // mosquitto's own log of connections: the server side of "the broker kept its connections".
    [mqtt, receiver] = await Promise.all([startMosquittoLogged(), WebhookReceiver.start()]);
  });
  after(async () => {
    await Promise.all([receiver?.stop(), mqtt?.stop()]);
  });
  /** How many times client `<clientId>-<suffix>` connected to mosquitto. */
  const connects = (suffix: string) => mqtt.connects(`${clientId}-${suffix}`);

  const config = (ackTimeoutMs: number, extra = '') => `version: 1
admin: { port: 0 }
brokers:
  mqtt: { kind: mqtt, url: ${mqtt.url}, clientId: ${clientId}, ackTimeoutMs: ${ackTimeoutMs}${extra} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: numbered
    from: { broker: mqtt, topic: reconf/numbered, qos: 0 }
    # One at a time: the stream is checked in order (at the default concurrency an mqtt route has several in hand).
    to: { http: { url: "${receiver.url}/numbered", concurrency: 1 } }
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mqtt, topic: reconf/in }
`;
  const gw = useGateway(() => config(1000));

  it('keeps the connections, delivers a QoS 0 stream once, and times out at the new value; a keepalive change still replaces the broker', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'numbered', 15000);
    await eventually(async () => assert.equal((await post(gw.url('api', '/in'), { warm: true })).status, 200), 15000);
    assert.deepEqual([connects('numbered'), connects('pub')], [1, 1]);
    const publisher = MosquittoPubStream.start(mqtt, 'reconf/numbered', 0);
    const total = await numberedStream(
      (n) => publisher.write([JSON.stringify({ n })]),
      () => reloadTimeouts(gw, config, [2500, 1500, 3000]),
    );
    await publisher.end();
    await everyOnceInOrder(receiver, '/numbered', total);
    assert.deepEqual([connects('numbered'), connects('pub')], [1, 1], 'mosquitto saw the route and the publisher connect once each');
    await timesOutAt(mqtt, [gw.url('api', '/in')], 3000);

    // keepaliveSeconds goes into the CONNECT packet: a new connection, so a new broker.
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(3000, ', keepaliveSeconds: 20'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'numbered', 15000, from);
    await eventually(() => assert.deepEqual([connects('numbered'), connects('pub') + connects('pub-2')], [2, 2]), 15000);
    await eventually(async () => assert.equal((await post(gw.url('api', '/in'), { after: true })).status, 200), 15000);
  });
});

describe('kind: nats, a reload that changes only ackTimeoutMs', () => {
  let nats: MessageServer;
  let receiver: WebhookReceiver;
  before(async () => {
    [nats, receiver] = await Promise.all([startNats(), WebhookReceiver.start()]);
  });
  after(async () => {
    await Promise.all([receiver?.stop(), nats?.stop()]);
  });

  const config = (ackTimeoutMs: number, extra = '') => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams: { RECONF: { subjects: [reconf.stored] } }
    ackTimeoutMs: ${ackTimeoutMs}
    ${extra}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: numbered
    from: { broker: nats, topic: reconf.numbered }
    to: { http: { url: "${receiver.url}/numbered" } }
  - name: in
    from: { listener: api, path: /in }
    to: { broker: nats, topic: reconf.in }
  - name: stored
    from: { listener: api, path: /stored }
    to: { broker: nats, topic: reconf.stored }
`;
  const gw = useGateway(() => config(1000));
  /** The broker connected (once per broker instance: a replaced broker connects anew). */
  const connected = (from = 0) => gw.logs.slice(from).filter((l) => l.msg === 'nats connected').length;
  const subscribed = (from: number) => gw.logs.slice(from).filter((l) => l.msg === 'consumer ready' && l.route === 'numbered').length;

  it('keeps the connection and core subscription, delivers a stream once, and times out at the new value; a ping interval change still replaces the broker', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'numbered', 15000);
    await eventually(async () => assert.equal((await post(gw.url('api', '/stored'), { warm: true })).status, 200), 15000);
    assert.equal(connected(), 1);
    const from = gw.logs.length;
    const publisher = await RawNats.connect(nats);
    let total: number;
    try {
      total = await numberedStream(
        (n) => publisher.publish('reconf.numbered', JSON.stringify({ n })),
        () => reloadTimeouts(gw, config, [2500, 1500, 3000]),
      );
      await publisher.ping();
    } finally {
      publisher.close();
    }
    await everyOnceInOrder(receiver, '/numbered', total);
    assert.deepEqual([connected(from), subscribed(from)], [0, 0], 'no new connection, no new subscription');
    // A core publish (the flush's reply) and a JetStream one (its PubAck).
    await timesOutAt(nats, [gw.url('api', '/in'), gw.url('api', '/stored')], 3000);

    // pingIntervalMs is the connection's: a new broker.
    const at = gw.logs.length;
    const line = await gw.reconfigure(config(3000, 'pingIntervalMs: 5000'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'numbered', 15000, at);
    assert.equal(connected(at), 1);
    await eventually(async () => assert.equal((await post(gw.url('api', '/in'), { after: true })).status, 200), 15000);
  });
});

describe('kind: amqp, a reload that changes only mandatory, persistent and ackTimeoutMs', () => {
  let rabbit: SharedRabbit;
  let receiver: WebhookReceiver;
  before(async () => {
    [rabbit, receiver] = await Promise.all([sharedRabbit(), WebhookReceiver.start()]);
    // What route `kept` publishes, kept for pika to read with its delivery mode.
    await pikaDeclareQueue(rabbit, 'reconf-kept', 'amq.topic', 'reconf.kept');
  });
  after(async () => {
    await Promise.all([receiver?.stop(), rabbit?.stop()]);
  });

  const config = (mandatory: boolean, ackTimeoutMs: number, extra = '') => `version: 1
admin: { port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.url}, mandatory: ${mandatory}, ackTimeoutMs: ${ackTimeoutMs}${extra} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: queued
    from: { broker: rabbit, topic: reconf.queued }
    # One at a time: the backlog is checked in order (at the default concurrency an amqp route has several in hand).
    to: { http: { url: "${receiver.url}/queued", concurrency: 1 } }
  - name: unbound
    from: { listener: api, path: /unbound }
    to: { broker: rabbit, topic: reconf.nobody }
  - name: kept
    from: { listener: api, path: /kept }
    to: { broker: rabbit, topic: reconf.kept }
`;
  const gw = useGateway(() => config(true, 5000));
  /** The consumer tags on the route's queue, as RabbitMQ lists them. */
  const consumers = async () => (await rabbit.admin.listConsumers(rabbit.vhost)).filter((c) => c.queue === 'eventgate-queued').map((c) => c.tag);
  const connected = (from: number) => gw.logs.slice(from).filter((l) => l.msg === 'amqp connected').length;

  it('keeps the connection and consumer, delivers a backlog once, and the next publish is neither mandatory nor persistent; a connectTimeoutMs change still replaces the broker', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'queued', 60000);
    const tags = await consumers();
    assert.equal(tags.length, 1, `one consumer: ${tags}`);
    // mandatory: no queue is bound for the routing key, so the server returns it: 503.
    const returned = await post(gw.url('api', '/unbound'), { n: -1 });
    assert.equal(returned.status, 503, returned.text);
    assert.equal((await post(gw.url('api', '/kept'), { kept: 1 })).status, 200);
    const total = 400;
    await pikaPublish(
      rabbit,
      'amq.topic',
      'reconf.queued',
      Array.from({ length: total }, (_, n) => ({ body: JSON.stringify({ n }) })),
    );
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(false, 8000, ', persistent: false'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    // Not mandatory now: the server drops what no queue takes, and confirms it.
    const dropped = await post(gw.url('api', '/unbound'), { n: -2 });
    assert.equal(dropped.status, 200, dropped.text);
    // Not persistent now: delivery mode 1 where it was 2 (point 334).
    assert.equal((await post(gw.url('api', '/kept'), { kept: 2 })).status, 200);
    assert.deepEqual(
      (await pikaConsume(rabbit, 'reconf-kept', 2)).map((m) => [m.body, m.properties.deliveryMode]),
      [
        ['{"kept":1}', 2],
        ['{"kept":2}', 1],
      ],
    );
    await everyOnceInOrder(receiver, '/queued', total);
    assert.deepEqual(await consumers(), tags, 'the same consumer on the queue: no channel closed and opened again');
    assert.equal(connected(from), 0, 'no new connection');

    // connectTimeoutMs is the connection's: a new broker, a new consumer.
    const at = gw.logs.length;
    assert.equal((await gw.reconfigure(config(false, 8000, ', persistent: false, connectTimeoutMs: 4000'))).msg, 'config reloaded');
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'queued', 60000, at);
    assert.equal(connected(at), 1);
    // The new broker's consumer is on the queue (its consume-ok logged above, on the one connection
    // made since), so one consumer means the old one is gone. Polled through pika (a passive declare).
    await eventually(async () => assert.equal(await pikaQueueConsumers(rabbit, 'eventgate-queued'), 1), 15000, 200);
  });
});

describe('kind: mqtt, a reload that changes only retain', () => {
  let mqtt: LoggedMosquitto;
  const clientId = `eg-reconf-retain-${process.pid}`;
  before(async () => {
    mqtt = await startMosquittoLogged();
  });
  after(async () => {
    await mqtt?.stop();
  });
  /** Every connection mosquitto saw from the gateway's clients. */
  const connects = () => mqtt.connects(`${clientId}-`, { prefix: true });
  const config = (retain: boolean) => `version: 1
admin: { port: 0 }
brokers:
  mqtt: { kind: mqtt, url: ${mqtt.url}, clientId: ${clientId}, retain: ${retain} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: mqtt, topic: reconf/retained }
`;
  const gw = useGateway(() => config(false));

  it('keeps the connection, and the next publish is retained: a later subscriber gets it', async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/in'), { retained: 0 })).status, 200), 15000);
    const before = connects();
    const line = await gw.reconfigure(config(true));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const reply = await post(gw.url('api', '/in'), { retained: 1 });
    assert.equal(reply.status, 200, reply.text);
    // Subscribed after both publishes: only a retained message comes to it.
    const later = await MosquittoSub.start(mqtt, 'reconf/retained', 1);
    try {
      const [m] = await later.take(1);
      assert.deepEqual(JSON.parse(m!.payload), { retained: 1 });
    } finally {
      later.stop();
    }
    assert.equal(connects(), before, 'no new connection');
  });
});

describe('kind: nats, a reload that changes only corePendingBytes', () => {
  let nats: MessageServer;
  let receiver: WebhookReceiver;
  // The route's target holds the message marked `hold`, so what comes after waits in the route's core queue.
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  before(async () => {
    [nats, receiver] = await Promise.all([startNats(), WebhookReceiver.start()]);
    receiver.respond = (r, res) => {
      if ((JSON.parse(r.body) as { hold?: boolean }).hold) void held.then(() => res.end('ok'));
      else res.end('ok');
    };
  });
  after(async () => {
    release();
    await Promise.all([receiver?.stop(), nats?.stop()]);
  });
  // The default (32 MiB) holds the whole backlog below; 20 KB does not.
  const config = (bound: string) => `version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${nats.url}${bound} }
routes:
  - name: numbered
    from: { broker: nats, topic: reconf.pending }
    to: { http: { url: "${receiver.url}/numbered" } }
`;
  const gw = useGateway(() => config(''));

  it('keeps the connection and subscription, and the new bound drops a backlog with a warning', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'numbered', 15000);
    const at = gw.logs.length;
    const line = await gw.reconfigure(config(', corePendingBytes: 20000'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const publisher = await RawNats.connect(nats);
    try {
      publisher.publish('reconf.pending', JSON.stringify({ hold: true }));
      const pad = 'x'.repeat(1000);
      for (let i = 0; i < 200; i++) publisher.publish('reconf.pending', JSON.stringify({ i, pad }));
      await publisher.ping();
      const drop = await gw.waitForLog((l) => l.msg.startsWith('nats core messages dropped'), 15000, at);
      assert.equal(drop.corePendingBytes, 20000);
    } finally {
      publisher.close();
      release();
    }
    const since = gw.logs.slice(at);
    assert.deepEqual([since.filter((l) => l.msg === 'nats connected').length, since.filter((l) => l.msg === 'consumer ready').length], [0, 0], 'no new connection, no new subscription');
  });
});
