import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  readProduceRequest,
  readRequestHeader,
  rewriteApiVersionsResponse,
  rewriteFindCoordinatorResponse,
  rewriteMetadataResponse,
  writeProduceError,
  writeProduceRequest,
  VERSION_CAPS,
} from '../../src/codecs/kafka-protocol/messages.js';
import { Reader, Writer } from '../../src/codecs/kafka-protocol/wire.js';
import { FrameReader, FrameTooLarge } from '../../src/kinds/listeners/kafka/frames.js';

/** A Produce request body as a client writes it (header v1, then the v3+ body). */
function produceRequest(version: number, topics: { name: string; partitions: { index: number; records: Buffer | null }[] }[], acks = -1): Buffer {
  const w = new Writer().int16(0).int16(version).int32(42).nullableString('client-1');
  if (version >= 3) w.nullableString(null);
  w.int16(acks).int32(30000).int32(topics.length);
  for (const t of topics) {
    w.string(t.name).int32(t.partitions.length);
    for (const p of t.partitions) w.int32(p.index).nullableBytes(p.records);
  }
  return w.finish();
}

function metadataResponse(version: number): Buffer {
  const w = new Writer().int32(7);
  if (version >= 3) w.int32(0);
  w.int32(2);
  for (const [id, port] of [
    [1, 9092],
    [2, 9093],
  ] as const) {
    w.int32(id).string('kafka.internal').int32(port);
    if (version >= 1) w.nullableString(id === 1 ? 'rack-a' : null);
  }
  if (version >= 2) w.nullableString('cluster-x');
  if (version >= 1) w.int32(1);
  w.int32(0); // topics
  return w.finish();
}

/** A FrameReader keeping whole frames (`got`), fed 64 KB frames (`big`) in 40,000-byte chunks (`feed`). */
function recyclingReader() {
  const big = (fill: string) => Buffer.concat([Buffer.from([0, 1, 0, 0]), Buffer.alloc(65536, fill)]);
  const got: Buffer[] = [];
  const reader = new FrameReader({ onStart: () => 'buffer', onFrame: (_body, whole) => got.push(whole), onChunk: () => assert.fail() }, 1 << 20);
  const feed = (bytes: Buffer) => {
    for (let at = 0; at < bytes.length; at += 40000) reader.push(bytes.subarray(at, at + 40000));
  };
  return { got, reader, feed, big };
}

describe('Kafka protocol messages', () => {
  it('reads a request header', () => {
    const h = readRequestHeader(produceRequest(7, []));
    assert.deepEqual(h, { apiKey: 0, apiVersion: 7, correlationId: 42, clientId: 'client-1', bodyOffset: 18 });
  });

  it('reads a Produce request and writes it back unchanged', () => {
    for (const version of [3, 7, 8]) {
      const body = produceRequest(version, [
        {
          name: 'orders',
          partitions: [
            { index: 0, records: Buffer.from('abc') },
            { index: 3, records: null },
          ],
        },
      ]);
      const header = readRequestHeader(body);
      const req = readProduceRequest(body, header);
      assert.equal(req.acks, -1);
      assert.deepEqual(
        req.topics.map((t) => [t.name, t.partitions.map((p) => [p.index, p.records?.toString() ?? null])]),
        [
          [
            'orders',
            [
              [0, 'abc'],
              [3, null],
            ],
          ],
        ],
      );
      assert.deepEqual(writeProduceRequest(body, header, req), body);
    }
  });

  it('refuses a Produce request with bytes missing', () => {
    const body = produceRequest(7, [{ name: 'orders', partitions: [{ index: 0, records: Buffer.from('abc') }] }]);
    assert.throws(() => readProduceRequest(body.subarray(0, body.length - 1), readRequestHeader(body)), /truncated/);
  });

  it('answers INVALID_RECORD for every partition, with record errors from v8', () => {
    const body = produceRequest(8, [
      {
        name: 'orders',
        partitions: [
          { index: 0, records: null },
          { index: 1, records: null },
        ],
      },
    ]);
    const header = readRequestHeader(body);
    const req = readProduceRequest(body, header);
    const response = writeProduceError(header, req, 87, new Map([['orders\u00000', { recordErrors: [{ index: 2, message: '/total: must be number' }], message: 'refused' }]]), 'other');
    const r = new Reader(response);
    assert.equal(r.int32(), 42);
    assert.equal(r.int32(), 1);
    assert.equal(r.string(), 'orders');
    assert.equal(r.int32(), 2);
    const partitions = [];
    for (let i = 0; i < 2; i++) {
      const p = { index: r.int32(), error: r.int16(), baseOffset: r.int64(), logAppend: r.int64(), logStart: r.int64(), recordErrors: [] as unknown[], message: null as string | null };
      for (let n = r.int32(); n > 0; n--) p.recordErrors.push([r.int32(), r.nullableString()]);
      p.message = r.nullableString();
      partitions.push(p);
    }
    assert.equal(r.int32(), 0); // throttle
    assert.equal(r.remaining, 0);
    assert.deepEqual(
      partitions.map((p) => [p.index, p.error, p.recordErrors, p.message]),
      [
        [0, 87, [[2, '/total: must be number']], 'refused'],
        [1, 87, [], 'other'],
      ],
    );
  });

  for (const version of [0, 1, 3, 8]) {
    it(`advertises the proxy's ports in a Metadata v${version} response`, () => {
      const { body, brokers } = rewriteMetadataResponse(metadataResponse(version), version, (b) => ({ host: 'proxy', port: 19092 + b.nodeId }));
      assert.deepEqual(
        brokers.map((b) => [b.nodeId, b.host, b.port]),
        [
          [1, 'kafka.internal', 9092],
          [2, 'kafka.internal', 9093],
        ],
      );
      const again = rewriteMetadataResponse(body, version, (b) => b);
      assert.deepEqual(
        again.brokers.map((b) => [b.nodeId, b.host, b.port]),
        [
          [1, 'proxy', 19093],
          [2, 'proxy', 19094],
        ],
      );
      // Everything after the brokers is kept.
      const tail = version >= 2 ? 'cluster-x' : '';
      assert.ok(body.includes(Buffer.from(tail)));
      assert.equal(body.length, metadataResponse(version).length - 2 * ('kafka.internal'.length - 'proxy'.length));
    });
  }

  for (const version of [0, 1, 2]) {
    it(`advertises the proxy's port for the coordinator in a FindCoordinator v${version} response`, () => {
      const w = new Writer().int32(5);
      if (version >= 1) w.int32(0);
      w.int16(0);
      if (version >= 1) w.nullableString(null);
      w.int32(3).string('kafka-3.internal').int32(9094);
      const { body, coordinator } = rewriteFindCoordinatorResponse(w.finish(), version, () => ({ host: 'proxy', port: 19095 }));
      assert.deepEqual(coordinator, { nodeId: 3, host: 'kafka-3.internal', port: 9094 });
      assert.deepEqual(rewriteFindCoordinatorResponse(body, version, (b) => b).coordinator, { nodeId: 3, host: 'proxy', port: 19095 });
    });
  }

  it('leaves a FindCoordinator error response alone', () => {
    const w = new Writer().int32(5).int32(0).int16(15).nullableString('not available').int32(-1).string('').int32(-1);
    const original = w.finish();
    assert.equal(rewriteFindCoordinatorResponse(original, 2, () => assert.fail('nothing to advertise')).body, original);
  });

  for (const version of [0, 2, 3]) {
    it(`offers only versions the proxy parses in an ApiVersions v${version} response`, () => {
      const flexible = version >= 3;
      const apis = [
        [0, 0, 11],
        [3, 0, 12],
        [10, 0, 4],
        [60, 0, 1],
        [18, 0, 3],
        [12, 0, 4],
      ] as const;
      const w = new Writer().int32(9).int16(0);
      if (flexible) w.uvarint(apis.length + 1);
      else w.int32(apis.length);
      for (const [k, min, max] of apis) {
        w.int16(k).int16(min).int16(max);
        if (flexible) w.uvarint(0);
      }
      if (version >= 1) w.int32(0);
      if (flexible) w.uvarint(0);
      const { apis: offered, body } = rewriteApiVersionsResponse(w.finish(), version);
      assert.deepEqual(
        offered.map((a) => [a.apiKey, a.max]),
        [
          [0, 8],
          [3, 8],
          [10, 2],
          [18, 3],
          [12, 4],
        ],
      );
      assert.ok(!offered.some((a) => a.apiKey === 60), 'DescribeCluster names brokers: not offered');
      assert.deepEqual(rewriteApiVersionsResponse(body, version).apis, offered);
      assert.ok(VERSION_CAPS.get(0)! <= 8);
    });
  }
});

describe('Kafka frames', () => {
  const frames = [Buffer.from('first frame'), Buffer.alloc(0), Buffer.from('a third, longer frame with more bytes')];
  const stream = Buffer.concat(frames.flatMap((f) => [Buffer.from([0, 0, 0, f.length]), f]));

  it('splits a stream into frames wherever its chunks end', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const got: string[] = [];
      const reader = new FrameReader({ onStart: () => 'buffer', onFrame: (b) => got.push(b.toString()), onChunk: () => assert.fail() }, 1000);
      reader.push(stream.subarray(0, cut));
      reader.push(stream.subarray(cut));
      assert.deepEqual(got, frames.map(String), `cut at ${cut}`);
    }
  });

  it('streams frames as their bytes arrive', () => {
    for (let cut = 1; cut < stream.length; cut++) {
      const chunks: Buffer[] = [];
      let ends = 0;
      const reader = new FrameReader({ onStart: () => 'stream', onFrame: () => assert.fail(), onChunk: (b, last) => (chunks.push(b), last && ends++) }, 1000);
      for (let at = 0; at < stream.length; at += cut) reader.push(stream.subarray(at, at + cut));
      assert.deepEqual(Buffer.concat(chunks), stream, `chunks of ${cut}`);
      assert.equal(ends, 3);
    }
  });

  it('keeps copies of what it holds when the chunks come from one reused buffer', () => {
    // A 1.5 MB frame too: frames over 1 MB are gathered as their chunks come, not allocated at once.
    const large = Buffer.alloc(1152 * 1024, 'large frame ');
    const withLarge = Buffer.concat([stream, Buffer.from([0, 0x12, 0, 0]), large, stream]);
    const scratch = Buffer.alloc(70000);
    for (const cut of [1, 2, 3, 5, 13, 40, 4096, 65536]) {
      // Byte by byte only the small frames (a size prefix or header over several reads).
      const bytes = cut < 13 ? Buffer.concat([stream, stream]) : withLarge;
      const expected = (cut < 13 ? [...frames, ...frames] : [...frames, large, ...frames]).map(String);
      for (const mode of ['buffer', 'stream'] as const) {
        // Frames are kept as they are handed on and read only at the end: they must not be views of the scratch buffer.
        const got: Buffer[] = [];
        const streamed: Buffer[] = [];
        const reader = new FrameReader({ onStart: () => mode, onFrame: (b) => got.push(b), onChunk: (b) => streamed.push(Buffer.from(b)) }, 2 << 20);
        for (let at = 0; at < bytes.length; at += cut) {
          const n = bytes.copy(scratch, 0, at, at + cut);
          reader.push(scratch.subarray(0, n), true);
          scratch.fill(0xee); // the next read overwrites it
        }
        if (mode === 'buffer') assert.deepEqual(got.map(String), expected, `chunks of ${cut}`);
        else assert.deepEqual(Buffer.concat(streamed), bytes, `chunks of ${cut}`);
      }
    }
  });

  it('reads a later frame into the memory of one given back, and takes back only frames it assembled', () => {
    const { got, reader, feed, big } = recyclingReader();
    feed(big('a'));
    reader.recycle(got[0]!);
    feed(big('b'));
    assert.equal(got[1]!.buffer, got[0]!.buffer, "the second frame is read into the first one's memory");
    assert.equal(got[1]!.subarray(4).toString(), 'b'.repeat(65536));
    // A frame that arrived whole in one chunk is a view of the chunk, not the reader's: never taken back.
    const chunk = Buffer.concat([big('c'), big('d')]);
    reader.push(chunk);
    reader.recycle(got[2]!);
    feed(big('e'));
    assert.notEqual(got[4]!.buffer, chunk.buffer);
    assert.equal(got[3]!.subarray(4).toString(), 'd'.repeat(65536), 'the chunk is left alone');
  });

  it('keeps two frames given back for the next two frames, and never the same memory twice', () => {
    const { got, reader, feed, big } = recyclingReader();
    // A client's next request often starts before the previous one's write upstream completed.
    feed(big('a'));
    feed(big('b'));
    reader.recycle(got[0]!);
    reader.recycle(got[1]!);
    reader.recycle(got[1]!);
    feed(big('c'));
    feed(big('d'));
    feed(big('e'));
    const given = new Set([got[0]!.buffer, got[1]!.buffer]);
    assert.ok(given.has(got[2]!.buffer) && given.has(got[3]!.buffer), 'both frames given back are read into again');
    assert.notEqual(got[2]!.buffer, got[3]!.buffer);
    assert.ok(!given.has(got[4]!.buffer), 'a frame given back twice holds one later frame, not two');
    assert.equal(got[2]!.subarray(4).toString(), 'c'.repeat(65536));
    assert.equal(got[3]!.subarray(4).toString(), 'd'.repeat(65536));
  });

  it('refuses a frame over the limit and a negative size', () => {
    const reader = () => new FrameReader({ onStart: () => 'buffer', onFrame: () => {}, onChunk: () => {} }, 10);
    assert.throws(() => reader().push(Buffer.from([0, 0, 0, 11])), FrameTooLarge);
    assert.throws(() => reader().push(Buffer.from([0xff, 0xff, 0xff, 0xff])), FrameTooLarge);
  });
});
