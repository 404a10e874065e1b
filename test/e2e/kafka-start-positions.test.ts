import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { repoRoot, startGateway, type RunningGateway } from '../helpers/gateway.js';
import { scrapeUntil } from '../helpers/prometheus.js';
import { committedOffsets, kcatConsume, kcatConsumeAll, kcatProduce, runProcess, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';

const PYTHON_CLIENT = join(repoRoot, 'test', 'kafka', 'python-client.py');

async function produce(bootstrap: string, topic: string, records: { partition: number; value: string }[]): Promise<void> {
  const producer = testClient(bootstrap).producer();
  await producer.connect();
  try {
    await producer.send({ topic, messages: records });
  } finally {
    await producer.disconnect();
  }
}

describe('where consume routes start (no gaps in at-least-once)', () => {
  let kafka: KafkaCluster;
  const running: RunningGateway[] = [];
  const t = { src: '', dst: '', fresh: '', freshOut: '', news: '', newsOut: '', live: '', history: '', reset: '', resetOut: '' };
  const group = 'copy-group';

  const start = async (yaml: string, routes: string[]) => {
    const gw = await startGateway(yaml);
    running.push(gw);
    await Promise.all(routes.map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 30000)));
    return gw;
  };
  const broker = () => `  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${kafka.consumerYaml} }`;
  const copyRoute = () => `  - name: copy
    from: { broker: kafka, topic: ${t.src}, group: ${group} }
    to: { broker: kafka, topic: ${t.dst} }`;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    await kafka.createTopic(t.src, 3);
    for (const topic of [t.dst, t.fresh, t.freshOut, t.news, t.newsOut, t.live, t.history, t.reset, t.resetOut]) await kafka.createTopic(topic, 1);
  });
  after(async () => {
    for (const gw of running) await gw.stop('SIGKILL');
    await kafka?.stop();
  });

  it('a durable route whose group committed one partition of three copies all 200 records produced while it was down, on every partition', async () => {
    const first = await start(`version: 1\nbrokers:\n${broker()}\nroutes:\n${copyRoute()}\n`, ['copy']);
    await produce(kafka.bootstrap, t.src, [{ partition: 0, value: '{"n":"first"}' }]);
    await kcatConsume(kafka.bootstrap, t.dst, 1, 30000);
    assert.deepEqual(await first.stop('SIGTERM'), { code: 0, signal: null });
    // It left its group on the way out (LeaveGroup), so the next member need not wait out its session.
    if (kafka.canInjectOutages) assert.equal(kafka.leaves(group), 1);
    assert.deepEqual(await committedOffsets(kafka.bootstrap, group, t.src), { 0: '1', 1: '-1', 2: '-1' }, 'only partition 0 was ever committed');

    await produce(
      kafka.bootstrap,
      t.src,
      Array.from({ length: 200 }, (_, n) => ({ partition: n % 3, value: JSON.stringify({ n }) })),
    );
    await start(`version: 1\nbrokers:\n${broker()}\nroutes:\n${copyRoute()}\n`, ['copy']);
    const copied = await kcatConsume(kafka.bootstrap, t.dst, 201, 60000);
    const ns = new Set(copied.map((r) => JSON.parse(r.value!).n));
    for (let n = 0; n < 200; n++) assert.ok(ns.has(n), `record ${n} was copied`);
  });

  it('a brand-new durable route copies what was produced before its first start; a websocket forward route and startFrom: latest see only what comes after; a group offset out of range is said with its offsets', async () => {
    await kcatProduce(kafka.bootstrap, t.fresh, [{ value: '{"old":1}' }, { value: '{"old":2}' }]);
    // A group whose offset is past the partition's end (set by hand while no member ran, as an
    // operator's reset does; a recreated topic is the same): the cluster answers the fetch
    // OFFSET_OUT_OF_RANGE, and the route reads from startFrom (earliest), saying so.
    await kcatProduce(kafka.bootstrap, t.reset, [{ value: '{"kept":1}' }, { value: '{"kept":2}' }]);
    const set = await runProcess('/usr/bin/python3', [PYTHON_CLIENT, 'commit', kafka.bootstrap, t.reset, 'reset-group', '0', '50'], '', 30000);
    assert.equal(set.stdout.trim(), 'ok', set.stderr);
    await kcatProduce(kafka.bootstrap, t.news, [{ value: '{"old":1}' }, { value: '{"old":2}' }]);
    await kcatProduce(kafka.bootstrap, t.live, [{ value: '{"old":1}' }]);
    const gw = await start(
      `version: 1
brokers:
${broker()}
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: fresh
    from: { broker: kafka, topic: ${t.fresh} }
    to: { broker: kafka, topic: ${t.freshOut} }
  - name: news-only
    from: { broker: kafka, topic: ${t.news}, startFrom: latest }
    to: { broker: kafka, topic: ${t.newsOut} }
  - name: live
    from: { broker: kafka, topic: ${t.live} }
    to: { listener: ws, path: /live }
  - name: reset
    from: { broker: kafka, topic: ${t.reset}, group: reset-group }
    to: { broker: kafka, topic: ${t.resetOut} }
`,
      ['fresh', 'news-only', 'live', 'reset'],
    );
    const said = await gw.waitForLog((l) => l.route === 'reset' && l.msg.startsWith('consumer offset out of range'), 30000);
    assert.equal(said.level, 'warn', 'nothing was lost: the offset was past the end');
    assert.equal(
      said.msg,
      `consumer offset out of range: partition 0 of ${t.reset}: the group's offset 50 is out of range (the partition holds offsets 0 to 1); reading from 0 (startFrom: earliest); the offset is past the partition's end (the topic was recreated, or the group's offsets were set past it)`,
    );
    assert.ok(!gw.logs.some((l) => l.msg.includes('resetting to default offset')), "kafkajs' own line, which says neither offset, is not logged beside it");
    assert.deepEqual(
      (await kcatConsume(kafka.bootstrap, t.resetOut, 2, 30000)).map((r) => r.value),
      ['{"kept":1}', '{"kept":2}'],
    );
    const fresh = await kcatConsume(kafka.bootstrap, t.freshOut, 2, 30000);
    assert.deepEqual(
      fresh.map((r) => r.value),
      ['{"old":1}', '{"old":2}'],
    );

    // One partition each: had the older records been taken, they would arrive before the sentinel.
    const client = await WsClient.connect(gw.url('ws', '/live', 'ws'));
    await kcatProduce(kafka.bootstrap, t.live, [{ value: '{"sentinel":true}' }]);
    assert.deepEqual(await client.next(15000), { sentinel: true });
    client.close();
    await kcatProduce(kafka.bootstrap, t.news, [{ value: '{"sentinel":true}' }]);
    await kcatConsume(kafka.bootstrap, t.newsOut, 1, 30000);
    assert.deepEqual(
      (await kcatConsumeAll(kafka.bootstrap, t.newsOut)).map((r) => r.value),
      ['{"sentinel":true}'],
    );
  });

  // docs/scaling.md: `consumer.startFrom` on the broker sets the start of every route reading from
  // it; a route's own `startFrom` wins, and the forward routes' `latest` is only their default.
  it("a broker's consumer.startFrom: earliest also starts a websocket forward route at the oldest record", async () => {
    await kcatProduce(kafka.bootstrap, t.history, [{ value: '{"old":1}' }, { value: '{"old":2}' }]);
    const gw = await start(
      `version: 1
admin: { port: 0 }
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", consumer: ${kafka.consumerYaml.replace(/ }$/, ', startFrom: earliest }')} }
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: history
    from: { broker: kafka, topic: ${t.history} }
    to: { listener: ws, path: /history }
`,
      ['history'],
    );
    // No client is connected, so the route's counter is what shows the two older records were taken.
    const received = (s: Awaited<ReturnType<typeof scrapeUntil>>) => s.value('eventgate_route_messages_total', { route: 'history', outcome: 'received' });
    assert.equal(received(await scrapeUntil(gw.adminUrl, (s) => received(s) === 2, 15000)), 2);
  });
});
