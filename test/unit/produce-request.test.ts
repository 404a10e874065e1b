import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import { encodeProduceRequest, readProduceRequest } from '../../src/codecs/kafka-protocol/messages.js';
import { batchCompression, decodeRecords, encodeProducerBatch, splitBatches, type OutgoingRecord } from '../../src/codecs/record-batch.js';
import { registerCodecs } from '../../src/kinds/brokers/kafka/codecs.js';
import { encodeProduceRequestsHere } from '../../src/kinds/brokers/kafka/produce-request.js';

const require = createRequire(import.meta.url);
/** kafkajs' own Produce v3 request (v4 to v7 are the same body): what the gateway's encoder replaces. */
const kafkajsProduceV3 = require('kafkajs/src/protocol/requests/produce/v3/request') as (args: unknown) => { encode(): Promise<{ buffer: Buffer }> };
const Long = require('kafkajs/src/utils/long') as { fromInt(v: number): unknown; fromValue(v: string): unknown };
// kafkajs compresses through the codecs the gateway registers (kinds/brokers/kafka/codecs.ts), as in the gateway.
registerCodecs();

const T = 1_764_633_600_123;
/** Records of every shape the gateway's producer hands over: text and bytes, nulls, repeated and non-ASCII headers, sizes past one varint byte. */
const RECORDS: OutgoingRecord[] = [
  { key: null, value: '{"id":7,"lumens":640}', headers: { 'content-type': 'application/json', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' }, timestamp: String(T) },
  { key: 'k-ü', value: Buffer.from([0, 1, 2, 255]), headers: {}, timestamp: String(T + 3) },
  { key: Buffer.from('bytes key'), value: null, headers: { many: ['a', Buffer.from('b')], ünï: 'cödé ✓', empty: '' }, timestamp: String(T + 1) },
  { key: 'long', value: 'x'.repeat(300), headers: { big: 'y'.repeat(200) }, timestamp: String(T + 200) },
  ...Array.from({ length: 70 }, (_, i) => ({ key: `k${i}`, value: `{"n":${i}}`, headers: { n: String(i) }, timestamp: String(T + 2) })),
];

const request = (over: Record<string, unknown> = {}) => ({
  acks: -1,
  timeout: 5000,
  compression: 0,
  transactionalId: null,
  producerId: -1,
  producerEpoch: 0,
  topicData: [
    {
      topic: 'orders',
      partitions: [
        { partition: 0, firstSequence: 0, messages: RECORDS.slice(0, 3) },
        { partition: 2, firstSequence: 0, messages: RECORDS.slice(3) },
      ],
    },
    { topic: 'ünïcode-topic', partitions: [{ partition: 1, firstSequence: 0, messages: [RECORDS[0]!] }] },
  ],
  ...over,
});

/** The same request as kafkajs builds it in the gateway, where kinds/brokers/kafka/produce-request.ts encodes it. */
encodeProduceRequestsHere();
const produce = require('kafkajs/src/protocol/requests/produce') as {
  protocol(v: { version: number }): (args: unknown) => {
    request: { apiVersion: number; encode(): Promise<{ buffer: Buffer }> };
    response: { decode(raw: Buffer): Promise<unknown>; parse(data: unknown): Promise<{ topics: { topicName: string; partitions: { partition: number; errorCode: number; baseOffset: string }[] }[] }> };
  };
};
async function ours(args: ReturnType<typeof request>, version = 7): Promise<Buffer> {
  const { request: built } = produce.protocol({ version })(args);
  assert.equal(built.apiVersion, version);
  return (await built.encode()).buffer;
}

describe("produce requests encoded with the project's codec", () => {
  const cases: [string, Record<string, unknown>][] = [
    ['plain records, acks all', {}],
    [
      'an idempotent producer (producer id, epoch, sequences)',
      { producerId: '4711', producerEpoch: 3, topicData: request().topicData.map((t) => ({ ...t, partitions: t.partitions.map((p, i) => ({ ...p, firstSequence: 1000 + i })) })) },
    ],
    ['a producer id as kafkajs Long', { producerId: Long.fromValue('9007199254740993') }],
    ['a transactional producer', { transactionalId: 'tx-1', producerId: '12', producerEpoch: 1 }],
    ['gzip', { compression: 1 }],
    ['zstd', { compression: 4 }],
    ['acks 1', { acks: 1, timeout: 30000 }],
  ];
  for (const [name, over] of cases) {
    it(`gives the bytes kafkajs' encoder gives: ${name}`, async () => {
      const args = request(over);
      const expected = (await kafkajsProduceV3(args).encode()).buffer;
      for (const version of [3, 7]) assert.deepEqual(await ours(args, version), expected);
    });
  }

  it('gives records our decoder and a header reader read back, with the batch time where a record has none', async () => {
    const before = Date.now();
    const records: OutgoingRecord[] = [{ value: 'a' }, { key: 'k', value: 'b', headers: { h: ['1', '2'] }, timestamp: before - 5 }];
    const body = encodeProduceRequest(3, {
      transactionalId: null,
      acks: -1,
      timeoutMs: 1000,
      topics: [
        {
          name: 't',
          partitions: [{ index: 0, records: (await encodeProducerBatch(records, { producerId: -1n, producerEpoch: 0, transactional: false, codec: 0, baseSequence: 0 }, batchCompression)) as Buffer }],
        },
      ],
    });
    const req = readProduceRequest(body, { apiKey: 0, apiVersion: 3, correlationId: 1, clientId: null, bodyOffset: 0 });
    const [batch] = splitBatches(req.topics[0]!.partitions[0]!.records!);
    assert.equal(batch!.recordCount, 2);
    assert.equal(Number(batch!.maxTimestamp) >= before, true);
    assert.equal(Number(batch!.baseTimestamp), before - 5);
    const read = await decodeRecords(batch!, batchCompression);
    assert.deepEqual(
      read.map((r) => [r.key?.toString() ?? null, r.value?.toString(), r.headers.map((h) => `${h.key}=${h.value}`), r.offsetDelta]),
      [
        [null, 'a', [], 0],
        ['k', 'b', ['h=1', 'h=2'], 1],
      ],
    );
    assert.equal(Number(batch!.baseTimestamp) + read[0]!.timestampDelta >= before, true);
    assert.equal(read[1]!.timestampDelta, 0);
  });

  it('refuses Produce versions whose body is laid out otherwise', () => {
    assert.throws(() => encodeProduceRequest(2, { transactionalId: null, acks: -1, timeoutMs: 1, topics: [] }), /Produce v2 is not encoded here/);
    assert.throws(() => encodeProduceRequest(9, { transactionalId: null, acks: -1, timeoutMs: 1, topics: [] }), /Produce v9/);
  });

  /** A Produce v5-v7 response body as a broker sends it (after the correlation id): each partition's error code and base offset. */
  function responseBody(topic: string, partitions: [partition: number, errorCode: number, baseOffset: bigint][]): Buffer {
    const head = Buffer.alloc(4 + 2 + Buffer.byteLength(topic) + 4);
    let at = head.writeInt32BE(1, 0);
    at = head.writeInt16BE(Buffer.byteLength(topic), at);
    at += head.write(topic, at);
    head.writeInt32BE(partitions.length, at);
    const parts = partitions.map(([partition, errorCode, baseOffset]) => {
      const b = Buffer.alloc(4 + 2 + 8 + 8 + 8);
      let o = b.writeInt32BE(partition, 0);
      o = b.writeInt16BE(errorCode, o);
      o = b.writeBigInt64BE(errorCode ? -1n : baseOffset, o);
      o = b.writeBigInt64BE(-1n, o);
      b.writeBigInt64BE(0n, o);
      return b;
    });
    return Buffer.concat([head, ...parts, Buffer.alloc(4)]);
  }
  const NOT_LEADER_FOR_PARTITION = 6;
  async function parsed(over: Record<string, unknown>, partitions: [number, number, bigint][], version = 7) {
    const { response } = produce.protocol({ version })(request(over));
    return response.parse(await response.decode(responseBody('orders', partitions)));
  }

  it("passes each partition's error code on when some partitions of a plain producer's request took their records, so kafkajs does not send those again", async () => {
    // v3 and v4 share the parse; their answers have no log start offset, so the body above is v5-v7's.
    for (const version of [5, 6, 7]) {
      const data = await parsed(
        {},
        [
          [0, 0, 41n],
          [2, NOT_LEADER_FOR_PARTITION, -1n],
        ],
        version,
      );
      assert.deepEqual(
        data.topics[0]!.partitions.map((p) => [p.partition, p.errorCode, p.baseOffset]),
        [
          [0, 0, '41'],
          [2, NOT_LEADER_FOR_PARTITION, '-1'],
        ],
      );
    }
  });

  it('still throws when every partition failed (nothing was written: kafkajs retries the request), and for idempotent and transactional producers whatever failed', async () => {
    await assert.rejects(
      parsed({}, [
        [0, NOT_LEADER_FOR_PARTITION, -1n],
        [2, NOT_LEADER_FOR_PARTITION, -1n],
      ]),
      { type: 'NOT_LEADER_FOR_PARTITION', retriable: true },
    );
    const partly: [number, number, bigint][] = [
      [0, 0, 41n],
      [2, NOT_LEADER_FOR_PARTITION, -1n],
    ];
    await assert.rejects(parsed({ producerId: '4711', producerEpoch: 3 }, partly), { type: 'NOT_LEADER_FOR_PARTITION' });
    await assert.rejects(parsed({ producerId: Long.fromValue('4711') }, partly), { type: 'NOT_LEADER_FOR_PARTITION' });
    await assert.rejects(parsed({ transactionalId: 'tx-1', producerId: '12', producerEpoch: 1 }, partly), { type: 'NOT_LEADER_FOR_PARTITION' });
    // Nothing failed: the answer as it is.
    assert.equal((await parsed({}, [[0, 0, 7n]])).topics[0]!.partitions[0]!.baseOffset, '7');
  });
});
