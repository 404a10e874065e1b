import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { crc32c } from '@node-rs/crc32';
import { createRequire } from 'node:module';
import type kafkajsModule from 'kafkajs';
import type { KafkaMessage } from 'kafkajs';

type Kafka = InstanceType<typeof kafkajsModule.Kafka>;
import { CONSUMER_DEFAULTS, PRODUCER_DEFAULTS, type KafkaSettings } from '../../src/kinds/brokers/kafka.js';
import { batchCompression, decodeRecords, encodeBatch, isControlBatch, type KafkaRecord, type RawBatch, type RecordHeader, splitBatches } from '../../src/codecs/record-batch.js';
import { repoRoot, untilReached } from './gateway.js';
import { killOnExit } from './reaper.js';

/**
 * A Kafka cluster for the tests. By default librdkafka's mock cluster (a real Kafka protocol
 * implementation, in a small C program compiled on first use) that can be taken down and up;
 * with KAFKA_BROKERS set, that real cluster, where outages cannot be injected.
 */
export interface KafkaCluster {
  /** Comma-separated bootstrap servers. */
  bootstrap: string;
  /** The mock cluster's process (undefined for a real cluster): the benchmarks read its CPU time. */
  pid?: number;
  /** False against a real cluster (KAFKA_BROKERS): down()/up() are not available there. */
  canInjectOutages: boolean;
  /**
   * `consumer:` options for gateway configs that suit this cluster: short sessions on the mock
   * (whose group coordinator waits 3 s for a first join, so sessions must outlast that), the
   * brokers' minimum on a real cluster; short fetch waits so tests do not idle.
   */
  consumerYaml: string;
  /** A topic name no other test uses. */
  topic(prefix: string): string;
  createTopic(name: string, partitions: number): Promise<void>;
  /** Broker `id` (default: every broker) closes its connections and refuses new ones. */
  down(id?: number): Promise<void>;
  up(id?: number): Promise<void>;
  /** The next `count` requests of Kafka API `apiKey` (e.g. 11, JoinGroup) fail with error `code` (mock only). */
  failRequests(apiKey: number, count: number, code: number): Promise<void>;
  /** Requests of Kafka API `apiKey` no longer fail: the failures failRequests left are dropped (mock only). */
  clearFailures(apiKey: number): Promise<void>;
  /** The same, for the requests broker `id` receives only: one broker fails while the others answer (mock only). */
  failBrokerRequests(id: number, apiKey: number, count: number, code: number): Promise<void>;
  /** Broker `id` leads `partition` of `topic` from now on; the former leader answers NOT_LEADER_FOR_PARTITION (mock only). */
  moveLeader(topic: string, partition: number, id: number): Promise<void>;
  /** Broker `id` answers every request `ms` later from now on (0: at once again), still taking each as it arrives (mock only). */
  delayAnswers(id: number, ms: number): Promise<void>;
  /** Metadata answers UNKNOWN_TOPIC_OR_PARTITION for `topic`, as a cluster with auto-create off does for a topic that does not exist (mock only). */
  hideTopic(topic: string): Promise<void>;
  /** Metadata answers `topic` again after hideTopic, as once it was created (mock only). */
  revealTopic(topic: string): Promise<void>;
  /** Produce requests the cluster received since it started (mock only: read from its debug log). */
  produceRequests(): number;
  /** JoinGroup requests the cluster received since it started (mock only, from its debug log; NaN elsewhere). */
  joinRequests(): number;
  /** OffsetCommit requests the cluster received since it started (mock only, from its debug log; NaN elsewhere). */
  commitRequests(): number;
  /** Requests of the Kafka API librdkafka names `api` (`ListOffsets`, `Fetch`) the cluster received since it started (mock only, from its debug log; NaN elsewhere). */
  requests(api: string): number;
  /** How many members left `group` with a LeaveGroup request (mock only, from its debug log; NaN elsewhere). */
  leaves(group: string): number;
  /**
   * The consumer groups the cluster has, sorted. The mock answers no ListGroups request
   * (librdkafka 2.0's mock cluster lacks the API): there, the groups it created, from its debug
   * log (a group is created by its first JoinGroup); on a real cluster, ListGroups.
   */
  groups(): Promise<string[]>;
  stop(): Promise<void>;
}

const SOURCE = join(repoRoot, 'test', 'kafka', 'mock-cluster.c');

/** Compiles test/kafka/mock-cluster.c once per source version (cached in test/.build). */
export function mockClusterBinary(): string {
  const source = readFileSync(SOURCE);
  const dir = join(repoRoot, 'test', '.build');
  const bin = join(dir, `mock-cluster-${createHash('sha256').update(source).digest('hex').slice(0, 12)}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  // Test files run in parallel: compile to a private name, then rename atomically.
  const tmp = `${bin}.${process.pid}.tmp`;
  execFileSync('gcc', ['-O1', '-Wall', '-o', tmp, SOURCE, '-lrdkafka'], { stdio: ['ignore', 'inherit', 'inherit'] });
  renameSync(tmp, bin);
  return bin;
}

/**
 * `requestLog: false` leaves the mock's per-request debug log off (produceRequests() is then NaN):
 * writing a line per request costs the mock most of its throughput, which matters to the benchmarks.
 */
export async function startKafka(options: { brokers?: number; requestLog?: boolean } = {}): Promise<KafkaCluster> {
  const external = process.env.KAFKA_BROKERS;
  return external ? externalCluster(external) : mockCluster(options.brokers ?? 3, options.requestLog ?? true);
}

const uniqueTopic = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

async function mockCluster(brokers: number, requestLog: boolean): Promise<KafkaCluster> {
  const env = { ...process.env };
  // The mock logs each request it receives at debug level: produceRequests() counts them.
  if (requestLog) env.MOCK_DEBUG = 'mock';
  else delete env.MOCK_DEBUG;
  const child: ChildProcess = spawn(mockClusterBinary(), [String(brokers)], { stdio: ['pipe', 'pipe', 'pipe'], env });
  let produceRequests = 0;
  let joinRequests = 0;
  let commitRequests = 0;
  const byApi = new Map<string, number>();
  const leaves = new Map<string, number>();
  const groups = new Set<string>();
  const err = createInterface({ input: child.stderr! });
  let stderrTail: string[] = [];
  err.on('line', (l) => {
    if (l.includes('Received ProduceRequest')) produceRequests++;
    if (l.includes('Received JoinGroupRequest')) joinRequests++;
    if (l.includes('Received OffsetCommitRequest')) commitRequests++;
    const api = /Received (\w+)RequestV\d/.exec(l)?.[1];
    if (api !== undefined) byApi.set(api, (byApi.get(api) ?? 0) + 1);
    const leave = /Member \S+ is leaving group (\S+)/.exec(l);
    const group = /Mock consumer group (\S+) with/.exec(l);
    if (group) groups.add(group[1]!);
    if (leave) leaves.set(leave[1]!, (leaves.get(leave[1]!) ?? 0) + 1);
    else if (!l.includes('|MOCK|')) stderrTail = [...stderrTail.slice(-20), l];
  });
  const lines: Interface = createInterface({ input: child.stdout! });
  const replies: ((line: string) => void)[] = [];
  const first = new Promise<string>((resolve, reject) => {
    replies.push(resolve);
    child.once('exit', (code) => reject(new Error(`mock cluster exited (${code}): ${stderrTail.join('\n')}`)));
  });
  lines.on('line', (l) => replies.shift()?.(l));
  const bootstrap = await first;
  const command = async (cmd: string) => {
    const reply = new Promise<string>((r) => replies.push(r));
    child.stdin!.write(`${cmd}\n`);
    const answer = await reply;
    if (answer !== 'ok') throw new Error(`mock cluster: '${cmd}' → ${answer}`);
  };
  killOnExit(() => child.kill('SIGKILL'));
  return {
    bootstrap,
    pid: child.pid,
    canInjectOutages: true,
    consumerYaml: '{ sessionTimeoutMs: 4000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 4000, maxWaitMs: 100 }',
    topic: uniqueTopic,
    createTopic: (name, partitions) => command(`topic ${name} ${partitions}`),
    down: (id = -1) => command(`down ${id}`),
    up: (id = -1) => command(`up ${id}`),
    failRequests: (apiKey, count, code) => command(`errors ${apiKey} ${count} ${code}`),
    clearFailures: (apiKey) => command(`clear ${apiKey}`),
    failBrokerRequests: (id, apiKey, count, code) => command(`broker-errors ${id} ${apiKey} ${count} ${code}`),
    moveLeader: (topic, partition, id) => command(`leader ${topic} ${partition} ${id}`),
    hideTopic: (topic) => command(`missing ${topic}`),
    revealTopic: (topic) => command(`found ${topic}`),
    delayAnswers: (id, ms) => command(`rtt ${id} ${ms}`),
    produceRequests: () => (requestLog ? produceRequests : Number.NaN),
    joinRequests: () => (requestLog ? joinRequests : Number.NaN),
    commitRequests: () => (requestLog ? commitRequests : Number.NaN),
    requests: (api) => (requestLog ? (byApi.get(api) ?? 0) : Number.NaN),
    leaves: (group) => (requestLog ? (leaves.get(group) ?? 0) : Number.NaN),
    groups: async () => {
      if (!requestLog) throw new Error("groups() needs the mock's request log (startKafka({ requestLog: true }))");
      return [...groups].sort();
    },
    async stop() {
      if (child.exitCode !== null) return;
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
}

function externalCluster(bootstrap: string): KafkaCluster {
  const unavailable = () => Promise.reject(new Error('outages cannot be injected into a real cluster (KAFKA_BROKERS is set)'));
  return {
    bootstrap,
    canInjectOutages: false,
    consumerYaml: '{ sessionTimeoutMs: 6000, heartbeatIntervalMs: 1000, rebalanceTimeoutMs: 6000, maxWaitMs: 100 }',
    topic: uniqueTopic,
    async createTopic(name, partitions) {
      const admin = testClient(bootstrap).admin();
      await admin.connect();
      try {
        await admin.createTopics({ topics: [{ topic: name, numPartitions: partitions }], waitForLeaders: true });
      } catch (err) {
        // A cluster that refuses CreateTopics (ACLs, or a broker without the API) may still create
        // topics on first use; the topic then has the cluster's default partition count.
        process.stderr.write(`createTopic ${name}: ${(err as Error).message}; relying on automatic topic creation\n`);
        await admin.fetchTopicMetadata({ topics: [name] });
      } finally {
        await admin.disconnect();
      }
    },
    down: unavailable,
    up: unavailable,
    failRequests: unavailable,
    clearFailures: unavailable,
    failBrokerRequests: unavailable,
    moveLeader: unavailable,
    hideTopic: unavailable,
    revealTopic: unavailable,
    delayAnswers: unavailable,
    produceRequests: () => Number.NaN,
    joinRequests: () => Number.NaN,
    commitRequests: () => Number.NaN,
    requests: () => Number.NaN,
    leaves: () => Number.NaN,
    async groups() {
      const admin = testClient(bootstrap).admin();
      await admin.connect();
      try {
        return (await admin.listGroups()).groups.map((g) => g.groupId).sort();
      } finally {
        await admin.disconnect();
      }
    },
    async stop() {},
  };
}

/** A kafkajs client for checks the tests make themselves (committed offsets). */
export function testClient(bootstrap: string): Kafka {
  // Required when first used: importing kafkajs (~150 ms of CPU) would be paid by the ~30 files that load this helper without a kafkajs client.
  const { Kafka, logLevel } = createRequire(import.meta.url)('kafkajs') as typeof kafkajsModule;
  return new Kafka({ clientId: 'eventgate-tests', brokers: bootstrap.split(','), logLevel: logLevel.NOTHING });
}

/** Committed offset per partition of `group` on `topic` ('-1' where none). */
export async function committedOffsets(bootstrap: string, group: string, topic: string): Promise<Record<number, string>> {
  const admin = testClient(bootstrap).admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return Object.fromEntries(t!.partitions.map((p) => [p.partition, p.offset]));
  } finally {
    await admin.disconnect();
  }
}

/** The next offset to be written, per partition of `topic`. */
export async function endOffsets(bootstrap: string, topic: string): Promise<Record<number, string>> {
  const admin = testClient(bootstrap).admin();
  await admin.connect();
  try {
    const parts = await admin.fetchTopicOffsets(topic);
    return Object.fromEntries(parts.map((p) => [p.partition, p.high]));
  } finally {
    await admin.disconnect();
  }
}

// ---- kcat: an independent client (librdkafka) -------------------------------------------------

export interface KcatRecord {
  topic: string;
  partition: number;
  offset: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  /** Every header as the record has it, in order: a repeated name once per value. */
  headerList: [string, string][];
  ts: number;
}

export interface ProduceRecord {
  key?: string;
  value: string;
  headers?: Record<string, string>;
}

/**
 * Produces records with kcat, in order. kcat takes headers per invocation, so consecutive records
 * with the same headers share one run.
 */
export async function kcatProduce(bootstrap: string, topic: string, records: ProduceRecord[], options: { compression?: string; lingerMs?: number } = {}): Promise<void> {
  let i = 0;
  while (i < records.length) {
    const headers = records[i]!.headers ?? {};
    const same = JSON.stringify(headers);
    let j = i;
    while (j < records.length && JSON.stringify(records[j]!.headers ?? {}) === same) j++;
    const group = records.slice(i, j);
    for (const r of group) {
      if (r.value.includes('\n') || r.key?.includes('\t') || r.key?.includes('\n')) throw new Error('kcatProduce: keys and values are line based');
    }
    const args = ['-P', '-b', bootstrap, '-t', topic, '-K', '\t', '-q'];
    // librdkafka compresses each batch with this codec (kcat -z).
    if (options.compression) args.push('-z', options.compression);
    // Records read within lingerMs share a batch (per partition): kcat's input may otherwise be cut into several.
    if (options.lingerMs !== undefined) args.push('-X', `linger.ms=${options.lingerMs}`);
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}=${v}`);
    await runKcat(args, group.map((r) => `${r.key ?? ''}\t${r.value}\n`).join(''));
    i = j;
  }
}

/**
 * Writes `records` to `partition` of `topic` as ONE record batch (the gateway's batch codec, in a
 * Produce request of its own), for cases where a batch boundary matters (a route's webhook window
 * does not reach past its batch). kcat gets one batch only with a long linger.ms, which it then
 * waits out in full before it exits (1 s per call with 1000). Sent to each broker of the cluster
 * in turn until the partition's leader takes it (the others answer NOT_LEADER_OR_FOLLOWER, 6).
 */
export async function produceOneBatch(kafka: KafkaCluster, topic: string, records: ProduceRecord[], partition = 0): Promise<void> {
  const batch = await encodedBatch(
    records.map((r, i) => ({
      attributes: 0,
      timestampDelta: i,
      offsetDelta: i,
      key: r.key === undefined ? null : Buffer.from(r.key),
      value: Buffer.from(r.value),
      headers: Object.entries(r.headers ?? {}).map(([key, value]) => ({ key, value: Buffer.from(value) })),
    })),
  );
  const answers: number[] = [];
  for (const broker of kafka.bootstrap.split(',')) {
    const { errorCode } = await produceRaw(broker, { version: 3, transactionalId: null, topic, partition, batch });
    if (errorCode === 0) return;
    answers.push(errorCode);
  }
  throw new Error(`produceOneBatch: no broker of ${kafka.bootstrap} took the batch for ${topic}/${partition} (error codes ${answers.join(', ')})`);
}

/** Consumes `count` records from the beginning of `topic` (rejects after timeoutMs with what it had). */
export async function kcatConsume(bootstrap: string, topic: string, count: number, timeoutMs = 15000): Promise<KcatRecord[]> {
  const out = await runKcat(['-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-c', String(count), '-J', '-q'], undefined, timeoutMs);
  return parseKcat(out);
}

/** Every record on `topic` right now: kcat reads to the end of each partition and exits. */
export async function kcatConsumeAll(bootstrap: string, topic: string, timeoutMs = 15000): Promise<KcatRecord[]> {
  const out = await runKcat(['-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-e', '-J', '-q'], undefined, timeoutMs);
  return parseKcat(out);
}

function parseKcat(out: string): KcatRecord[] {
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const j = JSON.parse(l) as { topic: string; partition: number; offset: number; key: string | null; payload: string | null; headers?: string[]; ts: number };
      const entries: [string, string][] = [];
      for (let i = 0; i + 1 < (j.headers ?? []).length; i += 2) entries.push([j.headers![i]!, j.headers![i + 1]!]);
      // fromEntries: a header named __proto__ is kept as one (an assignment would set the prototype).
      const headers = Object.fromEntries(entries);
      return { topic: j.topic, partition: j.partition, offset: j.offset, key: j.key, value: j.payload, headers, headerList: entries, ts: j.ts };
    });
}

async function runKcat(args: string[], input: string | undefined, timeoutMs = 15000): Promise<string> {
  const r = await runProcess('kcat', args, input, timeoutMs);
  if (r.code !== 0) throw new Error(`kcat ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/**
 * kcat producing `values` (one per line) with extra librdkafka properties, without retries unless
 * idempotent (which needs them); resolves with its exit code and output: failed deliveries are on stderr.
 */
export function kcatProduceLines(bootstrap: string, topic: string, values: string[], props: string[] = []): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const retries = props.some((p) => p.startsWith('enable.idempotence')) ? [] : ['-X', 'message.send.max.retries=0'];
  return runProcess('kcat', ['-P', '-b', bootstrap, '-t', topic, ...props.flatMap((p) => ['-X', p]), ...retries], values.map((v) => `${v}\n`).join(''), 30000);
}

/** Runs a command to completion with `input` on stdin (kcat, the python client); rejects only when it times out. */
export function runProcess(cmd: string, args: string[], input = '', timeoutMs = 15000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} timed out after ${timeoutMs} ms; got:\n${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A command that does not read its stdin (kcat -C) may have closed it, or exited, before the
    // write: EPIPE then says nothing its exit code and output do not.
    child.stdin.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin.end(input);
  });
}

/** Produces one record of `value` to `partition` of `topic` with a kafkajs producer of its own. */
export async function produceTo(bootstrap: string, topic: string, partition: number, value: string): Promise<void> {
  const producer = testClient(bootstrap).producer();
  await producer.connect();
  try {
    await producer.send({ topic, messages: [{ partition, value }] });
  } finally {
    await producer.disconnect();
  }
}

// ---- transaction markers: what a transactional producer leaves in a partition ------------------

/**
 * Appends a transaction marker (a control batch with one COMMIT record, as a transaction
 * coordinator writes after a transactional producer's records) to `partition` of `topic`: it
 * takes an offset, yet consumers must never deliver it. Neither kcat nor the python client can
 * write transactions, and librdkafka's mock cluster writes no markers of its own, so the batch is
 * framed here and sent in a raw Produce request (v3) to `broker` (host:port), which must lead the
 * partition: use a one-broker cluster.
 */
export async function appendCommitMarker(broker: string, topic: string, partition: number): Promise<void> {
  // Control record: key = version 0, type 1 (COMMIT); value = version 0, coordinator epoch 0.
  const batch = recordBatch({ attributes: 0x30, key: Buffer.from([0, 0, 0, 1]), value: Buffer.from([0, 0, 0, 0, 0, 0]) }); // transactional | control
  const { errorCode } = await produceRaw(broker, { version: 3, transactionalId: null, topic, partition, batch });
  if (errorCode !== 0) throw new Error(`the cluster refused the transaction marker: error ${errorCode}`);
}

/** Headers that write `count` as a record's header count and only `real` after it: what a damaged log or a hostile producer holds. */
export function claimingHeaders(count: number, real: RecordHeader[] = []): RecordHeader[] {
  return { length: count, [Symbol.iterator]: () => real[Symbol.iterator]() } as unknown as RecordHeader[];
}

/** Sends `bytes` to `partition` of `topic` as it is, in a Produce request of its own: librdkafka's mock cluster stores a batch without reading its records. */
export async function produceBatch(kafka: KafkaCluster, topic: string, partition: number, bytes: Buffer): Promise<void> {
  const { errorCode } = await produceRaw(kafka.bootstrap, { version: 3, transactionalId: null, topic, partition, batch: bytes });
  assert.equal(errorCode, 0, 'the cluster took the batch');
}

/** The first `count` records of a dead-letter `topic` (of all its partitions), read from its beginning (readRecords). */
export function deadLetters(kafka: KafkaCluster, topic: string, count: number): Promise<KafkaMessage[]> {
  return readRecords(kafka, topic, count);
}

/** The partition numbers of `topic`, as the cluster's metadata lists them. */
export async function partitionsOf(bootstrap: string, topic: string): Promise<number[]> {
  const admin = testClient(bootstrap).admin();
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return topics[0]!.partitions.map((p) => p.partitionId).sort((a, b) => a - b);
  } finally {
    await admin.disconnect();
  }
}

/**
 * The first `count` records of `topic` (of `partitions` together, by default every partition
 * the metadata lists; from offset 0, control batches skipped), byte for byte, shaped as kafkajs
 * hands them (`value` and header values as Buffers, a repeated header name as an array), in
 * partition order, through Fetch requests of this process's own: no consumer group, so none of
 * the 3 s the mock holds a new group's first join. Each partition is asked of each broker of the
 * cluster in turn until its leader answers; rejects after `timeoutMs` with how many it had.
 * `onBatch` sees each batch as stored (its codec in its attributes). The records are decoded by
 * src/codecs/record-batch: a decoder other than the encoder of what the gateway's brokers write
 * (kafkajs'), but the module the kafka listener writes edited batches with; read those with
 * kafkajs or kcat, which are independent of it.
 */
export async function readRecords(
  kafka: KafkaCluster,
  topic: string,
  count: number,
  { partitions, timeoutMs = 15000, onBatch }: { partitions?: number[]; timeoutMs?: number; onBatch?: (batch: RawBatch) => void } = {},
): Promise<KafkaMessage[]> {
  const deadline = Date.now() + timeoutMs;
  partitions ??= await partitionsOf(kafka.bootstrap, topic);
  const brokers = kafka.bootstrap.split(',');
  const read = partitions.map((partition) => ({ partition, offset: 0n, broker: 0, got: [] as KafkaMessage[] }));
  const total = () => read.reduce((n, p) => n + p.got.length, 0);
  while (total() < count) {
    if (Date.now() > deadline) throw new Error(`readRecords ${topic}: ${total()} of ${count} records within ${timeoutMs} ms`);
    for (const p of read) {
      const answer = await fetchPartition(brokers[p.broker]!, topic, p.partition, p.offset);
      if (answer.errorCode === 6 || answer.errorCode === 3) {
        // NOT_LEADER_OR_FOLLOWER, or UNKNOWN_TOPIC_OR_PARTITION from a broker that does not hold it: the next broker.
        p.broker = (p.broker + 1) % brokers.length;
        if (p.broker === 0) await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      if (answer.errorCode !== 0) throw new Error(`readRecords ${topic}/${p.partition}: Fetch answered error ${answer.errorCode}`);
      for (const batch of splitBatches(answer.records)) {
        onBatch?.(batch);
        if (!isControlBatch(batch.attributes)) {
          for (const r of await decodeRecords(batch, batchCompression)) {
            const at = batch.baseOffset + BigInt(r.offsetDelta);
            if (at < p.offset || total() >= count) continue;
            const headers: Record<string, Buffer | Buffer[]> = {};
            for (const h of r.headers) {
              const value = h.value ?? Buffer.alloc(0);
              const had = headers[h.key];
              headers[h.key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
            }
            p.got.push({ offset: String(at), key: r.key, value: r.value, headers, timestamp: String(batch.baseTimestamp + BigInt(r.timestampDelta)), attributes: r.attributes } as KafkaMessage);
          }
        }
        p.offset = batch.baseOffset + BigInt(batch.lastOffsetDelta) + 1n;
      }
    }
  }
  return read.flatMap((p) => p.got);
}

/** One Fetch (v4) of `partition` of `topic` from `offset` on `broker`: its error code and records field. */
async function fetchPartition(broker: string, topic: string, partition: number, offset: bigint): Promise<{ errorCode: number; records: Buffer }> {
  const int64 = (n: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigInt64BE(n);
    return b;
  };
  const request = framed(
    Buffer.concat([
      int16(1), // Fetch
      int16(4),
      int32(1),
      kafkaString('eventgate-tests'),
      int32(-1), // replica id: a consumer
      int32(100), // max wait
      int32(1), // min bytes
      int32(256 * 1024 * 1024), // max bytes
      Buffer.from([0]), // read uncommitted
      int32(1),
      kafkaString(topic),
      int32(1),
      int32(partition),
      int64(offset),
      int32(256 * 1024 * 1024), // partition max bytes
    ]),
  );
  const [host, port] = [broker.slice(0, broker.lastIndexOf(':')), Number(broker.slice(broker.lastIndexOf(':') + 1))];
  const socket = connect(port, host);
  try {
    socket.write(request);
    const chunks: Buffer[] = [];
    let length = 0;
    let responseSize = -1; // known once its first 4 bytes are in
    for await (const chunk of socket) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (responseSize < 0 && length >= 4) responseSize = Buffer.concat(chunks).readInt32BE(0);
      if (responseSize >= 0 && length >= 4 + responseSize) break;
    }
    const got = Buffer.concat(chunks);
    // Response v4: size, correlation id, throttle time, [topic, [partition, error code, high
    // watermark, last stable offset, [aborted transactions], records]] (one topic, one partition).
    let at = 4 + 4 + 4 + 4;
    at += 2 + got.readInt16BE(at) + 4 + 4;
    const errorCode = got.readInt16BE(at);
    at += 2 + 8 + 8;
    const aborted = got.readInt32BE(at);
    at += 4 + Math.max(aborted, 0) * 16;
    const size = got.readInt32BE(at);
    return { errorCode, records: size <= 0 ? Buffer.alloc(0) : got.subarray(at + 4, at + 4 + size) };
  } finally {
    socket.destroy();
  }
}

/** A v2 batch of `records` (their offset deltas as given) written with the gateway's own batch codec: no codec (0) or gzip (1). */
export function encodedBatch(records: KafkaRecord[], codec: 0 | 1 = 0): Promise<Buffer> {
  const now = BigInt(Date.now());
  return encodeBatch(
    {
      baseOffset: 0n,
      partitionLeaderEpoch: -1,
      magic: 2,
      crc: 0,
      attributes: codec,
      lastOffsetDelta: records.length - 1,
      baseTimestamp: now,
      maxTimestamp: now + BigInt(records.length - 1),
      producerId: -1n,
      producerEpoch: -1,
      baseSequence: -1,
      recordCount: records.length,
    },
    records,
    batchCompression,
  );
}

/**
 * A record batch (magic 2) of one record (or one per value of `values`, each with `key`), framed
 * here byte by byte: `attributes` (0x10 transactional, 0x20 control), the producer fields a
 * transactional producer sets, or -1.
 */
export function recordBatch(o: { attributes: number; key: Buffer | null; value: Buffer | Buffer[]; producerId?: bigint; producerEpoch?: number; baseSequence?: number }): Buffer {
  const varint = (n: number) => {
    let z = n >= 0 ? n * 2 : -n * 2 - 1;
    const out: number[] = [];
    while (z >= 0x80) {
      out.push((z & 0x7f) | 0x80);
      z >>>= 7;
    }
    out.push(z);
    return Buffer.from(out);
  };
  const key = o.key === null ? varint(-1) : Buffer.concat([varint(o.key.length), o.key]);
  const values = Array.isArray(o.value) ? o.value : [o.value];
  const record = Buffer.concat(
    values.map((value, i) => {
      const body = Buffer.concat([Buffer.from([0]), varint(0), varint(i), key, varint(value.length), value, varint(0)]);
      return Buffer.concat([varint(body.length), body]);
    }),
  );
  const afterCrc = Buffer.alloc(2 + 4 + 8 + 8 + 8 + 2 + 4 + 4);
  let at = afterCrc.writeInt16BE(o.attributes, 0);
  at = afterCrc.writeInt32BE(values.length - 1, at); // lastOffsetDelta
  const now = BigInt(Date.now());
  at = afterCrc.writeBigInt64BE(now, at);
  at = afterCrc.writeBigInt64BE(now, at);
  at = afterCrc.writeBigInt64BE(o.producerId ?? -1n, at);
  at = afterCrc.writeInt16BE(o.producerEpoch ?? -1, at);
  at = afterCrc.writeInt32BE(o.baseSequence ?? -1, at);
  afterCrc.writeInt32BE(values.length, at); // records
  const crcd = Buffer.concat([afterCrc, record]);
  const head = Buffer.alloc(8 + 4 + 4 + 1 + 4);
  head.writeBigInt64BE(0n, 0);
  head.writeInt32BE(4 + 1 + 4 + crcd.length, 8);
  head.writeInt32BE(-1, 12); // partitionLeaderEpoch
  head.writeInt8(2, 16); // magic
  head.writeUInt32BE(crc32c(crcd), 17);
  return Buffer.concat([head, crcd]);
}

// ---- raw requests: tests that speak the Kafka protocol byte by byte --------------------------

const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
/** A nullable STRING: its length as an int16, then its bytes (-1 for null). */
const kafkaString = (s: string | null) => (s === null ? int16(-1) : Buffer.concat([int16(Buffer.byteLength(s)), Buffer.from(s)]));
/** A request (header and body) with the size prefix a connection carries it with. */
const framed = (request: Buffer) => Buffer.concat([int32(request.length), request]);

/** A topic's entry of a Produce request: its partitions' batches, in the order given. */
export interface ProduceTopicEntry {
  name: string;
  partitions: { index: number; batch: Buffer }[];
}

/**
 * A Produce request (v3 to v8) of `batch` to one partition of `topic`, size prefix included; with
 * `topics`, those entries instead (a hand-made client's: a partition or a topic may repeat).
 */
export function produceRequest(
  o: ({ topic: string; batch: Buffer; partition?: number } | { topics: ProduceTopicEntry[] }) & {
    version?: number;
    correlationId?: number;
    clientId?: string;
    transactionalId?: string | null;
    acks?: number;
  },
): Buffer {
  const topics = 'topics' in o ? o.topics : [{ name: o.topic, partitions: [{ index: o.partition ?? 0, batch: o.batch }] }];
  return framed(
    Buffer.concat([
      int16(0), // Produce
      int16(o.version ?? 3),
      int32(o.correlationId ?? 1),
      kafkaString(o.clientId ?? 'eventgate-tests'),
      kafkaString(o.transactionalId ?? null),
      int16(o.acks ?? 1),
      int32(10000), // timeout
      int32(topics.length),
      ...topics.flatMap((t) => [kafkaString(t.name), int32(t.partitions.length), ...t.partitions.flatMap((p) => [int32(p.index), int32(p.batch.length), p.batch])]),
    ]),
  );
}

/** A Metadata v1 request for no topic (the brokers only), size prefix included. */
export function metadataRequest(correlationId: number, clientId: string): Buffer {
  return framed(Buffer.concat([int16(3), int16(1), int32(correlationId), kafkaString(clientId), int32(0)]));
}

/**
 * Sends one Produce request (v3 to v8, acks 1 unless given: never 0, which is not answered) of
 * `batch` to `broker` (host:port) on a connection of its own; resolves with the first partition's
 * error code and (v8) error message.
 */
export async function produceRaw(
  broker: string,
  o: { version: number; transactionalId: string | null; topic: string; partition: number; batch: Buffer; acks?: number },
): Promise<{ errorCode: number; errorMessage: string | null }> {
  const [first] = await producePartitions(broker, { ...o, topics: [{ name: o.topic, partitions: [{ index: o.partition, batch: o.batch }] }] });
  return { errorCode: first!.errorCode, errorMessage: first!.errorMessage };
}

/**
 * A Produce request of the `topics` entries given (produceRequest: a partition or a topic may
 * repeat); resolves with every partition's answer, in the order of the response.
 */
export async function producePartitions(broker: string, o: { version: number; topics: ProduceTopicEntry[]; transactionalId?: string | null; acks?: number }): Promise<ProducePartitionAnswer[]> {
  const [host, port] = [broker.slice(0, broker.lastIndexOf(':')), Number(broker.slice(broker.lastIndexOf(':') + 1))];
  const socket = connect(port, host);
  try {
    socket.write(produceRequest(o));
    let got = Buffer.alloc(0);
    for await (const chunk of socket) {
      got = Buffer.concat([got, chunk as Buffer]);
      if (got.length >= 4 && got.length >= 4 + got.readInt32BE(0)) break;
    }
    // Response: correlation id, [topic, [partition, error code, base offset, (v2+) log append
    // time, (v5+) log start offset, (v8) record errors, error message]].
    const partitions: ProducePartitionAnswer[] = [];
    let at = 4 + 4;
    const topics = got.readInt32BE(at);
    at += 4;
    for (let t = 0; t < topics; t++) {
      const topicLen = got.readInt16BE(at);
      const topic = got.toString('utf8', at + 2, at + 2 + topicLen);
      at += 2 + topicLen;
      const count = got.readInt32BE(at);
      at += 4;
      for (let p = 0; p < count; p++) {
        const index = got.readInt32BE(at);
        const errorCode = got.readInt16BE(at + 4);
        at += 4 + 2 + 8 + (o.version >= 2 ? 8 : 0) + (o.version >= 5 ? 8 : 0);
        let errorMessage: string | null = null;
        if (o.version >= 8) {
          const recordErrors = got.readInt32BE(at);
          at += 4;
          for (let i = 0; i < recordErrors; i++) {
            at += 4;
            const n = got.readInt16BE(at);
            at += 2 + Math.max(n, 0);
          }
          const n = got.readInt16BE(at);
          errorMessage = n < 0 ? null : got.toString('utf8', at + 2, at + 2 + n);
          at += 2 + Math.max(n, 0);
        }
        partitions.push({ topic, index, errorCode, errorMessage });
      }
    }
    return partitions;
  } finally {
    socket.destroy();
  }
}

/** One partition of a Produce response, as producePartitions reads it. */
export interface ProducePartitionAnswer {
  topic: string;
  index: number;
  errorCode: number;
  errorMessage: string | null;
}

/**
 * The Produce answers (v3 to v7) that arrive on `socket` from now on: `codes`, every answer's first
 * partition's error code in the order they came; `next()`, the next answer's code not yet taken
 * by next() (waiting for it).
 */
export function produceAnswers(socket: Socket): { codes: number[]; next(): Promise<number> } {
  const codes: number[] = [];
  let taken = 0;
  const waiting: ((code: number) => void)[] = [];
  let got = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    got = Buffer.concat([got, chunk]);
    while (got.length >= 4 && got.length >= 4 + got.readInt32BE(0)) {
      // Size, correlation id, [topic name, [partition, error code, ...]].
      const code = got.readInt16BE(4 + 4 + 4 + 2 + got.readInt16BE(4 + 4 + 4) + 4 + 4);
      codes.push(code);
      got = got.subarray(4 + got.readInt32BE(0));
      const w = waiting.shift();
      if (w) w(codes[taken++]!);
    }
  });
  return { codes, next: () => (taken < codes.length ? Promise.resolve(codes[taken++]!) : new Promise((resolve) => waiting.push(resolve))) };
}

/** A record of a keyed test stream (KeyedStream): its key `k<i % keys>` and its number `i`. */
export interface Numbered {
  k: string;
  i: number;
}

/**
 * A kafka broker's `consumer` for tests that assert a member never rebalances (a hand-over): a
 * session of 15 s, which a loaded machine's stalls of several seconds do not end, where
 * `consumerYaml`'s 4 s (kept short so tests that change members rebalance fast) can.
 */
export const SESSIONS_OUTLAST_STALLS = '{ sessionTimeoutMs: 15000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 15000, maxWaitMs: 100 }';

/** Records keyed k0, k1, ... in turn and numbered from 0, for checking order per key across reloads. */
export class KeyedStream {
  /** How many records next() made. */
  produced = 0;

  constructor(readonly keys = 8) {}

  /** The next `n` records, numbered on from the last. */
  next(n: number): { key: string; value: string }[] {
    return Array.from({ length: n }, () => {
      const i = this.produced++;
      return { key: `k${i % this.keys}`, value: JSON.stringify({ k: `k${i % this.keys}`, i }) };
    });
  }

  /** Produces batches of 40 records to `topic` with kcat while `during` runs (reloads, say), and the batch then under way. */
  async produceWhile(bootstrap: string, topic: string, during: () => Promise<void>): Promise<void> {
    let producing = true;
    const stream = (async () => {
      while (producing) await kcatProduce(bootstrap, topic, this.next(40));
    })();
    try {
      await during();
    } finally {
      producing = false;
      await stream;
    }
  }

  /**
   * Until `delivered()` holds every record produced, copies aside (a count would pass early with
   * a record twice and another still to come, and show the repeat as a loss), for as long as
   * records keep coming.
   */
  async untilEachDelivered(delivered: () => Numbered[]): Promise<void> {
    await untilReached(() => new Set(delivered().map((v) => v.i)).size, this.produced, 'records delivered');
  }

  /** Once `delivered()` holds every record produced: each once, each key in the order `topic` holds them. */
  async assertDeliveredInTopicOrder(delivered: () => Numbered[], bootstrap: string, topic: string): Promise<void> {
    await this.untilEachDelivered(delivered);
    this.assertEachOnceInOrder(
      delivered(),
      (await kcatConsumeAll(bootstrap, topic)).map((r) => JSON.parse(r.value!) as Numbered),
      'the topic',
    );
  }

  /**
   * As assertEachOnceInOrder, but a record may come again where `redelivery` is the evidence the
   * test found of the documented at-least-once (a member that joined its group again, read from its
   * last commit): every record at least once, and each key's first copies in `input`'s order.
   * Without evidence (undefined), each record once, as there.
   */
  assertEachInOrder(delivered: readonly Numbered[], input: readonly Numbered[], redelivery: string | undefined, what = 'the input topic'): void {
    if (redelivery === undefined) return this.assertEachOnceInOrder(delivered, input, what);
    const seen = new Set<number>();
    const first = delivered.filter((v) => !seen.has(v.i) && seen.add(v.i));
    this.assertEachOnceInOrder(first, input, `${what} (records delivered again: ${redelivery})`);
  }

  /** `delivered` holds every record produced, each once, and each key's records in `input`'s order (the topic's). */
  assertEachOnceInOrder(delivered: readonly Numbered[], input: readonly Numbered[], what = 'the input topic'): void {
    assert.deepEqual(
      delivered.map((v) => v.i).sort((a, b) => a - b),
      Array.from({ length: this.produced }, (_, i) => i),
      'each record once',
    );
    for (let k = 0; k < this.keys; k++) {
      const of = (records: readonly Numbered[]) => records.filter((v) => v.k === `k${k}`).map((v) => v.i);
      assert.deepEqual(of(delivered), of(input), `records of key k${k} in the order of ${what}`);
    }
  }
}

/** A kafka broker's compiled settings with the defaults, for tests that build its parts directly; `bootstrap` comma-separated. */
export function kafkaSettings(bootstrap: string, producer: Partial<KafkaSettings['producer']> = {}, more: Partial<KafkaSettings> = {}): KafkaSettings {
  return {
    brokers: bootstrap.split(','),
    clientId: 'eventgate-tests',
    ssl: false,
    sasl: undefined,
    connectionTimeoutMs: 3000,
    healthCheckIntervalMs: 2000,
    producer: { ...PRODUCER_DEFAULTS, ...producer },
    consumer: { ...CONSUMER_DEFAULTS, startFrom: undefined },
    ...more,
  };
}
