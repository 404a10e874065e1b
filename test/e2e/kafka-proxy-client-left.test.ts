import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, metadataRequest, produceRequest, recordBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { scrape } from '../helpers/prometheus.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { LINGER_MAX_BYTES } from '../../src/kinds/listeners/lingering-close.js';
import { fetch } from '../helpers/http.js';

const TOKEN = 'tap-token-client-left';
const SCHEMA = '{ type: object, required: [id], properties: { id: { type: integer } } }';

/** A Produce v3 request (acks 1) of one record to partition 0 of `topic`, size prefix included. */
const produceFrame = (topic: string, value: string) =>
  produceRequest({ correlationId: 7, clientId: 'client-left', topic, batch: recordBatch({ attributes: 0, key: null, value: Buffer.from(value) }) });

/**
 * A client that closes its connection after sending a produce request, before the cluster answered
 * it: the cluster still writes the records, and the route must count them as the cluster's answer
 * says (delivered), not as lost.
 */
describe('kafka listener: a client that leaves before the cluster answered', () => {
  let kafka: KafkaCluster;
  let topic: string;
  let proxy: { host: string; port: number };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('left');
    await kafka.createTopic(topic, 1);
  });
  /** `retired`: a listener no client used yet, which a reload without it retires. */
  const config = (retired = true) => `
version: 1
admin: { port: 0, token: ${TOKEN} }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
  capped: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0, maxConnections: 2 }${retired ? '\n  retired: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }' : ''}
routes:
  - name: left-in
    from: { listener: kafka-in, topic: ${topic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: capped-in
    from: { listener: capped, topic: ${topic} }
`;
  const gw = useGateway(
    () => config(),
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(() => {
    proxy = { host: '127.0.0.1', port: gw.port('kafka-in') };
  });
  after(async () => {
    await kafka?.delayAnswers(1, 0).catch(() => {});
    await kafka?.stop();
  });

  const counts = async () => {
    const s = await scrape(gw.adminUrl, { authorization: `Bearer ${TOKEN}` });
    const c = (outcome: string) => s.value('eventgate_route_messages_total', { route: 'left-in', outcome }) ?? 0;
    return { received: c('received'), delivered: c('delivered'), failed: c('failed') };
  };
  const status = async (listener = 'kafka-in') => {
    const res = await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const body = (await res.json()) as { listeners: { name: string; connections: number; requestsInFlight: number }[] };
    return body.listeners.find((l) => l.name === listener)!;
  };

  it('closes connections beyond maxConnections as they arrive, and takes one again once one is free', async () => {
    const port = gw.port('capped');
    const from = gw.logs.length;
    const open = async () => {
      const socket = connect(port, '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
      return socket;
    };
    // Clients that connect and send nothing: without a bound each held two file descriptors (its own, the cluster's) for ever.
    const a = await open();
    const b = await open();
    await eventually(async () => assert.equal((await status('capped')).connections, 2));
    const c = await open();
    const giveUp = new AbortController();
    const closed = await Promise.race([once(c, 'close').then(() => true), delay(30_000, false, { signal: giveUp.signal })]);
    giveUp.abort();
    c.destroy();
    assert.ok(closed, 'a third connection to a listener with maxConnections: 2 is still open after 30 s');
    const warning = await gw.waitForLog((l) => l.msg === 'connection limit reached; closing new connections', 10_000, from);
    assert.equal(warning.listener, 'capped');
    const dropped = (await scrape(gw.adminUrl, { authorization: `Bearer ${TOKEN}` })).value('eventgate_listener_connections_dropped_total', { listener: 'capped' });
    assert.equal(dropped, 1);
    assert.equal((await status('capped')).connections, 2);
    a.destroy();
    await eventually(async () => assert.equal((await status('capped')).connections, 1));
    const d = await open();
    await eventually(async () => assert.equal((await status('capped')).connections, 2));
    b.destroy();
    d.destroy();
  });

  it('counts the records the cluster acknowledged after the client left as delivered, then closes the upstream connection', async () => {
    // The cluster takes each request at once and answers it 1.5 s later: the client leaves in between.
    await kafka.delayAnswers(1, 1500);
    const sentBefore = kafka.produceRequests();
    const socket = connect(proxy.port, proxy.host);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write(produceFrame(topic, '{"id":1}'));
    // The request reached the cluster; its answer is still on its way when the client closes.
    await eventually(() => assert.equal(kafka.produceRequests(), sentBefore + 1));
    socket.destroy();
    await eventually(async () => assert.deepEqual(await counts(), { received: 1, delivered: 1, failed: 0 }), 10000);
    assert.ok(!gw.logs.some((l) => l.code === 'EG_BROKER_UNAVAILABLE'), 'no record counted as lost');
    await kafka.delayAnswers(1, 0);
    // The cluster has the record once, and the proxy let go of the connection once answered.
    const onCluster = await kcatConsumeAll(kafka.bootstrap, topic);
    assert.deepEqual(
      onCluster.map((r) => r.value),
      ['{"id":1}'],
    );
    await eventually(async () => assert.equal((await status()).connections, 0));
  });

  it('closes a broker port that a Metadata answer let through by the drain bound, when a reload retires the listener; reads a client that goes on sending at most LINGER_MAX_BYTES', async () => {
    // The listener learns of the cluster's broker from the first Metadata answer, which binds a
    // port for it: that answer comes 1.5 s later, while the reload's drain waits for it. The port
    // bound then was not among those the drain closed: it stayed bound, taking connections for a
    // listener that no longer was.
    await kafka.delayAnswers(1, 1500);
    const from = gw.logs.length;
    // Half-open, as a client that keeps sending after the proxy's FIN is (node's default ends its side then).
    const client = connect({ port: gw.port('retired'), host: '127.0.0.1', allowHalfOpen: true });
    client.on('error', () => {});
    await once(client, 'connect');
    // Answered, the client sends on without reading or closing: the connection lingers, reading and
    // discarding, up to LINGER_MAX_BYTES. Its reads go into a buffer of its own (read-buffer.ts),
    // which closeLingering's count did not see: it read whatever came for LINGER_MS (5 s).
    let written = 0;
    const chunk = Buffer.alloc(1 << 20);
    const flood = () => {
      for (let more = true; more && !client.destroyed; more = client.write(chunk)) written += chunk.length;
      if (!client.destroyed) client.once('drain', flood);
    };
    client.once('data', flood);
    // Not once(): its 'error' (EPIPE, ECONNRESET as the proxy closes) would reject it.
    const closed = new Promise((resolve) => client.once('close', resolve));
    client.write(metadataRequest(1, 'retired'));
    await eventually(async () => assert.equal((await status('retired')).requestsInFlight, 1));
    assert.equal((await gw.reconfigure(config(false))).msg, 'config reloaded');
    await kafka.delayAnswers(1, 0);
    await closed;
    // What the kernels' buffers held on the way is written but not read: far less than 32 MiB.
    assert.ok(written > 0 && written <= LINGER_MAX_BYTES + 32 * 1024 * 1024, `the client wrote ${written} bytes before the lingering connection closed`);
    const bound = await gw.waitForLog((l) => l.msg === 'kafka broker port bound' && l.listener === 'retired', 10_000, from);
    const probe = connect(Number(bound.port), '127.0.0.1');
    const [refused] = await Promise.race([once(probe, 'error'), once(probe, 'connect').then(() => [undefined])]);
    probe.destroy();
    assert.equal((refused as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED', `broker port ${bound.port} of the retired listener still accepts connections`);
  });

  // Last: it stops the gateway.
  it('waits at a SIGTERM for the answers a client that left is owed, rather than counting its records lost; a connected client gets the answers it is owed and nothing sent after', async () => {
    await kafka.delayAnswers(1, 1500);
    const sentBefore = kafka.produceRequests();
    const logsBefore = gw.logs.length;
    const socket = connect(proxy.port, proxy.host);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    socket.write(produceFrame(topic, '{"id":2}'));
    await eventually(() => assert.equal(kafka.produceRequests(), sentBefore + 1));
    socket.destroy();
    // A client that stays: its Metadata request is in flight (the cluster answers 1.5 s later) when
    // the drain begins, and it sends another once it began (as a consumer's next Fetch, a
    // producer's next batch). Before, the drain read and sent on every request until none was
    // in flight, so a connected consumer or a streaming producer held every stop for the whole
    // drainTimeoutMs; now the first is answered, the second is not read, and the connection closes.
    const stays = connect(proxy.port, proxy.host);
    let reset: Error | undefined;
    let ended = false;
    stays.on('error', (err) => (reset = err));
    stays.on('end', () => (ended = true));
    await once(stays, 'connect');
    const answered: number[] = [];
    let got = Buffer.alloc(0);
    stays.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      while (got.length >= 4 && got.length >= 4 + got.readInt32BE(0)) {
        answered.push(got.readInt32BE(4));
        got = got.subarray(4 + got.readInt32BE(0));
      }
    });
    const staysClosed = once(stays, 'close');
    stays.write(metadataRequest(1, 'stays'));
    await eventually(async () => assert.equal((await status()).requestsInFlight, 2));
    gw.process.kill('SIGTERM');
    // The listener's ports close when its drain begins.
    await eventually(
      () =>
        new Promise<void>((resolve, reject) => {
          const probe = connect(proxy.port, proxy.host);
          probe.once('connect', () => {
            probe.destroy();
            reject(new Error('the listener still accepts connections'));
          });
          probe.once('error', () => resolve());
        }),
    );
    stays.write(metadataRequest(2, 'stays'));
    await staysClosed;
    assert.deepEqual(answered, [1], 'the request in flight is answered, the one sent during the drain is not');
    // Closed with a FIN after its answers, not reset (a reset, for the request left unread, can drop answers not yet sent).
    assert.equal(reset, undefined);
    assert.ok(ended, 'the connection ended with a FIN');
    const exit = await gw.stop('SIGTERM');
    assert.equal(exit.code, 0);
    assert.ok(!gw.logs.slice(logsBefore).some((l) => l.code === 'EG_BROKER_UNAVAILABLE'), 'no record counted as lost');
    await kafka.delayAnswers(1, 0);
    const onCluster = await kcatConsumeAll(kafka.bootstrap, topic);
    assert.equal(onCluster.filter((r) => r.value === '{"id":2}').length, 1);
  });
});

/**
 * A cluster that never answers a request whose client left: the proxy keeps the upstream connection
 * only for the listener's answersAfterClientLeftMs (30 s by default, shortened here), then closes it
 * and counts the request's records failed, EG_BROKER_UNAVAILABLE (they may or may not have been
 * written). The cluster's answers are held by a TCP proxy between the gateway and the cluster.
 */
describe('kafka listener: a client that leaves, and a cluster that never answers', () => {
  let kafka: KafkaCluster;
  let cluster: TcpProxy;
  let topic: string;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('left-unanswered');
    await kafka.createTopic(topic, 1);
    cluster = await TcpProxy.start(Number(kafka.bootstrap.slice(kafka.bootstrap.lastIndexOf(':') + 1)));
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0, token: ${TOKEN} }
brokers:
  cluster: { kind: kafka, brokers: "127.0.0.1:\${CLUSTER_PORT}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0, answersAfterClientLeftMs: 3000 }
routes:
  - name: unanswered-in
    from: { listener: kafka-in, topic: ${topic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
`,
    () => ({ env: { CLUSTER_PORT: String(cluster.port) } }),
  );
  after(async () => {
    await cluster?.stop();
    await kafka?.stop();
  });

  const counts = async () => {
    const s = await scrape(gw.adminUrl, { authorization: `Bearer ${TOKEN}` });
    const c = (outcome: string) => s.value('eventgate_route_messages_total', { route: 'unanswered-in', outcome }) ?? 0;
    return { received: c('received'), delivered: c('delivered'), failed: c('failed') };
  };
  const connections = async () => {
    const res = await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const body = (await res.json()) as { listeners: { name: string; connections: number }[] };
    return body.listeners.find((l) => l.name === 'kafka-in')!.connections;
  };

  it('closes the upstream connection at answersAfterClientLeftMs and counts the records failed, EG_BROKER_UNAVAILABLE', async () => {
    const socket = connect(gw.port('kafka-in'), '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    // The client's upstream connection is open (the cluster answered its ApiVersions); from now on no answer comes back.
    const apiVersions = Buffer.from([0, 0, 0, 14, 0, 18, 0, 0, 0, 0, 0, 1, 0, 4, 0x6c, 0x65, 0x66, 0x74]);
    socket.write(apiVersions);
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    cluster.holdReplies();
    const sentBefore = kafka.produceRequests();
    socket.write(produceFrame(topic, '{"id":3}'));
    await eventually(() => assert.equal(kafka.produceRequests(), sentBefore + 1));
    socket.destroy();
    // Still waiting for the cluster's answer: the connection is kept, the record not counted yet.
    assert.equal(await connections(), 1);
    assert.deepEqual(await counts(), { received: 1, delivered: 0, failed: 0 });
    await eventually(async () => assert.deepEqual(await counts(), { received: 1, delivered: 0, failed: 1 }), 10000);
    assert.equal(await connections(), 0);
    const lost = gw.logs.find((l) => l.code === 'EG_BROKER_UNAVAILABLE');
    assert.match(String(lost?.detail ?? lost?.err ?? JSON.stringify(lost)), /did not answer within 3000 ms of the client leaving/);
  });
});
