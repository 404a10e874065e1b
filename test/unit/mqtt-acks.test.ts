import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import mqttPacket, { type Packet } from 'mqtt-packet';
import { AckFramer } from '../../src/kinds/brokers/mqtt/acks.js';

/** What a publishing connection receives, encoded by mqtt-packet (mqtt.js's own encoder): acknowledgements among everything else. */
const v5 = { protocolVersion: 5 as const };
const PACKETS: Packet[] = [
  { cmd: 'puback', messageId: 1 },
  { cmd: 'pingresp' },
  { cmd: 'puback', messageId: 2, reasonCode: 0x10 },
  { cmd: 'pubrec', messageId: 3 },
  { cmd: 'puback', messageId: 4, reasonCode: 0x87, properties: { reasonString: 'not for you', userProperties: { why: 'acl' } } },
  { cmd: 'publish', topic: 'in/passing', payload: Buffer.from('x'.repeat(300)), qos: 1, messageId: 9, retain: false, dup: false },
  { cmd: 'pubcomp', messageId: 3 },
  { cmd: 'pubrec', messageId: 5, reasonCode: 0x97 },
  { cmd: 'puback', messageId: 700 },
  { cmd: 'suback', messageId: 11, granted: [1] },
  { cmd: 'puback', messageId: 65_535 },
  { cmd: 'disconnect', reasonCode: 0x8b },
];
const BYTES = Buffer.concat(PACKETS.map((p) => mqttPacket.generate(p, v5)));
const TYPE = { puback: 0x40, pubrec: 0x50, pubcomp: 0x70 } as Record<string, number>;

/** Feeds `chunks` through a framer that takes the acknowledgements of every id but `declined`; what it took, and the packets mqtt.js would parse from what it passed on. */
function frame(chunks: Buffer[], declined = new Set<number>(), opts: { protocolVersion: 4 | 5 } = v5) {
  const taken: [number, number, number][] = [];
  const passed: Buffer[] = [];
  const framer = new AckFramer(
    opts.protocolVersion === 5,
    (type, id, rc) => {
      if (declined.has(id)) return false;
      taken.push([type, id, rc]);
      return true;
    },
    (b) => passed.push(Buffer.from(b)),
  );
  for (const c of chunks) framer.read(c);
  const parsed: Packet[] = [];
  const parser = mqttPacket.parser(opts);
  parser.on('packet', (p) => parsed.push(p));
  const errors: Error[] = [];
  parser.on('error', (e) => errors.push(e));
  for (const b of passed) parser.parse(b);
  return { taken, parsed, errors, passed: Buffer.concat(passed) };
}

const acks = (ps: Packet[]) => ps.filter((p) => p.cmd in TYPE);
const expectedTaken = (ps: Packet[]) => acks(ps).map((p) => [TYPE[p.cmd]!, (p as { messageId: number }).messageId, (p as { reasonCode?: number }).reasonCode ?? 0]);
const others = (ps: Packet[]) => ps.filter((p) => !(p.cmd in TYPE)).map((p) => p.cmd);

describe("reading a publishing connection's acknowledgements (AckFramer)", () => {
  it('takes every acknowledgement with its packet id and reason code, and passes everything else on in order, wherever the bytes are split', () => {
    for (let cut = 0; cut <= BYTES.length; cut++) {
      const r = frame([BYTES.subarray(0, cut), BYTES.subarray(cut)]);
      assert.deepEqual(r.taken, expectedTaken(PACKETS), `split at ${cut}`);
      assert.deepEqual(
        r.parsed.map((p) => p.cmd),
        others(PACKETS),
        `split at ${cut}`,
      );
      assert.deepEqual(r.errors, []);
    }
    const bytewise = frame([...BYTES].map((b) => Buffer.from([b])));
    assert.deepEqual(bytewise.taken, expectedTaken(PACKETS));
    assert.deepEqual(
      bytewise.parsed.map((p) => p.cmd),
      others(PACKETS),
    );
    const publish = bytewise.parsed.find((p) => p.cmd === 'publish') as { payload: Buffer; topic: string };
    assert.equal(publish.topic, 'in/passing');
    assert.equal(publish.payload.toString(), 'x'.repeat(300));
  });

  it('passes on, in its place, an acknowledgement that is not one of its publishes', () => {
    const r = frame([BYTES.subarray(0, 17), BYTES.subarray(17)], new Set([2, 700]));
    assert.deepEqual(
      r.taken.map(([, id]) => id),
      [1, 3, 4, 3, 5, 65_535],
    );
    assert.deepEqual(
      r.parsed.map((p) => `${p.cmd}${'messageId' in p && p.cmd !== 'publish' && p.cmd !== 'suback' ? ` ${p.messageId}` : ''}`),
      ['pingresp', 'puback 2', 'publish', 'puback 700', 'suback', 'disconnect'],
    );
  });

  it('on MQTT 3.1.1 takes the two-byte acknowledgements and leaves a longer one, malformed there, to mqtt.js', () => {
    const v4 = { protocolVersion: 4 as const };
    const bytes = Buffer.concat([mqttPacket.generate({ cmd: 'puback', messageId: 7 }, v4), Buffer.from([0x40, 3, 0, 8, 0x87]), mqttPacket.generate({ cmd: 'pubcomp', messageId: 9 }, v4)]);
    const r = frame([bytes], new Set(), v4);
    assert.deepEqual(r.taken, [
      [0x40, 7, 0],
      [0x70, 9, 0],
    ]);
    assert.deepEqual(r.passed, Buffer.from([0x40, 3, 0, 8, 0x87]));
  });

  it('leaves an MQTT 5 acknowledgement whose properties do not fit it to mqtt.js, which reports it', () => {
    const bad = Buffer.from([0x40, 5, 0, 8, 0x87, 9, 0x1f]); // property length 9 in a 5-byte body
    const r = frame([Buffer.concat([bad, mqttPacket.generate({ cmd: 'puback', messageId: 10 }, v5)])]);
    assert.deepEqual(r.taken, [[0x40, 10, 0]]);
    assert.deepEqual(r.passed, bad);
    assert.equal(r.errors.length, 1);
  });

  it('after a remaining length longer than four bytes passes everything on, so that mqtt.js fails the connection', () => {
    const r = frame([Buffer.from([0x40, 0xff, 0xff, 0xff, 0xff, 0x01]), mqttPacket.generate({ cmd: 'puback', messageId: 1 }, v5)]);
    assert.deepEqual(r.taken, []);
    assert.equal(r.errors.length > 0, true);
  });
});
