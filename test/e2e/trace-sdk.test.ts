import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { AlwaysOnSampler, BasicTracerProvider, InMemorySpanExporter, ParentBasedSampler, SamplingDecision, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { defaultRegistry } from '../../src/kinds/index.js';
import { ORIGINAL, type Message } from '../../src/core/message.js';
import { createLogger } from '../../src/log.js';
import { Gateway } from '../../src/runtime/gateway.js';
import { consumedAttributes, endMessageSpan, endSendSpan, sendTemplate, spanTemplate, startMessageSpan, startSendSpan } from '../../src/runtime/trace.js';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, tempFiles } from '../helpers/gateway.js';
import { startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { startMosquitto, startNats, type MessageServer } from '../helpers/servers.js';
import { sharedRabbit, type SharedRabbit } from '../helpers/shared-rabbit.js';

// What a user gets by registering an OpenTelemetry SDK (e.g. `node --import ./otel.js`): the
// gateway is run in this process so the test can read the spans the SDK recorded.
// Its sampler records every span but the write to the topic `unsampled` (a sampler by span name).
const exporter = new InMemorySpanExporter();
const parentBased = new ParentBasedSampler({ root: new AlwaysOnSampler() });
const sampler: ConstructorParameters<typeof ParentBasedSampler>[0]['root'] = {
  shouldSample: (...args) => (args[2] === 'send unsampled' ? { decision: SamplingDecision.NOT_RECORD } : parentBased.shouldSample(...args)),
  toString: () => 'all but send unsampled',
};
trace.setGlobalTracerProvider(new BasicTracerProvider({ sampler, spanProcessors: [new SimpleSpanProcessor(exporter)] }));

// Across real brokers: HTTP -> Kafka (the mock cluster) -> JetStream -> a wildcard route -> memory;
// HTTP -> RabbitMQ (the run's shared node, amq.topic) -> a queue's route -> memory;
// HTTP -> mosquitto -> a wildcard route -> memory.
// `gone.>` is a stream that is not there (declare: false): a write to it fails at once.
const config = (kafka: KafkaCluster, nats: MessageServer, rabbit: SharedRabbit, mqtt: MessageServer, topic: string) => `
version: 1
brokers:
  local: { kind: memory }
  cluster: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }
  bus:
    kind: nats
    servers: ${nats.url}
    streams:
      TRACED: { subjects: ["traced.>"] }
      GONE: { subjects: ["gone.>"], declare: false }
  rabbit:
    kind: amqp
    url: ${rabbit.url}
    queues:
      traced-q: { bindings: [traced.orders.*] }
  things: { kind: mqtt, url: "${mqtt.url}", qos: 1 }
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
  - name: to-kafka
    from: { listener: api, path: /kafka }
    to: { broker: cluster, topic: ${topic}, key: id }
  - name: kafka-to-nats
    from: { broker: cluster, topic: ${topic}, startFrom: earliest }
    to: { broker: bus, topic: traced.orders.eu }
  - name: nats-in
    from: { broker: bus, topic: "traced.orders.*" }
    to: { broker: local, topic: traced-end }
  - name: lost
    from: { listener: api, path: /lost }
    to: { broker: bus, topic: gone.orders }
  - name: to-unsampled
    from: { listener: api, path: /unsampled }
    to: { broker: local, topic: unsampled }
  - name: from-unsampled
    from: { broker: local, topic: unsampled }
    to: { broker: local, topic: unsampled-end }
  - name: to-rabbit
    from: { listener: api, path: /rabbit }
    to: { broker: rabbit, topic: traced.orders.eu }
  - name: rabbit-in
    from: { broker: rabbit, topic: traced-q }
    to: { broker: local, topic: rabbit-end }
  - name: to-mqtt
    from: { listener: api, path: /mqtt }
    to: { broker: things, topic: traced/lamp-1 }
  - name: mqtt-in
    from: { broker: things, topic: traced/+ }
    to: { broker: local, topic: mqtt-end }
  - name: checked
    from: { listener: api, path: /checked }
    through:
      - validate: { schema: { type: object, required: [id] }, onInvalid: deadletter, deadletter: { broker: local, topic: invalid } }
    to: { broker: local, topic: checked }
  - name: checked-lost
    from: { listener: api, path: /checked-lost }
    through:
      - validate: { schema: { type: object, required: [id] }, onInvalid: deadletter, deadletter: { broker: bus, topic: gone.invalid } }
    to: { broker: local, topic: checked }
  - name: to-doomed
    from: { listener: api, path: /doomed }
    to: { broker: local, topic: doomed }
  - name: doomed
    from: { broker: local, topic: doomed }
    through:
      - transform: '$error("cannot pass")'
    to: { broker: local, topic: never }
    deadletter: { broker: local, topic: dead }
  - name: dead-in
    from: { broker: local, topic: dead }
    to: { broker: local, topic: dead-end }
  - name: by-region
    from: { listener: api, path: /regions/:region }
    through:
      - validate: { schema: { type: object, required: [id] } }
    to: { broker: local, topic: regions }
  - name: to-doomed-unsampled
    from: { listener: api, path: /doomed-unsampled }
    to: { broker: local, topic: doomed-unsampled }
  - name: doomed-unsampled
    from: { broker: local, topic: doomed-unsampled }
    through:
      - transform: '$error("cannot pass")'
    to: { broker: local, topic: never }
    deadletter: { broker: local, topic: unsampled }
`;

/** \`server.address\` and \`server.port\` of \`host:port\` (the first of a list). */
const serverOf = (server: string) => {
  // Past the scheme and any user, up to the path; the first of a comma-separated list.
  const first = server
    .replace(/^[a-z]+:\/\//, '')
    .replace(/^[^@/]*@/, '')
    .split(/[,/]/)[0]!;
  const colon = first.lastIndexOf(':');
  return { 'server.address': first.slice(0, colon), 'server.port': Number(first.slice(colon + 1)) };
};

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

describe('spans with an OpenTelemetry SDK registered', () => {
  let gateway: Gateway;
  let kafka: KafkaCluster;
  let nats: MessageServer;
  let rabbit: SharedRabbit;
  let mqtt: MessageServer;
  let port: (listener: string) => number;
  const topic = `traced-${process.pid}`;
  before(async () => {
    [kafka, nats, rabbit, mqtt] = await Promise.all([startKafka(), startNats(), sharedRabbit(), startMosquitto()]);
    const dir = tempFiles({ 'gateway.yaml': config(kafka, nats, rabbit, mqtt, topic) });
    gateway = new Gateway({ configFile: `${dir}/gateway.yaml`, registry: defaultRegistry(), env: {}, logger: createLogger('silent'), watch: false });
    const started = await gateway.start();
    assert.deepEqual(started.diagnostics, []);
    port = (l) => gateway.listeners.get(l)!.address()!.port;
  });
  after(async () => {
    await gateway?.shutdown();
    await Promise.all([kafka?.stop(), nats?.stop(), rabbit?.stop(), mqtt?.stop()]);
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
    // The write to the memory topic is a PRODUCER span of the producing route's, and the consuming
    // route's span its child, through the memory topic's headers.
    const sent = spans.find((s) => s.name === 'send events')!;
    assert.ok(sent, `spans: ${spans.map((s) => s.name).join(', ')}`);
    assert.equal(sent.kind, SpanKind.PRODUCER);
    assert.equal(sent.parentSpanContext?.spanId, inbound.spanContext().spanId);
    assert.deepEqual(sent.attributes, {
      'messaging.system': 'memory',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'eventgate.broker': 'local',
      'messaging.destination.name': 'events',
      'messaging.destination.partition.id': '0',
    });
    assert.equal(outbound.spanContext().traceId, TRACE);
    assert.equal(outbound.parentSpanContext?.spanId, sent.spanContext().spanId);
    // An HTTP publish's span is a server span of the HTTP semantic conventions.
    assert.deepEqual(inbound.attributes, {
      'eventgate.route': 'http-in',
      'http.request.method': 'POST',
      'http.route': '/events',
      'url.path': '/events',
      'url.scheme': 'http',
      'eventgate.outcome': 'delivered',
      'http.response.status_code': 200,
    });
    // A consume route's span is a process span of the messaging semantic conventions.
    assert.deepEqual(outbound.attributes, {
      'eventgate.route': 'out',
      'messaging.system': 'memory',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': 'events',
      'messaging.destination.partition.id': '0',
      // The body as the client wrote it, which the memory topic kept.
      'messaging.message.body.size': Buffer.byteLength(JSON.stringify({ n: 1 })),
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
    assert.equal(span!.attributes['http.response.status_code'], 500);
    assert.equal(span!.attributes['error.type'], '500');
  });

  it("gives an HTTP publish's span the path requested, its route's template, and the status answered: a 4xx is no server error", async () => {
    exporter.reset();
    assert.equal((await post(`http://127.0.0.1:${port('api')}/regions/eu%20west`, { id: 1 })).status, 200);
    const refused = await post(`http://127.0.0.1:${port('api')}/regions/eu`, {});
    assert.equal(refused.status, 400);
    const [taken, invalid] = exporter.getFinishedSpans().filter((s) => s.name === 'route by-region');
    assert.equal(taken!.kind, SpanKind.SERVER);
    assert.deepEqual(taken!.attributes, {
      'eventgate.route': 'by-region',
      'http.request.method': 'POST',
      'http.route': '/regions/:region',
      'url.scheme': 'http',
      'url.path': '/regions/eu%20west',
      'eventgate.outcome': 'delivered',
      'http.response.status_code': 200,
    });
    assert.equal(taken!.status.code, SpanStatusCode.UNSET);
    assert.equal(invalid!.attributes['url.path'], '/regions/eu');
    assert.equal(invalid!.attributes['http.response.status_code'], 400);
    assert.equal(invalid!.attributes['eventgate.problem'], 'EG_INVALID_MESSAGE');
    assert.equal(invalid!.attributes['error.type'], undefined);
    assert.equal(invalid!.status.code, SpanStatusCode.UNSET, "the client's error, not the server's");
  });

  /** The finished span named `name` once the SDK has it (a consume route's ends after its write was acknowledged). */
  const finished = async (name: string): Promise<ReadableSpan> => {
    for (const deadline = Date.now() + 70_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
      const span = exporter.getFinishedSpans().find((s) => s.name === name);
      if (span) return span;
    }
    assert.fail(
      `no span '${name}'; spans: ${exporter
        .getFinishedSpans()
        .map((s) => s.name)
        .join(', ')}`,
    );
  };
  const parentOf = (child: ReadableSpan, parent: ReadableSpan) => {
    assert.equal(child.spanContext().traceId, TRACE, `${child.name}: the trace`);
    assert.equal(child.parentSpanContext?.spanId, parent.spanContext().spanId, `${child.name}: a child of ${parent.name}`);
  };

  it('makes each broker write a PRODUCER span whose traceparent the consuming route continues, across Kafka and JetStream', async () => {
    exporter.reset();
    const body = { id: 'order-7', n: 1 };
    const reply = await post(`http://127.0.0.1:${port('api')}/kafka`, body, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const [delivery] = reply.body.deliveries as { partition: number; offset: string }[];

    const toKafka = await finished('route to-kafka');
    const sendKafka = await finished(`send ${topic}`);
    const fromKafka = await finished('route kafka-to-nats');
    const sendNats = await finished('send traced.orders.eu');
    const natsIn = await finished('route nats-in');
    const sendLocal = await finished('send traced-end');

    // HTTP -> Kafka: the write is the route span's child, with what the cluster answered.
    assert.equal(sendKafka.kind, SpanKind.PRODUCER);
    parentOf(sendKafka, toKafka);
    assert.deepEqual(sendKafka.attributes, {
      'messaging.system': 'kafka',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'eventgate.broker': 'cluster',
      // The first bootstrap server.
      ...serverOf(kafka.bootstrap),
      'messaging.destination.name': topic,
      'messaging.kafka.message.key': 'order-7',
      'messaging.destination.partition.id': String(delivery!.partition),
      'messaging.kafka.offset': Number(delivery!.offset),
    });
    assert.equal(sendKafka.status.code, SpanStatusCode.UNSET);

    // Kafka -> the consume route: the child of the PRODUCER span, with the record's own attributes.
    assert.equal(fromKafka.kind, SpanKind.CONSUMER);
    parentOf(fromKafka, sendKafka);
    const group = fromKafka.attributes['messaging.consumer.group.name'];
    assert.ok(typeof group === 'string' && group !== '', `consumer group: ${group}`);
    assert.deepEqual(fromKafka.attributes, {
      'eventgate.route': 'kafka-to-nats',
      'messaging.system': 'kafka',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': topic,
      'messaging.consumer.group.name': group,
      ...serverOf(kafka.bootstrap),
      'messaging.destination.partition.id': String(delivery!.partition),
      'messaging.message.body.size': Buffer.byteLength(JSON.stringify(body)),
      'messaging.kafka.offset': Number(delivery!.offset),
      'messaging.kafka.message.key': 'order-7',
      'eventgate.outcome': 'delivered',
    });

    // Kafka -> JetStream -> a wildcard route: the concrete subject, the pattern as the template,
    // and the Nats-Msg-Id the route's write carried.
    assert.equal(sendNats.kind, SpanKind.PRODUCER);
    parentOf(sendNats, fromKafka);
    assert.equal(sendNats.attributes['messaging.system'], 'nats');
    assert.equal(sendNats.attributes['messaging.destination.name'], 'traced.orders.eu');
    assert.equal(natsIn.kind, SpanKind.CONSUMER);
    parentOf(natsIn, sendNats);
    assert.equal(natsIn.attributes['messaging.destination.name'], 'traced.orders.eu');
    assert.equal(natsIn.attributes['messaging.destination.template'], 'traced.orders.*');
    assert.match(String(natsIn.attributes['messaging.message.id']), /^eventgate:kafka-to-nats:/);
    assert.equal(natsIn.attributes['messaging.message.body.size'], Buffer.byteLength(JSON.stringify(body)));
    for (const span of [sendNats, natsIn]) {
      assert.equal(span.attributes['server.address'], serverOf(nats.url)['server.address'], span.name);
      assert.equal(span.attributes['server.port'], serverOf(nats.url)['server.port'], span.name);
    }
    parentOf(sendLocal, natsIn);
  });

  it('ends the PRODUCER span of a write the broker did not take with status ERROR', async () => {
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/lost`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 503, reply.text);
    const route = await finished('route lost');
    const send = await finished('send gone.orders');
    assert.equal(send.kind, SpanKind.PRODUCER);
    parentOf(send, route);
    assert.equal(send.status.code, SpanStatusCode.ERROR);
    assert.match(send.status.message ?? '', /did not acknowledge/);
    assert.equal(send.attributes['error.type'], 'EG_BROKER_UNAVAILABLE');
    assert.equal(route.status.code, SpanStatusCode.ERROR);
  });

  it('names the route span in a write whose PRODUCER span the sampler did not record, so the trace goes on from a recorded span', async () => {
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/unsampled`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const route = await finished('route to-unsampled');
    const next = await finished('route from-unsampled');
    parentOf(next, route);
    assert.equal(next.spanContext().traceFlags, 1, 'sampled, as the span it names');
    assert.equal(exporter.getFinishedSpans().filter((s) => s.name === 'send unsampled').length, 0);

    // A consume route's dead-letter write likewise names its last try's span, not the consumed
    // message's producer (the traceparent the message came with).
    exporter.reset();
    const doomed = await post(`http://127.0.0.1:${port('api')}/doomed-unsampled`, { n: 2 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(doomed.status, 200, doomed.text);
    const tried = await finished('route doomed-unsampled');
    const reader = await finished('route from-unsampled');
    parentOf(reader, tried);
    assert.equal(exporter.getFinishedSpans().filter((s) => s.name === 'send unsampled').length, 0);
  });

  it("names the exchange as a RabbitMQ write's and consume's destination, the routing key beside it, and the server", async () => {
    await eventually(() => assert.deepEqual(gateway.readiness(), { ready: true, reasons: [] }), 60_000);
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/rabbit`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const route = await finished('route to-rabbit');
    // The default exchange of the broker (amq.topic) names the span, not the routing key.
    const send = await finished('send amq.topic');
    const consumed = await finished('route rabbit-in');
    assert.equal(send.kind, SpanKind.PRODUCER);
    parentOf(send, route);
    const server = serverOf(rabbit.url);
    assert.deepEqual(send.attributes, {
      'messaging.system': 'rabbitmq',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'eventgate.broker': 'rabbit',
      ...server,
      'messaging.destination.name': 'amq.topic',
      'messaging.rabbitmq.destination.routing_key': 'traced.orders.eu',
    });
    parentOf(consumed, send);
    // The queue's one binding names its exchange; the route reads the queue. The message_id the
    // broker's publisher gave the write (its name, the process's prefix, a count) is the message's id.
    const id = consumed.attributes['messaging.message.id'];
    assert.match(String(id), /^rabbit-[0-9a-f]{16}-\d+$/);
    assert.deepEqual(consumed.attributes, {
      'eventgate.route': 'rabbit-in',
      'messaging.system': 'rabbitmq',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': 'amq.topic',
      'messaging.destination.subscription.name': 'traced-q',
      ...server,
      'messaging.message.body.size': Buffer.byteLength(JSON.stringify({ n: 1 })),
      'messaging.rabbitmq.destination.routing_key': 'traced.orders.eu',
      'messaging.message.id': id,
      'eventgate.outcome': 'delivered',
    });
  });

  it("names an MQTT write's and consume's topic and server, the wildcard as the consume's template", async () => {
    await eventually(() => assert.deepEqual(gateway.readiness(), { ready: true, reasons: [] }), 60_000);
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/mqtt`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const route = await finished('route to-mqtt');
    const send = await finished('send traced/lamp-1');
    const consumed = await finished('route mqtt-in');
    assert.equal(send.kind, SpanKind.PRODUCER);
    parentOf(send, route);
    const server = serverOf(mqtt.url);
    assert.deepEqual(send.attributes, {
      'messaging.system': 'mqtt',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'eventgate.broker': 'things',
      ...server,
      'messaging.destination.name': 'traced/lamp-1',
    });
    assert.equal(consumed.kind, SpanKind.CONSUMER);
    parentOf(consumed, send);
    assert.deepEqual(consumed.attributes, {
      'eventgate.route': 'mqtt-in',
      'messaging.system': 'mqtt',
      'messaging.operation.type': 'process',
      'messaging.operation.name': 'process',
      'messaging.destination.name': 'traced/lamp-1',
      ...server,
      'messaging.destination.template': 'traced/+',
      'messaging.message.body.size': Buffer.byteLength(JSON.stringify({ n: 1 })),
      'eventgate.outcome': 'delivered',
    });
  });

  it("makes a validate step's dead-letter write a PRODUCER span of the route's, ERROR when the broker does not take it", async () => {
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/checked`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const route = await finished('route checked');
    const send = await finished('send invalid');
    assert.equal(send.kind, SpanKind.PRODUCER);
    parentOf(send, route);
    assert.deepEqual(send.attributes, {
      'messaging.system': 'memory',
      'messaging.operation.type': 'send',
      'messaging.operation.name': 'send',
      'eventgate.broker': 'local',
      'eventgate.deadletter': true,
      'messaging.destination.name': 'invalid',
      'messaging.destination.partition.id': '0',
    });
    assert.equal(route.attributes['eventgate.outcome'], 'deadlettered');

    const lost = await post(`http://127.0.0.1:${port('api')}/checked-lost`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(lost.status, 503, lost.text);
    const lostRoute = await finished('route checked-lost');
    const lostSend = await finished('send gone.invalid');
    parentOf(lostSend, lostRoute);
    assert.equal(lostSend.attributes['eventgate.deadletter'], true);
    assert.equal(lostSend.status.code, SpanStatusCode.ERROR);
    assert.equal(lostSend.attributes['error.type'], 'EG_BROKER_UNAVAILABLE');
  });

  it("makes a consume route's dead-letter write a PRODUCER span of its last try's, whose traceparent the dead-letter topic's reader continues", async () => {
    exporter.reset();
    const reply = await post(`http://127.0.0.1:${port('api')}/doomed`, { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01` });
    assert.equal(reply.status, 200, reply.text);
    const tried = await finished('route doomed');
    const send = await finished('send dead');
    const reader = await finished('route dead-in');
    assert.equal(tried.status.code, SpanStatusCode.ERROR);
    assert.equal(send.kind, SpanKind.PRODUCER);
    parentOf(send, tried);
    assert.equal(send.attributes['eventgate.deadletter'], true);
    assert.equal(send.attributes['messaging.destination.name'], 'dead');
    assert.equal(send.status.code, SpanStatusCode.UNSET);
    parentOf(reader, send);
  });

  // The key attribute's cases the brokers here cannot produce (a record key that is not UTF-8),
  // through the functions a Kafka target calls, with this SDK: a consumed record whose key is
  // bytes, written on as it came, rekeyed by a target's `key` (route-targets.ts `keyed`), and a tombstone.
  it("gives a Kafka write's PRODUCER span the key it writes: none for bytes, the new text key of a rekeyed record", () => {
    exporter.reset();
    const route = startMessageSpan(spanTemplate('rekey', undefined), undefined);
    const raw = Buffer.from([0xff, 0xfe, 0x01]);
    const value = { n: 1 };
    const bytes = Buffer.from(JSON.stringify(value));
    const consumed: Message = {
      value,
      key: raw.toString('utf8'),
      headers: {},
      topic: 'in',
      partition: 0,
      offset: '3',
      timestamp: 0,
      [ORIGINAL]: { value: bytes, key: raw, headers: {}, decoded: { value, key: raw.toString('utf8'), headers: {} } },
    };
    const template = sendTemplate({ name: 'cluster', kind: 'kafka' }, 'out');
    const written = (name: string, msg: Message) => {
      const send = startSendSpan(route, template, 'out', msg)!;
      endSendSpan(send, { broker: 'cluster', topic: 'out', partition: 0, offset: '7' });
      const span = exporter.getFinishedSpans().at(-1)!;
      assert.equal(span.name, 'send out', name);
      return span.attributes;
    };
    assert.equal(written('as consumed', consumed)['messaging.kafka.message.key'], undefined);
    assert.equal(written('rekeyed', { ...consumed, key: 'order-7' })['messaging.kafka.message.key'], 'order-7');
    const tombstone = written('tombstone', { ...consumed, key: 'gone-1', value: null });
    assert.equal(tombstone['messaging.kafka.message.key'], 'gone-1');
    assert.equal(tombstone['messaging.kafka.message.tombstone'], true);
    endMessageSpan(route, { outcome: 'filtered' });
  });

  // A Kafka record a step gave a new value keeps its ORIGINAL while its key is still the one read
  // (the producer writes those key bytes); a memory topic stores it so, and the route that reads
  // the topic gets the new value with the old record's bytes beside it.
  it("gives a consumed message's body size only while its value is the one its bytes were read as", () => {
    exporter.reset();
    const value = { n: 1, padding: 'x'.repeat(100) };
    const bytes = Buffer.from(JSON.stringify(value));
    const stored: Message = {
      value: { n: 1 },
      key: 'order-7',
      headers: {},
      topic: 'copied',
      partition: 0,
      offset: '0',
      timestamp: 0,
      [ORIGINAL]: { value: bytes, key: Buffer.from('order-7'), headers: {}, decoded: { value, key: 'order-7', headers: {} } },
    };
    const template = spanTemplate('copied-in', { kind: 'memory', topic: 'copied' });
    const sizeOf = (msg: Message) => {
      const span = startMessageSpan(template, undefined);
      consumedAttributes(span, template.source!, msg);
      endMessageSpan(span, { outcome: 'filtered' });
      return exporter.getFinishedSpans().at(-1)!.attributes['messaging.message.body.size'];
    };
    assert.equal(sizeOf(stored), undefined, 'a new value: no bytes of its own');
    assert.equal(sizeOf({ ...stored, value }), bytes.length, 'the value read from the bytes');
  });
});
