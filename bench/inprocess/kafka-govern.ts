/**
 * CPU cost per record of what the kafka listener does to a produce request, in-process: the
 * request as librdkafka sends it (3 partitions, one uncompressed batch of small JSON records each),
 * through `governProduce` with a route compiled from a real gateway.yaml by the real compiler
 * (the `kafka-proxy-validate` bench config), then settled with a Produce response as the cluster
 * would send it. CPU time
 * (process.cpuUsage) over a fixed number of records, not throughput: it holds on a loaded machine.
 *
 *   node dist/bench/inprocess/kafka-govern.js [records-per-batch] [rounds]
 *
 * Prints one JSON line: µs of CPU per record (min and median of 9 samples) for the validated topic
 * and for a topic no route names.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { encodeBatch, batchCompression, type KafkaRecord } from '../../src/codecs/record-batch.js';
import { readRequestHeader } from '../../src/codecs/kafka-protocol/messages.js';
import { Writer } from '../../src/codecs/kafka-protocol/wire.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { governProduce, type GovernContext } from '../../src/kinds/listeners/kafka/govern.js';
import { loadPlan } from '../../src/plan/compile.js';
import { RouteRuntime } from '../../src/runtime/route.js';
import { kafkaProxyConfig } from '../configs.js';

const perBatch = Number(process.argv[2] ?? 5000);
const rounds = Number(process.argv[3] ?? 40);
const PARTITIONS = 3;

const dir = mkdtempSync(join(tmpdir(), 'eventgate-bench-'));
writeFileSync(join(dir, 'gateway.yaml'), kafkaProxyConfig('127.0.0.1:9092', 'light-validated'));
const loaded = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });
// The plan holds what it read: the config's directory is not needed past the load (and not left behind).
rmSync(dir, { recursive: true, force: true });
if (!loaded.plan) throw new Error(`bench config does not load: ${JSON.stringify(loaded.diagnostics)}`);
const route = new RouteRuntime(loaded.plan.routes.get('light-in')!, { brokers: new Map(), listeners: new Map(), logger: pino({ level: 'silent' }), instanceId: 'bench' });

/** A Produce v8 request as librdkafka writes it, one batch per partition. */
async function produceRequest(topic: string, first: number): Promise<Buffer> {
  const w = new Writer().int16(0).int16(8).int32(1).nullableString('rdkafka').nullableString(null).int16(-1).int32(30000).int32(1).string(topic).int32(PARTITIONS);
  for (let p = 0; p < PARTITIONS; p++) {
    const records: KafkaRecord[] = [];
    for (let i = 0; i < perBatch; i++) {
      const id = first + p * perBatch + i;
      const value = Buffer.from(JSON.stringify({ id, lumens: 640, sentAt: '2026-11-23T10:00:00Z' }));
      records.push({ attributes: 0, timestampDelta: 0, offsetDelta: i, key: null, value, headers: [] });
    }
    const now = BigInt(Date.now());
    const batch = await encodeBatch(
      {
        baseOffset: 0n,
        partitionLeaderEpoch: -1,
        magic: 2,
        crc: 0,
        attributes: 0,
        lastOffsetDelta: perBatch - 1,
        baseTimestamp: now,
        maxTimestamp: now,
        producerId: -1n,
        producerEpoch: -1,
        baseSequence: -1,
        recordCount: perBatch,
      },
      records,
      batchCompression,
    );
    w.int32(p).nullableBytes(batch);
  }
  return w.finish();
}

const ctx: GovernContext = { route: (t) => (t === 'light-validated' ? route : undefined), compression: batchCompression, remoteAddress: '127.0.0.1', broker: 'cluster' };

/** The cluster's Produce v8 response acknowledging every partition. */
function acknowledgement(topic: string): Buffer {
  const w = new Writer().int32(1).int32(1).string(topic).int32(PARTITIONS);
  for (let p = 0; p < PARTITIONS; p++)
    w.int32(p)
      .int16(0)
      .int64(BigInt(p * 1000))
      .int64(-1n)
      .int64(0n)
      .int32(0)
      .nullableString(null);
  return w.int32(0).finish();
}

/** µs of CPU per record over `rounds` requests (distinct requests, cycled). */
async function measure(topic: string): Promise<{ min: number; median: number }> {
  const requests = await Promise.all(Array.from({ length: 8 }, (_, i) => produceRequest(topic, i * PARTITIONS * perBatch)));
  const ack = acknowledgement(topic);
  const run = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const body = requests[i % requests.length]!;
      const g = await governProduce(readRequestHeader(body), body, ctx);
      if (!('forward' in g)) throw new Error('bench request was refused');
      g.pending?.answered(ack, 8);
    }
  };
  await run(Math.max(8, rounds / 4)); // warm-up: the JIT
  const samples: number[] = [];
  for (let s = 0; s < 9; s++) {
    const before = process.cpuUsage();
    await run(Math.ceil(rounds / 9));
    const used = process.cpuUsage(before);
    samples.push((used.user + used.system) / (Math.ceil(rounds / 9) * PARTITIONS * perBatch));
  }
  samples.sort((a, b) => a - b);
  return { min: +samples[0]!.toFixed(3), median: +samples[4]!.toFixed(3) };
}

const validated = await measure('light-validated');
const passThrough = await measure('light-plain');
process.stdout.write(`${JSON.stringify({ records_per_batch: perBatch, validated_cpu_us_per_record: validated, pass_through_cpu_us_per_record: passThrough })}\n`);
