import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ErrorWithReasonCode, ReasonCodes } from 'mqtt';
import { refusedBy } from '../../src/kinds/brokers/mqtt/connection.js';

/** A refused CONNACK as mqtt.js reports it (handlers/connack.js). */
const connack = (rc: number) => new ErrorWithReasonCode(`Connection refused: ${ReasonCodes[rc as keyof typeof ReasonCodes]}`, rc);

/**
 * Which failed connects a reload takes for a refusal for good (it is rejected at once, the running
 * broker kept) and which may pass (it waits, then goes on). The login and TLS codes are met against
 * mosquitto in e2e/reload-refusals and e2e/broker-tls; the client id codes and the codes of a server
 * that cannot take the client now are not sent by mosquitto for the gateway's ids, so they are read here.
 */
describe('kind: mqtt, a refused connect read', () => {
  it('turns down the login for 3.1.1 codes 4 and 5 and MQTT 5 0x86, 0x87, 0x8A, 0x8C; the client id for 2 and 0x85', () => {
    for (const rc of [4, 5, 0x86, 0x87, 0x8a, 0x8c]) assert.equal(refusedBy(connack(rc), false), 'login', String(rc));
    for (const rc of [2, 0x85]) assert.equal(refusedBy(connack(rc), false), 'client id', String(rc));
  });

  it('takes a server unavailable, busy, over its quota or its connection rate, and an unreachable address, for what may pass', () => {
    for (const rc of [3, 0x88, 0x89, 0x97, 0x9f]) assert.equal(refusedBy(connack(rc), false), undefined, String(rc));
    assert.equal(refusedBy(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), false), undefined);
    assert.equal(refusedBy(new Error('connack timeout'), false), undefined);
  });

  it('reads a certificate either side refused as a TLS refusal', () => {
    assert.equal(refusedBy(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }), false), 'tls');
    assert.equal(refusedBy(Object.assign(new Error('tlsv1 alert unknown ca'), { code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' }), false), 'tls');
  });
});
