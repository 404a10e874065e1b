import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { post, type HttpReply } from '../helpers/clients.js';
import { readyz } from '../helpers/outage.js';
import { scrape } from '../helpers/prometheus.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, mqttPackets } from '../helpers/peers.js';
import { startMosquitto, startNatsMqtt, type MessageServer, type NatsMqttServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

const PUBREL = 0x62;
const PUBCOMP = 0x70;

/**
 * A TCP proxy in front of an MQTT server that reads the packets each way and holds the PUBCOMPs the
 * server sends until release(): the gateway's QoS 2 exchange is then finished on the server's side
 * (PUBREC answered with PUBREL, PUBCOMP sent) but not on the gateway's.
 */
class PubcompHold {
  private readonly sockets = new Set<Socket>();
  private held: { to: Socket; packet: Buffer }[] | undefined = [];
  private waiters: (() => void)[] = [];
  pubrels = 0;
  private constructor(private readonly server: Server) {}

  static async start(target: MessageServer): Promise<PubcompHold> {
    const server = createServer();
    const hold = new PubcompHold(server);
    server.on('connection', (client) => {
      const upstream = connect(target.port, target.host);
      for (const s of [client, upstream]) {
        hold.sockets.add(s);
        s.on('error', () => s.destroy());
        s.on('close', () => (client.destroy(), upstream.destroy()));
      }
      packets(client, (p) => {
        if (p[0] === PUBREL) hold.pubrels++;
        upstream.write(p);
      });
      packets(upstream, (p) => {
        if (p[0] === PUBCOMP && hold.held) {
          hold.held.push({ to: client, packet: p });
          for (const w of hold.waiters.splice(0)) w();
        } else client.write(p);
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return hold;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  /** Resolves once a PUBCOMP is held. */
  async holding(): Promise<void> {
    while (this.held && this.held.length === 0) await new Promise<void>((r) => this.waiters.push(r));
  }

  release(): void {
    for (const { to, packet } of this.held ?? []) to.write(packet);
    this.held = undefined;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

/** Calls `each` with every whole MQTT packet read from `socket`. */
function packets(socket: Socket, each: (packet: Buffer) => void): void {
  socket.on('data', mqttPackets(each));
}

/**
 * A TCP proxy in front of an MQTT 5 server that adds Shared Subscription Available = 0 (property
 * 0x2A) to each CONNACK it passes on while `unshared`, as a server without shared subscriptions
 * announces it (no installed server does); everything else passes as it is. cut() closes every
 * connection.
 */
class UnsharedConnack {
  unshared = true;
  private readonly sockets = new Set<Socket>();
  private constructor(private readonly server: Server) {}
  static async start(target: MessageServer): Promise<UnsharedConnack> {
    const server = createServer();
    const proxy = new UnsharedConnack(server);
    server.on('connection', (client) => {
      const upstream = connect(target.port, target.host);
      for (const s of [client, upstream]) {
        proxy.sockets.add(s);
        s.on('error', () => s.destroy());
        s.on('close', () => (proxy.sockets.delete(s), client.destroy(), upstream.destroy()));
      }
      client.on('data', (chunk: Buffer) => upstream.write(chunk));
      packets(upstream, (p) => client.write(p[0] === CONNACK && proxy.unshared ? withoutSharing(p) : p));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }
  get url(): string {
    return `mqtt://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }
  async stop(): Promise<void> {
    this.cut();
    await new Promise((r) => this.server.close(r));
  }
}

const CONNACK = 0x20;

/** An MQTT 5 CONNACK (mosquitto's: lengths under 128) with Shared Subscription Available 0 appended to its properties. */
function withoutSharing(connack: Buffer): Buffer {
  assert.ok(connack[1]! < 126 && connack[4]! < 126, 'a CONNACK whose lengths take more than one byte');
  const out = Buffer.concat([connack, Buffer.from([0x2a, 0x00])]);
  out[1] = connack[1]! + 2;
  out[4] = connack[4]! + 2;
  return out;
}

describe('kind: mqtt, QoS per route (issue #17: "QoS per route (0/1/2)"), against mosquitto', () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });
  const gw = useGateway();

  it("publishes each target and dead-letter topic (a route's, a validate step's own) at its own QoS, over the broker's qosByTopic and qos: routes to one topic at QoS 0, 1, and the broker's 2", async () => {
    await gw.start(`
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${mqtt.url}", clientId: eg-qos-pub-${process.pid}, qos: 1, qosByTopic: { "out/#": 2 } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: at0, from: { listener: api, path: /at0 }, to: { broker: devices, topic: out/a, qos: 0 } }
  - { name: at1, from: { listener: api, path: /at1 }, to: { broker: devices, topic: out/a, qos: 1 } }
  - { name: broker, from: { listener: api, path: /broker }, to: { broker: devices, topic: out/a } }
  - name: invalid
    from: { listener: api, path: /invalid }
    through: [{ validate: { schema: { type: object, required: [id] }, onInvalid: deadletter } }]
    to: { broker: devices, topic: out/never }
    deadletter: { broker: devices, topic: out/a, qos: 1 }
  - name: stepinvalid
    from: { listener: api, path: /stepinvalid }
    through: [{ validate: { schema: { type: object, required: [id] }, onInvalid: deadletter, deadletter: { broker: devices, topic: out/a, qos: 0 } } }]
    to: { broker: devices, topic: out/never }
`);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
    // Subscribed at QoS 2, the subscriber gets each message at the QoS it was published with.
    const sub = await MosquittoSub.start(mqtt, 'out/a', 2);
    try {
      for (const path of ['at0', 'at1', 'broker', 'invalid', 'stepinvalid']) {
        const r = await post(gw.url('api', `/${path}`), { path });
        assert.equal(r.status, 200, r.text);
      }
      const got = await sub.take(5);
      assert.deepEqual(Object.fromEntries(got.map((m) => [JSON.parse(m.payload).path, m.qos])), { at0: 0, at1: 1, broker: 2, invalid: 1, stepinvalid: 0 });
    } finally {
      await sub.stop();
    }
  });

  it('answers a publish to a QoS 2 target only once the PUBCOMP came, not at the PUBREC', async () => {
    const hold = await PubcompHold.start(mqtt);
    try {
      await gw.start(`
version: 1
admin: { port: 0 }
brokers:
  devices: { kind: mqtt, url: "${hold.url}", clientId: eg-qos-pubcomp-${process.pid}, qos: 0 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: exactly, from: { listener: api, path: /exactly }, to: { broker: devices, topic: out/exactly, qos: 2 } }
  - { name: once, from: { listener: api, path: /once }, to: { broker: devices, topic: out/once, qos: 1 } }
`);
      await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
      let answered: HttpReply | undefined;
      const exactly = post(gw.url('api', '/exactly'), { n: 1 }).then((r) => (answered = r));
      await hold.holding();
      // mosquitto has the PUBREL, so the gateway read the PUBREC; a QoS 1 publish sent after it, answered, is the sentinel.
      assert.equal(hold.pubrels, 1);
      const once1 = await post(gw.url('api', '/once'), { n: 2 });
      assert.equal(once1.status, 200, once1.text);
      assert.equal(answered, undefined, 'a QoS 2 publish was answered before its PUBCOMP');
      hold.release();
      const r = await exactly;
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.deliveries[0].topic, 'out/exactly');
    } finally {
      await hold.stop();
    }
  });

  it('keeps a shared route on an MQTT 5 server whose CONNACK says Shared Subscription Available 0 not ready, naming sharedSubscriptions: false, said once at warn, until a connect says available; a plain one reads on', async () => {
    const proxy = await UnsharedConnack.start(mqtt);
    try {
      await gw.start(`
version: 1
admin: { port: 0 }
brokers:
  unshared: { kind: mqtt, url: "${proxy.url}", clientId: eg-unshared-${process.pid}, qos: 1, reconnectPeriodMs: 200 }
  mem: { kind: memory }
routes:
  - { name: shared, from: { broker: unshared, topic: "in/shared", group: g }, to: { broker: mem, topic: shared } }
  - { name: own, from: { broker: unshared, topic: "$SYS/broker/uptime" }, to: { broker: mem, topic: own } }
`);
      const unshared =
        "route shared: the server has no shared subscriptions (its CONNACK says Shared Subscription Available 0), so the route does not subscribe to '$share/g/in/shared'; set `sharedSubscriptions` to `false` on the broker (a plain subscription, so every instance reads every message; run one)";
      // A filter of the server's own topics is subscribed plainly: granted on that server.
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'own', 15000);
      await eventually(async () => {
        const r = await readyz(gw);
        assert.equal(r.status, 503, JSON.stringify(r.body));
        assert.deepEqual(r.body.reasons, [unshared]);
      }, 15000);
      // Each connect counts it; said once.
      const counted = async () => (await scrape(gw.adminUrl)).value('eventgate_mqtt_consumer_errors_total', { broker: 'unshared', route: 'shared' }) ?? 0;
      const before1 = await counted();
      proxy.cut();
      await eventually(async () => assert.ok((await counted()) > before1), 15000, 200);
      // The count is the CONNACK's; the broker is ready again once the client has handled it too
      // (a loaded CI run read `broker unshared: unreachable` in between).
      await eventually(async () => assert.deepEqual((await readyz(gw)).body.reasons, [unshared]), 15000);
      const said = gw.logs.filter((l) => l.route === 'shared' && /no shared subscriptions/.test(l.msg));
      assert.deepEqual(
        said.map((l) => l.level),
        ['warn'],
      );
      assert.equal(gw.logs.filter((l) => l.msg === 'consumer ready' && l.route === 'shared').length, 0);
      // A server that now says it has them (no property: available) gets the subscription at the
      // next connect, and the route is ready again (spec-checklist 2802).
      proxy.unshared = false;
      proxy.cut();
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'shared', 15000);
      await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
    } finally {
      await proxy.stop();
    }
  });
});

describe('kind: mqtt, a subscription the server refuses in its SUBACK (nats-server 2.9 MQTT, a user denied the subject)', () => {
  let nats: NatsMqttServer;
  let proxy: TcpProxy;
  before(async () => {
    nats = await startNatsMqtt(['closed.>']);
    proxy = await TcpProxy.start(nats.port);
  });
  after(async () => {
    await proxy?.stop();
    await nats?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nm:
    kind: mqtt
    url: mqtt://127.0.0.1:${proxy.port}
    clientId: eg-suback-${process.pid}
    protocolVersion: 4
    username: ${nats.user}
    password: ${nats.password}
    qos: 1
    sharedSubscriptions: false
    reconnectPeriodMs: 200
  mem: { kind: memory }
routes:
  - { name: closed, from: { broker: nm, topic: "closed/+" }, to: { broker: mem, topic: closed } }
  - { name: open, from: { broker: nm, topic: "open/+" }, to: { broker: mem, topic: open } }
`,
  );

  it('makes the route not ready naming reason code 0x80, logged once however often it asks again, and ready once the server grants it, on the same connection', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'open', 15000);
    const refused = "route closed: the server refused the subscription to 'closed/+' (SUBACK reason code 0x80, Failure); asking again";
    await eventually(async () => {
      const r = await readyz(gw);
      assert.equal(r.status, 503, JSON.stringify(r.body));
      assert.deepEqual(r.body.reasons, [refused]);
    }, 15000);
    // Refused again after a reconnect and on the connection's own retries: counted each time, said once.
    const refusals = async () => (await scrape(gw.adminUrl)).value('eventgate_mqtt_consumer_errors_total', { broker: 'nm', route: 'closed' }) ?? 0;
    const connects = () => gw.logs.filter((l) => l.msg === 'mqtt connected' && l.connection === 'route closed').length;
    const before1 = connects();
    proxy.cutAndHold();
    proxy.release();
    await eventually(() => assert.ok(connects() > before1), 15000);
    const counted = await refusals();
    await eventually(async () => assert.ok((await refusals()) >= counted + 2), 20000, 200);
    assert.deepEqual((await readyz(gw)).body.reasons, [refused]);
    assert.equal(gw.logs.filter((l) => l.route === 'closed' && /subscription refused/.test(l.msg)).length, 1);
    // Allowed now: the route's next SUBSCRIBE, on the connection it has, is granted.
    const connected = connects();
    nats.setDeny([]);
    await gw.waitForLog((l) => l.msg === 'mqtt subscription granted after a refusal' && l.route === 'closed', 20000);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000);
    assert.equal(connects(), connected, 'the route reconnected: the granted subscription was not asked on the connection it had');
  });
});
