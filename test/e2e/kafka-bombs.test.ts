import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { createGzip, gzipSync } from 'node:zlib';
import kafkajs from 'kafkajs';
import { eventually, type RunningGateway, startGateway, untilReached, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { committedOffsets, endOffsets, kcatConsume, readRecords, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { openStream } from '../helpers/sse.js';

const { CompressionCodecs, CompressionTypes, Kafka, logLevel } = kafkajs;

/**
 * Decompression bombs (issue #11, docs/security.md): a record batch of a few hundred kilobytes
 * whose records decompress to hundreds of megabytes of zeros, compressed by implementations
 * independent of the gateway's (node:zlib's gzip stream, the zstd command line tool), and sent to
 * librdkafka's mock cluster as a batch kafkajs frames. The gateway must refuse it at its bound,
 * keep its memory, and go on with the next records.
 */
const BOMB_BYTES = 300 * 1024 * 1024;
/** The default bound (consumer.maxBatchBytes) is 64 MiB; the gateway may hold about that once, not the bomb. */
const RSS_BOUND = 160 * 1024 * 1024;
const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

function rss(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

/** Kafka's zigzag varint. */
function varint(n: number): Buffer {
  let z = n >= 0 ? n * 2 : -n * 2 - 1;
  const out: number[] = [];
  while (z >= 0x80) {
    out.push((z % 0x80) | 0x80);
    z = Math.floor(z / 0x80);
  }
  out.push(z);
  return Buffer.from(out);
}

/** One record (magic 2 records section) whose value is `size` zeros: the bytes around the zeros. */
function recordAround(size: number): { head: Buffer; tail: Buffer } {
  // attributes, timestampDelta 0, offsetDelta 0, key null, value length; then the header count.
  const fields = Buffer.concat([Buffer.from([0]), varint(0), varint(0), varint(-1), varint(size)]);
  const tail = varint(0);
  return { head: Buffer.concat([varint(fields.length + size + tail.length), fields]), tail };
}

const ZEROS = Buffer.alloc(1024 * 1024);

/** The bomb through node:zlib's streaming gzip: 300 MB of zeros never exist at once. */
async function gzipBomb(size: number): Promise<Buffer> {
  const { head, tail } = recordAround(size);
  const gz = createGzip({ level: 9 });
  const chunks: Buffer[] = [];
  gz.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((r) => gz.on('end', r));
  gz.write(head);
  for (let left = size; left > 0; left -= ZEROS.length) if (!gz.write(ZEROS.subarray(0, Math.min(left, ZEROS.length)))) await new Promise((r) => gz.once('drain', r));
  gz.end(tail);
  await done;
  return Buffer.concat(chunks);
}

/** The bomb through the zstd command line tool, fed by a pipe: a frame with no content size, only blocks. */
async function zstdBomb(size: number): Promise<Buffer> {
  const { head, tail } = recordAround(size);
  const child = spawn('zstd', ['-c', '-q', '-19'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  const exited = new Promise<number | null>((r) => child.on('close', r));
  child.stdin.write(head);
  for (let left = size; left > 0; left -= ZEROS.length) if (!child.stdin.write(ZEROS.subarray(0, Math.min(left, ZEROS.length)))) await new Promise((r) => child.stdin.once('drain', r));
  child.stdin.end(tail);
  assert.equal(await exited, 0);
  return Buffer.concat(chunks);
}

/**
 * This process's kafkajs frames batches; its gzip and zstd "compress" hand over the bomb when one
 * is loaded (the batch then says one record, as the bomb holds), and compress honestly otherwise.
 */
let loaded: Buffer | undefined;
const table = CompressionCodecs as unknown as Record<number, unknown>;
table[CompressionTypes.GZIP] = () => ({
  compress: async (encoder: { buffer: Buffer }) => loaded ?? gzipSync(encoder.buffer),
  decompress: async () => {
    throw new Error('the test never reads gzip');
  },
});
table[CompressionTypes.ZSTD] = () => ({
  compress: async () => loaded ?? Promise.reject(new Error('only bombs are sent as zstd here')),
  decompress: async () => {
    throw new Error('the test never reads zstd');
  },
});

async function send(bootstrap: string, topic: string, messages: { value: string }[], compression = CompressionTypes.None, bomb?: Buffer): Promise<void> {
  const producer = new Kafka({ clientId: 'bomber', brokers: [bootstrap], logLevel: logLevel.NOTHING }).producer();
  await producer.connect();
  try {
    loaded = bomb;
    await producer.send({ topic, compression, messages: messages.map((m) => ({ ...m, partition: 0 })) });
  } finally {
    loaded = undefined;
    await producer.disconnect();
  }
}

/** Samples the gateway's resident memory while `attack` runs; returns the peak above the baseline. */
async function peakRss(gw: RunningGateway, attack: () => Promise<void>): Promise<number> {
  const pid = gw.process.pid!;
  const baseline = rss(pid);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 20);
  try {
    await attack();
  } finally {
    clearInterval(sampler);
  }
  return Math.max(peak, rss(pid)) - baseline;
}

describe('decompression bombs', () => {
  let kafka: KafkaCluster;
  let gzipped: Buffer;
  let zstded: Buffer;
  let bombs: Promise<[Buffer, Buffer]>;
  const t = { bombs: '', copied: '', dlq: '', tightDlq: '', tightCopied: '', strict: '', strictOut: '', proxied: '', stream: '', streamDlq: '' };

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
    // Made while the gateway below starts and its groups join (the mock holds a first join 3 s).
    bombs = Promise.all([gzipBomb(BOMB_BYTES), zstdBomb(BOMB_BYTES)]);
    bombs.catch(() => undefined); // awaited below; a failure is reported there, not as an unhandled rejection
  });
  // Registered after the before() that starts the cluster, so the config can name it.
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
  tight: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml.replace(/ }$/, '')}, maxBatchBytes: 1048576 } }
listeners:
  kafka-in: { kind: kafka, upstream: kafka, host: 127.0.0.1, port: 0, advertisedHost: 127.0.0.1, maxRequestBytes: 16777216 }
  api: { kind: http, port: 0 }
routes:
  - name: stream
    from: { broker: tight, topic: ${t.stream} }
    to: { listener: api, path: /stream }
    deadletter: { broker: tight, topic: ${t.streamDlq} }
  - name: tolerant
    from: { broker: kafka, topic: ${t.bombs} }
    to: { broker: kafka, topic: ${t.copied} }
    deadletter: { broker: kafka, topic: ${t.dlq} }
  - name: tight
    from: { broker: tight, topic: ${t.bombs} }
    to: { broker: tight, topic: ${t.tightCopied} }
    deadletter: { broker: tight, topic: ${t.tightDlq} }
  - name: strict
    from: { broker: kafka, topic: ${t.strict} }
    to: { broker: kafka, topic: ${t.strictOut} }
  - name: governed
    from: { listener: kafka-in, topic: ${t.proxied} }
    # Takes any record: a refusal here can only be the bound's.
    through: [ { headers: { set: { governed: '"yes"' } } } ]
`,
  );
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'tolerant', 30000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'tight', 30000);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'stream', 30000);
    [gzipped, zstded] = await bombs;
  });
  after(async () => {
    await kafka?.stop();
  });

  it('dead-letters a gzip batch of 300 MB of zeros at the bound, holds its memory, and delivers the records after it', async () => {
    assert.ok(gzipped.length < 1024 * 1024, `the bomb is ${gzipped.length} bytes`);
    const grew = await peakRss(gw, async () => {
      await send(kafka.bootstrap, t.bombs, [{ value: 'bomb' }], CompressionTypes.GZIP, gzipped);
      await send(kafka.bootstrap, t.bombs, [{ value: '{"after":"the gzip bomb"}' }]);
      const [copied] = await kcatConsume(kafka.bootstrap, t.copied, 1, 60000);
      assert.equal(copied!.value, '{"after":"the gzip bomb"}');
    });
    console.log(`# gzip bomb (${gzipped.length} bytes for ${mb(BOMB_BYTES)}): gateway RSS peak +${mb(grew)}`);
    assert.ok(grew < RSS_BOUND, `RSS grew by ${mb(grew)} (bound ${mb(RSS_BOUND)})`);

    const [dead] = await readRecords(kafka, t.dlq, 1);
    const error = JSON.parse(String(dead!.headers!._eventgate_error));
    assert.equal(error.code, 'EG_UNDECODABLE_BATCH');
    assert.equal(error.route, 'tolerant');
    assert.equal(error.detail, 'a record batch could not be decoded: gzip decompress failed: the records would decompress to more than the limit of 67108864 bytes');
    // The raw batch as the cluster stored it: gzip (codec 1), one record, the bomb's bytes.
    assert.equal(dead!.value!.readInt16BE(21) & 0x07, 1);
    assert.ok(dead!.value!.subarray(61).equals(gzipped));
    await eventually(async () => assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-tolerant', t.bombs))[0], '2'), 15000, 200);
  });

  it('dead-letters a streamed zstd frame of 300 MB of zeros from its block headers, without decompressing it', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        const grew = await peakRss(gw, async () => {
          await send(kafka.bootstrap, t.bombs, [{ value: 'bomb' }], CompressionTypes.ZSTD, zstded);
          await send(kafka.bootstrap, t.bombs, [{ value: '{"after":"the zstd bomb"}' }]);
          const copied = await kcatConsume(kafka.bootstrap, t.copied, 2, 60000);
          assert.equal(copied[1]!.value, '{"after":"the zstd bomb"}');
        });
        console.log(`# zstd bomb (${zstded.length} bytes for ${mb(BOMB_BYTES)}): gateway RSS peak +${mb(grew)}`);
        assert.ok(grew < RSS_BOUND, `RSS grew by ${mb(grew)} (bound ${mb(RSS_BOUND)})`);
        // Every dead letter of the tolerant route so far: the gzip bomb's, then the zstd bomb's.
        const dead = await readRecords(kafka, t.dlq, Number((await endOffsets(kafka.bootstrap, t.dlq))[0]));
        const details = dead.map((d) => JSON.parse(String(d.headers!._eventgate_error)) as { code: string; detail: string });
        assert.ok(details.every((d) => d.code === 'EG_UNDECODABLE_BATCH'));
        const firstZstd = details.findIndex((d) => d.detail.includes('zstd decompress failed'));
        assert.ok(firstZstd >= 1, `the gzip bomb's dead letter, then the zstd bomb's: ${details.map((d) => d.detail).join('; ')}`);
        for (const d of dead.slice(0, firstZstd)) assert.ok(d.value!.subarray(61).equals(gzipped), "the gzip bomb's dead letter");
        for (const { detail } of details.slice(firstZstd)) {
          const claimed = /^a record batch could not be decoded: zstd decompress failed: the records would decompress to up to (\d+) bytes, more than the limit of 67108864 bytes$/.exec(detail);
          assert.ok(claimed && Number(claimed[1]) >= BOMB_BYTES, detail);
        }
        // Each once, but for the documented at-least-once of a member dropped from its group between a
        // dead-letter write and its commit (a loaded machine stalling the gateway past sessionTimeoutMs):
        // the member joined its group again and read the bomb again from its commit. One more copy at most per join.
        if (details.length > 2) {
          const logs = gw.logs.filter((l) => l.route === 'tolerant');
          const firstDead = logs.findIndex((l) => /^undecodable .* sent to the dead-letter topic$/.test(l.msg));
          const rejoins = logs.slice(firstDead).filter((l) => l.msg === 'consumer joined group').length;
          assert.ok(firstDead >= 0 && rejoins >= details.length - 2, `${details.length} dead letters of two bombs, with ${rejoins} joins of the tolerant route's member after the first was written`);
        }
      },
    ));

  it("applies each broker's consumer.maxBatchBytes: a 2 MiB gzip batch is copied by one route and dead-lettered by the route whose broker allows 1 MiB", async () => {
    const big = Array.from({ length: 4 }, (_, i) => ({ value: JSON.stringify({ i, pad: 'y'.repeat(512 * 1024) }) }));
    await send(kafka.bootstrap, t.bombs, big, CompressionTypes.GZIP);
    const copied = await kcatConsume(kafka.bootstrap, t.copied, 6, 60000);
    assert.deepEqual(
      copied.slice(2).map((r) => r.value),
      big.map((m) => m.value),
    );
    // The tight route dead-lettered both bombs and this batch, and copied only what was not compressed.
    const dead = await readRecords(kafka, t.tightDlq, 3);
    const details = dead.map((d) => JSON.parse(String(d.headers!._eventgate_error)).detail as string);
    assert.match(details[2]!, /^a record batch could not be decoded: gzip decompress failed: the records would decompress to more than the limit of 1048576 bytes$/);
    const tightCopied = await kcatConsume(kafka.bootstrap, t.tightCopied, 2, 60000);
    assert.deepEqual(
      tightCopied.map((r) => r.value),
      ['{"after":"the gzip bomb"}', '{"after":"the zstd bomb"}'],
    );
  });

  it("an event-stream client resuming over a batch past its broker's maxBatchBytes is told of the gap and gets the events after it", async () => {
    const first = await openStream(gw.url('api', '/stream'));
    await send(kafka.bootstrap, t.stream, [{ value: '{"n":1}' }]);
    await eventually(() => assert.equal(first.events().length, 1), 30000);
    const lastId = first.events()[0]!.id!;
    first.close();

    // 2 MiB of records in one gzip batch: over the tight broker's 1 MiB bound.
    await send(
      kafka.bootstrap,
      t.stream,
      Array.from({ length: 4 }, (_, i) => ({ value: JSON.stringify({ big: i, pad: 'z'.repeat(512 * 1024) }) })),
      CompressionTypes.GZIP,
    );
    await send(kafka.bootstrap, t.stream, [{ value: '{"n":2}' }]);
    const resumed = await openStream(gw.url('api', '/stream'), { 'last-event-id': lastId });
    await eventually(() => assert.ok(resumed.events().some((e) => e.data === '{"n":2}')), 30000);
    const [notice, ...rest] = resumed.events();
    resumed.close();
    assert.equal(notice!.event, 'eventgate.resume');
    const said = JSON.parse(notice!.data);
    assert.equal(said.gap, true);
    assert.match(
      said.reason,
      /^events the gateway cannot decode are left out: partition 0, a batch from offset 1 \(gzip decompress failed: the records would decompress to more than the limit of 1048576 bytes\)$/,
    );
    assert.deepEqual(
      rest.map((e) => e.data),
      ['{"n":2}'],
    );
  });

  it('bounds a whole fetch by maxBatchBytes too: 200 gzip batches of 1 MB of zeros each (200 MB in one fetch) are all copied, without holding them at once', async () => {
    const count = 200;
    const zeros = Buffer.alloc(1_000_000);
    const [many, manyOut] = [kafka.topic('many'), kafka.topic('many-out')];
    await kafka.createTopic(many, count);
    await kafka.createTopic(manyOut, 1);
    // Written before any consumer reads the topic, one batch per partition: all in the route's first fetch.
    const producer = testClient(kafka.bootstrap).producer();
    await producer.connect();
    try {
      await producer.send({ topic: many, compression: CompressionTypes.GZIP, messages: Array.from({ length: count }, (_, partition) => ({ value: zeros, partition })) });
    } finally {
      await producer.disconnect();
    }
    const copier = await startGateway(`
version: 1
brokers:
  tight: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1, compression: gzip }, consumer: ${kafka.consumerYaml.replace(/ }$/, '')}, maxBatchBytes: 1048576 } }
routes:
  - name: many
    from: { broker: tight, topic: ${many} }
    to: { broker: tight, topic: ${manyOut} }
`);
    try {
      // Every partition committed past its batch, for as long as commits keep coming (a loaded
      // machine copies 200 MB slowly); a stall fails, with the gateway's log.
      const done = async () => Object.values(await committedOffsets(kafka.bootstrap, 'eventgate-many', many)).filter((o) => o === '1').length;
      const grew = await withLogsOnFailure(
        () => [copier],
        () => peakRss(copier, async () => assert.equal(await untilReached(done, count, 'partitions committed past their batch', 30000, 250), count)),
      );
      console.log(`# ${count} gzip batches of ${mb(zeros.length)} each in one fetch: gateway RSS peak +${mb(grew)}`);
      assert.ok(grew < RSS_BOUND, `RSS grew by ${mb(grew)} (bound ${mb(RSS_BOUND)})`);
    } finally {
      await copier.stop();
    }
    const copied = Object.values(await endOffsets(kafka.bootstrap, manyOut)).reduce((sum, o) => sum + Number(o), 0);
    assert.equal(copied, count);
  });

  it('without a dead-letter topic, stops the partition at the bomb and says why', async () => {
    await send(kafka.bootstrap, t.strict, [{ value: 'bomb' }], CompressionTypes.ZSTD, zstded);
    await send(kafka.bootstrap, t.strict, [{ value: '{"stuck":"behind the bomb"}' }]);
    await gw.waitForLog((l) => l.msg.startsWith('consumer stopped on a partition') && l.route === 'strict', 30000);
    const health = (await gw.status()).routes.find((x: { name: string }) => x.name === 'strict').consumer;
    assert.equal(health.ready, false);
    assert.match(
      health.detail,
      /^partition 0 of .* stopped at offset 0: a record batch there cannot be decoded \(zstd decompress failed: the records would decompress to up to \d+ bytes, more than the limit of 67108864 bytes\)/,
    );
    assert.equal((await committedOffsets(kafka.bootstrap, 'eventgate-strict', t.strict))[0], '-1');
  });

  it('the kafka listener refuses a produce request whose records decompress past maxRequestBytes, and the same connection goes on', async () => {
    const proxy = `127.0.0.1:${gw.port('kafka-in')}`;
    const producer = new Kafka({ clientId: 'bomber-through-proxy', brokers: [proxy], logLevel: logLevel.NOTHING, retry: { retries: 1, initialRetryTime: 100 } }).producer();
    await producer.connect();
    try {
      const grew = await peakRss(gw, async () => {
        for (const [codec, bomb] of [
          [CompressionTypes.GZIP, gzipped],
          [CompressionTypes.ZSTD, zstded],
        ] as const) {
          loaded = bomb;
          const err = await producer.send({ topic: t.proxied, compression: codec, messages: [{ value: 'bomb' }] }).then(
            () => undefined,
            (e: { type?: string }) => e,
          );
          loaded = undefined;
          assert.equal(err?.type, 'INVALID_RECORD');
        }
        await producer.send({ topic: t.proxied, messages: [{ value: '{"after":"the bombs"}' }] });
      });
      console.log(`# kafka listener, gzip and zstd bombs: gateway RSS peak +${mb(grew)}`);
      assert.ok(grew < RSS_BOUND, `RSS grew by ${mb(grew)} (bound ${mb(RSS_BOUND)})`);
    } finally {
      loaded = undefined;
      await producer.disconnect();
    }
    const [only] = await kcatConsume(kafka.bootstrap, t.proxied, 1, 30000);
    assert.equal(only!.value, '{"after":"the bombs"}');
    assert.equal((await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in').closedByProxy ?? 0, 0);
  });
});
