import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { batchCompression, compressionOf, decodeRecords, encodeBatch, readRecords, RecordCursor, splitBatches, writeRecords, type KafkaRecord } from '../../src/codecs/record-batch.js';
import { ProtocolError } from '../../src/codecs/kafka-protocol/wire.js';
import { repoRoot } from '../helpers/gateway.js';

/**
 * Records fields exactly as kcat (librdkafka) and kafkajs wrote them, captured from their produce
 * requests by test/fixtures/kafka-batches/capture.mjs: three records, `k1`/none/`k3` keys, two
 * JSON values and one plain string, headers `source` and `empty` (none on the idempotent batch).
 */
const fixture = (name: string) => readFileSync(join(repoRoot, 'test', 'fixtures', 'kafka-batches', `${name}.bin`));
const CODECS = { none: 0, gzip: 1, snappy: 2, lz4: 3, zstd: 4 } as const;
const WRITTEN = [
  ...(['none', 'gzip', 'snappy', 'lz4', 'zstd'] as const).map((codec) => ({ name: `kcat-${codec}`, codec, client: 'kcat' })),
  ...(['none', 'gzip'] as const).map((codec) => ({ name: `kafkajs-${codec}`, codec, client: 'kafkajs' })),
];

const text = (b: Buffer | null) => (b === null ? null : b.toString('utf8'));
const view = (records: KafkaRecord[]) => records.map((r) => ({ key: text(r.key), value: text(r.value), headers: r.headers.map((h) => [h.key, text(h.value)]) }));

describe('record batches (Kafka RecordBatch v2)', () => {
  for (const { name, codec, client } of WRITTEN) {
    it(`reads the records ${client} wrote with ${codec} compression`, async () => {
      const [batch, ...more] = splitBatches(fixture(name));
      assert.equal(more.length, 0);
      assert.equal(compressionOf(batch!.attributes), CODECS[codec]);
      assert.equal(batch!.recordCount, 3);
      const records = await decodeRecords(batch!, batchCompression);
      assert.deepEqual(
        view(records).map((r) => ({ ...r, headers: r.headers.filter(([k]) => k === 'source' || k === 'empty') })),
        [
          {
            key: 'k1',
            value: '{"id":1,"name":"first"}',
            headers: [
              ['source', client],
              ['empty', ''],
            ],
          },
          // kcat -K sends an empty key; kafkajs a null one.
          {
            key: client === 'kcat' ? '' : null,
            value: '{"id":2}',
            headers: [
              ['source', client],
              ['empty', ''],
            ],
          },
          {
            key: 'k3',
            value: 'not json',
            headers: [
              ['source', client],
              ['empty', ''],
            ],
          },
        ],
      );
    });

    it(`rebuilds a ${client} ${codec} batch with a new header, keeping its fields and codec`, async () => {
      const [batch] = splitBatches(fixture(name));
      const records = await decodeRecords(batch!, batchCompression);
      const tagged = records.map((r, i) => (i === 1 ? { ...r, headers: [...r.headers, { key: '_asyncapi_eg_validation_error', value: Buffer.from('{"errors":[]}') }] } : r));
      const rebuilt = await encodeBatch(batch!, tagged, batchCompression);
      const [again] = splitBatches(rebuilt); // checks the new CRC-32C
      for (const field of [
        'baseOffset',
        'partitionLeaderEpoch',
        'attributes',
        'lastOffsetDelta',
        'baseTimestamp',
        'maxTimestamp',
        'producerId',
        'producerEpoch',
        'baseSequence',
        'recordCount',
      ] as const) {
        assert.equal(again![field], batch![field], field);
      }
      assert.deepEqual(view(await decodeRecords(again!, batchCompression)), view(tagged));
    });
  }

  it('writes an unchanged uncompressed batch back byte for byte', async () => {
    for (const name of ['kcat-none', 'kafkajs-none', 'kcat-idempotent']) {
      const [batch] = splitBatches(fixture(name));
      const rebuilt = await encodeBatch(batch!, await decodeRecords(batch!, batchCompression), batchCompression);
      assert.deepEqual(rebuilt, batch!.bytes, name);
    }
  });

  it("keeps an idempotent producer's id, epoch and base sequence", async () => {
    const [batch] = splitBatches(fixture('kcat-idempotent'));
    assert.notEqual(batch!.producerId, -1n);
    assert.ok(batch!.producerEpoch >= 0);
    assert.equal(batch!.baseSequence, 0);
    const records = await decodeRecords(batch!, batchCompression);
    const changed = records.map((r) => ({ ...r, value: Buffer.from('{"changed":true}') }));
    const [again] = splitBatches(await encodeBatch(batch!, changed, batchCompression));
    assert.deepEqual([again!.producerId, again!.producerEpoch, again!.baseSequence], [batch!.producerId, batch!.producerEpoch, batch!.baseSequence]);
  });

  it('refuses to change the number of records in a batch', async () => {
    const [batch] = splitBatches(fixture('kcat-none'));
    const records = await decodeRecords(batch!, batchCompression);
    await assert.rejects(encodeBatch(batch!, records.slice(1), batchCompression), /must keep its 3 records/);
  });

  it('finds a corrupted byte through the CRC-32C', () => {
    const bytes = Buffer.from(fixture('kcat-none'));
    bytes[bytes.length - 3]! ^= 0xff;
    assert.throws(
      () => splitBatches(bytes),
      (err: unknown) => err instanceof ProtocolError && /CRC mismatch/.test(err.message),
    );
  });

  it('refuses truncated batches and the old message formats', () => {
    const bytes = fixture('kcat-none');
    assert.throws(() => splitBatches(bytes.subarray(0, bytes.length - 1)), ProtocolError);
    const old = Buffer.from(bytes);
    old[16] = 1; // magic
    assert.throws(() => splitBatches(old), /message format v1 is not supported/);
  });

  it('refuses a header count below 0 in readRecords and the cursor alike, as a Kafka broker does', () => {
    const noHeaders = { length: -1, [Symbol.iterator]: () => [][Symbol.iterator]() } as unknown as KafkaRecord['headers'];
    const data = writeRecords([{ attributes: 0, timestampDelta: 0, offsetDelta: 0, key: null, value: Buffer.from('{}'), headers: noHeaders }]);
    assert.throws(() => readRecords(data, 1), /record 0 has a header count of -1/);
    const cur = new RecordCursor(data, 1);
    assert.throws(() => cur.next(), /record 0 has a header count of -1/);
  });

  it('reads several batches in one records field', async () => {
    const two = Buffer.concat([fixture('kcat-none'), fixture('kafkajs-none')]);
    const batches = splitBatches(two);
    assert.equal(batches.length, 2);
    assert.equal((await decodeRecords(batches[1]!, batchCompression)).length, 3);
  });

  it('finds a header by its name in any case from the record bytes, leaving the cursor where it was (1363)', () => {
    const rec = (headers: KafkaRecord['headers']): KafkaRecord => ({ attributes: 0, timestampDelta: 0, offsetDelta: 0, key: null, value: Buffer.from('{}'), headers });
    const data = writeRecords([
      rec([]),
      rec([{ key: 'traceparent', value: Buffer.from('00-x') }]),
      rec([
        { key: 'a', value: null },
        { key: '_Asyncapi_EG_validation_error', value: Buffer.from('{}') },
      ]),
      // The same length, one letter off; a name that only starts with it.
      rec([
        { key: '_asyncapi_eg_validation_errox', value: null },
        { key: '_asyncapi_eg_validation_errors', value: null },
      ]),
    ]);
    const name = Buffer.from('_asyncapi_eg_validation_error');
    const cur = new RecordCursor(data, 4);
    const found: boolean[] = [];
    while (cur.next()) found.push(cur.hasHeaderNamed(name));
    assert.deepEqual(found, [false, false, true, false]);
  });

  it("gives each record's key, value and headers as views of the section, repeated names in order, a header without a value null", () => {
    const data = writeRecords([
      {
        attributes: 0,
        timestampDelta: 0,
        offsetDelta: 0,
        key: Buffer.from([0xc3, 0x28]),
        value: Buffer.from([0xde, 0xad]),
        headers: [
          { key: 'seen', value: Buffer.from('a') },
          { key: 'none', value: null },
          { key: 'seen', value: Buffer.from('b') },
        ],
      },
      { attributes: 0, timestampDelta: 1, offsetDelta: 1, key: null, value: null, headers: [] },
    ]);
    const cur = new RecordCursor(data, 2);
    const got: ReturnType<RecordCursor['fieldBytes']>[] = [];
    while (cur.next()) got.push(cur.fieldBytes());
    const [first, second] = got as [(typeof got)[0], (typeof got)[0]];
    assert.deepEqual([...first.key!], [0xc3, 0x28]);
    assert.deepEqual([...first.value!], [0xde, 0xad]);
    assert.deepEqual((first.headers.seen as Buffer[]).map(String), ['a', 'b']);
    assert.equal(first.headers.none, null);
    assert.deepEqual([second.key, second.value, Object.keys(second.headers)], [null, null, []]);
    // Views, not copies: the caller makes the section its own once per batch (the kafka listener's govern).
    assert.equal(first.value!.buffer, data.buffer);
  });

  it('reads the same fields through a RecordCursor as through readRecords, and refuses the same bad sections', async () => {
    const records: KafkaRecord[] = [
      { attributes: 0, timestampDelta: 0, offsetDelta: 0, key: null, value: Buffer.from('{"id":1}'), headers: [] },
      {
        attributes: 0,
        timestampDelta: 2 ** 40 + 3,
        offsetDelta: 1,
        key: Buffer.from('k'),
        value: null,
        headers: [
          { key: 'a', value: Buffer.from('1') },
          { key: 'a', value: null },
          { key: 'é', value: Buffer.from('ü') },
        ],
      },
      { attributes: 0, timestampDelta: -5, offsetDelta: 2, key: Buffer.alloc(0), value: Buffer.alloc(0), headers: [] },
      { attributes: 0, timestampDelta: 2 ** 52, offsetDelta: 3, key: null, value: Buffer.from('x'.repeat(300)), headers: [] },
    ];
    const sections = [
      writeRecords(records),
      ...(await Promise.all(
        WRITTEN.map(async ({ name }) => {
          const [batch] = splitBatches(fixture(name));
          return compressionOf(batch!.attributes) === 0 ? batch!.recordsSection : batchCompression.decompress(compressionOf(batch!.attributes), batch!.recordsSection);
        }),
      )),
    ];
    const slice = (data: Buffer, start: number, end: number) => (start < 0 ? null : data.toString('utf8', start, end));
    for (const data of sections) {
      const count = readRecords(data, data === sections[0] ? records.length : 3).length;
      const expected = readRecords(data, count);
      const cur = new RecordCursor(data, count);
      const got: unknown[] = [];
      while (cur.next()) {
        got.push({
          attributes: cur.attributes,
          timestampDelta: cur.timestampDelta,
          key: slice(data, cur.keyStart, cur.keyEnd),
          value: slice(data, cur.valueStart, cur.valueEnd),
          headers: cur.headerCount > 0 ? { ...cur.headers() } : {},
        });
      }
      assert.deepEqual(
        got,
        expected.map((r) => ({
          attributes: r.attributes,
          timestampDelta: r.timestampDelta,
          key: text(r.key),
          value: text(r.value),
          headers: Object.fromEntries(r.headers.map((h) => [h.key, text(h.value) ?? ''])),
        })),
      );
    }
    const data = sections[0]!;
    const drain = (d: Buffer, n: number) => {
      const cur = new RecordCursor(d, n);
      while (cur.next());
    };
    for (const [d, n] of [
      [data.subarray(0, data.length - 1), 4],
      [data, 3],
      [data, 5],
      [data, -1],
    ] as const) {
      const old = (() => {
        try {
          readRecords(d, n);
          return 'ok';
        } catch (err) {
          return err instanceof ProtocolError ? 'protocol error' : 'other';
        }
      })();
      assert.throws(() => drain(d, n), ProtocolError, `count ${n}, ${d.length} bytes`);
      if (n >= 0) assert.equal(old, 'protocol error');
    }
  });
});
