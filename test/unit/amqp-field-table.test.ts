import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeTable } from '../../src/kinds/brokers/amqp/field-table.js';
import { headerStrings } from '../../src/kinds/brokers/amqp/consumed.js';
import { newHeaders } from '../../src/core/message.js';

/** A field-table entry: a short-string name, then the tagged value bytes. */
function field(name: string, tagged: Buffer): Buffer {
  return Buffer.concat([Buffer.from([Buffer.byteLength(name)]), Buffer.from(name), tagged]);
}
function longString(tag: string, body: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([Buffer.from(tag), len, body]);
}

describe('AMQP field tables amqplib cannot read, or reads inexactly', () => {
  it('reads signed 64-bit integers and timestamps past 2^53 exactly, as decimal strings in headers', () => {
    const int64 = (n: bigint) => {
      const b = Buffer.alloc(9);
      b.write('l');
      b.writeBigInt64BE(n, 1);
      return b;
    };
    const ts = Buffer.alloc(9);
    ts.write('T');
    ts.writeBigUInt64BE(2n ** 53n + 1n, 1);
    const table = Buffer.concat([
      field('big', int64(2n ** 62n + 1n)),
      field('neg', int64(-(2n ** 62n) - 1n)),
      field('small', int64(5n)),
      field('ts', ts),
      field('arr', longString('A', int64(2n ** 60n + 3n))),
    ]);
    const decoded = decodeTable(table);
    // Where a number is exact, a number, as amqplib gives it.
    assert.equal(decoded.small, 5);
    assert.deepEqual({ ...headerStrings(decoded) }, { big: '4611686018427387905', neg: '-4611686018427387905', small: '5', ts: '9007199254740993', arr: '["1152921504606846979"]' });
  });

  it('reads every type, with an unsigned 64-bit integer exact', () => {
    const u64 = Buffer.alloc(9);
    u64.write('L');
    u64.writeBigUInt64BE(2n ** 64n - 1n, 1);
    const table = Buffer.concat([field('s', longString('S', Buffer.from('text'))), field('big', u64), field('t', Buffer.from('t\u0001'))]);
    assert.deepEqual({ ...headerStrings(decodeTable(table)) }, { s: 'text', big: '18446744073709551615', t: 'true' });
  });

  it('ends the table at a type nobody knows, saying so in that field, and keeps the fields before it', () => {
    const table = Buffer.concat([field('a', longString('S', Buffer.from('x'))), field('odd', Buffer.from('Z\u0000\u0001')), field('b', longString('S', Buffer.from('y')))]);
    assert.deepEqual({ ...decodeTable(table) }, { a: 'x', odd: "unreadable AMQP field type 'Z'" });
  });

  it('contains an unknown type inside a nested table or array to that table (its length is known)', () => {
    const inner = field('odd', Buffer.from('Z'));
    const table = Buffer.concat([field('tbl', longString('F', inner)), field('arr', longString('A', Buffer.from('Z'))), field('after', longString('S', Buffer.from('ok')))]);
    assert.deepEqual({ ...headerStrings(decodeTable(table)) }, { tbl: `{"odd":"unreadable AMQP field type 'Z'"}`, arr: `["unreadable AMQP field type 'Z'"]`, after: 'ok' });
  });

  it('stops at a value that runs past the end of the table', () => {
    const table = Buffer.concat([field('a', Buffer.from('I\u0000\u0001')), Buffer.alloc(0)]);
    assert.deepEqual({ ...decodeTable(table) }, { a: "unreadable AMQP field type 'I'" });
  });

  it("reads a field named __proto__ as a field, not as the table's prototype", () => {
    const table = field('__proto__', longString('F', field('polluted', longString('S', Buffer.from('yes')))));
    const decoded = decodeTable(table);
    assert.equal(Object.getPrototypeOf(decoded), Object.getPrototypeOf(newHeaders()));
    assert.equal((decoded as { polluted?: unknown }).polluted, undefined);
    assert.deepEqual({ ...Object.getOwnPropertyDescriptor(decoded, '__proto__')?.value }, { polluted: 'yes' });
  });

  it('keeps a header named __proto__ as a header, at the top and inside a nested table', () => {
    const table = Buffer.concat([field('__proto__', longString('S', Buffer.from('top'))), field('t', longString('F', field('__proto__', longString('S', Buffer.from('inner')))))]);
    const headers = headerStrings(decodeTable(table));
    assert.equal(Object.getPrototypeOf(headers), Object.getPrototypeOf(newHeaders()));
    assert.equal(Object.getOwnPropertyDescriptor(headers, '__proto__')?.value, 'top');
    assert.equal(headers.t, '{"__proto__":"inner"}');
  });
});
