import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { msgIdChange, publishedIdentity, publisherMsgId } from '../../src/kinds/brokers/nats/msg-id.js';

/**
 * The `Nats-Msg-Id` a JetStream publish sends (kinds/brokers/nats/msg-id.ts). A publisher's id wins
 * on a route's targets (spec-checklist point 99); a dead-letter write's own id replaces it
 * (`replacesOwn`), since the stream holding the published message would drop the dead-letter copy
 * as its duplicate (point 120). Without an id of the write's own, the publisher's stays.
 */
describe('nats msgIdChange', () => {
  const ours = 'r:kafka/k/t/0/7/1:deadletter';

  it("a target's write keeps the publisher's id", () => {
    assert.equal(msgIdChange({ 'Nats-Msg-Id': 'order-3' }, 'r:kafka/k/t/0/7/1:0', 'out'), undefined);
    assert.deepEqual(msgIdChange({ 'nats-msg-id': 'order-3' }, 'r:kafka/k/t/0/7/1:0', 'out'), { id: 'order-3', replaces: 'nats-msg-id' });
  });

  it("a dead-letter write's own id replaces the publisher's, in any case", () => {
    assert.deepEqual(msgIdChange({ 'Nats-Msg-Id': 'order-3' }, ours, 'dead', true), { id: `eventgate:${ours}:dead`, replaces: 'Nats-Msg-Id' });
    assert.deepEqual(msgIdChange({ 'nats-msg-id': 'order-3' }, ours, 'dead', true), { id: `eventgate:${ours}:dead`, replaces: 'nats-msg-id' });
    assert.deepEqual(msgIdChange({ 'NATS-MSG-ID': 'order-3' }, ours, 'dead', true), { id: `eventgate:${ours}:dead`, replaces: 'NATS-MSG-ID' });
  });

  it("a dead-letter write without an id of its own keeps the publisher's", () => {
    assert.equal(msgIdChange({ 'Nats-Msg-Id': 'order-3' }, undefined, 'dead', true), undefined);
    assert.deepEqual(msgIdChange({ 'nats-msg-id': 'order-3' }, undefined, 'dead', true), { id: 'order-3', replaces: 'nats-msg-id' });
  });

  it('a dead-letter write replaces an id the gateway made for another write, as any write does', () => {
    assert.deepEqual(msgIdChange({ 'Nats-Msg-Id': 'eventgate:other:memory/x/0:0:in' }, ours, 'dead', true), { id: `eventgate:${ours}:dead`, replaces: 'Nats-Msg-Id' });
    assert.deepEqual(msgIdChange({}, ours, 'dead', true), { id: `eventgate:${ours}:dead`, replaces: undefined });
  });
});

/** The publisher's id a dead-letter write of a message without a source identity is named by (point 121). */
describe('nats publisherMsgId', () => {
  it("is the publisher's id, in any case of the header's name", () => {
    assert.equal(publisherMsgId({ 'Nats-Msg-Id': 'order-4' }), 'order-4');
    assert.equal(publisherMsgId({ 'nats-msg-id': 'order-4' }), 'order-4');
    assert.equal(publisherMsgId({ other: 'x', 'NATS-Msg-ID': 'order-4' }), 'order-4');
  });

  it('is none for a message without one, or with an id the gateway made for another write', () => {
    assert.equal(publisherMsgId({ other: 'x' }), undefined);
    assert.equal(publisherMsgId({ 'Nats-Msg-Id': 'eventgate:r:nats/IN/1/2:0:out' }), undefined);
  });

  it('names a message on a route by it (publishedIdentity), or not at all', () => {
    assert.equal(publishedIdentity('fan', { 'nats-msg-id': 'order-4' }), 'fan:published/order-4');
    assert.equal(publishedIdentity('fan', { 'Nats-Msg-Id': 'eventgate:r:nats/IN/1/2:0:out' }), undefined);
  });
});
