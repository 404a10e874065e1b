import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { committedOffsets, endOffsets, kcatConsumeAll, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { fetch } from '../helpers/http.js';

/** The shape of the load, not an assertion: how long a broker stays down, then up, and how often. */
const FLAPS = 4;
const DOWN_MS = 1500;
const UP_MS = 1500;
const PRODUCERS = 6;
/** Each HTTP producer stops after this many requests even if the flapping is not over. */
const MAX_REQUESTS_EACH = 400;

describe('a broker that goes down and up under load', () => {
  let kafka: KafkaCluster;
  let input = '';
  let copy = '';

  before(async () => {
    kafka = await startKafka({ brokers: 3 });
    input = kafka.topic('flap-in');
    copy = kafka.topic('flap-copy');
    await kafka.createTopic(input, 6);
    await kafka.createTopic(copy, 6);
  });
  /** The suite's config; a new `ackTimeoutMs` (the probe's request timeout) makes the probe's client again. */
  const config = (ackTimeoutMs = 2000) => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: ${kafka.bootstrap}
    connectionTimeoutMs: 500
    healthCheckIntervalMs: 200
    producer: { ackTimeoutMs: ${ackTimeoutMs}, lingerMs: 2 }
    consumer: ${kafka.consumerYaml}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: publish
    from: { listener: api, path: /events }
    to: { broker: kafka, topic: ${input}, key: id }
  - name: copy
    from: { broker: kafka, topic: ${input} }
    to: { broker: kafka, topic: ${copy}, key: $key }
`;
  const gw = useGateway(() => config());
  /** The kafka broker as /admin/status tells it. */
  const broker = async () => ((await gw.status()).brokers as { name: string; ready: boolean; detail: string }[]).find((b) => b.name === 'kafka')!;
  before(async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copy', 30000);
  });
  after(async () => {
    await kafka?.stop();
  });

  it('keeps every message it answered 2xx for, copies each at least once, and the copy route catches up (lag 0)', async (t) => {
    if (!kafka.canInjectOutages) return t.diagnostic('KAFKA_BROKERS is set: a real cluster cannot be flapped from here');
    let flapping = true;
    const acked = new Set<string>();
    const answers = new Map<number, number>();
    const producer = async (w: number) => {
      for (let i = 0; i < MAX_REQUESTS_EACH && flapping; i++) {
        const id = `p${w}-${i}`;
        const reply = await post(gw.url('api', '/events'), { id, w, i });
        answers.set(reply.status, (answers.get(reply.status) ?? 0) + 1);
        if (reply.status >= 200 && reply.status < 300) acked.add(id);
        else assert.equal(reply.status, 503, `only 503 while a broker is away: ${reply.text}`);
      }
    };
    const flapper = async () => {
      for (let f = 0; f < FLAPS; f++) {
        await new Promise((r) => setTimeout(r, UP_MS));
        await kafka.down(1 + (f % 2));
        await new Promise((r) => setTimeout(r, DOWN_MS));
        await kafka.up(-1);
      }
      flapping = false;
    };
    await Promise.all([flapper(), ...Array.from({ length: PRODUCERS }, (_, w) => producer(w))]);
    t.diagnostic(`answers by status: ${JSON.stringify(Object.fromEntries(answers))}`);
    assert.ok(acked.size > 0, 'some publishes were acknowledged');

    // Every acknowledged message is in the topic, read back by an independent client.
    const stored = await kcatConsumeAll(kafka.bootstrap, input, 60000);
    const storedIds = stored.map((r) => JSON.parse(r.value!).id as string);
    const inTopic = new Set(storedIds);
    const lost = [...acked].filter((id) => !inTopic.has(id));
    assert.deepEqual(lost, [], `${lost.length} acknowledged messages are missing from the topic`);
    // A record whose produce response was lost may have been written twice by the producer's retry
    // (docs/scaling.md, "Delivery guarantees"); nothing else duplicates.
    t.diagnostic(`records in the topic: ${storedIds.length}, distinct: ${inTopic.size}, acknowledged: ${acked.size}`);

    // The consume route catches up: its group's committed offsets reach the end of every partition.
    await eventually(
      async () => {
        const [committed, end] = await Promise.all([committedOffsets(kafka.bootstrap, 'eventgate-copy', input), endOffsets(kafka.bootstrap, input)]);
        assert.deepEqual(committed, end);
      },
      90000,
      500,
    );
    const copied = new Set((await kcatConsumeAll(kafka.bootstrap, copy, 60000)).map((r) => JSON.parse(r.value!).id as string));
    assert.deepEqual(
      [...inTopic].filter((id) => !copied.has(id)),
      [],
      'every stored record was copied',
    );
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    const lags = [...metrics.matchAll(/^eventgate_kafka_consumer_lag\{route="copy",[^}]*\} (\d+)$/gm)].map((m) => Number(m[1]));
    assert.ok(
      lags.every((lag) => lag === 0),
      `consumer lag of the copy route: ${lags.join(', ')}`,
    );
  });

  it('stays ready while one broker of the cluster is down: a probe round that meets it asks the others (2066)', async (t) => {
    if (!kafka.canInjectOutages) return t.diagnostic('KAFKA_BROKERS is set: a broker of a real cluster cannot be taken down from here');
    // Twenty rounds of the probe or more. kafkajs asks a broker drawn at random, so on the old code a third of them met the one down.
    assert.deepEqual(await readinessWhileDown(3, 20), { notReady: [], unreachable: [] });
  });

  it('stays ready when the probe connects again through a bootstrap server that is down (2100)', async (t) => {
    if (!kafka.canInjectOutages) return t.diagnostic('KAFKA_BROKERS is set: a broker of a real cluster cannot be taken down from here');
    // Broker 1 is the first bootstrap server, which a new probe client connects through first; a new
    // ackTimeoutMs makes the probe's client again at its next round.
    const reload = async () => assert.equal((await gw.reconfigure(config(2500))).msg, 'config reloaded');
    assert.deepEqual(await readinessWhileDown(1, 10, reload), { notReady: [], unreachable: [] });
  });

  /**
   * The kafka broker's readiness sampled `samples` times at least a probe interval (200 ms) apart
   * while broker `id` is down (after `meanwhile`): the details of those not ready, and the outage
   * lines logged.
   */
  async function readinessWhileDown(id: number, samples: number, meanwhile?: () => Promise<void>) {
    await eventually(async () => assert.equal((await broker()).ready, true), 20000);
    const from = gw.logs.length;
    await kafka.down(id);
    const notReady: string[] = [];
    try {
      await meanwhile?.();
      for (let i = 0; i < samples; i++) {
        const b = await broker();
        if (!b.ready) notReady.push(b.detail);
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      await kafka.up(id);
    }
    return { notReady, unreachable: gw.logs.slice(from).filter((l) => l.msg === 'kafka broker unreachable') };
  }
});
