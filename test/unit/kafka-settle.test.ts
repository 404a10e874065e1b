import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { batchCompression, encodeBatch, type KafkaRecord } from '../../src/codecs/record-batch.js';
import { readProduceResponse, readRequestHeader } from '../../src/codecs/kafka-protocol/messages.js';
import { Writer } from '../../src/codecs/kafka-protocol/wire.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { governProduce, type GovernContext, type PendingRecords } from '../../src/kinds/listeners/kafka/govern.js';
import { loadPlan } from '../../src/plan/compile.js';
import { RouteRuntime } from '../../src/runtime/route.js';
import { RouteStats } from '../../src/telemetry/metrics.js';
import { tempFiles } from '../helpers/gateway.js';

/**
 * Every record a kafka listener's route receives ends in exactly one outcome, whatever the cluster
 * answers or fails to answer: the accounting of PendingRecords with a route compiled from a real
 * config, and produce requests/responses as the protocol writes them.
 */
const TOPIC = 'orders';

async function route(logged?: Record<string, unknown>[]): Promise<{ route: RouteRuntime; stats: RouteStats }> {
  const dir = tempFiles({
    'gateway.yaml': `version: 1
brokers:
  cluster: { kind: kafka, brokers: ["127.0.0.1:9092"] }
listeners:
  kafka-in: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: 0 }
routes:
  - name: orders-in
    from: { listener: kafka-in, topic: ${TOPIC} }
    through: [ { validate: { schema: { type: object, required: [id] }, onInvalid: reject } } ]
`,
  });
  const loaded = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });
  const stats = new RouteStats();
  const r = new RouteRuntime(loaded.plan!.routes.get('orders-in')!, {
    brokers: new Map(),
    listeners: new Map(),
    logger: logged ? pino({ level: 'debug' }, { write: (line: string) => logged.push(JSON.parse(line)) }) : pino({ level: 'silent' }),
    instanceId: 'test',
    metrics: { route: () => stats },
  });
  return { route: r, stats };
}

function batch(vs: string[]): Promise<Buffer> {
  const records: KafkaRecord[] = vs.map((v, i) => ({ attributes: 0, timestampDelta: 0, offsetDelta: i, key: null, value: Buffer.from(v), headers: [] }));
  return encodeBatch(
    {
      baseOffset: 0n,
      partitionLeaderEpoch: -1,
      magic: 2,
      crc: 0,
      attributes: 0,
      lastOffsetDelta: vs.length - 1,
      baseTimestamp: 0n,
      maxTimestamp: 0n,
      producerId: -1n,
      producerEpoch: -1,
      baseSequence: -1,
      recordCount: vs.length,
    },
    records,
    batchCompression,
  );
}

/** A Produce v8 request to TOPIC: `values[p]` are the record values of partition p (one batch each, or several). */
async function request(values: (string[] | string[][])[], acks = -1): Promise<Buffer> {
  const w = new Writer().int16(0).int16(8).int32(7).nullableString('test').nullableString(null).int16(acks).int32(30000).int32(1).string(TOPIC).int32(values.length);
  for (const [p, vs] of values.entries()) {
    const batches = Array.isArray(vs[0]) ? (vs as string[][]) : [vs as string[]];
    w.int32(p).nullableBytes(Buffer.concat(await Promise.all(batches.map(batch))));
  }
  return w.finish();
}

/** The cluster's Produce v8 response: an error code per partition (missing partitions are left out). */
function response(codes: Record<number, number>): Buffer {
  const entries = Object.entries(codes);
  const w = new Writer().int32(7).int32(1).string(TOPIC).int32(entries.length);
  for (const [p, code] of entries)
    w.int32(Number(p))
      .int16(code)
      .int64(100n)
      .int64(-1n)
      .int64(0n)
      .int32(0)
      .nullableString(code === 0 ? null : 'no');
  return w.int32(0).finish();
}

async function governed(r: RouteRuntime, body: Buffer): Promise<PendingRecords | undefined> {
  const ctx: GovernContext = { route: (t) => (t === TOPIC ? r : undefined), compression: batchCompression, remoteAddress: '127.0.0.1', broker: 'cluster' };
  const g = await governProduce(readRequestHeader(body), body, ctx);
  assert.ok('forward' in g);
  return g.pending;
}

const counts = (s: RouteStats) => ({ received: s.received, delivered: s.delivered, failed: s.failed, invalid: s.invalid, rejected: s.rejected });

describe('kafka listener: every governed record ends in one outcome', () => {
  it('counts nothing but received until the cluster answers, then each partition by its error code', async () => {
    const { route: r, stats } = await route();
    const pending = await governed(r, await request([['{"id":1}', '{"id":2}'], ['{"id":3}']]));
    assert.deepEqual(counts(stats), { received: 3, delivered: 0, failed: 0, invalid: 0, rejected: 0 });
    assert.equal(r.pending, 3);
    pending!.answered(response({ 0: 0, 1: 6 }), 8);
    assert.deepEqual(counts(stats), { received: 3, delivered: 2, failed: 1, invalid: 0, rejected: 0 });
    assert.equal(r.pending, 0);
    // A second answer (or a close after the answer) changes nothing.
    pending!.lost('closed');
    pending!.answered(response({ 0: 0, 1: 0 }), 8);
    assert.deepEqual(counts(stats), { received: 3, delivered: 2, failed: 1, invalid: 0, rejected: 0 });
  });

  it('fails the records of a partition the response does not name, and of an answer that cannot be read', async () => {
    const { route: r, stats } = await route();
    (await governed(r, await request([['{"id":1}'], ['{"id":2}']])))!.answered(response({ 0: 0 }), 8);
    assert.deepEqual(counts(stats), { received: 2, delivered: 1, failed: 1, invalid: 0, rejected: 0 });
    (await governed(r, await request([['{"id":3}']])))!.answered(Buffer.from([0, 0, 0, 7, 0]), 8);
    assert.deepEqual(counts(stats), { received: 3, delivered: 1, failed: 2, invalid: 0, rejected: 0 });
  });

  it('fails the records of a request whose connection closed before the answer', async () => {
    const { route: r, stats } = await route();
    (await governed(r, await request([['{"id":1}', '{"id":2}']])))!.lost('the connection closed before the cluster answered');
    assert.deepEqual(counts(stats), { received: 2, delivered: 0, failed: 2, invalid: 0, rejected: 0 });
    assert.equal(r.pending, 0);
  });

  it('counts acks=0 records as delivered once written, and a refused request’s valid records as rejected', async () => {
    const { route: r, stats } = await route();
    (await governed(r, await request([['{"id":1}']], 0)))!.unacknowledged();
    assert.deepEqual(counts(stats), { received: 1, delivered: 1, failed: 0, invalid: 0, rejected: 0 });
    const body = await request([['{"id":2}', '"no id"'], ['{"id":3}']]);
    const g = await governProduce(readRequestHeader(body), body, { route: () => r, compression: batchCompression, remoteAddress: undefined, broker: 'cluster' });
    assert.ok('respond' in g);
    assert.deepEqual(counts(stats), { received: 4, delivered: 1, failed: 0, invalid: 1, rejected: 2 });
    assert.equal(r.pending, 0);
  });

  it('settles a partition of several batches record by record when a later batch has a refused record', async () => {
    const { route: r, stats } = await route();
    const body = await request([
      [
        ['{"id":1}', '{"id":2}'],
        ['{"id":3}', '"no id"'],
      ],
    ]);
    const g = await governProduce(readRequestHeader(body), body, { route: () => r, compression: batchCompression, remoteAddress: undefined, broker: 'cluster' });
    assert.ok('respond' in g);
    assert.deepEqual(counts(stats), { received: 4, delivered: 0, failed: 0, invalid: 1, rejected: 3 });
    assert.equal(r.pending, 0);
  });

  it('keeps each outcome at its record when records judged from their bytes surround one that is decoded', async () => {
    const { route: r, stats } = await route();
    // An escaped name is left to JSON.parse and ajv (the byte check reads names as their bytes): it passes.
    const pending = await governed(r, await request([['{"id":1}', '{"i\\u0064":2}', '{"id":3}', '{"id":4}']]));
    assert.deepEqual(counts(stats), { received: 4, delivered: 0, failed: 0, invalid: 0, rejected: 0 });
    assert.equal(r.pending, 4);
    pending!.answered(response({ 0: 0 }), 8);
    assert.deepEqual(counts(stats), { received: 4, delivered: 4, failed: 0, invalid: 0, rejected: 0 });
    assert.equal(r.pending, 0);
    // A refused record between records that passed from their bytes is named by its own index.
    const body = await request([['{"id":5}', '{"id":6}', '"no id"', '{"id":7}']]);
    const g = await governProduce(readRequestHeader(body), body, { route: () => r, compression: batchCompression, remoteAddress: undefined, broker: 'cluster' });
    assert.ok('respond' in g && g.respond);
    const [answer] = readProduceResponse(g.respond, 8).get(TOPIC)!;
    assert.match(answer!.errorMessage ?? '', /refused record 2:/);
    assert.deepEqual(counts(stats), { received: 8, delivered: 4, failed: 0, invalid: 1, rejected: 3 });
    assert.equal(r.pending, 0);
  });

  it('logs the refused record of a later batch when an earlier batch of its partition passed whole', async () => {
    const logged: Record<string, unknown>[] = [];
    const { route: r } = await route(logged);
    const body = await request([
      [
        ['{"id":1}', '{"id":2}'],
        ['{"id":3}', '"no id"'],
      ],
    ]);
    const g = await governProduce(readRequestHeader(body), body, { route: () => r, compression: batchCompression, remoteAddress: undefined, broker: 'cluster' });
    assert.ok('respond' in g);
    const invalid = logged.filter((l) => l.msg === 'message invalid');
    assert.equal(invalid.length, 1, JSON.stringify(logged));
    assert.equal(invalid[0]!.topic, TOPIC);
    assert.equal(invalid[0]!.code, 'EG_INVALID_MESSAGE');
  });
});
