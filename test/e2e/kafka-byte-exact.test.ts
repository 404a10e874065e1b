import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type kafkajs from 'kafkajs';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { kcatConsume, runProcess, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { tempDir } from '../helpers/reaper.js';

/**
 * Kafka → Kafka copies are byte for byte (issue #11): a route without a step that changes the
 * record writes the value, key and headers it read, whatever they hold — binary, invalid UTF-8,
 * JSON as its producer spaced and spelled it. kcat writes the files and reads the copies back raw.
 */
interface RawRecord {
  key: Buffer | null;
  value: Buffer | null;
}

/** Every record of `topic` as bytes, read by kcat: a "keylen vallen" line, then the key and the value, raw. */
async function kcatRaw(bootstrap: string, topic: string, count: number): Promise<RawRecord[]> {
  const r = await runProcess('sh', ['-c', `kcat -C -b ${bootstrap} -t ${topic} -o beginning -c ${count} -q -f '%K %S\\n%k%s' | base64 -w0`], '', 30000);
  assert.equal(r.code, 0, r.stderr);
  const out = Buffer.from(r.stdout, 'base64');
  const records: RawRecord[] = [];
  let at = 0;
  while (at < out.length) {
    const nl = out.indexOf(0x0a, at);
    const [k, v] = out.subarray(at, nl).toString().split(' ').map(Number) as [number, number];
    at = nl + 1;
    const key = k < 0 ? null : out.subarray(at, at + k);
    at += Math.max(k, 0);
    const value = v < 0 ? null : out.subarray(at, at + v);
    at += Math.max(v, 0);
    records.push({ key, value });
  }
  return records;
}

/** Records of `topic` through kafkajs, for their headers as bytes. */
async function readHeaders(bootstrap: string, topic: string, count: number): Promise<kafkajs.IHeaders[]> {
  const consumer = testClient(bootstrap).consumer({ groupId: `headers-${topic}`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    const seen: kafkajs.IHeaders[] = [];
    await new Promise<void>((resolve) => void consumer.run({ eachMessage: async ({ message }) => void (seen.push(message.headers ?? {}) === count && resolve()) }));
    return seen;
  } finally {
    await consumer.disconnect();
  }
}

const FILES: [string, Buffer][] = [
  ['random.bin', randomBytes(4096)],
  ['invalid-utf8.bin', Buffer.from([0x7b, 0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0x7d])],
  ['spaced.json', Buffer.from('{ "b" : 2,\n  "a" : 1.0 }\n')],
  ['big-number.json', Buffer.from('{"id":12345678901234567890,"price":19.990}')],
];
/** Written by kafkajs: a binary key, a header repeated, a binary header value; then a tombstone. */
const BINARY_KEY = Buffer.from([0xff, 0x00, 0xfe]);
const KAFKAJS_VALUE = Buffer.from('[1.50, 2e3]');
/** 2001-09-09T01:46:40Z: the tombstone's CreateTime. */
const OLD_TIME = 1_000_000_000_000;

describe('Kafka → Kafka copies are byte for byte', () => {
  let kafka: KafkaCluster;
  let ws: WsClient;
  let dir: string;
  let hook: WebhookReceiver;
  const t = { src: '', copied: '', headed: '', shaped: '', viaMemory: '' };
  const count = FILES.length + 2;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    hook = await WebhookReceiver.start();
    for (const k of Object.keys(t) as (keyof typeof t)[]) {
      t[k] = kafka.topic(k);
      await kafka.createTopic(t[k], 1);
    }
  });
  // Registered after the before() that starts the cluster and the receiver, so the config can name them.
  // Long sessions and ack timeouts: a gateway stalled for seconds on a loaded machine would
  // otherwise be dropped from its groups (a member silent for sessionTimeoutMs), or answered 503
  // for a produce the cluster took, and deliver a record again — at-least-once, as documented, but
  // not what this file checks (docs/spec-checklist.md, point 50).
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1, ackTimeoutMs: 30000 }, consumer: { sessionTimeoutMs: 30000, heartbeatIntervalMs: 500, rebalanceTimeoutMs: 30000, maxWaitMs: 100 } }
  mem: { kind: memory }
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: copy
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: kafka, topic: ${t.copied} }
  - name: headed
    from: { broker: kafka, topic: ${t.src} }
    through: [ { headers: { set: { x-seen: '"yes"' } } } ]
    to: { broker: kafka, topic: ${t.headed} }
  - name: shaped
    from: { broker: kafka, topic: ${t.src} }
    through: [ { transform: '$type($) = "object" ? $merge([$, {"shaped": true}]) : $' } ]
    to: { broker: kafka, topic: ${t.shaped} }
  - name: to-memory
    from: { broker: kafka, topic: ${t.src} }
    to: { broker: mem, topic: parked }
  - name: from-memory
    from: { broker: mem, topic: parked }
    to: { broker: kafka, topic: ${t.viaMemory} }
  - name: hook
    from: { broker: kafka, topic: ${t.src}, startFrom: earliest }
    to: { http: { url: "${hook.url}/records", concurrency: 1 } }
  - name: live
    from: { broker: kafka, topic: ${t.src}, startFrom: earliest }
    to: { listener: push, path: /live }
`,
  );
  before(async () => {
    ws = await WsClient.connect(gw.url('push', '/live', 'ws'));
    for (const route of ['copy', 'headed', 'shaped', 'to-memory', 'hook', 'live']) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);

    dir = tempDir('eg-bytes');
    for (const [name, bytes] of FILES) writeFileSync(join(dir, name), bytes);
    // kcat sends each file as one record, as it is.
    const r = await runProcess('kcat', ['-P', '-b', kafka.bootstrap, '-t', t.src, '-p', '0', '-k', 'k-file', '-H', 'src=kcat', ...FILES.map(([name]) => join(dir, name))], '', 30000);
    assert.equal(r.code, 0, r.stderr);
    const producer = testClient(kafka.bootstrap).producer();
    await producer.connect();
    await producer.send({
      topic: t.src,
      messages: [
        // CreateTimes the producer chose: the epoch itself, and one long past.
        { partition: 0, key: BINARY_KEY, value: KAFKAJS_VALUE, headers: { rep: [Buffer.from('first'), Buffer.from('second')], bin: Buffer.from([0x80, 0x81, 0x00]) }, timestamp: '0' },
        { partition: 0, key: 'gone', value: null, timestamp: String(OLD_TIME) },
      ],
    });
    await producer.disconnect();
  });
  after(async () => {
    ws?.close();
    await kafka?.stop();
    await hook?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const expected = (): RawRecord[] => [...FILES.map(([, value]) => ({ key: Buffer.from('k-file'), value })), { key: BINARY_KEY, value: KAFKAJS_VALUE }, { key: Buffer.from('gone'), value: null }];

  it('copies values and keys byte for byte: random bytes, invalid UTF-8, spaced JSON, 1.0, big numbers, a binary key, a tombstone', async () => {
    assert.deepEqual(await kcatRaw(kafka.bootstrap, t.src, count), expected(), 'kcat wrote what the test meant');
    assert.deepEqual(await kcatRaw(kafka.bootstrap, t.copied, count), expected());
  });

  it('copies headers byte for byte, a repeated one with all its values; traceparent is the route span', async () => {
    const headers = await readHeaders(kafka.bootstrap, t.copied, count);
    assert.deepEqual(headers[0]!.src, Buffer.from('kcat'));
    const kafkajsRecord = headers[FILES.length]!;
    assert.deepEqual(kafkajsRecord.rep, [Buffer.from('first'), Buffer.from('second')]);
    assert.deepEqual(kafkajsRecord.bin, Buffer.from([0x80, 0x81, 0x00]));
    assert.match(String(kafkajsRecord.traceparent), /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
  });

  it('a step that changes only the headers keeps the value and key bytes', async () => {
    assert.deepEqual(await kcatRaw(kafka.bootstrap, t.headed, count), expected());
    const headers = await readHeaders(kafka.bootstrap, t.headed, count);
    assert.deepEqual(
      headers.map((h) => String(h['x-seen'])),
      Array(count).fill('yes'),
    );
    assert.deepEqual(headers[FILES.length]!.bin, Buffer.from([0x80, 0x81, 0x00]));
  });

  it('a step that changes the value writes the new value as JSON; values it passes through keep their bytes', async () => {
    const got = await kcatRaw(kafka.bootstrap, t.shaped, count);
    // Changed: JSON objects, written as JSON.stringify writes them.
    assert.equal(got[2]!.value!.toString(), '{"b":2,"a":1,"shaped":true}');
    assert.equal(got[3]!.value!.toString(), '{"id":12345678901234567000,"price":19.99,"shaped":true}');
    // Not objects: the transform gave back the value it was given, so the bytes stay.
    assert.deepEqual(got[0]!.value, FILES[0]![1]);
    assert.deepEqual(got[1]!.value, FILES[1]![1]);
    assert.deepEqual(got[4]!.value, KAFKAJS_VALUE);
    assert.equal(got[5]!.value, null);
  });

  it('keeps the bytes through a memory topic too', async () => {
    assert.deepEqual(await kcatRaw(kafka.bootstrap, t.viaMemory, count), expected());
  });

  it("keeps each record's CreateTime, the epoch (0) included, directly and through a memory topic", async () => {
    const times = (records: { ts: number }[]) => records.map((r) => r.ts);
    const source = times(await kcatConsume(kafka.bootstrap, t.src, count));
    assert.deepEqual(source.slice(-2), [0, OLD_TIME], 'kafkajs wrote the times the test meant');
    assert.deepEqual(times(await kcatConsume(kafka.bootstrap, t.copied, count)), source);
    assert.deepEqual(times(await kcatConsume(kafka.bootstrap, t.shaped, count)), source);
    assert.deepEqual(times(await kcatConsume(kafka.bootstrap, t.viaMemory, count)), source);
  });

  it('a webhook gets each record’s value bytes as the body, binary and invalid UTF-8 included', async () => {
    // One request per record, in order (concurrency 1); the tombstone has no bytes and goes as JSON null.
    const got = await hook.received(count, 30000);
    assert.deepEqual(
      got.slice(0, count - 1).map((r) => r.bytes),
      [...FILES.map(([, value]) => value), KAFKAJS_VALUE],
    );
    assert.equal(got[count - 1]!.body, 'null');
  });

  it('a websocket forward sends text: JSON values as JSON, other values as a JSON string of their UTF-8 reading (invalid bytes become U+FFFD)', async () => {
    const frames: string[] = [];
    for (let i = 0; i < count; i++) frames.push(await ws.nextText(30000));
    assert.deepEqual(JSON.parse(frames[1]!), FILES[1]![1].toString('utf8'));
    assert.ok(JSON.parse(frames[1]!).includes('\ufffd'));
    assert.deepEqual(JSON.parse(frames[2]!), { b: 2, a: 1 });
    assert.deepEqual(JSON.parse(frames[4]!), [1.5, 2000]);
    assert.equal(frames[5], 'null');
  });
});
