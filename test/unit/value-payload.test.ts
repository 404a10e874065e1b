import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Message, ORIGINAL, valuePayload, withValue } from '../../src/core/message.js';

const consumed = (bytes: Buffer | null, decoded: unknown): Message => ({
  value: decoded,
  key: null,
  headers: {},
  topic: 't',
  partition: 0,
  offset: '0',
  timestamp: 0,
  [ORIGINAL]: { value: bytes, key: null, headers: {}, decoded: { value: decoded, key: null, headers: {} } },
});

describe('valuePayload: what every broker and webhook target writes for a value', () => {
  it('writes a consumed record’s own bytes while no step changed the value', () => {
    const spaced = Buffer.from('{ "a" : 1.0 }');
    const msg = consumed(spaced, { a: 1 });
    assert.equal(valuePayload(msg), spaced);
    assert.equal(valuePayload({ ...msg, headers: { x: 'y' } }), spaced, 'a header change keeps the value bytes');
    const invalid = Buffer.from([0x7b, 0xff, 0xfe]);
    assert.equal(valuePayload(consumed(invalid, '{\ufffd\ufffd')), invalid);
  });

  it('writes the new value as JSON text once a step changed it', () => {
    const msg = consumed(Buffer.from('{ "a" : 1.0 }'), { a: 1 });
    assert.equal(valuePayload(withValue(msg, { a: 2 })), '{"a":2}');
    assert.equal(valuePayload(withValue(msg, 'text')), 'text');
  });

  it('writes string data of a CloudEvent with a JSON datacontenttype as a JSON string; other strings as their text', () => {
    const event = (contentType: string): Message => ({
      value: '123',
      key: null,
      headers: { ce_specversion: '1.0', 'content-type': contentType },
      topic: null,
      partition: null,
      offset: null,
      timestamp: 0,
    });
    assert.equal(valuePayload(event('application/json')), '"123"');
    assert.equal(valuePayload(event('application/vnd.order+json; charset=utf-8')), '"123"');
    assert.equal(valuePayload(event('text/plain')), '123');
    assert.equal(valuePayload({ ...event('application/json'), headers: { 'content-type': 'application/json' } }), '123', "a plain message's string goes as text, as documented");
  });

  it('writes no payload for a CloudEvent without data of a type that is not JSON; JSON null for one of a JSON type or none', () => {
    const event = (headers: Record<string, string>): Message => ({ value: null, key: null, headers: { ce_specversion: '1.0', ...headers }, topic: null, partition: null, offset: null, timestamp: 0 });
    // Before, `null`: a broker's reader of text/plain got the text "null", data the event never had.
    assert.equal(valuePayload(event({ 'content-type': 'text/plain' })), '');
    assert.equal(valuePayload(event({ 'content-type': 'application/octet-stream' })), '');
    assert.equal(valuePayload(event({ 'content-type': 'application/json' })), 'null');
    assert.equal(valuePayload(event({})), 'null');
    assert.equal(valuePayload({ ...event({}), headers: { 'content-type': 'text/plain' } }), 'null', 'a plain message is not an event');
  });

  it('writes raw bytes as they are, never as the JSON of a Buffer', () => {
    const bytes = Buffer.from([0, 1, 2, 255]);
    const msg: Message = { value: bytes, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 };
    assert.equal(valuePayload(msg), bytes);
  });

  it('writes JSON text for messages that never had bytes (HTTP, WebSocket) and for a consumed tombstone', () => {
    const msg: Message = { value: { n: 1 }, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 };
    assert.equal(valuePayload(msg), '{"n":1}');
    assert.equal(valuePayload(consumed(null, null)), 'null');
  });
});
