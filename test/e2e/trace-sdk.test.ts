import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { defaultRegistry } from '../../src/kinds/index.js';
import { createLogger } from '../../src/log.js';
import { Gateway } from '../../src/runtime/gateway.js';
import { post, WsClient } from '../helpers/clients.js';
import { tempFiles } from '../helpers/gateway.js';

// What a user gets by registering an OpenTelemetry SDK (e.g. `node --import ./otel.js`): the
// gateway is run in this process so the test can read the spans the SDK recorded.
const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));

const CONFIG = `
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  push: { kind: websocket, port: 0 }
routes:
  - name: http-in
    from: { listener: api, path: /events }
    through:
      - transform: 'fail = true ? $error("asked to fail") : $'
    to: { broker: local, topic: events }
  - name: out
    from: { broker: local, topic: events }
    to: { listener: push, path: /watch, format: envelope }
`;

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

describe('spans with an OpenTelemetry SDK registered', () => {
  let gateway: Gateway;
  let port: (listener: string) => number;
  before(async () => {
    const dir = tempFiles({ 'gateway.yaml': CONFIG });
    gateway = new Gateway({ configFile: `${dir}/gateway.yaml`, registry: defaultRegistry(), env: {}, logger: createLogger('silent'), watch: false });
    const started = await gateway.start();
    assert.deepEqual(started.diagnostics, []);
    port = (l) => gateway.listeners.get(l)!.address()!.port;
  });
  after(async () => {
    await gateway.shutdown();
  });

  it('records a span per route, parented by the incoming traceparent, and sends the span it recorded onwards', async () => {
    exporter.reset();
    const watcher = await WsClient.connect(`ws://127.0.0.1:${port('push')}/watch`);
    const reply = await post(`http://127.0.0.1:${port('api')}/events`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200);
    const envelope = await watcher.next();
    watcher.close();

    const spans = exporter.getFinishedSpans();
    const inbound = spans.find((s) => s.name === 'route http-in')!;
    const outbound = spans.find((s) => s.name === 'route out')!;
    assert.ok(inbound && outbound, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(inbound.kind, SpanKind.SERVER);
    assert.equal(outbound.kind, SpanKind.CONSUMER);
    assert.equal(inbound.spanContext().traceId, TRACE);
    assert.equal(inbound.parentSpanContext?.spanId, PARENT);
    // The consuming route's span is the child of the producing route's, through the memory topic's headers.
    assert.equal(outbound.spanContext().traceId, TRACE);
    assert.equal(outbound.parentSpanContext?.spanId, inbound.spanContext().spanId);
    assert.deepEqual(inbound.attributes, { 'eventgate.route': 'http-in', 'eventgate.outcome': 'delivered' });
    // A consume route's span is a process span of the messaging semantic conventions.
    assert.deepEqual(outbound.attributes, {
      'eventgate.route': 'out',
      'messaging.system': 'memory',
      'messaging.operation.type': 'process',
      'messaging.destination.name': 'events',
      'eventgate.outcome': 'delivered',
    });
    // The websocket client sees the span the SDK recorded, not one made up beside it.
    assert.equal(envelope.headers.traceparent, `00-${TRACE}-${outbound.spanContext().spanId}-01`);
  });

  it('marks the span of a failed message as an error', async () => {
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/events`, { fail: true });
    assert.equal(reply.status, 500);
    const [span] = exporter.getFinishedSpans();
    assert.equal(span!.name, 'route http-in');
    assert.equal(span!.parentSpanContext, undefined, 'no incoming traceparent: a root span');
    assert.equal(span!.status.code, SpanStatusCode.ERROR);
    assert.match(span!.status.message ?? '', /asked to fail/);
    assert.equal(span!.attributes['eventgate.outcome'], 'failed');
  });
});
