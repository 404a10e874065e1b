import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import mqttPacket, { type IConnackPacket, type Packet } from 'mqtt-packet';
import { sharingUnavailable } from '../../src/kinds/brokers/mqtt/shared-subscriptions.js';

/** A CONNACK as its bytes come off the wire, parsed by mqtt-packet (mqtt.js's own parser). */
function parseConnack(bytes: number[]): IConnackPacket {
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  let parsed: Packet | undefined;
  parser.on('packet', (p: Packet) => (parsed = p));
  parser.on('error', (err: Error) => assert.fail(err));
  parser.parse(Buffer.from(bytes));
  assert.ok(parsed && parsed.cmd === 'connack');
  return parsed;
}

// MQTT 5 §3.2: type 0x20, remaining length, flags, reason code 0 (Success), properties.
const NOT_AVAILABLE = [0x20, 0x05, 0x00, 0x00, 0x02, 0x2a, 0x00]; // Shared Subscription Available (0x2A) = 0
const AVAILABLE = [0x20, 0x05, 0x00, 0x00, 0x02, 0x2a, 0x01];
const NO_PROPERTIES = [0x20, 0x03, 0x00, 0x00, 0x00]; // mosquitto 2.0's: the property absent means available

describe('mqtt: a server whose CONNACK says it has no shared subscriptions', () => {
  it('keeps a shared route from subscribing, naming sharedSubscriptions: false', () => {
    const why = sharingUnavailable(parseConnack(NOT_AVAILABLE), '$share/g/sensors/#');
    assert.match(why ?? '', /Shared Subscription Available 0/);
    assert.match(why ?? '', /'\$share\/g\/sensors\/#'/);
    assert.match(why ?? '', /`sharedSubscriptions` to `false`/);
  });

  it('leaves a plain subscription alone on that server, and a shared one where it is available or not said', () => {
    assert.equal(sharingUnavailable(parseConnack(NOT_AVAILABLE), 'sensors/#'), undefined);
    assert.equal(sharingUnavailable(parseConnack(AVAILABLE), '$share/g/sensors/#'), undefined);
    assert.equal(sharingUnavailable(parseConnack(NO_PROPERTIES), '$share/g/sensors/#'), undefined);
  });
});
