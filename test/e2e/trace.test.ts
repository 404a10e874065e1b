import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

const CONFIG = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  push: { kind: websocket, port: 0 }
routes:
  - name: http-in
    from: { listener: api, path: /events }
    to: { broker: local, topic: events }
  - name: ws-in
    from: { listener: push, path: /publish }
    to: { broker: local, topic: events }
  - name: out
    from: { broker: local, topic: events }
    to: { listener: push, path: /watch, format: envelope }
`;

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const SHAPE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;

function parts(traceparent: unknown): { traceId: string; spanId: string; flags: string } {
  assert.equal(typeof traceparent, 'string');
  const m = SHAPE.exec(traceparent as string);
  assert.ok(m, `not a version 00 traceparent: ${traceparent}`);
  return { traceId: m[1]!, spanId: m[2]!, flags: m[3]! };
}

describe('W3C trace context through the gateway', () => {
  let watcher: WsClient;
  let tap: WsClient;
  after(() => {
    watcher?.close();
    tap?.close();
  });
  const gw = useGateway(CONFIG);
  before(async () => {
    watcher = await WsClient.connect(gw.url('push', '/watch', 'ws'));
    // The tap of the consume route shows each message as it was read from the memory topic.
    tap = await WsClient.connect(`${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=out`);
    assert.equal((await tap.next()).type, 'hello');
  });

  it('carries an HTTP traceparent into the memory topic and the websocket envelope, with a new span id at each route', async () => {
    const reply = await post(gw.url('api', '/events'), { n: 1 }, { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'vendor=abc' });
    assert.equal(reply.status, 200);

    const tapped = await tap.next();
    assert.equal(tapped.outcome, 'delivered');
    const onTopic = parts(tapped.message.headers.traceparent);
    assert.deepEqual({ traceId: onTopic.traceId, flags: onTopic.flags }, { traceId: TRACE, flags: '01' });
    assert.notEqual(onTopic.spanId, PARENT, 'the producing route is a span of its own');
    assert.equal(tapped.message.headers.tracestate, 'vendor=abc');
    assert.equal(tapped.traceId, TRACE);

    const envelope = await watcher.next();
    const delivered = parts(envelope.headers.traceparent);
    assert.equal(delivered.traceId, TRACE);
    assert.ok(delivered.spanId !== PARENT && delivered.spanId !== onTopic.spanId, 'the consuming route is a span of its own, a child of the producing one');
    assert.equal(envelope.headers.tracestate, 'vendor=abc');
    assert.deepEqual(envelope.value, { n: 1 });
  });

  it('keeps the sampled flag of the incoming context', async () => {
    await post(gw.url('api', '/events'), { n: 2 }, { traceparent: `00-${TRACE}-${PARENT}-00` });
    await tap.next();
    const envelope = await watcher.next();
    assert.deepEqual({ ...parts(envelope.headers.traceparent), spanId: undefined }, { traceId: TRACE, spanId: undefined, flags: '00' });
  });

  it('starts a new trace for a message without a traceparent, or with a malformed one', async () => {
    const cases: Record<string, string>[] = [{}, { traceparent: `00-${TRACE.toUpperCase()}-${PARENT}-01` }, { traceparent: 'not-a-traceparent' }];
    for (const headers of cases) {
      const reply = await post(gw.url('api', '/events'), { n: 3 }, headers);
      assert.equal(reply.status, 200);
      const tapped = await tap.next();
      const envelope = await watcher.next();
      const first = parts(tapped.message.headers.traceparent);
      const second = parts(envelope.headers.traceparent);
      assert.notEqual(first.traceId, TRACE.toLowerCase());
      assert.equal(second.traceId, first.traceId, 'one trace from the HTTP request to the websocket client');
      assert.equal(first.flags, '01');
    }
  });

  it('gives every frame of a WebSocket connection its own span in the trace of the handshake', async () => {
    const publisher = await WsClient.connect(gw.url('push', '/publish', 'ws'), { headers: { traceparent: `00-${TRACE}-${PARENT}-01` } });
    publisher.send({ frame: 1 });
    publisher.send({ frame: 2 });
    const spans = new Set<string>();
    for (let i = 0; i < 2; i++) {
      await tap.next();
      const envelope = await watcher.next();
      const p = parts(envelope.headers.traceparent);
      assert.equal(p.traceId, TRACE);
      spans.add(p.spanId);
    }
    assert.equal(spans.size, 2);
    assert.ok(!spans.has(PARENT));
    publisher.close();
  });

  it('starts a trace per frame when the handshake had no trace context', async () => {
    const publisher = await WsClient.connect(gw.url('push', '/publish', 'ws'));
    publisher.send({ frame: 1 });
    publisher.send({ frame: 2 });
    const traces = new Set<string>();
    for (let i = 0; i < 2; i++) {
      await tap.next();
      traces.add(parts((await watcher.next()).headers.traceparent).traceId);
    }
    assert.equal(traces.size, 2);
    publisher.close();
  });
});
