import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, type HttpReply } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { kcatConsume, kcatConsumeAll, kcatProduce, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/** Kafka's TOPIC_AUTHORIZATION_FAILED: an error kafkajs does not retry, so one broker's part of a flush fails at once. */
const TOPIC_AUTHORIZATION_FAILED = 29;
const PRODUCE = 0;

/** `p`, or a failure once `ms` passed without its answer (a bounded wait, not a measurement). */
function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Which broker leads each partition of `topic`. */
async function leaders(bootstrap: string, topic: string): Promise<Map<number, number>> {
  const admin = testClient(bootstrap).admin();
  await admin.connect();
  try {
    const [meta] = (await admin.fetchTopicMetadata({ topics: [topic] })).topics;
    return new Map(meta!.partitions.map((p) => [p.partitionId, p.leader]));
  } finally {
    await admin.disconnect();
  }
}

/**
 * Posts each record at once (concurrently, so they share flushes), then posts again every one answered
 * 503, as a client that retries does, until each got 200. Returns every answer per id.
 */
async function publishRetrying(url: string, ids: string[], keyOf: (id: string) => string): Promise<Map<string, HttpReply[]>> {
  const answers = new Map<string, HttpReply[]>(ids.map((id) => [id, []]));
  let pending = ids;
  for (let round = 0; pending.length > 0; round++) {
    assert.ok(round < 20, `still not accepted after 20 rounds: ${pending.join(', ')}`);
    const replies = await Promise.all(pending.map((id) => post(url, { id, k: keyOf(id) })));
    const next: string[] = [];
    for (const [i, id] of pending.entries()) {
      const r = replies[i]!;
      answers.get(id)!.push(r);
      assert.ok(r.status === 200 || r.status === 503, `${id}: ${r.status} ${r.text}`);
      if (r.status === 503) next.push(id);
    }
    pending = next;
  }
  return answers;
}

/** A key for each partition of `path`'s 2-partition topic, found from where warm-up records went (which also makes the gateway fetch its metadata). */
async function keysPerPartition(url: (path: string) => string, path: string, prefix: string): Promise<{ keyOf: Map<number, string>; warm: Map<string, HttpReply[]> }> {
  const keys = Array.from({ length: 8 }, (_, i) => `${prefix}${i}`);
  const replies = await Promise.all(keys.map((k) => post(url(path), { id: `warm-${k}`, k })));
  const keyOf = new Map<number, string>();
  for (const [i, r] of replies.entries()) {
    assert.equal(r.status, 200, r.text);
    keyOf.set(r.body.deliveries[0].partition, keys[i]!);
  }
  assert.deepEqual([...keyOf.keys()].sort(), [0, 1], 'the keys cover both partitions');
  return { keyOf, warm: new Map(replies.map((r, i) => [`warm-${keys[i]}`, [r]])) };
}

/** Every id in Kafka exactly once, each 200 at the partition and offset it was answered with. */
async function assertExactlyOnce(bootstrap: string, topic: string, answers: Map<string, HttpReply[]>): Promise<void> {
  const records = await kcatConsumeAll(bootstrap, topic);
  const copies = new Map<string, number>();
  for (const r of records) {
    const id = JSON.parse(r.value!).id as string;
    copies.set(id, (copies.get(id) ?? 0) + 1);
  }
  const twice = [...copies].filter(([, n]) => n > 1).map(([id, n]) => `${id} ×${n}`);
  assert.deepEqual(twice, [], 'records written more than once');
  const at = new Map(records.map((r) => [`${r.partition}/${r.offset}`, JSON.parse(r.value!).id as string]));
  for (const [id, replies] of answers) {
    assert.equal(copies.get(id), 1, `${id} is in Kafka once (answers: ${replies.map((r) => r.status).join(', ')})`);
    const ok = replies.filter((r) => r.status === 200);
    assert.equal(ok.length, 1, `${id} answered 200 once`);
    const d = ok[0]!.body.deliveries[0];
    assert.equal(at.get(`${d.partition}/${d.offset}`), id, `${id} is at the partition and offset it was answered with`);
  }
}

describe('Kafka produce faults: each HTTP request gets the outcome of its own records', () => {
  let kafka: KafkaCluster;
  const t = { spread: '', moved: '', shared: '', stuck: '', missing: '', present: '', absent: '', arrived: '', ipv6: '', gone: '', goneDlq: '', cold: '' };
  let v6: TcpProxy | undefined;
  /** Broker `cold`'s only bootstrap server: refusing connections when the gateway starts (a cluster down), until its case lets them through. */
  let gate: TcpProxy | undefined;

  before(async () => {
    kafka = await startKafka({ brokers: 3 });
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    await kafka.createTopic(t.spread, 6);
    await kafka.createTopic(t.moved, 6);
    // The mock places leaders at random: here every broker leads two partitions, whatever the run.
    if (kafka.canInjectOutages) for (const topic of [t.spread, t.moved]) for (let p = 0; p < 6; p++) await kafka.moveLeader(topic, p, (p % 3) + 1);
    await kafka.createTopic(t.present, 2);
    await kafka.createTopic(t.arrived, 1);
    // Route `late` reads a topic the cluster does not have when the gateway starts.
    if (kafka.canInjectOutages) await kafka.hideTopic(t.absent);
    // Route `parked` writes to a topic, and dead-letters to one, that the cluster does not have.
    if (kafka.canInjectOutages) for (const topic of [t.gone, t.goneDlq]) await kafka.hideTopic(topic);
    // Broker `v6` is bootstrapped over IPv6 ([::1]:port in front of the cluster's first broker); without ::1 its case fails.
    if (kafka.canInjectOutages) v6 = await TcpProxy.start(Number(kafka.bootstrap.split(',')[0]!.split(':')[1]), { host: '::1' }).catch(() => undefined);
    if (kafka.canInjectOutages) {
      gate = await TcpProxy.start(Number(kafka.bootstrap.split(',')[0]!.split(':')[1]));
      gate.refuse();
    }
    // Both partitions on one broker: their records share a produce request.
    for (const topic of [t.shared, t.stuck]) {
      await kafka.createTopic(topic, 2);
      if (kafka.canInjectOutages) for (let p = 0; p < 2; p++) await kafka.moveLeader(topic, p, 1);
    }
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: \${KAFKA_BOOTSTRAP}
    consumer: ${kafka.consumerYaml}
    # Concurrent posts share a flush, whose records span the partitions of every broker.
    producer: { lingerMs: 30, ackTimeoutMs: 4000 }
  patient:
    kind: kafka
    brokers: \${KAFKA_BOOTSTRAP}
    producer: { lingerMs: 30, ackTimeoutMs: 60000 }
  local: { kind: memory }
  v6:
    kind: kafka
    brokers: "[::1]:${v6?.port ?? 9}"
    producer: { ackTimeoutMs: 2000 }
  v6zone:
    kind: kafka
    brokers: "[::1%lo]:${v6?.port ?? 9}"
    producer: { ackTimeoutMs: 2000 }
  cold:
    kind: kafka
    brokers: "127.0.0.1:${gate?.port ?? 9}"
    connectionTimeoutMs: 500
    producer: { ackTimeoutMs: 2000 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: spread
    from: { listener: api, path: /spread }
    to: { broker: kafka, topic: ${t.spread}, key: k }
  - name: moved
    from: { listener: api, path: /moved }
    to: { broker: kafka, topic: ${t.moved}, key: k }
  - name: shared
    from: { listener: api, path: /shared }
    to: { broker: kafka, topic: ${t.shared}, key: k }
  - name: stuck
    from: { listener: api, path: /stuck }
    to: { broker: kafka, topic: ${t.stuck}, key: k }
  - name: computed
    from: { listener: api, path: /computed }
    to: { broker: patient, topic: { expression: topic } }
  - name: ipv6
    from: { listener: api, path: /ipv6 }
    to: { broker: v6, topic: ${t.ipv6} }
  - name: ipv6-zone
    from: { listener: api, path: /ipv6-zone }
    to: { broker: v6zone, topic: ${t.ipv6} }
  - name: cold
    from: { listener: api, path: /cold }
    to: { broker: cold, topic: ${t.cold} }
  - name: park
    from: { listener: api, path: /park }
    to: { broker: local, topic: parked }
  - name: parked
    from: { broker: local, topic: parked }
    to: { broker: kafka, topic: ${t.gone} }
    deadletter: { broker: kafka, topic: ${t.goneDlq} }
  - name: late
    from: { broker: kafka, topic: ${t.absent} }
    to: { broker: kafka, topic: ${t.arrived} }
`,
    () => ({ env: { KAFKA_BOOTSTRAP: kafka.bootstrap } }),
  );
  after(async () => {
    await v6?.stop();
    await gate?.stop();
    await kafka?.stop();
  });

  it('says a consume route’s topic the cluster does not have is missing, in the log, /admin/status and /readyz, and reads it once it exists', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: the mock cluster stands in for one with auto-create off');
    // First in the file: the route looks again from 0.5 s on, at most every 5 s, so it reads the
    // topic soon after it is created here. kafkajs' own words for a missing topic were "This server
    // does not host this topic-partition", as a crash.
    const said = await gw.waitForLog((l) => l.route === 'late' && l.level === 'warn', 20000);
    assert.equal(said.msg, 'consumer waits for its topic to exist; looking again');
    assert.match(
      String(said.err),
      new RegExp(
        `^topic '${t.absent}' does not exist on the Kafka cluster \\(which does not create topics on first use: create it, or set the cluster's auto.create.topics.enable\\); the route reads it once it does$`,
      ),
    );
    // A look for the topic is no crash of the route's consumer (the warn line is written after it would have been counted).
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.doesNotMatch(metrics, /^eventgate_kafka_consumer_crashes_total\{[^}]*route="late"[^}]*\} [1-9]/m);
    const status = (await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { routes: { name: string; consumer?: { ready: boolean; detail?: string } }[] };
    const late = status.routes.find((r) => r.name === 'late')!;
    assert.equal(late.consumer?.ready, false);
    assert.match(late.consumer?.detail ?? '', new RegExp(`^topic missing, looking again in \\d+ ms: topic '${t.absent}' does not exist on the Kafka cluster`));
    const readyz = (await (await fetch(`${gw.adminUrl}/readyz`)).json()) as { reasons: string[] };
    assert.ok(
      readyz.reasons.some((r) => /^route late: topic missing, looking again in \d+ ms$/.test(r)),
      JSON.stringify(readyz),
    );
    // Told once, not at every look (every 5 s at most, for as long as the topic is missing): each
    // look waits longer than the one before until 5 s, so another wait in /admin/status means the
    // second look was made.
    await eventually(async () => {
      const now = (await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as typeof status;
      const wait = /looking again in (\d+) ms/.exec(now.routes.find((r) => r.name === 'late')?.consumer?.detail ?? '')?.[1];
      assert.ok(wait !== undefined && Number(wait) !== said.retryInMs, `looking again in ${wait} ms, first ${said.retryInMs} ms`);
    }, 20000);
    assert.doesNotMatch(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /^eventgate_kafka_consumer_crashes_total\{[^}]*route="late"[^}]*\} [1-9]/m);
    assert.equal(gw.logs.filter((l) => l.route === 'late' && l.level === 'warn' && l.msg === 'consumer waits for its topic to exist; looking again').length, 1);
    await kafka.revealTopic(t.absent);
    await kcatProduce(kafka.bootstrap, t.absent, [{ key: 'k', value: '{"n":1}' }]);
    const copied = await kcatConsume(kafka.bootstrap, t.arrived, 1, 30000);
    assert.deepEqual(
      copied.map((r) => r.value),
      ['{"n":1}'],
    );
  });

  it('says a consume route’s topic deleted under it is missing, as at its start, without rejoining at each fetch, and reads on from its commit once the topic is back', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: a topic cannot be deleted and restored under the route there');
    // After the case above: route `late` consumes t.absent, its record 1 copied and committed.
    const status = async () =>
      ((await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { routes: { name: string; consumer?: { ready: boolean; detail?: string } }[] }).routes.find((r) => r.name === 'late')!.consumer;
    await eventually(async () => assert.equal((await status())?.detail, undefined), 20000);
    const from = gw.logs.length;
    const joinsBefore = kafka.joinRequests();
    // Deleted, as far as the mock can: its Metadata does not have the topic and its fetches are
    // answered UNKNOWN_TOPIC_OR_PARTITION (the file's only Kafka consumer is this route's).
    await kafka.hideTopic(t.absent);
    await kafka.failRequests(1, 1000, 3);
    try {
      // kafkajs refreshed its metadata and rejoined at each such fetch, /readyz ready all along.
      await eventually(async () => {
        const readyz = (await (await fetch(`${gw.adminUrl}/readyz`)).json()) as { reasons?: string[] };
        assert.ok(
          readyz.reasons?.some((r) => /^route late: topic missing, looking again in \d+ ms$/.test(r)),
          JSON.stringify(readyz),
        );
      }, 20000);
      const first = await status();
      assert.equal(first?.ready, false);
      assert.match(first?.detail ?? '', new RegExp(`^topic missing, looking again in \\d+ ms: topic '${t.absent}' does not exist on the Kafka cluster`));
      // A second look (a longer wait) without a line more or a rejoin: the route waits outside its group.
      const wait = Number(/looking again in (\d+) ms/.exec(first?.detail ?? '')![1]);
      await eventually(async () => {
        const next = /looking again in (\d+) ms/.exec((await status())?.detail ?? '')?.[1];
        assert.ok(next !== undefined && Number(next) > wait, `looking again in ${next} ms, first ${wait} ms`);
      }, 20000);
      const lines = gw.logs.slice(from);
      // One line said it (kafkajs' "re-joining" came at each fetch, and its crash line would be another).
      assert.deepEqual(
        lines.filter((l) => l.level === 'warn' || l.level === 'error').map((l) => [l.route, l.msg]),
        [['late', 'consumer waits for its topic to exist; looking again']],
      );
      if (!Number.isNaN(joinsBefore)) assert.ok(kafka.joinRequests() - joinsBefore <= 1, `JoinGroup requests: ${kafka.joinRequests() - joinsBefore}`);
      assert.doesNotMatch(await (await fetch(`${gw.adminUrl}/metrics`)).text(), /^eventgate_kafka_consumer_crashes_total\{[^}]*route="late"[^}]*\} [1-9]/m);
    } finally {
      await kafka.clearFailures(1);
      await kafka.revealTopic(t.absent);
    }
    // Back (the mock kept its records): read on from the group's commit, record 1 not again.
    await kcatProduce(kafka.bootstrap, t.absent, [{ key: 'k', value: '{"n":2}' }]);
    await eventually(async () => assert.equal((await status())?.ready, true), 30000);
    const copied = await kcatConsume(kafka.bootstrap, t.arrived, 2, 30000);
    assert.deepEqual(
      copied.map((r) => r.value),
      ['{"n":1}', '{"n":2}'],
    );
  });

  it('when one broker fails its part of a flush, answers 503 for that broker’s records only: a client that retries them leaves every record in Kafka once', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: errors cannot be injected into a real cluster');
    const keys = Array.from({ length: 12 }, (_, i) => `k${i}`);
    // Each key's records go to one partition: record its partition (and so its broker), which also makes the metadata known.
    const warm = await Promise.all(keys.map((k) => post(gw.url('api', '/spread'), { id: `warm-${k}`, k })));
    for (const r of warm) assert.equal(r.status, 200, r.text);
    const leaderOf = await leaders(kafka.bootstrap, t.spread);
    const brokers = [...new Set(warm.map((r) => leaderOf.get(r.body.deliveries[0].partition)!))];
    assert.ok(brokers.length > 1, `the keys cover more than one broker: ${brokers}`);
    const failing = brokers[0]!;
    const ids = Array.from({ length: 36 }, (_, i) => `s${i}`);
    // That broker's next produce requests fail; the others take theirs.
    await kafka.failBrokerRequests(failing, PRODUCE, 2, TOPIC_AUTHORIZATION_FAILED);
    const answers = await publishRetrying(gw.url('api', '/spread'), ids, (id) => keys[Number(id.slice(1)) % keys.length]!);
    const first = [...answers.values()].map((r) => r[0]!);
    assert.ok(
      first.some((r) => r.status === 503),
      'the fault failed some first attempts',
    );
    assert.ok(
      first.some((r) => r.status === 200),
      'records for the brokers without a fault were answered 200 at once',
    );
    // A 503 only for records of a partition the failing broker leads (each key's partition is known from its warm-up answer).
    const leaderOfKey = new Map(warm.map((r, i) => [keys[i]!, leaderOf.get(r.body.deliveries[0].partition)]));
    for (const [id, replies] of answers) {
      if (replies[0]!.status !== 503) continue;
      assert.equal(leaderOfKey.get(keys[Number(id.slice(1)) % keys.length]!), failing, `${id} failed though its broker took its part: ${replies[0]!.text}`);
      assert.match(replies[0]!.body.detail, /did not acknowledge/, `${id}: ${replies[0]!.text}`);
    }
    const warmAnswers = new Map(warm.map((r, i) => [`warm-${keys[i]}`, [r]]));
    await assertExactlyOnce(kafka.bootstrap, t.spread, new Map([...warmAnswers, ...answers]));
  });

  it('when partitions change leaders between flushes, sends their records to the new leaders, each once, and answers 200 only for records Kafka took', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: leaders cannot be moved on a real cluster');
    const keys = Array.from({ length: 6 }, (_, i) => `m${i}`);
    const warm = await Promise.all(keys.map((k) => post(gw.url('api', '/moved'), { id: `warm-${k}`, k })));
    for (const r of warm) assert.equal(r.status, 200, r.text);
    const leaderOf = await leaders(kafka.bootstrap, t.moved);
    // The partitions the keys go to that one broker leads move to another, which leads others of
    // them when there is one: the gateway's metadata is now stale.
    const hit = [...new Set(warm.map((r) => r.body.deliveries[0].partition as number))];
    const from = leaderOf.get(hit[0]!)!;
    const to = hit.map((p) => leaderOf.get(p)!).find((l) => l !== from) ?? (from % 3) + 1;
    for (const p of hit) if (leaderOf.get(p) === from) await kafka.moveLeader(t.moved, p, to);
    const ids = Array.from({ length: 36 }, (_, i) => `m-${i}`);
    const logsFrom = gw.logs.length;
    const answers = await publishRetrying(gw.url('api', '/moved'), ids, (id) => keys[Number(id.slice(2)) % 6]!);
    const warmAnswers = new Map(warm.map((r, i) => [`warm-${keys[i]}`, [r]]));
    await assertExactlyOnce(kafka.bootstrap, t.moved, new Map([...warmAnswers, ...answers]));
    // The first send to the former leader found its partitions gone (NOT_LEADER_FOR_PARTITION), and their records went to the new one.
    assert.ok(
      gw.logs.slice(logsFrom).some((l) => l.msg === 'partition leaders moved; sending the records to their new leaders'),
      `the gateway noticed the move; leaders were ${JSON.stringify([...leaderOf])}, answers went to partitions ${JSON.stringify([...answers.values()].map((r) => r.at(-1)!.body.deliveries[0].partition))}; its log: ${JSON.stringify(gw.logs.slice(logsFrom).filter((l) => /produce|leader|kafkajs/.test(l.msg)))}`,
    );
  });

  it('when one partition of a produce request fails and the others take their records, sends again only the failed partition’s: every record once, each answered 200 where it is', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: leaders cannot be moved on a real cluster');
    // Both partitions are led by broker 1, and the gateway's metadata says so.
    const { keyOf, warm } = await keysPerPartition((path) => gw.url('api', path), '/shared', 'sh');
    // Partition 1 moves to broker 2 behind the gateway's back: broker 1 takes partition 0's part of
    // the next produce request and answers NOT_LEADER_FOR_PARTITION for partition 1's.
    await kafka.moveLeader(t.shared, 1, 2);
    const logsFrom = gw.logs.length;
    const ids = Array.from({ length: 20 }, (_, i) => `sh-${i}`);
    const partitionOf = (id: string) => Number(id.slice(3)) % 2;
    const replies = await Promise.all(ids.map((id) => post(gw.url('api', '/shared'), { id, k: keyOf.get(partitionOf(id)) })));
    for (const [i, r] of replies.entries()) {
      assert.equal(r.status, 200, `${ids[i]}: ${r.text}`);
      assert.equal(r.body.deliveries[0].partition, partitionOf(ids[i]!), `${ids[i]} answered with its key's partition`);
    }
    const answers = new Map(warm);
    for (const [i, id] of ids.entries()) answers.set(id, [replies[i]!]);
    await assertExactlyOnce(kafka.bootstrap, t.shared, answers);
    // The case above happened: a response with partition 0 taken and partition 1 not, logged once for the failed partition.
    const logs = gw.logs.slice(logsFrom);
    const said = logs.filter((l) => l.msg === 'partitions of a produce request did not take their records; sending those again');
    assert.ok(said.length >= 1, `the partial failure was seen: ${JSON.stringify(logs.filter((l) => /produce|leader|kafkajs/.test(l.msg)))}`);
    assert.equal(said[0]!.partitions, `${t.shared}/1: NOT_LEADER_FOR_PARTITION`);
  });

  it('when the failed partition does not recover within ackTimeoutMs, answers 503 for its records only; the other partition’s are answered 200 and written once', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: leaders cannot be moved on a real cluster');
    const { keyOf, warm } = await keysPerPartition((path) => gw.url('api', path), '/stuck', 'st');
    // Partition 1 moves to broker 2, which is down: broker 1 takes partition 0's records and not partition 1's, which then find no leader to take them.
    await kafka.moveLeader(t.stuck, 1, 2);
    await kafka.down(2);
    const ids = Array.from({ length: 10 }, (_, i) => `st-${i}`);
    const partitionOf = (id: string) => Number(id.slice(3)) % 2;
    let replies: HttpReply[];
    try {
      // ackTimeoutMs is 4 s: answered within 10 s.
      replies = await within(10000, Promise.all(ids.map((id) => post(gw.url('api', '/stuck'), { id, k: keyOf.get(partitionOf(id)) }))));
    } finally {
      await kafka.up(2);
    }
    const answers = new Map(warm);
    for (const [i, id] of ids.entries()) {
      const r = replies[i]!;
      if (partitionOf(id) === 1) {
        assert.equal(r.status, 503, `${id}: ${r.text}`);
        assert.doesNotMatch(r.text, /\n\s+at /, 'no stack trace');
      } else answers.set(id, [r]);
    }
    // Partition 0's records: 200, each once at its offset. Partition 1's were answered 503, which
    // stays ambiguous (kafkajs may still be retrying them as broker 2 comes back), but the gateway
    // wrote none of them twice.
    await assertExactlyOnce(kafka.bootstrap, t.stuck, answers);
    const copies = new Map<string, number>();
    for (const r of await kcatConsumeAll(kafka.bootstrap, t.stuck)) {
      const id = JSON.parse(r.value!).id as string;
      copies.set(id, (copies.get(id) ?? 0) + 1);
    }
    for (const id of ids) if (partitionOf(id) === 1) assert.ok((copies.get(id) ?? 0) <= 1, `${id} written ${copies.get(id)} times`);
  });

  it('answers a publish to a topic the cluster does not have 503 at once, saying so, logs it once per topic, and sends the other topics’ records of the same flush', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: the mock cluster stands in for one with auto-create off');
    await kafka.hideTopic(t.missing);
    const from = gw.logs.length;
    // The route's broker waits up to 60 s for an acknowledgement: answered within 10 s means not waited for.
    const [missing, present, again] = await within(
      10000,
      Promise.all([
        post(gw.url('api', '/computed'), { topic: t.missing, n: 1 }),
        post(gw.url('api', '/computed'), { topic: t.present, n: 2 }),
        post(gw.url('api', '/computed'), { topic: t.missing, n: 3 }),
      ]),
    );
    assert.equal(present.status, 200, present.text);
    for (const r of [missing, again]) {
      assert.equal(r.status, 503, r.text);
      assert.equal(r.body.code, 'EG_BROKER_UNAVAILABLE');
      assert.match(r.body.detail, new RegExp(`topic '${t.missing}' does not exist on the Kafka cluster`));
      assert.doesNotMatch(r.text, /\n\s+at /, 'no stack trace');
    }
    const later = await within(10000, post(gw.url('api', '/computed'), { topic: t.missing, n: 4 }));
    assert.equal(later.status, 503, later.text);
    const said = gw.logs.slice(from).filter((l) => l.msg.includes('does not exist on the Kafka cluster'));
    assert.equal(said.length, 1, `logged once: ${JSON.stringify(said)}`);
    assert.equal(said[0]!.topic, t.missing);
    const records = await kcatConsumeAll(kafka.bootstrap, t.present);
    assert.deepEqual(
      records.map((r) => JSON.parse(r.value!).n),
      [2],
    );
  });

  it('refuses a publish at once while the producer has never connected (the cluster down at the start): nothing refused is written once it is up, and later publishes are 200', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: no proxy in front of a real cluster from here');
    const cold = async () => ((await gw.status()).brokers as { name: string; ready: boolean; detail?: string }[]).find((b) => b.name === 'cold')!;
    await eventually(async () => assert.match((await cold()).detail ?? '', /^unreachable: /), 20000);
    const refused = await Promise.all([1, 2, 3].map((n) => post(gw.url('api', '/cold'), { n })));
    for (const r of refused) {
      assert.equal(r.status, 503, r.text);
      assert.equal(r.body.code, 'EG_BROKER_UNAVAILABLE');
      // Never handed to kafkajs: not the ambiguous "may still have reached it" of a record sent and not acknowledged.
      assert.match(r.body.detail, /^broker 'cold' did not acknowledge the message: broker 'cold' is not connected \(unreachable: /);
      assert.doesNotMatch(r.body.detail, /may still have reached it/);
    }
    gate!.release();
    await eventually(async () => assert.equal((await cold()).ready, true), 20000);
    const accepted = await within(10000, post(gw.url('api', '/cold'), { n: 4 }));
    assert.equal(accepted.status, 200, accepted.text);
    const records = await kcatConsumeAll(kafka.bootstrap, t.cold);
    assert.deepEqual(
      records.map((r) => JSON.parse(r.value!).n),
      [4],
    );
  });

  it('reaches a cluster whose bootstrap server is an IPv6 address, written [::1]:port, or with a zone id, [::1%lo]:port', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: no proxy in front of a real cluster from here');
    // The mock cluster's machine needs an IPv6 loopback for this case: its absence fails it rather than passing unseen.
    assert.ok(v6, 'no IPv6 loopback (::1) on this machine: this case needs one');
    // kafkajs read `[::1]:port` as the host `[` (getaddrinfo ENOTFOUND [): every publish 503, /readyz unreachable.
    const reply = await within(10000, post(gw.url('api', '/ipv6'), { n: 6 }));
    assert.equal(reply.status, 200, reply.text);
    // A zone id (1007 c) was refused by validate: the gateway did not start with it.
    const zoned = await within(10000, post(gw.url('api', '/ipv6-zone'), { n: 7 }));
    assert.equal(zoned.status, 200, zoned.text);
    const d = [reply.body.deliveries[0], zoned.body.deliveries[0]];
    const records = await kcatConsumeAll(kafka.bootstrap, t.ipv6);
    assert.deepEqual(
      records.map((r) => [r.partition, r.offset, r.value]).sort((a, b) => String(a[2]).localeCompare(String(b[2]))),
      [
        [d[0].partition, Number(d[0].offset), '{"n":6}'],
        [d[1].partition, Number(d[1].offset), '{"n":7}'],
      ],
    );
  });

  it('shows a consumed message that neither its target nor its dead-letter topic takes as stalled in /admin/status and the gauge, until one does', async (t2) => {
    if (!kafka.canInjectOutages) return t2.diagnostic('KAFKA_BROKERS is set: the mock cluster stands in for one with auto-create off');
    // It held up its partition as a message of a route without a dead-letter target does, but
    // /admin/status, eventgate_route_stalled_messages (and so the EventgateRouteStalled alert) showed nothing.
    type Stalled = { topic: string; attempts: number; code: string; detail: string };
    const status = async () => ((await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { routes: { name: string; stalled: Stalled[] }[] }).routes.find((r) => r.name === 'parked')!.stalled;
    const gauge = async () => (await (await fetch(`${gw.adminUrl}/metrics`)).text()).match(/^eventgate_route_stalled_messages\{route="parked"\} (\d+)$/m)?.[1];
    assert.equal((await post(gw.url('api', '/park'), { n: 'p' })).status, 200);
    const stalled = await eventually(async () => {
      const s = await status();
      assert.equal(s.length, 1);
      return s[0]!;
    }, 15000);
    assert.equal(stalled.topic, 'parked');
    assert.equal(stalled.code, 'EG_BROKER_UNAVAILABLE');
    assert.match(stalled.detail, new RegExp(`topic '${t.gone}' does not exist on the Kafka cluster.*; the dead-letter target did not take it either: .*topic '${t.goneDlq}' does not exist`));
    assert.ok(stalled.attempts >= 5, `stalled after the route's own attempts (${stalled.attempts})`);
    assert.equal(await gauge(), '1');
    await kafka.revealTopic(t.goneDlq);
    await eventually(async () => {
      assert.deepEqual(await status(), []);
      assert.equal(await gauge(), '0');
    }, 15000);
    const dead = await kcatConsume(kafka.bootstrap, t.goneDlq, 1, 15000);
    assert.deepEqual(
      dead.map((r) => JSON.parse(r.value!)),
      [{ n: 'p' }],
    );
  });
});
