import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, startGateway, type LogLine } from '../helpers/gateway.js';
import { delayNatsFrames, NatsRequestWatch, RawNats, useNatsPeer } from '../helpers/peers.js';
import { startNatsWithoutJetStream, startNatsWithUsers, type MessageServer, type ServerWithUsers } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A nats broker looks up, once per core subject it reads or publishes, the server's streams that
 * store it, and warns of each (spec-checklist 5071). These cases hold the lookups to what they
 * should cost and say (5150-5154): one request at a time, none to `$JS.API.INFO`, tried again when
 * unanswered, stopped by a server without JetStream, truthful for wildcards, and a refusal of
 * the broker's other JetStream work meanwhile still logged.
 */

/** The lookups' requests, as the old code (STREAM.NAMES) and the new (STREAM.LIST) send them. */
const isLookup = (subject: string) => subject === '$JS.API.STREAM.LIST' || subject === '$JS.API.STREAM.NAMES';

const warnings = (logs: readonly LogLine[]) => logs.filter((l) => l.level === 'warn' && typeof l.stream === 'string');

/** `n` core routes reading `prefix.0` ... `prefix.<n-1>` (to a webhook nothing calls). */
const coreRoutes = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `  - name: r${i}\n    from: { broker: nats, topic: ${prefix}.${i} }\n    to: { http: { url: "http://127.0.0.1:9/never" } }\n`).join('');

describe('kind: nats, the stream lookups of core subjects', () => {
  const js = useNatsPeer();
  const proxies: TcpProxy[] = [];
  after(async () => {
    for (const p of proxies) await p.stop();
  });

  it('looks up 100 subjects at start one request at a time, and asks nothing else of the JetStream API', { timeout: 90_000 }, async () => {
    await js.peer.jsApi('$JS.API.STREAM.CREATE.MANY', { name: 'MANY', subjects: ['many.42'], storage: 'memory' });
    const watch = new NatsRequestWatch('$JS.API.');
    const proxy = await TcpProxy.start(js.server.port, { toServer: watch.toServer, toClient: watch.toClient });
    proxies.push(proxy);
    const gw = await startGateway(`version: 1
brokers:
  nats: { kind: nats, servers: nats://127.0.0.1:${proxy.port} }
routes:
${coreRoutes('many', 100)}`);
    try {
      await eventually(async () => assert.equal(watch.answered.get('$JS.API.STREAM.LIST'), 100, JSON.stringify([...watch.sent])), 60_000, 100);
      // Before: a $JS.API.INFO (a manager each) and a STREAM.NAMES per subject, all 100 at once.
      assert.deepEqual([...watch.sent], [['$JS.API.STREAM.LIST', 100]]);
      assert.equal(watch.maxOut, 1);
      const warned = await gw.waitForLog((l) => l.level === 'warn' && l.stream === 'MANY', 15_000);
      assert.equal(warned.route, 'r42');
      assert.equal(warnings(gw.logs).length, 1);
    } finally {
      await gw.stop();
    }
  });

  it('looks up again a subject whose lookup timed out', { timeout: 60_000 }, async () => {
    await js.peer.jsApi('$JS.API.STREAM.CREATE.RETRIED', { name: 'RETRIED', subjects: ['retried.>'], storage: 'memory' });
    // The first lookup's request never reaches the server; the next ones do.
    let held = 0;
    const never = new Promise<void>(() => undefined);
    const proxy = await TcpProxy.start(js.server.port, {
      toServer: () => delayNatsFrames('$JS.API.', (subject) => (isLookup(subject) && held++ === 0 ? never : undefined)),
    });
    proxies.push(proxy);
    const gw = await startGateway(`version: 1
brokers:
  nats: { kind: nats, servers: nats://127.0.0.1:${proxy.port}, ackTimeoutMs: 1000 }
routes:
  - name: reads
    from: { broker: nats, topic: retried.x }
    to: { http: { url: "http://127.0.0.1:9/never" } }
`);
    try {
      // Before: the subject was marked looked up before its request went, and never asked again.
      const warned = await gw.waitForLog((l) => l.level === 'warn' && l.stream === 'RETRIED', 15_000);
      assert.equal(warned.route, 'reads');
      assert.equal(held, 2);
    } finally {
      await gw.stop();
    }
  });

  it('warns of each stream that stores a part of a wildcard subject, saying it is a part', { timeout: 60_000 }, async () => {
    await js.peer.jsApi('$JS.API.STREAM.CREATE.EU', { name: 'EU', subjects: ['orders.eu.*'], storage: 'memory' });
    await js.peer.jsApi('$JS.API.STREAM.CREATE.US', { name: 'US', subjects: ['orders.us.*', 'orders.us.*.x'], storage: 'memory' });
    await js.peer.jsApi('$JS.API.STREAM.CREATE.ALL', { name: 'ALL', subjects: ['all.>'], storage: 'memory' });
    const gw = await startGateway(`version: 1
brokers:
  nats: { kind: nats, servers: ${js.server.url} }
routes:
  - name: orders
    from: { broker: nats, topic: "orders.>" }
    to: { http: { url: "http://127.0.0.1:9/never" } }
  - name: all
    from: { broker: nats, topic: "all.*" }
    to: { http: { url: "http://127.0.0.1:9/never" } }
`);
    try {
      // Before: two streams colliding with 'orders.>' gave no warning at all (streams.find wants exactly one).
      await eventually(async () => assert.equal(warnings(gw.logs).length, 3), 15_000, 100);
      const said = Object.fromEntries(warnings(gw.logs).map((l) => [l.stream as string, l.msg]));
      assert.deepEqual(said, {
        EU: "nats stream 'EU' on the server stores part of 'orders.>' (its subjects: 'orders.eu.*'), which route orders reads as core NATS (at most once: no entry of streams holds all of it); to read that part through a durable consumer, list the stream under the broker's streams (declare: false) and read its subjects from a route of their own",
        US: "nats stream 'US' on the server stores part of 'orders.>' (its subjects: 'orders.us.*', 'orders.us.*.x'), which route orders reads as core NATS (at most once: no entry of streams holds all of it); to read that part through a durable consumer, list the stream under the broker's streams (declare: false) and read its subjects from a route of their own",
        ALL: "nats stream 'ALL' on the server stores 'all.*', which route all reads as core NATS (at most once: no entry of streams holds it); list it under the broker's streams (declare: false) to read it through a durable consumer",
      });
    } finally {
      await gw.stop();
    }
  });
});

describe('kind: nats, stream lookups against a server without JetStream', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  const watch = new NatsRequestWatch('$JS.API.');
  before(async () => {
    nats = await startNatsWithoutJetStream();
    proxy = await TcpProxy.start(nats.port, { toServer: watch.toServer, toClient: watch.toClient });
  });
  after(async () => {
    await proxy?.stop();
    await nats?.stop();
  });

  it('stops at the first lookup nothing answers, not one failure per subject', { timeout: 60_000 }, async () => {
    const gw = await startGateway(`version: 1
brokers:
  nats: { kind: nats, servers: nats://127.0.0.1:${proxy.port} }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in/:n }
    to: { broker: nats, topic: { expression: '"posted." & $path.n' } }
${coreRoutes('plain', 20)}`);
    try {
      await eventually(async () => assert.equal(watch.answered.get('$JS.API.STREAM.LIST'), 1), 30_000, 100);
      // Publishes answered after the lookup's no-responders reply came through: the broker had read it before their flush's PONG.
      for (let n = 0; n < 3; n++) assert.equal((await post(gw.url('api', `/in/${n}`), { n })).status, 200);
      // Before: a $JS.API.INFO per subject (20 routes and 3 publishes), each failing on its own.
      assert.deepEqual([...watch.sent], [['$JS.API.STREAM.LIST', 1]]);
      assert.deepEqual(warnings(gw.logs), []);
    } finally {
      await gw.stop();
    }
  });
});

/**
 * A user denied consumer creates (a part of the JetStream API) while a core subject's lookup is
 * out: before, every `$JS.API.` refusal in that window was taken for the lookup's (a count of
 * lookups in flight), so the consumer create's refusal went unlogged and the lookups stopped for good.
 */
describe('kind: nats, a refusal of the broker’s own JetStream work while a stream lookup is out', () => {
  let nats: ServerWithUsers;
  before(async () => {
    nats = await startNatsWithUsers({ gateway: 'secret' }, ['$JS.API.CONSUMER.CREATE.>', '$JS.API.CONSUMER.DURABLE.CREATE.>']);
  });
  after(() => nats?.stop());

  it('logs the refusal, and looks up the subjects asked after it', { timeout: 90_000 }, async () => {
    const peer = await RawNats.connect(nats, { user: 'gateway', pass: 'secret' });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let lookupHeld!: () => void;
    const held = new Promise<void>((r) => (lookupHeld = r));
    let holding = true;
    const proxy = await TcpProxy.start(nats.port, {
      toServer: () =>
        delayNatsFrames(
          '$JS.API.',
          (subject) => (holding && isLookup(subject) ? gate : undefined),
          () => lookupHeld(),
        ),
    });
    let gw: Awaited<ReturnType<typeof startGateway>> | undefined;
    try {
      await peer.jsApi('$JS.API.STREAM.CREATE.AUDIT', { name: 'AUDIT', subjects: ['audit.>'], storage: 'memory' });
      gw = await startGateway(`version: 1
brokers:
  nats: { kind: nats, servers: nats://127.0.0.1:${proxy.port}, user: gateway, password: secret, ackTimeoutMs: 60000, streams: { JSORDERS: { subjects: ["jsorders.>"], storage: memory } } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: late
    from: { listener: api, path: /late }
    to: { broker: nats, topic: audit.late }
  - name: js
    from: { broker: nats, topic: "jsorders.>" }
    to: { http: { url: "http://127.0.0.1:9/never" } }
  - name: core
    from: { broker: nats, topic: "audit.>" }
    to: { http: { url: "http://127.0.0.1:9/never" } }
`);
      await held;
      // The route's consumer create is refused while the lookup of 'audit.>' is held out.
      await gw.waitForLog((l) => l.route === 'js' && l.msg === 'nats consumer could not start; retrying', 30_000);
      const refused = await gw.waitForLog((l) => l.msg === 'nats error', 15_000);
      assert.match(String(refused.err), /^PERMISSIONS_VIOLATION \(publish to "\$JS\.API\.CONSUMER\.(DURABLE\.)?CREATE\.JSORDERS[^"]*"\)$/);
      assert.equal(warnings(gw.logs).length, 0, 'the lookup is still out');
      holding = false;
      release();
      const core = await gw.waitForLog((l) => l.level === 'warn' && l.route === 'core' && l.stream === 'AUDIT', 15_000);
      assert.equal(core.subject, 'audit.>');
      // A subject asked after the refusal is looked up too.
      assert.equal((await post(gw.url('api', '/late'), { n: 1 })).status, 200);
      const late = await gw.waitForLog((l) => l.level === 'warn' && l.subject === 'audit.late' && l.stream === 'AUDIT', 15_000);
      assert.match(late.msg, /which the gateway publishes to as core NATS/);
    } finally {
      release();
      await gw?.stop();
      peer.close();
      await proxy.stop();
    }
  });
});
