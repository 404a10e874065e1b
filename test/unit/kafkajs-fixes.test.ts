import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, before, describe, it } from 'node:test';
import type { KafkaMessage } from 'kafkajs';
import kafkajs, {
  Batch,
  decodeRecord,
  filterAbortedMessages,
  groupingReplaced,
  groupMessagesPerPartition,
  decodeBatch as gatewayBatchDecoder,
  kafkajsAbortedFilter,
  kafkajsBatchDecoder,
  kafkajsGrouping,
  kafkajsRecordDecoder,
  readingCluster,
} from '../../src/kinds/brokers/kafka/kafkajs.js';
import { subscriptionRoundRobin } from '../../src/kinds/brokers/kafka/assigner.js';
import { undecodable } from '../../src/kinds/brokers/kafka/stand-ins.js';
import { clientConfig } from '../../src/kinds/brokers/kafka/clients.js';
import { withBatchBound } from '../../src/kinds/brokers/kafka/codecs.js';
import { createLogger } from '../../src/log.js';
import { encodedBatch, kafkaSettings, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import type { KafkaRecord } from '../../src/codecs/record-batch.js';
import { crc32c } from '../../src/codecs/crc32c.js';

const require = createRequire(import.meta.url);
/** kafkajs' queue of requests on one connection to a broker, with the gateway's fix (loaded after kinds/brokers/kafka/kafkajs.ts). */
const RequestQueue = require('kafkajs/src/network/requestQueue') as new (
  options: Record<string, unknown>,
) => {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  push(request: { entry: Record<string, unknown>; expectResponse: boolean; sendRequest(): void }): void;
  fulfillRequest(response: { correlationId: number; payload: Buffer; size: number }): void;
  checkPendingRequests(): void;
  destroy(): void;
};

/**
 * kafkajs' producer groups a produce request's records by partition with the gateway's linear
 * grouping (kinds/brokers/kafka/kafkajs.ts), which gives exactly what kafkajs' own did.
 */
describe("kafkajs' record grouping", () => {
  it('is the one kafkajs loads its producer with', () => {
    assert.equal(typeof kafkajs.Kafka, 'function');
    assert.equal(groupingReplaced, true);
    assert.equal(require('kafkajs/src/producer/groupMessagesPerPartition'), groupMessagesPerPartition);
    assert.notEqual(kafkajsGrouping, groupMessagesPerPartition);
  });

  it("gives kafkajs' own result: the same partitions in the same order, the same records in theirs, one partitioner call per record", () => {
    const partitionMetadata = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((partitionId) => ({ partitionId, leader: 1 }));
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (const count of [0, 1, 2, 25, 94, 500]) {
      for (const spread of [1, 3, 12]) {
        const messages = Array.from({ length: count }, (_, i) => ({ key: `k${i}`, value: `{"n":${i}}`, partition: Math.floor(random() * spread) }));
        const calls: unknown[][][] = [[], []];
        const partitioner = (which: number) => (args: { topic: string; partitionMetadata: unknown[]; message: unknown }) => {
          calls[which]!.push([args.topic, args.partitionMetadata, args.message]);
          return (args.message as { partition: number }).partition;
        };
        const theirs = kafkajsGrouping!({ topic: 'orders', partitionMetadata, messages, partitioner: partitioner(0) });
        const ours = groupMessagesPerPartition({ topic: 'orders', partitionMetadata, messages, partitioner: partitioner(1) });
        assert.deepEqual(Object.keys(ours), Object.keys(theirs));
        for (const p of Object.keys(theirs)) {
          const a = theirs[Number(p)]!;
          const b = ours[Number(p)]!;
          assert.equal(b.length, a.length);
          for (let i = 0; i < a.length; i++) assert.equal(b[i], a[i], `partition ${p}, record ${i}`);
        }
        assert.equal(calls[1]!.length, count);
        for (let i = 0; i < count; i++) for (let j = 0; j < 3; j++) assert.equal(calls[1]![i]![j], calls[0]![i]![j]);
      }
    }
  });

  it('groups nothing without partition metadata, as kafkajs does', () => {
    const args = { topic: 'orders', partitionMetadata: [], messages: [{ value: 'x' }], partitioner: () => 0 };
    assert.deepEqual(groupMessagesPerPartition(args), kafkajsGrouping!(args));
    assert.deepEqual(groupMessagesPerPartition(args), {});
  });
});

/** The connections kafkajs opens to brokers, with the gateway's fix of their endless check timer (kinds/brokers/kafka/kafkajs.ts). */
describe("kafkajs' request queue", () => {
  const noop = () => {};
  const logger = { debug: noop, info: noop, warn: noop, error: noop };
  const queue = (maxInFlightRequests = 1) => new RequestQueue({ maxInFlightRequests, requestTimeout: 30000, enforceRequestTimeout: false, clientId: 'test', broker: 'b:9092', logger });
  const request = (correlationId: number, sent: number[], onSent?: () => void) => ({
    entry: { correlationId, apiKey: 0, apiName: 'Produce', apiVersion: 7, resolve: noop, reject: noop },
    expectResponse: true,
    sendRequest: () => {
      sent.push(correlationId);
      onSent?.();
    },
  });

  it('sets no timer on a connection with nothing held back (kafkajs 2.2.4 set one every millisecond, forever)', () => {
    const q = queue();
    q.checkPendingRequests();
    assert.equal(q.throttleCheckTimeoutId, null);
    const sent: number[] = [];
    q.push(request(1, sent));
    q.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
    assert.deepEqual(sent, [1]);
    assert.equal(q.throttleCheckTimeoutId, null);
  });

  it('sends a request held back by the in-flight limit once a response frees a place', () => {
    const q = queue(1);
    const sent: number[] = [];
    q.push(request(1, sent));
    q.push(request(2, sent));
    assert.deepEqual(sent, [1]);
    assert.equal(q.pending.length, 1);
    q.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
    assert.deepEqual(sent, [1, 2]);
    q.destroy();
  });

  it('sends what a throttled connection held back once the throttle ends', async () => {
    const q = queue(5);
    const sent: number[] = [];
    q.throttledUntil = Date.now() + 50;
    const done = new Promise<void>((resolve) => q.push(request(1, sent, resolve)));
    assert.deepEqual(sent, []);
    await done;
    assert.deepEqual(sent, [1]);
    q.destroy();
  });
});

/** kafkajs' consumer runner (loaded after kinds/brokers/kafka/kafkajs.ts, with the gateway's fix of its stop). */
const Runner = require('kafkajs/src/consumer/runner') as new (
  options: Record<string, unknown>,
) => {
  running: boolean;
  scheduleFetchManager(): void;
  stop(): Promise<void>;
};

describe("kafkajs' consumer runner", () => {
  it("stops when a rebalance of its fetchers (a broker gone) is under way as it stops, rather than fetching nothing in a loop that never lets the event loop turn (kafkajs 2.2.4's hang at 100 % CPU)", async () => {
    const logger = { debug() {}, info() {}, warn() {}, error() {}, namespace: () => logger };
    let nodes = [1, 2];
    let stopping = false;
    let lookedUpWhileStopping = 0;
    let releaseNode2!: () => void;
    const node2Held = new Promise<unknown[]>((r) => (releaseNode2 = () => r([])));
    let rebalanced!: () => void;
    const rebalancing = new Promise<void>((r) => (rebalanced = r));
    // The parts of a consumer group the runner calls while it fetches and stops: node 1 answers
    // an empty fetch as node 1 leaves the cluster's metadata (the fetcher's next round sees the
    // change and rebalances), node 2's fetch stays in flight until the test lets it answer.
    const consumerGroup = {
      groupId: 'g',
      memberId: 'm',
      getNodeIds: () => {
        if (stopping && ++lookedUpWhileStopping > 1000) throw new Error('still fetching a thousand rounds after the stop');
        return nodes;
      },
      fetch: async (nodeId: number) => {
        if (nodeId === 2) return node2Held;
        await new Promise((r) => setImmediate(r)); // node 2's fetch is in flight by now
        nodes = [2];
        rebalanced();
        return [];
      },
      heartbeat: async () => {},
      leave: async () => {},
      commitOffsets: async () => {},
      commitOffsetsIfNecessary: async () => {},
      hasSeekOffset: () => false,
    };
    let crash: Error | undefined;
    const runner = new Runner({ logger, consumerGroup, instrumentationEmitter: { emit() {} }, concurrency: 1, eachBatch: async () => {}, onCrash: (e: Error) => (crash = e), retry: { retries: 0 } });
    runner.running = true;
    runner.scheduleFetchManager();
    await rebalancing;
    await new Promise((r) => setImmediate(r)); // node 1's fetcher sees the change and ends; the manager waits for node 2's
    stopping = true;
    const stopped = runner.stop();
    releaseNode2();
    await stopped;
    assert.equal(crash, undefined);
    assert.ok(lookedUpWhileStopping <= 2, `the fetchers went on after the stop: ${lookedUpWhileStopping} rounds`);
  });
});

/**
 * kafkajs' connections to a broker that went down, made as the gateway's clients make them
 * (clientConfig): kafkajs ends and unrefs a connection's socket at every disconnect(), and
 * BrokerPool.findBroker disconnects both connections of a broker (the fetch connection too) each
 * time it fails to connect to it. node's unref() of a closed socket waits for a 'connect' that
 * never comes, a listener per call: a consumer's fetch connection to a broker that stayed down
 * piled them up, and at the eleventh node printed `MaxListenersExceededWarning: Possible
 * EventEmitter memory leak detected. 11 connect listeners added to [Socket]` on the gateway's
 * stderr (a Kafka broker down for 5 s under load, spec-checklist 3200).
 */
describe("kafkajs' connections to a broker that is down", () => {
  let kafka: KafkaCluster;
  before(async () => {
    kafka = await startKafka({ brokers: 2 });
  });
  after(async () => {
    await kafka?.stop();
  });

  it('adds nothing to a closed socket at each failed reconnect: no listener piles up, no warning on stderr', async () => {
    const topic = kafka.topic('down');
    await kafka.createTopic(topic, 2);
    const cluster = readingCluster(new kafkajs.Kafka(clientConfig(kafkaSettings(kafka.bootstrap), createLogger('silent'))));
    const warnings: Error[] = [];
    const warned = (w: Error) => warnings.push(w);
    process.on('warning', warned);
    let leader: number | undefined;
    try {
      await cluster.connect();
      await cluster.addTargetTopic(topic);
      leader = cluster.findTopicPartitionMetadata(topic).find((p) => p.partitionId === 0)!.leader;
      // A fetch opens the broker's fetch connection, as a consume route's member does.
      const broker = await cluster.findBroker({ nodeId: leader });
      await broker.fetch({ isolationLevel: 1, maxWaitTime: 0, minBytes: 0, maxBytes: 1024, topics: [{ topic, partitions: [{ partition: 0, fetchOffset: '0', maxBytes: 1024 }] }] });
      await kafka.down(leader);
      // Each look-up of the broker fails to connect, and disconnects its two connections again.
      for (let i = 0; i < 15; i++) await assert.rejects(cluster.findBroker({ nodeId: leader }));
      // Node emits the warning on the next tick.
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(
        warnings.map((w) => w.message),
        [],
      );
    } finally {
      process.off('warning', warned);
      if (leader !== undefined) await kafka.up(leader);
      await cluster.disconnect().catch(() => undefined);
    }
  });
});

/**
 * The consume routes' partition assigner (kinds/brokers/kafka/assigner.ts): kafkajs' own for a group
 * whose members read the same topics, and each topic's partitions to its readers only otherwise.
 * The cluster here is the metadata the assigners read, partition ids per topic.
 */
describe('the round-robin assigner of consume routes', () => {
  const { AssignerProtocol, PartitionAssigners } = kafkajs;
  const cluster = (partitions: Record<string, number>, added: string[] = []) => ({
    findTopicPartitionMetadata: (topic: string) => Array.from({ length: partitions[topic] ?? 0 }, (_, partitionId) => ({ partitionId })),
    addMultipleTargetTopics: async (topics: string[]) => void added.push(...topics),
  });
  const member = (memberId: string, topics: string[]) => ({ memberId, memberMetadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) });
  const decoded = (assignments: { memberId: string; memberAssignment: Buffer }[]) =>
    Object.fromEntries(assignments.map((a) => [a.memberId, { ...AssignerProtocol.MemberAssignment.decode(a.memberAssignment)!.assignment }]));

  it("assigns a group whose members read the same topics as kafkajs' own, members without a partition left out as there", async () => {
    const groups: [Record<string, number>, string[], string[]][] = [
      [{ a: 6 }, ['a'], ['m-2', 'm-1']],
      [{ a: 1 }, ['a'], ['m-3', 'm-1', 'm-2']],
      [{ a: 3, b: 2 }, ['a', 'b'], ['x', 'y']],
      [{ a: 2, b: 5 }, ['b', 'a'], ['z', 'y', 'x']],
    ];
    for (const [partitions, topics, ids] of groups) {
      const members = ids.map((id) => member(id, topics));
      const ours = await subscriptionRoundRobin({ cluster: cluster(partitions) } as never).assign({ members, topics });
      const theirs = await PartitionAssigners.roundRobin({ cluster: cluster(partitions) } as never).assign({ members, topics });
      assert.deepEqual(decoded(ours), decoded(theirs), JSON.stringify({ partitions, topics, ids }));
    }
  });

  it("gives each topic's partitions to the members that read it, when they read different ones (a rolling update)", async () => {
    const added: string[] = [];
    // The leader reads `a`; a member on the new config reads `b`, which the leader's client did not know.
    const members = [member('m-1', ['a']), member('m-2', ['b']), member('m-3', ['a'])];
    const ours = decoded(await subscriptionRoundRobin({ cluster: cluster({ a: 4, b: 2 }, added) } as never).assign({ members, topics: ['a'] }));
    assert.deepEqual(added, ['b']);
    assert.deepEqual(ours, { 'm-1': { a: [0, 2] }, 'm-3': { a: [1, 3] }, 'm-2': { b: [0, 1] } });
  });
});

/** kafkajs' reader of protocol bytes (src/protocol/decoder.js), which its record decoder reads a record's fields with. */
const Decoder = require('kafkajs/src/protocol/decoder') as new (buffer: Buffer) => { offset: number };

/** A record's bytes after its length, as a batch holds them: the headers in the order given, null for none (key, value or a header's value). */
function recordBytes(r: {
  timestampDelta?: number;
  offsetDelta?: number;
  key: string | null;
  value: string | null;
  headers: [string, string | null][];
  /** The header count written, when not the number of `headers` (a record claiming more, or fewer). */
  headerCount?: number;
  /** Bytes after the headers, which no field holds. */
  tail?: Buffer;
}): Buffer {
  const varint = (n: number) => {
    let z = n >= 0 ? n * 2 : -n * 2 - 1;
    const out: number[] = [];
    while (z >= 0x80) {
      out.push((z & 0x7f) | 0x80);
      z = Math.floor(z / 128);
    }
    out.push(z);
    return Buffer.from(out);
  };
  const bytes = (v: string | null) => (v === null ? varint(-1) : Buffer.concat([varint(Buffer.byteLength(v)), Buffer.from(v)]));
  return Buffer.concat([
    Buffer.from([0]),
    varint(r.timestampDelta ?? 0),
    varint(r.offsetDelta ?? 0),
    bytes(r.key),
    bytes(r.value),
    varint(r.headerCount ?? r.headers.length),
    ...r.headers.flatMap(([name, value]) => [bytes(name), bytes(value)]),
    r.tail ?? Buffer.alloc(0),
  ]);
}

/** kafkajs' decoder of a record batch (src/protocol/recordBatch/v0/decoder.js), which reads its records with the record decoder it loaded. */
const decodeBatch = require('kafkajs/src/protocol/recordBatch/v0/decoder') as (decoder: unknown) => Promise<{ records: (KafkaMessage & { headers: Record<string, unknown> })[] }>;

/** A record batch (magic 2, no codec) of records as recordBytes gives them; kafkajs checks no CRC, so it is left 0. */
function batchBytes(records: Buffer[]): Buffer {
  const varint = (n: number) => {
    const out: number[] = [];
    for (let z = n * 2; ; z = Math.floor(z / 128)) {
      if (z < 0x80) {
        out.push(z);
        break;
      }
      out.push((z & 0x7f) | 0x80);
    }
    return Buffer.from(out);
  };
  const body = Buffer.concat(records.map((r) => Buffer.concat([varint(r.length), r])));
  const head = Buffer.alloc(61);
  head.writeBigInt64BE(0n, 0);
  head.writeInt32BE(61 - 12 + body.length, 8);
  head.writeInt32BE(-1, 12);
  head.writeInt8(2, 16);
  head.writeInt32BE(records.length - 1, 23);
  head.writeBigInt64BE(1700000000000n, 27);
  head.writeBigInt64BE(1700000000000n, 35);
  head.writeBigInt64BE(-1n, 43);
  head.writeInt16BE(-1, 51);
  head.writeInt32BE(-1, 53);
  head.writeInt32BE(records.length, 57);
  return withCrc(Buffer.concat([head, body]));
}

/** `batch` with its CRC-32C (at 17, over its bytes from the attributes on) written again after a field changed. */
function withCrc(batch: Buffer): Buffer {
  batch.writeUInt32BE(crc32c(batch.subarray(21)) >>> 0, 17);
  return batch;
}

/**
 * kafkajs' batch decoder reads each record with the gateway's decoder (kinds/brokers/kafka/kafkajs.ts),
 * which gives what kafkajs' own gave, in time linear in the record's headers.
 */
describe("kafkajs' record decoder", () => {
  const RECORD_DECODER = 'kafkajs/src/protocol/recordBatch/record/v0/decoder';
  const CONTEXT = { firstOffset: '41', firstTimestamp: '1700000000000', magicByte: 2, timestampType: 0, maxTimestamp: '1700000000900' };

  it('is the one kafkajs reads record batches with', async () => {
    assert.equal(require(RECORD_DECODER), decodeRecord);
    assert.notEqual(kafkajsRecordDecoder, decodeRecord);
    // kafkajs' own took a single `toString` header for a repeat of Object.prototype.toString.
    const { records } = await decodeBatch(new Decoder(batchBytes([recordBytes({ key: null, value: 'v', headers: [['toString', 't']] })])));
    assert.deepEqual(records[0]!.headers.toString, Buffer.from('t'));
  });

  it("gives kafkajs' own result: offsets, timestamps (CreateTime, LogAppendTime), keys and values, headers once, repeated and without a value", () => {
    const records: Parameters<typeof recordBytes>[0][] = [
      { key: null, value: null, headers: [] },
      { timestampDelta: 250, offsetDelta: 3, key: 'k', value: '{"n":1}', headers: [['a', '1']] },
      {
        key: '',
        value: '',
        headers: [
          ['a', '1'],
          ['b', ''],
          ['a', '2'],
        ],
      },
      {
        key: 'k',
        value: 'v',
        headers: [
          ['r', '1'],
          ['r', '2'],
          ['s', null],
          ['r', '3'],
          ['r', null],
        ],
      },
      { key: 'k', value: 'v', headers: [['n', null]] },
      {
        key: 'k',
        value: 'v',
        headers: [
          ['n', null],
          ['n', null],
        ],
      },
      {
        key: 'k',
        value: 'v',
        headers: [
          ['ünï', 'çödé'],
          ['10', 'x'],
          ['2', 'y'],
        ],
      },
    ];
    const contexts = [CONTEXT, { ...CONTEXT, timestampType: 1 }, { ...CONTEXT, isControlBatch: true }];
    for (const record of records) {
      for (const context of contexts) {
        const bytes = recordBytes(record);
        const ours = new Decoder(bytes);
        const theirs = new Decoder(bytes);
        assert.deepEqual(decodeRecord(ours as never, context), kafkajsRecordDecoder!(theirs as never, context), JSON.stringify({ record, context }));
        assert.equal(ours.offset, bytes.length);
      }
    }
  });

  it("reads a header named after a member of Object's prototype as its value, and __proto__ as a header of its own", () => {
    const decode = require(RECORD_DECODER) as typeof decodeRecord;
    const bytes = recordBytes({
      key: null,
      value: 'v',
      headers: [
        ['toString', 't'],
        ['constructor', 'c'],
        ['hasOwnProperty', 'h'],
        ['__proto__', 'p'],
        ['valueOf', '1'],
        ['valueOf', '2'],
      ],
    });
    const { headers } = decode(new Decoder(bytes) as never, CONTEXT);
    assert.deepEqual(Object.keys(headers), ['toString', 'constructor', 'hasOwnProperty', '__proto__', 'valueOf']);
    assert.deepEqual(headers.toString, Buffer.from('t'));
    assert.deepEqual(headers.constructor, Buffer.from('c'));
    assert.deepEqual(headers.hasOwnProperty, Buffer.from('h'));
    assert.deepEqual(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value, Buffer.from('p'));
    assert.equal(Object.getPrototypeOf(headers), Object.prototype);
    assert.deepEqual(headers.valueOf, [Buffer.from('1'), Buffer.from('2')]);
  });

  // kafkajs' own took ~25 minutes of CPU for these (61 s for 8,000 headers, growing with their square): past the runner's 300 s bound.
  it('reads a record of 100,000 headers, a name repeated 50,000 times among them', () => {
    const headers: [string, string | null][] = [];
    for (let i = 0; i < 50_000; i++) headers.push([`h${i}`, 'v'], ['r', String(i)]);
    const decoded = (require(RECORD_DECODER) as typeof decodeRecord)(new Decoder(recordBytes({ key: null, value: 'v', headers })) as never, CONTEXT);
    assert.equal(Object.keys(decoded.headers).length, 50_001);
    assert.equal((decoded.headers.r as Buffer[]).length, 50_000);
    assert.deepEqual((decoded.headers.r as Buffer[])[49_999], Buffer.from('49999'));
  });

  /** The record's stand-in when `bytes` cannot be read: its offset and timestamp as read, its bytes as its batch holds them (its length first), and why. */
  function standIn(bytes: Buffer, context: Record<string, unknown> = CONTEXT) {
    const decoder = new Decoder(bytes);
    const record = (require(RECORD_DECODER) as typeof decodeRecord)(decoder as never, context) as unknown as KafkaMessage;
    return { record, broken: undecodable(record), read: decoder.offset };
  }

  /** `bytes` with its length before it, as a record batch holds a record. */
  const framed = (bytes: Buffer) => batchBytes([bytes]).subarray(61);

  // kafkajs' own (and the gateway's before) looked for 3,000,000 headers past the record's 10 bytes: 4.5 s and 3,000,000 Buffers named "".
  it('takes a record claiming more headers than its bytes can hold (two each at least) for undecodable, without reading one', () => {
    const bytes = recordBytes({ offsetDelta: 2, timestampDelta: 7, key: 'k', value: 'v', headers: [], headerCount: 3_000_000 });
    const { record, broken, read } = standIn(bytes);
    assert.deepEqual(broken, { unit: 'record', reason: 'it claims 3000000 headers in the 0 bytes after its value (a header takes 2 at least)', bytes: framed(bytes) });
    assert.equal(record.offset, '43');
    assert.equal(record.timestamp, '1700000000007');
    assert.equal(record.key, null);
    assert.equal(read, bytes.length, 'nothing read past the count');
  });

  // Near 2^31 kafkajs' loop would run out of heap and take the process with it.
  it('takes the largest count a varint holds (2^31 - 1) for undecodable as well', () => {
    const bytes = recordBytes({ key: null, value: 'v', headers: [['a', '1']], headerCount: 2 ** 31 - 1 });
    const { broken } = standIn(bytes);
    assert.equal(broken?.unit, 'record');
    assert.match(broken!.reason, /^it claims 2147483647 headers in the 4 bytes after its value/);
  });

  it('reads as many headers as the bytes can hold, and takes one more for undecodable', () => {
    // Three headers with an empty name and no value take two bytes each: six.
    const three: [string, null][] = [
      ['', null],
      ['', null],
      ['', null],
    ];
    const fits = standIn(recordBytes({ key: null, value: null, headers: three }));
    assert.equal(fits.broken, undefined);
    assert.deepEqual(fits.record.headers, { '': [null, null, null] });
    const over = standIn(recordBytes({ key: null, value: null, headers: three, headerCount: 4 }));
    assert.equal(over.broken?.reason, 'it claims 4 headers in the 6 bytes after its value (a header takes 2 at least)');
  });

  it('takes a header count below -1 for undecodable, and -1 for no headers as kafkajs does', () => {
    const negative = recordBytes({ key: 'k', value: 'v', headers: [], headerCount: -2 });
    assert.deepEqual(standIn(negative).broken, { unit: 'record', reason: 'its header count is -2', bytes: framed(negative) });
    const none = recordBytes({ key: 'k', value: 'v', headers: [], headerCount: -1 });
    assert.deepEqual(decodeRecord(new Decoder(none) as never, CONTEXT), kafkajsRecordDecoder!(new Decoder(none) as never, CONTEXT));
    assert.equal(standIn(none).broken, undefined);
  });

  it('takes a record whose fields end before its end, or run past it, for undecodable (kafkajs delivered them cut or with a tail unread)', () => {
    const tail = recordBytes({ key: 'k', value: 'v', headers: [['a', '1']], tail: Buffer.from('xyz') });
    assert.equal(standIn(tail).broken?.reason, `it is ${tail.length} bytes long but its fields take ${tail.length - 3}`);
    // A header's value claiming 9 bytes of the 1 there is.
    const cut = Buffer.concat([recordBytes({ key: 'k', value: 'v', headers: [], headerCount: 1 }), Buffer.from([2, 0x61, 18, 0x31])]);
    assert.equal(standIn(cut).broken?.reason, `it is ${cut.length} bytes long but its fields take ${cut.length + 8}`);
  });

  it("hands kafkajs' batch decoder the stand-in at the record's offset, between the batch's other records", async () => {
    const bad = recordBytes({ offsetDelta: 1, key: null, value: 'bad', headers: [], headerCount: 1000 });
    const batch = batchBytes([recordBytes({ key: null, value: 'before', headers: [['h', '1']] }), bad, recordBytes({ offsetDelta: 2, key: null, value: 'after', headers: [] })]);
    const { records } = await decodeBatch(new Decoder(batch));
    assert.deepEqual(
      records.map((r) => [r.offset, undecodable(r)?.reason ?? String(r.value)]),
      [
        ['0', 'before'],
        ['1', 'it claims 1000 headers in the 0 bytes after its value (a header takes 2 at least)'],
        ['2', 'after'],
      ],
    );
    assert.deepEqual(undecodable(records[1]!)?.bytes, framed(bad));
    assert.equal(undecodable(records[0]!), undefined);
  });

  // The subscription took kafkajs' Batch.lastOffset(): the last offset of the partition's whole
  // fetch, which on a cluster (not the mock, which serves one batch per fetch) holds the batches after it.
  it('gives a batch no codec can decode its own last offset, from its header, whatever the fetch holds after it', async () => {
    const batch = batchBytes([
      recordBytes({ key: null, value: 'a', headers: [] }),
      recordBytes({ offsetDelta: 1, key: null, value: 'b', headers: [] }),
      recordBytes({ offsetDelta: 2, key: null, value: 'c', headers: [] }),
    ]);
    batch.writeBigInt64BE(100n, 0);
    batch.writeInt16BE(3, 21); // lz4, which these records are not
    withCrc(batch);
    const { records } = await decodeBatch(new Decoder(batch));
    // One stand-in at the batch's first offset with its bytes, one at its last to move past it.
    assert.deepEqual(
      records.map((r) => [r.offset, undecodable(r)?.unit, undecodable(r)?.lastOffset]),
      [
        ['100', 'batch', '102'],
        ['102', 'batch', undefined],
      ],
    );
  });
});

const record = (offsetDelta: number, value: string): KafkaRecord => ({ attributes: 0, timestampDelta: offsetDelta, offsetDelta, key: null, value: Buffer.from(value), headers: [] });

/** kafkajs' decoder of a Fetch response's records field (v4 and later), which calls the batch decoder for each batch. */
const decodeMessages = require('kafkajs/src/protocol/requests/fetch/v4/decodeMessages') as (decoder: unknown) => Promise<(KafkaMessage & { headers: Record<string, unknown> })[]>;

/** A records field as a Fetch response holds it: its length, then the batches. */
function recordsField(batches: Buffer[]): Buffer {
  const body = Buffer.concat(batches);
  const length = Buffer.alloc(4);
  length.writeInt32BE(body.length);
  return Buffer.concat([length, body]);
}

/**
 * The batches of a fetch are read with the gateway's codec (src/codecs/record-batch.ts), which
 * checks a batch's record count against its bytes and its records' offset deltas against its last;
 * a batch that fails is stood in (dead-lettered, or its partition halts) and the fetch goes on.
 */
describe("kafkajs' record batch decoder", () => {
  const plain = (n: number) => recordBytes({ offsetDelta: n, timestampDelta: n, key: null, value: `v${n}`, headers: [] });
  /** A batch at base offset 10 of three records, then fields set as given. */
  const damaged = (set: (batch: Buffer) => void, records = [plain(0), plain(1), plain(2)]) => {
    const batch = batchBytes(records);
    batch.writeBigInt64BE(10n, 0);
    set(batch);
    // Its CRC-32C matches the fields set (a damaged log or a hostile producer can write one).
    return withCrc(batch);
  };
  const read = async (batch: Buffer) => (await decodeBatch(new Decoder(batch))).records.map((r) => [r.offset, undecodable(r)?.reason ?? String(r.value)]);

  it('is the one kafkajs reads a fetch with, and gives what kafkajs gave for batches it read right', async () => {
    assert.equal(decodeBatch, gatewayBatchDecoder);
    assert.notEqual(kafkajsBatchDecoder, gatewayBatchDecoder);
    const batches = [
      damaged(() => undefined),
      damaged((b) => b.writeInt16BE(0x08, 21)), // LogAppendTime
      damaged((b) => b.writeInt16BE(0x10, 21)), // transactional
      damaged((b) => b.writeInt16BE(0x30, 21), [recordBytes({ key: '\0\0\0\x01', value: '\0\0\0\0\0\0', headers: [] })]), // a COMMIT marker
      damaged((b) => b.writeInt32BE(5, 23), [plain(0), plain(3), plain(5)]), // compacted: gaps between the deltas
      await encodedBatch([record(0, 'gzip'), record(1, 'gzip too')], 1),
      // A compacted batch that lost all its records keeps its header (and its offsets).
      damaged((b) => (b.writeInt32BE(0, 57), b.writeInt32BE(2, 23)), []),
    ];
    for (const batch of batches) {
      const ours = await gatewayBatchDecoder(new Decoder(batch) as never);
      const theirs = await kafkajsBatchDecoder!(new Decoder(batch) as never);
      assert.deepEqual(ours, theirs);
    }
  });

  // kafkajs read an empty record past the end, whose first byte threw RangeError: the whole fetch failed, again at each try.
  it('stands in a batch claiming more records than it holds, at its first and last offsets', async () => {
    const batch = damaged((b) => b.writeInt32BE(4, 57));
    assert.deepEqual(await read(batch), [
      ['10', 'the batch claims 4 records but holds 3'],
      ['12', 'the batch claims 4 records but holds 3'],
    ]);
    const [first, last] = (await decodeBatch(new Decoder(batch))).records;
    assert.deepEqual(undecodable(first!), { unit: 'batch', reason: 'the batch claims 4 records but holds 3', bytes: batch, lastOffset: '12' });
    assert.equal(undecodable(last!)?.bytes, undefined);
  });

  it('stands in a batch whose record runs past its end, or that holds bytes after its last record', async () => {
    const past = damaged((b) => b.writeUInt8(40, 61 + 1 + plain(0).length)); // the second record's length
    assert.deepEqual(await read(past), [
      ['10', 'record 1 length 20 runs past its batch'],
      ['12', 'record 1 length 20 runs past its batch'],
    ]);
    // A count of 2 leaves the third record unread: kafkajs delivered two and skipped it.
    assert.deepEqual(await read(damaged((b) => b.writeInt32BE(2, 57))), [
      ['10', `${1 + plain(2).length} bytes after the last of 2 records`],
      ['12', `${1 + plain(2).length} bytes after the last of 2 records`],
    ]);
    assert.deepEqual(await read(damaged((b) => b.writeInt32BE(-1, 57))), [
      ['10', 'record count -1 is negative'],
      ['12', 'record count -1 is negative'],
    ]);
  });

  // kafkajs put the record at the offset its delta said, past the batch, or before the record before it.
  it("stands in a batch whose record's offset delta is past the batch's last, or does not rise", async () => {
    assert.deepEqual(await read(damaged(() => undefined, [plain(0), plain(1), plain(7)])), [
      ['10', "record 2's offset delta 7 is past the batch's last, 2"],
      ['12', "record 2's offset delta 7 is past the batch's last, 2"],
    ]);
    assert.deepEqual(await read(damaged(() => undefined, [plain(0), plain(2), plain(1)])), [
      ['10', "record 2's offset delta 1 does not follow the record before it (2)"],
      ['12', "record 2's offset delta 1 does not follow the record before it (2)"],
    ]);
  });

  it('reads a gzip batch by the same checks after decompressing it', async () => {
    const batch = await encodedBatch([record(0, 'a'), record(1, 'b')], 1);
    batch.writeInt32BE(3, 57);
    batch.writeInt32BE(2, 23);
    withCrc(batch);
    assert.deepEqual(await read(batch), [
      ['0', 'the batch claims 3 records but holds 2'],
      ['2', 'the batch claims 3 records but holds 2'],
    ]);
  });

  // kafkajs never checked it: a batch whose bytes changed after their producer wrote them was delivered as it read.
  it("stands in a batch whose bytes do not match its CRC-32C, naming the one stored and the one computed, as Java's consumer checks it", async () => {
    const batch = damaged(() => undefined);
    const stored = batch.readUInt32BE(17);
    batch[batch.indexOf('v1')] = 'w'.charCodeAt(0); // after the CRC was written: one record's value
    const computed = crc32c(batch.subarray(21)) >>> 0;
    const reason = `record batch CRC mismatch (${stored.toString(16)} stored, ${computed.toString(16)} computed)`;
    assert.deepEqual(await read(batch), [
      ['10', reason],
      ['12', reason],
    ]);
    // A compressed batch is checked before it is decompressed: the CRC covers its compressed bytes,
    // and a damaged byte of them is told as damage, not as the codec's error (nor decompressed).
    const gzip = await encodedBatch([record(0, 'a'), record(1, 'b')], 1);
    gzip[61] ^= 0xff; // the first byte of its records section: gzip's magic number
    assert.match(String((await read(gzip))[0]![1]), /^record batch CRC mismatch \([0-9a-f]+ stored, [0-9a-f]+ computed\)$/);
  });

  it('reads such a batch as it reads, unchecked, for a consumer whose checkCrcs is false', async () => {
    const batch = damaged(() => undefined);
    batch[batch.indexOf('v1')] = 'w'.charCodeAt(0);
    const records = await withBatchBound({ maxBatchBytes: 1 << 20, checkCrcs: false }, () => read(batch));
    assert.deepEqual(records, [
      ['10', 'v0'],
      ['11', 'w1'],
      ['12', 'v2'],
    ]);
    // Beside it, a consumer checking them (the default) stands it in.
    assert.equal((await withBatchBound({ maxBatchBytes: 1 << 20, checkCrcs: true }, () => read(batch))).length, 2);
  });

  // The header's lastOffsetDelta is as untrusted as the rest of a batch that failed: the last
  // stand-in sat at its first offset + that delta, committing far past the batch, or none was made.
  it("bounds an undecodable batch's last offset by the next batch of the fetch, when its header's is past it or negative", async () => {
    const next = damaged((b) => b.writeBigInt64BE(13n, 0));
    const standIns = async (delta: number) => {
      const bad = damaged(() => undefined);
      bad.writeInt32BE(delta, 23); // after its CRC: the batch fails it
      const records = await decodeMessages(new Decoder(recordsField([bad, next])));
      return records.map((r) => [r.offset, undecodable(r) ? (undecodable(r)!.lastOffset ?? 'last stand-in') : String(r.value)]);
    };
    const bounded = [
      ['10', '12'],
      ['12', 'last stand-in'],
      ['13', 'v0'],
      ['14', 'v1'],
      ['15', 'v2'],
    ];
    assert.deepEqual(await standIns(1_000_000), bounded);
    assert.deepEqual(await standIns(-1), bounded);
    // Within the bound the header's is kept (a compacted batch may end before the next begins).
    assert.deepEqual((await standIns(1)).slice(0, 2), [
      ['10', '11'],
      ['11', 'last stand-in'],
    ]);
    // The fetch's last batch has no bound: the header's stands, as before.
    const alone = damaged(() => undefined);
    alone.writeInt32BE(1_000_000, 23);
    assert.deepEqual(
      (await decodeBatch(new Decoder(alone))).records.map((r) => r.offset),
      ['10', '1000010'],
    );
  });

  // Nothing after such a length can be found: the fetch fails loudly (the consumer starts again), as kafkajs' RangeError did, not quietly as a cut tail would.
  it("fails the fetch, saying why, at a batch length below 0 or shorter than a batch's header", async () => {
    await assert.rejects(decodeMessages(new Decoder(recordsField([damaged((b) => b.writeInt32BE(-1, 8))]))), {
      message: 'a record batch claims a length of -1; the fetch cannot be read past it',
    });
    const short = damaged((b) => b.writeInt32BE(40, 8));
    await assert.rejects(decodeMessages(new Decoder(recordsField([short]))), {
      message: 'a record batch of 40 bytes is shorter than its header; the fetch cannot be read past it',
    });
  });

  it("goes on to the fetch's next batch after one stood in", async () => {
    const next = damaged((b) => b.writeBigInt64BE(13n, 0));
    const records = await decodeMessages(new Decoder(recordsField([damaged((b) => b.writeInt32BE(4, 57)), next])));
    assert.deepEqual(
      records.map((r) => [r.offset, undecodable(r)?.unit ?? String(r.value)]),
      [
        ['10', 'batch'],
        ['12', 'batch'],
        ['13', 'v0'],
        ['14', 'v1'],
        ['15', 'v2'],
      ],
    );
  });
});

/** One fetched record as kafkajs' decoders make it, for its Batch: offset, key, and its batch's producer and flags. */
function fetched(offset: number, producerId: string, o: { key?: string | Buffer; transactional?: boolean; marker?: 'abort' | 'commit' } = {}) {
  const key = o.marker ? Buffer.from([0, 0, 0, o.marker === 'abort' ? 0 : 1]) : o.key === undefined ? null : Buffer.from(o.key);
  return {
    offset: String(offset),
    key,
    value: Buffer.from(`v${offset}`),
    isControlRecord: o.marker !== undefined,
    batchContext: { producerId, inTransaction: o.transactional ?? o.marker !== undefined },
  };
}

/**
 * kafkajs' Batch hands a read_committed consumer (every consume route's) the records of a fetch
 * without those of aborted transactions, chosen as Kafka's own consumer chooses them. librdkafka's
 * mock cluster lists no aborted transaction in a Fetch answer (docs/testing.md), so the records are
 * made here as kafkajs' decoders make them and given to kafkajs' own Batch.
 */
describe("kafkajs' filter of aborted transactions", () => {
  const offsetsOf = (partition: { messages: ReturnType<typeof fetched>[]; abortedTransactions: { producerId: string; firstOffset: string }[] }, from = '0') =>
    new Batch('t', from, { partition: 0, highWatermark: '100', ...partition } as never).messages.map((m) => Number((m as unknown as { offset: string }).offset));

  it('is the one kafkajs Batch filters with', () => {
    assert.equal(require('kafkajs/src/consumer/filterAbortedMessages'), filterAbortedMessages);
    assert.notEqual(kafkajsAbortedFilter, filterAbortedMessages);
  });

  it('skips the records of every transaction begun before the first record fetched (kafkajs took one per record and delivered the other)', () => {
    // Producers 1 and 2 each began a transaction (offsets 0 and 1) that they aborted; the fetch starts at 2.
    const messages = [fetched(2, '2', { transactional: true }), fetched(3, '1', { marker: 'abort' }), fetched(4, '2', { transactional: true }), fetched(5, '2', { marker: 'abort' }), fetched(6, '3')];
    const abortedTransactions = [
      { producerId: '1', firstOffset: '0' },
      { producerId: '2', firstOffset: '1' },
    ];
    assert.deepEqual(offsetsOf({ messages, abortedTransactions }, '2'), [6]);
  });

  it('takes the aborted transactions by first offset, not in the order of their markers the broker lists them in', () => {
    // Producer 1 began at 2 and aborted at 7; producer 2 began at 3 and aborted at 5, so the broker lists it first.
    const messages = [
      fetched(2, '1', { transactional: true }),
      fetched(3, '2', { transactional: true }),
      fetched(4, '1', { transactional: true }),
      fetched(5, '2', { marker: 'abort' }),
      fetched(6, '1', { transactional: true }),
      fetched(7, '1', { marker: 'abort' }),
      fetched(8, '3'),
    ];
    const abortedTransactions = [
      { producerId: '2', firstOffset: '3' },
      { producerId: '1', firstOffset: '2' },
    ];
    assert.deepEqual(offsetsOf({ messages, abortedTransactions }, '2'), [8]);
  });

  it('takes only a control record for an ABORT marker, not a record whose key is the four bytes 0 (an integer key 0)', () => {
    const zero = Buffer.from([0, 0, 0, 0]);
    const messages = [fetched(0, '1', { transactional: true, key: zero }), fetched(1, '1', { transactional: true, key: 'x' }), fetched(2, '1', { marker: 'abort' }), fetched(3, '1', { key: zero })];
    assert.deepEqual(offsetsOf({ messages, abortedTransactions: [{ producerId: '1', firstOffset: '0' }] }), [3]);
  });

  it("gives kafkajs' own result where kafkajs chose right: committed and aborted transactions side by side, one producer's in turn, none aborted", () => {
    const cases: { messages: ReturnType<typeof fetched>[]; abortedTransactions: { producerId: string; firstOffset: string }[] }[] = [
      {
        messages: [
          fetched(0, '1', { transactional: true }),
          fetched(1, '2', { transactional: true }),
          fetched(2, '1', { marker: 'commit' }),
          fetched(3, '2', { transactional: true }),
          fetched(4, '2', { marker: 'abort' }),
          fetched(5, '9'),
        ],
        abortedTransactions: [{ producerId: '2', firstOffset: '1' }],
      },
      {
        messages: [
          fetched(0, '1', { transactional: true }),
          fetched(1, '1', { marker: 'abort' }),
          fetched(2, '1', { transactional: true }),
          fetched(3, '1', { marker: 'commit' }),
          fetched(4, '1', { transactional: true }),
          fetched(5, '1', { marker: 'abort' }),
        ],
        abortedTransactions: [
          { producerId: '1', firstOffset: '0' },
          { producerId: '1', firstOffset: '4' },
        ],
      },
      { messages: [fetched(0, '1', { transactional: true }), fetched(1, '1', { marker: 'commit' }), fetched(2, '5')], abortedTransactions: [] },
    ];
    for (const c of cases) assert.deepEqual(filterAbortedMessages(c), kafkajsAbortedFilter!(c), JSON.stringify(c));
    assert.deepEqual(offsetsOf(cases[0]!), [0, 5]);
    assert.deepEqual(offsetsOf(cases[1]!), [2]);
  });
});
