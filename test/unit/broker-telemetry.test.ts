import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GatewayMetrics } from '../../src/telemetry/metrics.js';
import type { BrokerRuntime, ListenerRuntime } from '../../src/kinds/contracts.js';
import { MemoryBroker } from '../../src/kinds/brokers/memory.js';
import { createLogger } from '../../src/log.js';
import type { Message } from '../../src/core/message.js';
import { parsePrometheus } from '../helpers/prometheus.js';

function message(value: unknown): Message {
  return { value, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: Date.now() };
}

/** A gateway's metrics over one memory broker, as the Gateway wires them. */
function setup() {
  const brokers = new Map<string, BrokerRuntime>();
  const metrics = new GatewayMetrics({ brokers, listeners: new Map<string, ListenerRuntime>(), readiness: () => ({ ready: true }) }, ['memory']);
  const broker = new MemoryBroker('local', { kind: 'memory' }, { logger: createLogger('silent'), telemetry: metrics });
  brokers.set('local', broker);
  const lag = async () => parsePrometheus(await metrics.text()).series('eventgate_memory_consumer_lag');
  return { metrics, broker, lag };
}

describe('broker telemetry (memory broker)', () => {
  it('reports a consume route falling behind and catching up as eventgate_memory_consumer_lag', async () => {
    const { broker, lag } = setup();
    const held: (() => void)[] = [];
    let arrived: (() => void) | undefined;
    const sub = broker.subscribe({ topic: 'orders', group: 'g', route: 'orders-out' }, () => {
      arrived?.();
      return new Promise<void>((resolve) => held.push(resolve));
    });
    assert.deepEqual(await lag(), [{ labels: { route: 'orders-out', topic: 'orders', partition: '0' }, value: 0 }]);

    const first = new Promise<void>((r) => (arrived = r));
    for (let i = 0; i < 5; i++) await broker.publish('orders', message(i));
    await first;
    // The message in hand counts: it is not committed until its handler resolves.
    assert.deepEqual(broker.consumerLag(), [{ route: 'orders-out', topic: 'orders', partition: 0, lag: 5 }]);
    assert.equal((await lag())[0]!.value, 5);

    // Release messages one by one until the group is at the end.
    for (let left = 4; left >= 0; left--) {
      const next = left > 0 ? new Promise<void>((r) => (arrived = r)) : undefined;
      held.shift()!();
      await next;
      if (left > 0) assert.equal(broker.consumerLag()[0]!.lag, left);
    }
    await sub.stop();
    assert.deepEqual(broker.consumerLag(), [], 'a stopped subscription has no route to report lag for');
  });

  it('counts a message its route could not take as a consumer error of that route', async () => {
    const { broker, metrics } = setup();
    let calls = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    broker.subscribe({ topic: 't', group: 'g', route: 'flaky' }, async () => {
      if (++calls < 3) throw new Error('target down');
      done();
    });
    await broker.publish('t', message('x'));
    await finished;
    const s = parsePrometheus(await metrics.text());
    assert.equal(s.value('eventgate_memory_consumer_errors_total', { broker: 'local', route: 'flaky' }), 2);
    assert.equal(s.value('eventgate_memory_producer_errors_total', { broker: 'local' }), 0);
    assert.deepEqual(metrics.snapshot().brokerErrors, { local: { kind: 'memory', producer: 0, consumer: 2, crashes: 0 } });
    await broker.stop();
  });

  it('counts a publish refused at maxTopics (every topic read by a route) as a producer error', async () => {
    const brokers = new Map<string, BrokerRuntime>();
    const metrics = new GatewayMetrics({ brokers, listeners: new Map<string, ListenerRuntime>(), readiness: () => ({ ready: true }) }, ['memory']);
    const broker = new MemoryBroker('local', { kind: 'memory', maxTopics: 1 }, { logger: createLogger('silent'), telemetry: metrics });
    brokers.set('local', broker);
    broker.subscribe({ topic: 'read', group: 'g', route: 'reader' }, async () => {});
    await assert.rejects(async () => broker.publish('new', message('x')), /holds its maxTopics \(1\) topics, each read by a route: no room for topic 'new'/);
    const s = parsePrometheus(await metrics.text());
    assert.equal(s.value('eventgate_memory_producer_errors_total', { broker: 'local' }), 1);
    assert.deepEqual(metrics.snapshot().brokerErrors, { local: { kind: 'memory', producer: 1, consumer: 0, crashes: 0 } });
    await broker.stop();
  });

  it("keeps the running broker's counters while a reload builds one of another kind under its name, until that config is applied", async () => {
    const { broker, metrics } = setup();
    const running = metrics.broker('local', 'memory'); // the handle the running broker bound at its creation
    const retain = (kind: string) => metrics.retain({ routes: [], listeners: [], brokers: [{ name: 'local', kind }] });
    // A reload builds `local` as a nats broker (it binds its handle at creation), and fails: the running memory broker goes on counting.
    const built = metrics.broker('local', 'nats');
    retain('memory');
    running.producerError();
    let s = parsePrometheus(await metrics.text());
    assert.equal(s.value('eventgate_memory_producer_errors_total', { broker: 'local' }), 1);
    assert.deepEqual(s.series('eventgate_nats_producer_errors_total'), []);
    assert.deepEqual(metrics.snapshot().brokerErrors, { local: { kind: 'memory', producer: 1, consumer: 0, crashes: 0 } });
    // Built again and applied: its own counters from then on, counted from its build.
    const next = metrics.broker('local', 'nats');
    assert.notEqual(next, built);
    next.producerError();
    retain('nats');
    s = parsePrometheus(await metrics.text());
    assert.equal(s.value('eventgate_nats_producer_errors_total', { broker: 'local' }), 1);
    assert.deepEqual(s.series('eventgate_memory_producer_errors_total'), []);
    await broker.stop();
  });

  // A removed or renamed route's consumer may still count while it stops, after the reload's
  // retain removed its series: the count brought `{route="old"}` back, with no route behind it,
  // until the next reload (spec-checklist 3104).
  it('counts nothing for a route a reload retired while its consumer still runs, and from 0 for a route of that name reading the broker again', async () => {
    const { broker, metrics } = setup();
    const retain = (...readers: string[]) => metrics.retain({ routes: readers.map((name) => ({ name, reads: 'local', webhooks: [] })), listeners: [], brokers: [{ name: 'local', kind: 'memory' }] });
    retain('old');
    // The reload renamed `old` to `new`; the old route's subscription has not stopped yet.
    retain('new');
    let calls = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const sub = broker.subscribe({ topic: 't', group: 'g', route: 'old' }, async () => {
      if (++calls < 2) throw new Error('target down');
      done();
    });
    await broker.publish('t', message('x'));
    await finished;
    let s = parsePrometheus(await metrics.text());
    assert.deepEqual(s.series('eventgate_memory_consumer_errors_total'), [{ labels: { broker: 'local', route: 'new' }, value: 0 }]);
    assert.deepEqual(metrics.snapshot().brokerErrors, { local: { kind: 'memory', producer: 0, consumer: 0, crashes: 0 } });
    await sub.stop();
    // Renamed back: `old` reads the broker again and counts, from 0.
    retain('old');
    metrics.broker('local', 'memory').consumerError('old');
    s = parsePrometheus(await metrics.text());
    assert.deepEqual(s.series('eventgate_memory_consumer_errors_total'), [{ labels: { broker: 'local', route: 'old' }, value: 1 }]);
    await broker.stop();
  });

  it('registers the metric families of a broker kind it first sees when a broker of that kind reports, and sums its rejoins in /admin/stats', async () => {
    const metrics = new GatewayMetrics({ brokers: new Map(), listeners: new Map(), readiness: () => ({ ready: true }) }, []);
    const edge = metrics.broker('edge', 'kafka');
    edge.producerError();
    edge.consumerRejoin('feed');
    edge.consumerRejoin('feed');
    const s = parsePrometheus(await metrics.text());
    assert.equal(s.types.get('eventgate_kafka_consumer_lag'), 'gauge');
    assert.equal(s.value('eventgate_kafka_producer_errors_total', { broker: 'edge' }), 1);
    assert.equal(s.value('eventgate_kafka_consumer_rejoins_total', { broker: 'edge', route: 'feed' }), 2);
    // /admin/stats sums them per broker, as it does errors and crashes (kafka brokers only: no other kind rejoins a group).
    assert.deepEqual(metrics.snapshot().brokerErrors, { edge: { kind: 'kafka', producer: 1, consumer: 0, crashes: 0, rejoins: 2 } });
  });
});
