import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fromMqttProperties } from '../../src/codecs/cloudevents.js';

// How a consumed MQTT 5 message's properties become headers (the CloudEvents MQTT binding);
// e2e/mqtt.test.ts has mosquitto and the cloudevents SDK write them.
describe('fromMqttProperties', () => {
  it('takes the Content Type property as content-type, over a content-type user property (what earlier eventgate versions sent), which it reads when there is none', () => {
    assert.deepEqual({ ...fromMqttProperties({ 'content-type': 'text/plain', tenant: 'a' }, 'application/json') }, { 'content-type': 'application/json', tenant: 'a' });
    assert.deepEqual({ ...fromMqttProperties({ 'content-type': 'text/plain', tenant: 'a' }, undefined) }, { 'content-type': 'text/plain', tenant: 'a' });
  });

  it('reads a binary-mode event: attribute names become ce_ headers, trace context and other names stay headers, datacontenttype only when no content type is given', () => {
    const user = {
      specversion: '1.0',
      id: 'e-1',
      source: '/s',
      type: 't',
      longextensionnamebeyond20: 'x',
      traceparent: 'tp',
      tracestate: 'ts',
      'x-tenant': 'acme',
      Upper: 'u',
      datacontenttype: 'text/csv',
    };
    assert.deepEqual(
      { ...fromMqttProperties(user, 'application/json') },
      {
        ce_specversion: '1.0',
        ce_id: 'e-1',
        ce_source: '/s',
        ce_type: 't',
        ce_longextensionnamebeyond20: 'x',
        traceparent: 'tp',
        tracestate: 'ts',
        'x-tenant': 'acme',
        Upper: 'u',
        'content-type': 'application/json',
      },
    );
    assert.equal(fromMqttProperties(user, undefined)['content-type'], 'text/csv');
  });

  it('keeps the ce_ user properties earlier eventgate versions wrote as they are, and a message without specversion as it is', () => {
    const old = { ce_specversion: '1.0', ce_id: 'e-1', ce_source: '/s', ce_type: 't', specversion: 'not an attribute here', 'content-type': 'application/json' };
    assert.deepEqual({ ...fromMqttProperties({ ...old }, undefined) }, old);
    assert.deepEqual({ ...fromMqttProperties({ id: '7', unit: 'C' }, undefined) }, { id: '7', unit: 'C' });
  });
});
