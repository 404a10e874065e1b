import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCliInProcess } from '../helpers/cli.js';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { MosquittoSub, RawNats } from '../helpers/peers.js';
import { freePort, startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit, type SharedRabbit } from '../helpers/shared-rabbit.js';

/**
 * A reload that changes a broker's settings replaces the broker: a new connection, which the
 * routes move to at the swap. It used to be swapped in while still connecting, so the publishes
 * of the next few milliseconds — on routes the reload did not even change — were answered 503
 * ("broker 'mqtt' is not connected (connecting)"), where the old connection served them (spec §6).
 */
describe('hot reload: a broker replaced under load', () => {
  let mqtt: MessageServer;
  let nats: MessageServer;
  let rabbit: SharedRabbit;
  before(async () => {
    [mqtt, nats, rabbit] = await Promise.all([startMosquitto(), startNats(), sharedRabbit()]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop(), rabbit?.stop()]);
  });

  // connectTimeoutMs, a connection's: each change replaces the brokers (ackTimeoutMs, read per publish, is applied in place).
  const config = (connectTimeoutMs: number, mqttUrl = mqtt.url) => `
version: 1
admin: { port: 0, drainTimeoutMs: 500 }
brokers:
  mqtt: { kind: mqtt, url: ${mqttUrl}, clientId: eg-replaced-${process.pid}, qos: 1, connectTimeoutMs: ${connectTimeoutMs} }
  nats: { kind: nats, servers: ${nats.url}, connectTimeoutMs: ${connectTimeoutMs}, streams: { REPLACED: { subjects: ["replaced.>"] } } }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  ws: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: to-mqtt
    from: { listener: api, path: /mqtt }
    to: { broker: mqtt, topic: replaced/in }
  - name: to-nats
    from: { listener: api, path: /nats }
    to: { broker: nats, topic: replaced.in }
`;
  const gw = useGateway(() => config(5000));

  it('answers every publish 200 while the reloads replace the brokers, and each message reaches its broker once', async () => {
    const sub = await MosquittoSub.start(mqtt, 'replaced/#', 1);
    const peer = await RawNats.connect(nats);
    const sid = await peer.subscribe('replaced.>');
    try {
      await eventually(async () => assert.equal((await post(gw.url('api', '/nats'), { warmup: true })).status, 200), 15000);
      let running = true;
      let seq = 0;
      const accepted = { mqtt: [] as number[], nats: [] as number[] };
      const refused: string[] = [];
      const publisher = async (to: 'mqtt' | 'nats') => {
        while (running) {
          const n = seq++;
          const reply = await post(gw.url('api', `/${to}`), { n });
          if (reply.status === 200) accepted[to].push(n);
          else refused.push(`${to} ${n}: ${reply.status} ${reply.text}`);
        }
      };
      const publishers = (['mqtt', 'nats'] as const).flatMap((to) => [publisher(to), publisher(to), publisher(to)]);
      for (let k = 1; k <= 5; k++) {
        // Written whole (renamed over): written in place, a reload under load once read the file between its truncation and its write.
        const line = await gw.reconfigure(config(5000 + k), undefined, { whole: true });
        assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
        // Traffic on the new connections before the next replacement.
        const at = seq;
        await eventually(() => assert.ok(seq > at + 20));
      }
      running = false;
      await Promise.all(publishers);
      assert.deepEqual(refused, []);
      // Every publish was answered, so each message is at its broker by now; a sentinel sent last proves nothing else follows.
      const sorted = (ns: number[]) => [...ns].sort((a, b) => a - b);
      assert.equal((await post(gw.url('api', '/mqtt'), { last: true })).status, 200);
      await sub.until((m) => JSON.parse(m.payload).last === true);
      assert.deepEqual(sorted(sub.all.map((m) => JSON.parse(m.payload).n).filter((n) => n !== undefined)), sorted(accepted.mqtt));
      assert.equal((await post(gw.url('api', '/nats'), { last: true })).status, 200);
      await eventually(() => assert.ok(peer.received(sid).some((m) => JSON.parse(m.payload).last === true)));
      assert.deepEqual(
        sorted(
          peer
            .received(sid)
            .map((m) => JSON.parse(m.payload).n)
            .filter((n) => n !== undefined),
        ),
        sorted(accepted.nats),
      );
    } finally {
      sub.stop();
      peer.close();
    }
  });

  // Reloads run one at a time, and one waiting (up to 5 s) for a replaced broker to connect held
  // the next edit until it had waited it all: spec §6 has an edit live within 500 ms.
  it('ends the wait for a new broker when a newer edit is waiting, and applies both', async () => {
    const nowhere = `mqtt://127.0.0.1:${await freePort()}`;
    const from = gw.logs.length;
    gw.write('gateway.yaml', config(5000, nowhere));
    await gw.waitForLog((l) => l.msg === 'waiting for the new broker connections before the swap', 10000, from);
    // The newer edit keeps the (still connecting) broker as the first wrote it, and adds a route.
    const extra = `${config(5000, nowhere)}  - name: extra\n    from: { listener: api, path: /extra }\n    to: { broker: nats, topic: replaced.extra }\n`;
    const edited = gw.logs.length;
    gw.write('gateway.yaml', extra);
    const wentOn = await gw.waitForLog((l) => l.msg.startsWith('new broker not connected yet'), 10000, edited);
    assert.equal(wentOn.msg, 'new broker not connected yet; a newer change is waiting, so the reload goes on and it keeps trying');
    assert.equal(wentOn.broker, 'mqtt');
    // Both reloads applied: the newer one's route answers (the nats broker is connected).
    await gw.waitForLog((l) => l.msg === 'config reloaded', 10000, gw.logs.indexOf(wentOn));
    await eventually(async () => assert.equal((await post(gw.url('api', '/extra'), { n: 1 })).status, 200), 10000);
    // Back on the reachable server for the test after this one.
    const line = await gw.reconfigure(config(5000), undefined, { whole: true });
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
  });

  // A forward route renamed without a group consumes in its old name's group (it took the running
  // subscription over). A broker replaced under it made it start in a new group of its own name,
  // which JetStream starts at the latest message (what came between reached no client), and a
  // route given the old name again shared the renamed one's group, splitting the messages.
  it('keeps a renamed forward route in the group it took over when its broker is replaced, and starts a route given the old name again in a group of its own; plan says so', async () => {
    const forward = (name: string, path: string) => `  - name: ${name}\n    from: { broker: nats, topic: replaced.feed }\n    to: { listener: ws, path: ${path} }\n`;
    const ready = (route: string, from: number) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 15000, from);
    let from = gw.logs.length;
    assert.equal((await gw.reconfigure(config(5000) + forward('feed', '/feed'), undefined, { whole: true })).msg, 'config reloaded');
    await ready('feed', from);
    from = gw.logs.length;
    assert.equal((await gw.reconfigure(config(5000) + forward('renamed', '/feed'), undefined, { whole: true })).msg, 'config reloaded');
    await gw.waitForLog((l) => l.msg === 'renamed route took over the subscription of the route it replaces', 15000, from);
    const plan = async (yaml: string) => {
      gw.write('next.yaml', yaml);
      return (await runCliInProcess(['plan', '-c', `${gw.dir}/next.yaml`, '--admin', gw.adminUrl])).stdout;
    };

    const replaced = config(5001) + forward('renamed', '/feed');
    assert.match(await plan(replaced), /consumer group rejoins: eventgate-feed-<instance> \(route renamed, nats\/replaced\.feed\)/);
    from = gw.logs.length;
    assert.equal((await gw.reconfigure(replaced, undefined, { whole: true })).msg, 'config reloaded');
    assert.match(String((await ready('renamed', from)).consumer), /^eventgate-feed-/);

    const again = replaced + forward('feed', '/again');
    assert.match(await plan(again), /consumer group joins: eventgate-feed-<instance>-2 \(route feed, nats\/replaced\.feed\)/);
    from = gw.logs.length;
    assert.equal((await gw.reconfigure(again, undefined, { whole: true })).msg, 'config reloaded');
    assert.match(String((await ready('feed', from)).consumer), /^eventgate-feed-.*-2$/);
    const [renamedClient, againClient] = await Promise.all([WsClient.connect(gw.url('ws', '/feed', 'ws')), WsClient.connect(gw.url('ws', '/again', 'ws'))]);
    const peer = await RawNats.connect(nats);
    try {
      for (let n = 0; n < 10; n++) peer.publish('replaced.feed', JSON.stringify({ n }));
      await peer.ping();
      // Each route's clients get every message (one shared group handed each to one of them).
      for (const client of [renamedClient, againClient]) {
        const got: number[] = [];
        for (let n = 0; n < 10; n++) got.push((await client.next(10000)).n);
        assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      }
    } finally {
      renamedClient.close();
      againClient.close();
      peer.close();
    }
    assert.equal((await gw.reconfigure(config(5000), undefined, { whole: true })).msg, 'config reloaded');
  });

  it('keeps the running amqp broker when the server refuses what its new options declare (another exchange type), and says why at its line', async () => {
    const exchange = `eg-refused-${process.pid}`;
    const withRabbit = (type: string, url = rabbit.url) =>
      `${config(5000).replace('brokers:\n', `brokers:\n  rabbit: { kind: amqp, url: ${url}, exchange: { name: ${exchange}, type: ${type} }, mandatory: false }\n`)}  - name: to-rabbit\n    from: { listener: api, path: /rabbit }\n    to: { broker: rabbit, topic: any }\n`;
    assert.equal((await gw.reconfigure(withRabbit('topic'), undefined, { whole: true })).msg, 'config reloaded');
    await eventually(async () => assert.equal((await post(gw.url('api', '/rabbit'), { n: 1 })).status, 200), 20000);
    const version = (await gw.status()).version;
    // RabbitMQ has the exchange as a topic one: declaring it direct is refused (406 PRECONDITION_FAILED).
    const line = await gw.reconfigure(withRabbit('direct'), undefined, { whole: true });
    // Before, the reload waited 5 s for the new broker, went on without it, and every publish was 503 from then on.
    assert.equal(line.msg, 'reload rejected; the running config keeps serving', JSON.stringify(line));
    assert.match(
      String(line.diagnostic),
      /gateway\.yaml:5:3: could not start broker 'rabbit': refused with its new options \(the running one keeps serving\): the server refused a declare: .*PRECONDITION_FAILED - inequivalent arg 'type' for exchange/,
    );
    assert.equal((await post(gw.url('api', '/rabbit'), { n: 2 })).status, 200);
    const status = await gw.status();
    assert.equal(status.version, version);
    assert.equal(status.lastReloadError.diagnostics[0].code, 'EG_START_FAILED');
    assert.equal(status.lastReloadError.diagnostics[0].path, 'brokers.rabbit');
    assert.deepEqual(
      status.brokers.find((b: { name: string }) => b.name === 'rabbit'),
      { name: 'rabbit', kind: 'amqp', ready: true },
    );
    // So is a login the server refuses (credentials changed in the config before on the server).
    const login = await gw.reconfigure(withRabbit('topic', rabbit.userUrl.replace(`:${rabbit.user}@`, ':not-the-password@')), undefined, { whole: true });
    assert.equal(login.msg, 'reload rejected; the running config keeps serving', JSON.stringify(login));
    assert.match(String(login.diagnostic), /could not start broker 'rabbit': refused with its new options \(the running one keeps serving\): login refused: .*ACCESS.REFUSED/);
    assert.equal((await post(gw.url('api', '/rabbit'), { n: 3 })).status, 200);
    assert.equal((await gw.reconfigure(config(5000), undefined, { whole: true })).msg, 'config reloaded');
  });

  it("routes nothing through a new amqp binding while a reload that is then rejected builds: the running config's answers hold", async () => {
    const exchange = `eg-held-${process.pid}`;
    const queue = `eg-held-${process.pid}`;
    // A server that takes the TCP connection and never answers: the reload waits its 5 s for `hold`.
    const silent: Socket[] = [];
    const silentServer = createServer((socket) => silent.push(socket));
    // A port another process holds: the reload is rejected at the listener `taken`, after the wait.
    const holder = createServer();
    await Promise.all([new Promise<void>((r) => silentServer.listen(0, '127.0.0.1', r)), new Promise<void>((r) => holder.listen(0, '127.0.0.1', r))]);
    const portOf = (server: Server) => (server.address() as AddressInfo).port;
    const withHeld = (regions: string[], held?: { holdUrl: string; takenPort: number }) =>
      `${config(5000)
        .replace(
          'brokers:\n',
          `brokers:\n  rabbit: { kind: amqp, url: ${rabbit.url}, exchange: { name: ${exchange}, type: topic }, queues: { ${queue}: { bindings: [${regions.map((r) => `region.${r}`).join(', ')}] } } }\n  hold: { kind: amqp, url: ${held?.holdUrl ?? rabbit.url}, connectTimeoutMs: 60000 }\n`,
        )
        .replace(
          'listeners:\n',
          `listeners:\n${held ? `  taken: { kind: http, port: ${held.takenPort}, host: 127.0.0.1 }\n` : ''}`,
        )}  - name: to-ca\n    from: { listener: api, path: /ca }\n    to: { broker: rabbit, topic: region.ca }\n  - name: to-hold\n    from: { listener: api, path: /hold }\n    to: { broker: hold, topic: any }\n`;
    try {
      assert.equal((await gw.reconfigure(withHeld(['us']), undefined, { whole: true })).msg, 'config reloaded');
      // No binding for region.ca: RabbitMQ returns the message (mandatory), 503.
      await eventually(async () => {
        const brokers = (await gw.status()).brokers as { name: string; ready: boolean }[];
        assert.ok(
          brokers.filter((b) => b.name === 'rabbit' || b.name === 'hold').every((b) => b.ready),
          JSON.stringify(brokers),
        );
        const unbound = await post(gw.url('api', '/ca'), { n: 0 });
        assert.equal(unbound.status, 503);
        assert.match(unbound.body.detail, /no queue is bound to exchange 'eg-held-\d+' for routing key 'region\.ca'/);
      }, 20000);
      const from = gw.logs.length;
      gw.write('gateway.yaml.next', withHeld(['us', 'ca'], { holdUrl: `amqp://guest:guest@127.0.0.1:${portOf(silentServer)}`, takenPort: portOf(holder) }));
      renameSync(join(gw.dir, 'gateway.yaml.next'), join(gw.dir, 'gateway.yaml'));
      // The reload waits for `hold`, its new `rabbit` connected beside the running one.
      const waiting = await gw.waitForLog((l) => l.msg === 'waiting for the new broker connections before the swap', 10000, from);
      await gw.waitForLog((l) => l.msg === 'amqp connected' && l.broker === 'rabbit', 10000, gw.logs.indexOf(waiting));
      // Before, the new broker had bound region.ca already: this publish went into the queue (200).
      const meanwhile = await post(gw.url('api', '/ca'), { n: 1 });
      assert.equal(meanwhile.status, 503, meanwhile.text);
      assert.match(meanwhile.body.detail, /no queue is bound/);
      const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected') || l.msg === 'config reloaded', 20000, from);
      assert.equal(rejected.msg, 'reload rejected; the running config keeps serving', JSON.stringify(rejected));
      assert.match(String(rejected.diagnostic), /could not start listener 'taken'/);
      assert.equal((await post(gw.url('api', '/ca'), { n: 2 })).status, 503);
      // Applied, the binding is made before the routes move to the new broker.
      assert.equal((await gw.reconfigure(withHeld(['us', 'ca']), undefined, { whole: true })).msg, 'config reloaded');
      assert.equal((await post(gw.url('api', '/ca'), { n: 3 })).status, 200);
    } finally {
      for (const socket of silent) socket.destroy();
      await Promise.all([new Promise((r) => silentServer.close(r)), new Promise((r) => holder.close(r))]);
    }
    assert.equal((await gw.reconfigure(config(5000), undefined, { whole: true })).msg, 'config reloaded');
  });

  // Last: it stops the gateway.
  it('on SIGTERM during a reload that waits for a new broker to connect, stops waiting, does not apply the reload, and exits 0', async () => {
    const from = gw.logs.length;
    gw.write('gateway.yaml', config(5000, `mqtt://127.0.0.1:${await freePort()}`));
    await gw.waitForLog((l) => l.msg === 'waiting for the new broker connections before the swap', 10000, from);
    const stopping = Date.now();
    assert.deepEqual(await gw.stop('SIGTERM'), { code: 0, signal: null });
    // A bound, not a wait: it used to wait the full 5 s for a server that is not there first.
    assert.ok(Date.now() - stopping < 4000, `exited ${Date.now() - stopping} ms after SIGTERM`);
    // The reload is dropped, not applied under the drain: it used to swap the new config in after
    // "shutting down" ("gateway ready", "config reloaded"), saying it had waited the full 5 s.
    const after = gw.logs.slice(from).map((l) => l.msg);
    assert.ok(after.includes('reload not applied: the gateway is shutting down'), after.join('\n'));
    for (const msg of ['gateway ready', 'config reloaded', 'new broker not connected yet; the reload goes on and it keeps trying']) assert.ok(!after.includes(msg), after.join('\n'));
  });
});
