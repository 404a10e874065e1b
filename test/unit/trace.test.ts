import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { describe, it } from 'node:test';
import type * as PromClient from 'prom-client';
import { bundled } from '../../src/core/bundled.js';
import { AMQP_PORTS, KAFKA_PORTS, MQTT_PORTS, NATS_PORTS, serverAddressOf } from '../../src/kinds/brokers/server-url.js';
import { formatTraceparent, parseTraceparent, spanTemplate, startMessageSpan, endMessageSpan } from '../../src/runtime/trace.js';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const SPAN = 'b7ad6b7169203331';
const VALID = `00-${TRACE}-${SPAN}-01`;
const TRACEPARENT_SHAPE = /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/;

describe('W3C traceparent parsing', () => {
  it('reads the trace id, parent id and sampled flag of a version 00 header', () => {
    assert.deepEqual(parseTraceparent(VALID), { traceId: TRACE, spanId: SPAN, traceFlags: 1, isRemote: true });
    assert.equal(parseTraceparent(`00-${TRACE}-${SPAN}-00`)!.traceFlags, 0);
    assert.equal(parseTraceparent(` ${VALID} `)!.traceId, TRACE, 'surrounding whitespace is allowed');
  });

  it('accepts a future version with extra fields, as the spec asks parsers to', () => {
    assert.equal(parseTraceparent(`01-${TRACE}-${SPAN}-01-future-stuff`)!.spanId, SPAN);
  });

  it('rejects malformed headers, so a message carrying one starts a new trace', () => {
    for (const bad of [
      '',
      'garbage',
      `ff-${TRACE}-${SPAN}-01`, // version ff is forbidden
      `00-${TRACE}-${SPAN}-01-extra`, // version 00 has exactly four fields
      `00-${TRACE.toUpperCase()}-${SPAN}-01`, // lowercase hex only
      `00-${'0'.repeat(32)}-${SPAN}-01`, // all-zero trace id
      `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero parent id
      `00-${TRACE.slice(1)}-${SPAN}-01`,
      `00-${TRACE}-${SPAN}-1`,
    ]) {
      assert.equal(parseTraceparent(bad), undefined, bad);
    }
    assert.equal(parseTraceparent(undefined), undefined);
  });

  it('formats a span context back into a version 00 header', () => {
    assert.equal(formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 1 }), VALID);
    assert.equal(formatTraceparent({ traceId: TRACE, spanId: SPAN, traceFlags: 0 }), `00-${TRACE}-${SPAN}-00`);
  });
});

describe('message spans without an OpenTelemetry SDK', () => {
  const template = spanTemplate('orders-in', undefined);

  it('continues an incoming trace with a new span id and the same flags', () => {
    for (const flags of ['00', '01']) {
      const s = startMessageSpan(template, `00-${TRACE}-${SPAN}-${flags}`);
      assert.equal(s.traceId, TRACE);
      assert.match(s.traceparent, TRACEPARENT_SHAPE);
      const [, traceId, spanId, outFlags] = s.traceparent.split('-');
      assert.equal(traceId, TRACE);
      assert.notEqual(spanId, SPAN);
      assert.equal(outFlags, flags);
      assert.equal(s.context, undefined, 'nothing to activate when no SDK made the span');
      endMessageSpan(s, { outcome: 'filtered' });
    }
  });

  it('starts a new sampled trace for a message without one, with fresh ids each time', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const s = startMessageSpan(template, undefined);
      assert.match(s.traceparent, TRACEPARENT_SHAPE);
      assert.ok(s.traceparent.endsWith('-01'));
      assert.equal(s.traceparent.split('-')[1], s.traceId);
      seen.add(s.traceId);
      seen.add(s.traceparent.split('-')[2]!);
    }
    assert.equal(seen.size, 2000, 'trace and span ids do not repeat');
  });

  it('does not load the OpenTelemetry API (45 module files, ~0.5 MB of an idle gateway) while no SDK is registered', () => {
    endMessageSpan(startMessageSpan(template, VALID), { outcome: 'filtered' });
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('@opentelemetry/api'));
    assert.deepEqual(loaded, []);
  });

  // prom-client requires the API when it loads (for exemplars, which the gateway does not enable):
  // every gateway with an admin server loaded it, SDK or not.
  it("does not load it with the admin server's Prometheus metrics either", async () => {
    const { Registry, collectDefaultMetrics } = bundled<typeof PromClient>('prom-client');
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    assert.match(await registry.metrics(), /^process_cpu_user_seconds_total /m);
    const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes('@opentelemetry/api'));
    assert.deepEqual(loaded, []);
  });
});

// server.address / server.port of the messaging spans: each kind's first configured server, as its client reads it.
describe('the server a broker names', () => {
  it('takes the host without brackets and the port written, or the scheme default the client uses', () => {
    assert.deepEqual(serverAddressOf('kafka-1.internal:9093', KAFKA_PORTS), { address: 'kafka-1.internal', port: 9093 });
    assert.deepEqual(serverAddressOf('[::1]:9092', KAFKA_PORTS), { address: '::1', port: 9092 });
    assert.deepEqual(serverAddressOf('mqtts://user:secret@broker.example:8884', MQTT_PORTS), { address: 'broker.example', port: 8884 });
    assert.deepEqual(serverAddressOf('mqtt://mosquitto', MQTT_PORTS), { address: 'mosquitto', port: 1883 });
    // WHATWG URL drops ws's default port 80 as written: the table gives it back.
    assert.deepEqual(serverAddressOf('ws://mosquitto:80/mqtt', MQTT_PORTS), { address: 'mosquitto', port: 80 });
    assert.deepEqual(serverAddressOf('amqps://gateway:pw@rabbitmq/vhost', AMQP_PORTS), { address: 'rabbitmq', port: 5671 });
    assert.deepEqual(serverAddressOf('nats-0', NATS_PORTS), { address: 'nats-0', port: 4222 });
    assert.deepEqual(serverAddressOf('tls://NATS.example:4443', NATS_PORTS), { address: 'nats.example', port: 4443 });
  });

  it('names no server whose host is a user name (a password with an unencoded / ? or # ends the URL read before its @)', () => {
    assert.equal(serverAddressOf('amqp://gateway:5672/pw@rabbitmq', AMQP_PORTS), undefined);
    assert.equal(serverAddressOf('mqtt://gateway:1883?pw@mosquitto', MQTT_PORTS), undefined);
    assert.deepEqual(serverAddressOf('amqp://gateway:p@ss@rabbitmq', AMQP_PORTS), { address: 'rabbitmq', port: 5672 });
    assert.deepEqual(serverAddressOf('amqp://:pw@rabbitmq', AMQP_PORTS), { address: 'rabbitmq', port: 5672 });
  });
});
