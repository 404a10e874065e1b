import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect as tlsConnect } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { MAX_REQUESTS_IN_FLIGHT } from '../../src/kinds/listeners/kafka/connection.js';
import { READ_BYTES } from '../../src/kinds/listeners/kafka/read-buffer.js';
import { makeCertificates } from '../helpers/certificates.js';
import { eventually, repoRoot, untilReached, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, metadataRequest, produceRequest, recordBatch, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

const TOKEN = 'tap-token-in-flight';
/** The kafka-idle listener's connectionsMaxIdleMs. */
const IDLE_MS = 1000;
const PYTHON_CLIENT = join(repoRoot, 'test', 'kafka', 'python-client.py');

/** A Metadata v1 request for no topic (the brokers only), size prefix included. */
const metadataFrame = (correlationId: number) => metadataRequest(correlationId, 'in-flight');

/** A Produce v3 request (acks 1) of one record to partition 0 of `topic`, size prefix included. */
const produceFrame = (correlationId: number, topic: string) =>
  produceRequest({ correlationId, clientId: 'in-flight', topic, batch: recordBatch({ attributes: 0, key: null, value: Buffer.from('{"n":1}') }) });

/** `count` requests made by `frame`, numbered from 0, in one buffer. */
const pipeline = (count: number, frame: (correlationId: number) => Buffer) => Buffer.concat(Array.from({ length: count }, (_, i) => frame(i)));

/** Reads the responses on `socket` from now on: their correlation ids, in the order they came. */
function readAnswers(socket: Socket): number[] {
  const ids: number[] = [];
  let got: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
    let at = 0;
    while (got.length - at >= 8 && got.length - at >= 4 + got.readInt32BE(at)) {
      ids.push(got.readInt32BE(at + 4));
      at += 4 + got.readInt32BE(at);
    }
    got = got.subarray(at);
  });
  return ids;
}

async function connected(port: number, ca?: string): Promise<Socket> {
  const socket = ca ? tlsConnect({ port, host: '127.0.0.1', ca }) : connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once(ca ? 'secureConnect' : 'connect', resolve).once('error', reject));
  return socket;
}

/**
 * A client that pipelines requests without reading the answers: the proxy holds at most
 * MAX_REQUESTS_IN_FLIGHT of its requests (plus what its last read brought) and reads nothing more
 * from it until answers went back, as a Kafka broker reads one request per connection at a time.
 * The cluster's answers are held on the way (a TCP proxy between the gateway and the cluster), so
 * nothing drains them meanwhile.
 */
describe('kafka listener: requests in flight per client connection', () => {
  let kafka: KafkaCluster;
  let cluster: TcpProxy;
  let topic: string;
  let idleTopic: string;
  const certs = makeCertificates();

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    topic = kafka.topic('in-flight');
    await kafka.createTopic(topic, 1);
    idleTopic = kafka.topic('idle');
    await kafka.createTopic(idleTopic, 1);
    cluster = await TcpProxy.start(Number(kafka.bootstrap.slice(kafka.bootstrap.lastIndexOf(':') + 1)));
  });
  /** `kafkaInIdle`: kafka-in's connectionsMaxIdleMs (its default when undefined), which a reload changes. */
  const config = (kafkaInIdle?: number) => `
version: 1
admin: { port: 0, token: ${TOKEN} }
brokers:
  cluster: { kind: kafka, brokers: "127.0.0.1:${cluster.port}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0${kafkaInIdle === undefined ? '' : `, connectionsMaxIdleMs: ${kafkaInIdle}`} }
  kafka-tls: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0, tls: { cert: certs/server.pem, key: certs/server-key.pem } }
  kafka-idle: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0, connectionsMaxIdleMs: ${IDLE_MS} }
`;
  const gw = useGateway(() => config(), { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key } });
  after(async () => {
    await cluster?.stop();
    await kafka?.stop();
  });

  const statusOf = async (listener: string) => {
    const res = await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const body = (await res.json()) as { listeners: { name: string; requestsInFlight: number; connections: number }[] };
    return body.listeners.find((l) => l.name === listener)!;
  };

  /**
   * The client sends `count` requests at once and reads nothing while the cluster's answers are
   * held: the proxy's requests in flight reach the bound and stay within it (sampled while the
   * client still has requests to send); the cluster receives no more produce requests than that.
   * Then the answers flow and the client reads: every request is answered, in order.
   */
  async function holdsBack(count: number, frame: (correlationId: number) => Buffer, listener = 'kafka-in'): Promise<void> {
    const status = async () => statusOf(listener);
    const frameBytes = frame(0).length;
    // What the proxy may hold: the bound, and the requests of the read that reached it (over TLS, at most one 16 KB record).
    const bound = MAX_REQUESTS_IN_FLIGHT + Math.ceil(READ_BYTES / frameBytes);
    const socket = await connected(gw.port(listener), listener === 'kafka-tls' ? certs.a.cert : undefined);
    // One answered request first: the upstream connection is open, so its replies can be held.
    const ids = readAnswers(socket);
    socket.write(metadataFrame(-1));
    await eventually(() => assert.deepEqual(ids, [-1]));
    socket.pause();
    cluster.holdReplies();
    const producedBefore = kafka.produceRequests();
    const requests = pipeline(count, frame);
    assert.ok(requests.length > 4 * bound * frameBytes, 'the client has far more to send than the proxy may hold');
    socket.write(requests);
    await eventually(async () => assert.ok((await status()).requestsInFlight >= MAX_REQUESTS_IN_FLIGHT), 15000);
    for (let sample = 0; sample < 20; sample++) {
      const held = (await status()).requestsInFlight;
      assert.ok(held <= bound, `${held} requests held (bound ${bound})`);
      const produced = kafka.produceRequests() - producedBefore;
      assert.ok(produced <= bound, `${produced} produce requests reached the cluster (bound ${bound})`);
      await new Promise((r) => setTimeout(r, 50));
    }
    cluster.releaseReplies();
    socket.resume();
    // Every answer, for as long as they keep coming: a loaded machine reads 100,001 of them slowly, a stall never ends.
    assert.equal(await untilReached(() => ids.length, count + 1, 'answers read'), count + 1);
    assert.deepEqual(
      ids,
      Array.from({ length: count + 1 }, (_, i) => i - 1),
    );
    await eventually(async () => assert.equal((await status()).requestsInFlight, 0));
    socket.destroy();
    await eventually(async () => assert.equal((await status()).connections, 0));
  }

  it('holds back a client that pipelines produce requests (streamed upstream) without reading', async () => {
    await holdsBack(30_000, (id) => produceFrame(id, topic));
  });

  it('holds back a client that pipelines Metadata requests (read whole, rewritten) without reading', async () => {
    await holdsBack(100_000, metadataFrame);
  });

  it('holds back such a client over TLS (read as node:tls does, not into one buffer)', async () => {
    await holdsBack(30_000, (id) => produceFrame(id, topic), 'kafka-tls');
  });

  it('closes connections idle for connectionsMaxIdleMs, and a Kafka client (kafka-python) goes on through new ones (1634)', { timeout: 60_000 }, async () => {
    const port = gw.port('kafka-idle');
    // A client that connects and sends nothing, and one that left half a request: both closed.
    const silent = await connected(port);
    const half = await connected(port);
    half.write(Buffer.from([0, 0, 0, 40, 0, 3]));
    const closed = Promise.all([once(silent, 'close'), once(half, 'close')]);
    const python = spawn('/usr/bin/python3', [PYTHON_CLIENT, 'produce', `127.0.0.1:${port}`, idleTopic, 'none'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    python.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      const answers = createInterface({ input: python.stdout })[Symbol.asyncIterator]();
      const produced = async (value: string) => {
        python.stdin.write(`${value}\n`);
        const line = await answers.next();
        assert.equal(line.done, false, stderr);
        assert.equal(JSON.parse(line.value as string).ok, true, line.value as string);
      };
      await produced('before-idle');
      await closed;
      // Every connection of the producer's was closed too (it sent nothing for IDLE_MS): it reconnects for its next record.
      await eventually(async () => assert.equal((await statusOf('kafka-idle')).connections, 0), 15000);
      await produced('after-idle');
      python.stdin.end();
      const [code] = (await once(python, 'exit')) as [number | null];
      assert.equal(code, 0, stderr);
    } finally {
      python.kill();
    }
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, idleTopic)).map((r) => r.value),
      ['before-idle', 'after-idle'],
    );
  });

  it('keeps a connection open past connectionsMaxIdleMs while the cluster owes it an answer, and closes it once idle after the answer (1634)', { timeout: 60_000 }, async () => {
    const socket = await connected(gw.port('kafka-idle'));
    const ids = readAnswers(socket);
    let closed = false;
    const closing = once(socket, 'close').then(() => (closed = true));
    socket.write(metadataFrame(-1));
    await eventually(() => assert.deepEqual(ids, [-1]));
    cluster.holdReplies();
    try {
      socket.write(produceFrame(0, idleTopic));
      // Three idle times with the produce request unanswered: a Fetch waiting for records looks the same.
      await new Promise((r) => setTimeout(r, 3 * IDLE_MS));
      assert.equal(closed, false, 'closed with a request in flight');
    } finally {
      cluster.releaseReplies();
    }
    await eventually(() => assert.deepEqual(ids, [-1, 0]));
    await closing;
    await eventually(async () => assert.equal((await statusOf('kafka-idle')).connections, 0));
  });

  it('applies a reloaded connectionsMaxIdleMs to connections already open (1634)', { timeout: 60_000 }, async () => {
    // Open under kafka-in's default (10 minutes): the reload shortens it, and the open connection is closed idle.
    const socket = await connected(gw.port('kafka-in'));
    const closed = once(socket, 'close');
    try {
      const reload = await gw.reconfigure(config(IDLE_MS), 'gateway.yaml', { whole: true });
      assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
      await closed;
    } finally {
      socket.destroy();
      const back = await gw.reconfigure(config(), 'gateway.yaml', { whole: true });
      assert.equal(back.msg, 'config reloaded', JSON.stringify(back));
    }
  });
});
