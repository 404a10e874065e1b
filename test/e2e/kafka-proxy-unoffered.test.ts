import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { reloaded } from '../helpers/pipeline.js';
import { kcatConsumeAll, kcatProduce, metadataRequest, startKafka, type KafkaCluster } from '../helpers/kafka.js';

/** A request frame with a v1 header (api key, version, correlation id, client id) and no body. */
function request(apiKey: number, apiVersion: number, correlationId: number): Buffer {
  const clientId = Buffer.from('raw');
  const head = Buffer.alloc(14);
  head.writeInt32BE(10 + clientId.length, 0);
  head.writeInt16BE(apiKey, 4);
  head.writeInt16BE(apiVersion, 6);
  head.writeInt32BE(correlationId, 8);
  head.writeInt16BE(clientId.length, 12);
  return Buffer.concat([head, clientId]);
}

/** A Produce v3 request frame: null transactional id, acks 1, then `topics` as given (bytes). */
function produce(topics: Buffer): Buffer {
  const head = request(0, 3, 9);
  const fields = Buffer.alloc(8);
  fields.writeInt16BE(-1, 0); // transactional id: null
  fields.writeInt16BE(1, 2); // acks
  fields.writeInt32BE(1000, 4); // timeout
  const whole = Buffer.concat([head, fields, topics]);
  whole.writeInt32BE(whole.length - 4, 0);
  return whole;
}
const int32 = (n: number) => Buffer.from([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
const str = (s: string) => Buffer.concat([Buffer.from([0, Buffer.byteLength(s)]), Buffer.from(s)]);

/** Sends one request and resolves once the proxy closed the connection; from `localAddress` when given (127.0.0.0/8). */
function sendUntilClosed(proxy: string, bytes: Buffer, localAddress?: string): Promise<void> {
  const [host, port] = proxy.split(':');
  const socket = connect({ port: Number(port), host: host!, ...(localAddress && { localAddress }) });
  socket.on('error', () => {});
  socket.on('connect', () => socket.write(bytes));
  return new Promise((resolve) => socket.on('close', () => resolve()));
}

describe('kafka listener: requests for APIs or versions the proxy does not offer', () => {
  let kafka: KafkaCluster;
  let proxy: string;
  let topic = '';
  before(async () => {
    kafka = await startKafka({ brokers: 3 });
    topic = kafka.topic('unoffered');
    await kafka.createTopic(topic, 1);
  });
  const config = (limit = '') => `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "\${KAFKA_BOOTSTRAP}" }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0${limit} }
routes:
  - name: free-in
    from: { listener: kafka-in, topic: ${topic} }
    through: [ { validate: { schema: { type: object }, onInvalid: reject } } ]
`;
  const gw = useGateway(
    () => config(),
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  before(() => {
    proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  });
  after(async () => {
    await kafka?.stop();
  });

  // Produce requests to a governed topic are read whole, to check their records: one that cannot be read is a bad request.
  for (const [name, bytes, reason] of [
    ['names a million topics in no bytes', () => produce(int32(1_000_000)), /^array of 1000000 entries in 0 bytes$/],
    ['has a null topic name', () => produce(Buffer.concat([int32(1), Buffer.from([0xff, 0xff])])), /^null where a string is required$/],
    ['ends inside a partition', () => produce(Buffer.concat([int32(1), str(topic), int32(1), Buffer.from([0, 0])])), /^truncated: needs 4 bytes at \d+, has 2$/],
    ['has bytes after its last topic', () => produce(Buffer.concat([int32(1), str(topic), int32(0), Buffer.from([1, 2, 3])])), /^3 bytes after the Produce request$/],
  ] as const) {
    it(`closes a client whose Produce request ${name}, naming why; the listener goes on`, async () => {
      const from = gw.logs.length;
      await sendUntilClosed(proxy, bytes());
      const closed = await gw.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('kafka client connection closed'), undefined, from);
      assert.equal(closed.msg, 'kafka client connection closed: bad request', JSON.stringify(closed));
      assert.match(String(closed.reason), reason);
      const sentinel = `{"after":"${name}"}`;
      await kcatProduce(proxy, topic, [{ key: 'k', value: sentinel }]);
      const values = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value);
      assert.ok(values.includes(sentinel));
    });
  }

  for (const [apiKey, version, reason] of [
    [60, 0, /API key 60 is not offered by the proxy/], // DescribeCluster: names the brokers' real addresses
    [999, 0, /API key 999 is not offered by the proxy/],
    [1, 16, /API key 1 v16 is above the v15 the proxy offers/], // Fetch v16: node endpoints
  ] as const) {
    it(`closes a client that sends API key ${apiKey} v${version}, as a bad request it never passes on`, async () => {
      const from = gw.logs.length;
      await sendUntilClosed(proxy, request(apiKey, version, 7));
      const closed = await gw.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('kafka client connection closed'), undefined, from);
      assert.equal(closed.msg, 'kafka client connection closed: bad request', JSON.stringify(closed));
      assert.match(String(closed.reason), reason);
      // The listener goes on for good clients.
      await kcatProduce(proxy, topic, [{ key: 'k', value: `{"after":${apiKey}}` }]);
      assert.ok((await kcatConsumeAll(kafka.bootstrap, topic)).some((r) => r.value === `{"after":${apiKey}}`));
    });
  }

  // KIP-511: a broker answers an ApiVersions version it does not know with UNSUPPORTED_VERSION in
  // the v0 shape, listing the ApiVersions versions it knows, and the client asks again lower on the
  // same connection. The proxy passed v5+ upstream, where a broker that knows it would answer in a
  // layout the proxy does not read (the mock answered with its own bytes).
  it('answers ApiVersions above v4 itself, as Kafka answers a version it does not know, and a lower one on the same connection', async () => {
    const [host, port] = proxy.split(':');
    const socket = connect(Number(port), host!);
    socket.on('error', () => {});
    let got = Buffer.alloc(0);
    const frames: Buffer[] = [];
    const waiters: (() => void)[] = [];
    socket.on('data', (d) => {
      got = Buffer.concat([got, d]);
      while (got.length >= 4 && got.length >= 4 + got.readInt32BE(0)) {
        frames.push(got.subarray(4, 4 + got.readInt32BE(0)));
        got = got.subarray(4 + got.readInt32BE(0));
        waiters.shift()?.();
      }
    });
    // A closed connection answers every request still due with no bytes (the assertions then say so).
    let closed = false;
    socket.on('close', () => {
      closed = true;
      for (const w of waiters.splice(0)) w();
    });
    const next = () =>
      frames.length > 0 || closed ? Promise.resolve(frames.shift() ?? Buffer.alloc(0)) : new Promise<Buffer>((resolve) => waiters.push(() => resolve(frames.shift() ?? Buffer.alloc(0))));
    try {
      socket.write(Buffer.concat([request(18, 5, 41), request(18, 32767, 42)]));
      for (const correlationId of [41, 42]) {
        // correlation id, error 35, one entry: ApiVersions (18), v0 to v4.
        const expected = Buffer.from(`${correlationId.toString(16).padStart(8, '0')}002300000001001200000004`, 'hex');
        assert.equal((await next()).toString('hex'), expected.toString('hex'));
      }
      socket.write(request(18, 2, 43));
      const answer = await next();
      assert.equal(answer.readInt32BE(0), 43);
      assert.equal(answer.readInt16BE(4), 0, 'the v2 request is answered without error');
      const apis = new Map<number, number>();
      for (let i = 0, n = answer.readInt32BE(6); i < n; i++) apis.set(answer.readInt16BE(10 + i * 6), answer.readInt16BE(14 + i * 6));
      assert.ok(apis.has(0) && (apis.get(18) ?? 99) <= 4, JSON.stringify([...apis]));
    } finally {
      socket.destroy();
    }
  });

  // A broker that is down closes every connection a client opens to its port, and librdkafka
  // reconnects within a second, every client of a fleet: one line per connection flooded the log.
  it('logs a broker that is down and a repeated bad request once each, not once per connection, and counts every one', async () => {
    await kcatProduce(proxy, topic, [{ key: 'k', value: '{"before":"down"}' }]); // binds the brokers' ports
    const status = async () => (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
    const port = (await status()).ports.find((p: { nodeId: number }) => p.nodeId === 2).port as number;
    const closedBefore = (await status()).closedByProxy as number;
    const from = gw.logs.length;
    await kafka.down(2);
    try {
      for (let i = 0; i < 20; i++) await sendUntilClosed(`127.0.0.1:${port}`, request(3, 1, i));
    } finally {
      await kafka.up(2);
    }
    for (let i = 0; i < 20; i++) await sendUntilClosed(proxy, request(998, 0, i));
    assert.equal((await status()).closedByProxy, closedBefore + 40);
    const lines = gw.logs.slice(from).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('kafka client connection closed'));
    const down = lines.filter((l) => l.side === 'upstream');
    const bad = lines.filter((l) => l.side === 'client');
    // The first of each is logged at once, naming why; repeats are counted into a line per 10 s.
    assert.match(String(down[0]?.reason), /upstream connection failed: .*ECONNREFUSED/, JSON.stringify(lines));
    assert.equal(down[0]!.closed, 1);
    assert.match(String(bad[0]?.reason), /API key 998 is not offered by the proxy/);
    assert.equal(bad[0]!.closed, 1);
    assert.ok(down.length <= 3 && bad.length <= 3, JSON.stringify(lines));
    // The listener goes on.
    await kcatProduce(proxy, topic, [{ key: 'k', value: '{"after":"down"}' }]);
    assert.ok((await kcatConsumeAll(kafka.bootstrap, topic)).some((r) => r.value === '{"after":"down"}'));
  });

  // 595 bounded the reasons with a line of their own to 64 per listener: one client's garbage of
  // ever-changing API keys filled them, and another client's bad request then counted unnamed in
  // the shared window. Each client address now has 16 of them; from addresses of their own, so
  // the file's other tests (from 127.0.0.1) keep their windows.
  it("logs another client's bad request at once while one client floods the log with ever-changing ones", async () => {
    const from = gw.logs.length;
    for (let i = 0; i < 70; i++) await sendUntilClosed(proxy, request(2000 + i, 0, i), '127.0.0.5');
    await sendUntilClosed(proxy, request(997, 0, 1), '127.0.0.6');
    // More of the flood after it: the shared window's line then names the flood's last, never 997.
    for (let i = 70; i < 75; i++) await sendUntilClosed(proxy, request(2000 + i, 0, i), '127.0.0.5');
    const isClosed = (l: { msg?: unknown }) => typeof l.msg === 'string' && l.msg.startsWith('kafka client connection closed');
    const other = await gw.waitForLog((l) => isClosed(l) && l.remoteAddress === '127.0.0.6', 30_000, from);
    assert.match(String(other.reason), /API key 997 is not offered by the proxy/);
    assert.equal(other.closed, 1);
    // The flood had 16 lines of its own and one opening its shared window, all logged before 997's.
    const before = gw.logs.slice(from, gw.logs.indexOf(other)).filter((l) => isClosed(l) && l.remoteAddress === '127.0.0.5');
    assert.equal(before.length, 17, JSON.stringify(before.map((l) => l.reason)));
  });

  // Every option but host, port, brokerPorts and tls is applied in place (docs/kafka-proxy.md):
  // the request limit was read once per connection, so clients connected before a reload that
  // lowered it could still send requests of the old size.
  it('applies a lowered maxRequestBytes to a client connected before the reload', async () => {
    const [host, port] = proxy.split(':');
    const socket = connect(Number(port), host!);
    socket.on('error', () => {});
    const answered = new Promise<boolean>((resolve) => {
      socket.once('data', () => resolve(true));
      socket.once('close', () => resolve(false));
    });
    socket.write(metadataRequest(1, 'raw')); // the connection is up, upstream too
    assert.ok(await answered, 'the Metadata request was answered');
    try {
      assert.ok(reloaded(await gw.reconfigure(config(', maxRequestBytes: 1024'))));
      const from = gw.logs.length;
      // A well-formed Metadata request of more than 1024 bytes (a long client id): answered before the reload.
      const big = metadataRequest(2, 'x'.repeat(1100));
      const outcome = new Promise<string>((resolve) => {
        socket.once('data', () => resolve('answered'));
        socket.once('close', () => resolve('closed'));
      });
      socket.write(big);
      assert.equal(await outcome, 'closed');
      const line = await gw.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('kafka client connection closed'), undefined, from);
      assert.equal(line.reason, `a request of ${big.length - 4} bytes, over the listener's maxRequestBytes (1024)`, JSON.stringify(line));
    } finally {
      socket.destroy();
      assert.ok(reloaded(await gw.reconfigure(config())));
    }
  });
});
