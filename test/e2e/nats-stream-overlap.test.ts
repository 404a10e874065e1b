import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, nanos, type NatsConnection } from 'nats';
import { runCli, tempFiles } from '../helpers/gateway.js';
import { startNats, type MessageServer } from '../helpers/servers.js';

/** Streams as one nats broker declares them, in order: which overlap, and which nats-server takes. */
const streams: [name: string, subjects: string[]][] = [
  ['SELF', ['self.>', 'self.a']],
  ['DUP', ['dup.a', 'dup.a']],
  ['W1', ['w.*.x']],
  ['W2', ['w.a.*']],
  ['Q1', ['q.*.x']],
  ['Q2', ['q.a.y']],
  ['R1', ['r.>']],
  ['R2', ['r']],
];

const config = `version: 1
brokers:
  nt:
    kind: nats
    servers: nats://127.0.0.1:4222
    streams:
${streams.map(([name, subjects]) => `      ${name}: { subjects: ${JSON.stringify(subjects)} }`).join('\n')}
`;

/**
 * Stream subjects that overlap, within a stream or across a broker's streams: validate said `ok`,
 * and at run time nats-server refused to create the later stream ("subjects overlap with an
 * existing stream"), tried again for ever; a route reading it never consumed and one sending to it
 * held the broker's first connection, `/readyz` 503 for good. Now a config error at the subject;
 * the server itself says which of these it refuses, so the check cannot drift from it.
 */
describe('nats streams nats-server would refuse', () => {
  let nats: MessageServer;
  let nc: NatsConnection;
  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: `${nats.host}:${nats.port}` });
  });
  after(async () => {
    await nc?.close();
    await nats?.stop();
  });

  it('are config errors at the subject, exactly where nats-server refuses the stream', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const refusal = ': nats-server refuses a stream whose subjects overlap (a subject is stored by one stream only)';
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:7:35: 'self.a' overlaps 'self.>', another subject of this stream (both hold self.a)${refusal}`,
      `gateway.yaml:8:33: 'dup.a' is listed twice in this stream${refusal}`,
      `gateway.yaml:10:24: 'w.a.*' overlaps 'w.*.x', a subject of stream 'W1' (both hold w.a.x)${refusal}`,
    ]);

    const jsm = await nc.jetstreamManager();
    const refused: string[] = [];
    for (const [name, subjects] of streams) {
      try {
        await jsm.streams.add({ name, subjects });
      } catch {
        refused.push(name);
      }
    }
    assert.deepEqual(refused, ['SELF', 'DUP', 'W2']);
  });

  /**
   * nats-server reads a stream's `max_age` and `duplicate_window` as int64 nanoseconds and
   * `max_msgs` as an int64: `maxAgeMs: 99999999999999` or `maxMessages: 99999999999999999999`
   * validated `ok`, and the server refused the stream (`invalid json`) at every try, for ever. Now
   * the schema's maxima, which the server takes.
   */
  it('bounds maxAgeMs, duplicateWindowMs and maxMessages where nats-server reads them', async () => {
    const limits = (age: number, messages: string) => `version: 1
brokers:
  nt:
    kind: nats
    servers: nats://127.0.0.1:4222
    streams:
      LONG:
        subjects: [long.>]
        maxAgeMs: ${age}
        duplicateWindowMs: ${age}
        maxMessages: ${messages}
`;
    const over = tempFiles({ 'gateway.yaml': limits(9223372036855, '99999999999999999999') });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: over });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      'gateway.yaml:9:19: brokers.nt.streams.LONG.maxAgeMs must be <= 9223372036854',
      'gateway.yaml:10:28: brokers.nt.streams.LONG.duplicateWindowMs must be <= 9223372036854',
      'gateway.yaml:11:22: brokers.nt.streams.LONG.maxMessages must be <= 9007199254740991',
    ]);
    const at = tempFiles({ 'gateway.yaml': limits(9223372036854, '9007199254740991') });
    const ok = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: at });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    // The largest values, as the broker sends them (nats.js's nanos()), are a stream the server creates.
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.add({ name: 'LONG', subjects: ['long.>'], max_age: nanos(9223372036854), duplicate_window: nanos(9223372036854), max_msgs: 9007199254740991 });
    assert.equal(info.config.max_msgs, 9007199254740991);
    await assert.rejects(jsm.streams.add({ name: 'OVER', subjects: ['over.>'], max_age: nanos(99999999999999) }));
  });
});
