/**
 * The kafka listener (a Kafka-protocol proxy) against the cluster itself: kcat (librdkafka)
 * produces a few hundred thousand small JSON records, or consumes them, once through the gateway
 * and once straight to librdkafka's mock cluster, in alternating rounds. Three figures, each its
 * own scenario so each has its target: pass-through produce, produce with a JSON Schema check of
 * every record, and consume.
 */
import { spawn } from 'node:child_process';
import { kafkaProxyConfig, lightRecordsFile } from '../configs.js';
import { cpuMs, startGateway, startKafka, type KafkaCluster, type RunningGateway } from '../processes.js';
import { median } from '../stats.js';
import { judge, type Scenario, type ScenarioResult } from '../scenario.js';

const PARTITIONS = 3;

/** Records per round: enough that kcat's start-up and metadata round trips are a small part. */
function recordCount(duration: number): number {
  return duration < 5 ? 100_000 : 1_000_000;
}

/** Runs kcat to completion; resolves with the wall-clock seconds it took. */
function timedKcat(args: string[], stdinFile?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const shell = `kcat ${args.map((a) => `'${a}'`).join(' ')}${stdinFile ? ` < '${stdinFile}'` : ''} > /dev/null`;
    const child = spawn('sh', ['-c', shell], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('close', (code) => (code === 0 ? resolve((performance.now() - started) / 1000) : reject(new Error(`kcat ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

type Side = 'direct' | 'proxy';
type Mode = 'produce' | 'validate' | 'consume';

interface Setup {
  kafka: KafkaCluster;
  gw: RunningGateway;
  records: string;
  count: number;
  address: Record<Side, string>;
}

async function setUp(duration: number): Promise<Setup> {
  const kafka = await startKafka({ brokers: 3, requestLog: false });
  const count = recordCount(duration);
  const records = lightRecordsFile(count);
  const gw = await startGateway(kafkaProxyConfig(kafka.bootstrap, 'light-validated'));
  return { kafka, gw, records, count, address: { direct: kafka.bootstrap, proxy: `127.0.0.1:${gw.port('kafka-in')}` } };
}

/** One round: records/s of kcat producing every record (to a new topic) or consuming a topic that has them. */
async function round(s: Setup, mode: Mode, side: Side, filled: string): Promise<number> {
  const produceProps = ['-X', 'linger.ms=5', '-X', 'queue.buffering.max.messages=2000000', '-q'];
  if (mode === 'consume') {
    return s.count / (await timedKcat(['-C', '-b', s.address[side], '-t', filled, '-o', 'beginning', '-e', '-q']));
  }
  // Through the proxy, only the topic its route names is validated; directly, the name makes no difference.
  const topic = mode === 'validate' ? 'light-validated' : s.kafka.topic('light-plain');
  await s.kafka.createTopic(topic, PARTITIONS).catch(() => {});
  return s.count / (await timedKcat(['-P', '-b', s.address[side], '-t', topic, ...produceProps], s.records));
}

function scenario(name: string, mode: Mode, describe: string, limit: number): Scenario {
  return {
    name,
    describe,
    async run({ duration }): Promise<ScenarioResult> {
      const s = await setUp(duration);
      try {
        await s.kafka.createTopic('light-validated', PARTITIONS);
        // The consume rounds read a topic that already holds every record.
        const filled = s.kafka.topic('light-filled');
        await s.kafka.createTopic(filled, PARTITIONS);
        await timedKcat(['-P', '-b', s.address.direct, '-t', filled, '-q'], s.records);
        // Warm-up: connections, the JIT, the cluster's first segments.
        await round(s, mode, 'proxy', filled);
        await round(s, mode, 'direct', filled);
        // An odd number, 3 to 7: with an even one the (nearest-rank) median is the lower of the two
        // middle rounds, and the default run (6 rounds) reported its worse middle pair.
        const fit = Math.max(3, Math.min(7, Math.floor(duration / 1.5)));
        const rounds = fit % 2 === 1 ? fit : fit + 1;
        const rates: Record<Side, number[]> = { direct: [], proxy: [] };
        const ratios: number[] = [];
        /** Gateway CPU per record in the proxy rounds: steadier than throughput on a shared machine. */
        const cpuPerRecord: number[] = [];
        const pid = s.gw.process.pid!;
        for (let i = 0; i < rounds; i++) {
          const order: Side[] = i % 2 === 0 ? ['direct', 'proxy'] : ['proxy', 'direct'];
          for (const side of order) {
            const cpuBefore = cpuMs(pid);
            rates[side].push(await round(s, mode, side, filled));
            if (side === 'proxy') cpuPerRecord.push(((cpuMs(pid) - cpuBefore) * 1000) / s.count);
          }
          ratios.push(rates.proxy[i]! / rates.direct[i]!);
        }
        return judge({
          metric: 'records/s',
          value: Math.round(median(rates.proxy)),
          baseline: { name: 'kcat straight to the cluster', value: Math.round(median(rates.direct)) },
          ratio: median(ratios),
          p50_ms: null,
          p99_ms: null,
          records: s.count,
          rounds,
          gateway_cpu_us_per_record: median(cpuPerRecord),
          slices: { proxy: rates.proxy.map(Math.round), direct: rates.direct.map(Math.round) },
          partitions: PARTITIONS,
          target: { field: 'ratio', op: '>=', limit },
        });
      } finally {
        await s.gw.stop();
        await s.kafka.stop();
      }
    },
  };
}

export const kafkaProxy = scenario('kafka-proxy', 'produce', 'kcat producing small records through the kafka listener (no route on the topic), records/s vs straight to the mock cluster', 0.9);
export const kafkaProxyValidate = scenario('kafka-proxy-validate', 'validate', 'the same with a JSON Schema check of every record (route on the topic, onInvalid: reject)', 0.7);
export const kafkaProxyConsume = scenario('kafka-proxy-consume', 'consume', 'kcat consuming a topic through the kafka listener, records/s vs straight from the mock cluster', 0.9);
