import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { eventually, startGateway, withLogsOnFailure, type RunningGateway } from '../helpers/gateway.js';
import { kcatProduce, startKafka, testClient, type KafkaCluster } from '../helpers/kafka.js';
import { delivered, pastDeadline } from '../helpers/late-answer.js';
import { RawNats, type NatsReceived } from '../helpers/peers.js';
import { scrape } from '../helpers/prometheus.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

/** What a describe below runs against, started before its tests and stopped after them (jetStreamPeers). */
interface JetStreamPeers {
  nats: MessageServer;
  /** In front of nats-server for the gateway: it may hold the server's replies (PubAcks) only. */
  proxy: TcpProxy;
  /** Reads nats-server directly, not through the proxy. */
  peer: RawNats;
  /** With `kafkaTopic`: librdkafka's mock cluster, and `src`, a topic of one partition on it. */
  kafka: KafkaCluster;
  src: string;
  /** The gateways the describe started: killed after it. */
  running: RunningGateway[];
}

function jetStreamPeers(options: { kafkaTopic?: string } = {}): JetStreamPeers {
  const f = { running: [] as RunningGateway[] } as JetStreamPeers;
  before(async () => {
    const [kafka, nats] = await Promise.all([options.kafkaTopic === undefined ? undefined : startKafka(), startNats()]);
    f.nats = nats;
    f.proxy = await TcpProxy.start(nats.port);
    f.peer = await RawNats.connect(nats);
    if (kafka && options.kafkaTopic !== undefined) {
      f.kafka = kafka;
      f.src = kafka.topic(options.kafkaTopic);
      await kafka.createTopic(f.src, 1);
    }
  });
  after(async () => {
    for (const gw of f.running) await gw.stop('SIGKILL');
    f.peer?.close();
    await Promise.all([f.proxy?.stop(), f.nats?.stop(), f.kafka?.stop()]);
  });
  return f;
}

/**
 * The brokers of a config (under `brokers:`) that reads JetStream stream IN directly (`source`,
 * `ackWaitMs` 2 s) and writes through the proxy, which may hold the PubAcks only (`nats`, with
 * `stream`, one line of its `streams:`).
 */
function natsSourceAndTarget(f: JetStreamPeers, stream: string): string {
  return `  source:
    kind: nats
    servers: nats://127.0.0.1:${f.nats.port}
    ackWaitMs: 2000
    streams:
      IN: { subjects: [in.>] }
  nats:
    kind: nats
    servers: nats://127.0.0.1:${f.proxy.port}
    ackTimeoutMs: 1000
    streams:
      ${stream}`;
}

/**
 * A Kafka record a consume route writes to a JetStream stream, delivered to the route again: the
 * gateway is killed after the stream stored the record (its PubAck held in a proxy) and before the
 * record's offset was committed, so the next gateway reads it again. Its `Nats-Msg-Id` (the broker,
 * topic, partition, offset and timestamp of the record, the route, the target) is the same both
 * times, and the stream's duplicate window keeps one copy. Before, the gateway sent no
 * `Nats-Msg-Id` and the stream kept two (docs/spec-checklist.md, point 84).
 */
describe('nats: a Kafka record a route writes to JetStream again after a redelivery', () => {
  let yaml: string;
  const f = jetStreamPeers({ kafkaTopic: 'msgid-src' });

  before(async () => {
    yaml = `
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: ${f.kafka.bootstrap}
    consumer: ${f.kafka.consumerYaml}
  nats:
    kind: nats
    servers: nats://127.0.0.1:${f.proxy.port}
    ackTimeoutMs: 1000
    streams:
      COPY: { subjects: [copy.out] }
routes:
  - name: copy
    from: { broker: kafka, topic: ${f.src}, group: ${f.kafka.topic('msgid-group')}, startFrom: earliest }
    to: { broker: nats, topic: copy.out }
`;
  });

  const start = async () => {
    const gw = await startGateway(yaml);
    f.running.push(gw);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'copy', 30000);
    return gw;
  };
  const stored = () => f.peer.streamMessages('COPY');
  const storedAtLeast = (n: number) => f.peer.storedAtLeast('COPY', n, 20000);
  const produce = (n: number) => kcatProduce(f.kafka.bootstrap, f.src, [{ key: 'k', value: JSON.stringify({ n }) }]);
  const n = (m: NatsReceived) => (JSON.parse(m.payload) as { n: number }).n;

  it('the record delivered again is stored once: its second write has the same Nats-Msg-Id', () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        // Every write to the subject, as the server takes it (the peer reads the server itself, not through the proxy).
        const sid = await f.peer.subscribe('copy.out');
        const first = await start();
        await produce(1);
        await storedAtLeast(1);
        // Record 1's PubAck has reached the gateway (the stream shows a record stored before that):
        // the hold below catches record 2's only.
        await delivered(first, 'copy', 1);
        // Record 2 is stored, its PubAck held: the route has not committed its offset when the gateway dies.
        const from = first.logs.length;
        f.proxy.holdReplies();
        await produce(2);
        await storedAtLeast(2);
        await first.waitForLog((l) => pastDeadline(l, 'copy'), 10000, from);
        await first.stop('SIGKILL');
        f.proxy.releaseReplies();

        await start();
        await produce(3);
        const writes = await eventually(
          () => {
            const got = f.peer.received(sid);
            assert.ok(
              got.some((m) => n(m) === 3),
              `writes so far: ${got.map(n).join(', ')}`,
            );
            return got;
          },
          30000,
          100,
        );
        // The redelivery happened: record 2 was written twice, both times with one id of its own.
        const twos = writes.filter((m) => n(m) === 2);
        assert.ok(twos.length >= 2, `record 2 written ${twos.length} times`);
        const ids = writes.map((m) => m.headers['Nats-Msg-Id']);
        assert.match(ids[0] ?? '', /^eventgate:copy:kafka\/[^/]+\/[^/]+\/0\/\d+\/\d+:0:copy\.out$/);
        assert.equal(new Set(twos.map((m) => m.headers['Nats-Msg-Id'])).size, 1);
        assert.equal(new Set(ids).size, 3, 'one id per record');

        const bodies: number[] = [];
        for (let seq = 1; seq <= (await stored()); seq++) bodies.push((JSON.parse((await f.peer.storedMessage('COPY', seq))!.data) as { n: number }).n);
        assert.deepEqual(bodies, [1, 2, 3], 'each record once in the stream');
      },
    ));

  // Before, the id named the cluster by the id describeCluster gives, and kafkajs throws on any
  // topic error in that answer: while one topic of the cluster reported an error, no record of any
  // topic got an id, and a redelivery was stored twice (docs/spec-checklist.md, point 98).
  it('a record read while another topic of the cluster reports an error still gets its Nats-Msg-Id', () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        for (const gw of f.running.splice(0)) await gw.stop();
        await f.kafka.hideTopic(f.kafka.topic('msgid-elsewhere'));
        const sid = await f.peer.subscribe('copy.out');
        await start();
        await produce(4);
        const write = await eventually(
          () => {
            const got = f.peer.received(sid).find((m) => n(m) === 4);
            assert.ok(got, 'record 4 written to the stream');
            return got;
          },
          30000,
          100,
        );
        assert.match(write.headers['Nats-Msg-Id'] ?? '(none)', new RegExp(`^eventgate:copy:kafka/kafka/${f.src}/0/3/\\d+:0:copy\\.out$`));
      },
    ));
});

/**
 * Messages from JetStream and HTTP: a JetStream message a route writes again after a redelivery
 * (the gateway killed before its ack) is stored once; a `Nats-Msg-Id` the gateway made for another
 * write, which a message read back from a stream carries, is not sent again (each target of a
 * fan-out into one stream got the same id, and the stream kept one of them); an HTTP client's
 * `Nats-Msg-Id`, which node lower-cases, reaches nats-server under the name it reads.
 */
describe('nats: Nats-Msg-Id of messages from JetStream and HTTP', () => {
  let yaml: string;
  const f = jetStreamPeers();

  before(async () => {
    yaml = `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
${natsSourceAndTarget(f, 'OUT: { subjects: [out.>] }')}
routes:
  - name: pub
    from: { listener: api, path: /pub }
    to: { broker: nats, topic: out.http }
  - name: pubfan
    from: { listener: api, path: /fan }
    to: [{ broker: nats, topic: out.fan1 }, { broker: nats, topic: out.fan2 }]
  - name: fan
    from: { broker: source, topic: in.fan }
    to: [{ broker: nats, topic: out.one }, { broker: nats, topic: out.two }]
  - name: again
    from: { broker: source, topic: in.again }
    to: { broker: nats, topic: out.again }
`;
  });

  const start = async () => {
    const gw = await startGateway(yaml);
    f.running.push(gw);
    for (const route of ['fan', 'again']) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);
    // Connected through the proxy, its streams declared: holding the proxy's replies holds PubAcks only.
    await gw.waitForLog((l) => l.msg === 'nats connected' && l.broker === 'nats', 30000);
    return gw;
  };
  /** The stored messages of stream OUT on `subject`, in order: their `n`. */
  const storedOn = async (subject: string): Promise<number[]> => {
    const { state } = (await f.peer.jsApi('$JS.API.STREAM.INFO.OUT', {})) as { state: { last_seq: number } };
    const ns: number[] = [];
    for (let seq = 1; seq <= state.last_seq; seq++) {
      const got = (await f.peer.jsApi('$JS.API.STREAM.MSG.GET.OUT', { seq })) as { message?: { subject: string; data: string } };
      if (got.message?.subject === subject) ns.push((JSON.parse(Buffer.from(got.message.data, 'base64').toString('utf8')) as { n: number }).n);
    }
    return ns;
  };

  it('a JetStream message delivered again after the gateway died before its ack is stored once', async () => {
    const sid = await f.peer.subscribe('out.again');
    const first = await start();
    f.proxy.holdReplies();
    await f.peer.jsPublish('in.again', JSON.stringify({ n: 1 }));
    await eventually(async () => assert.deepEqual(await storedOn('out.again'), [1]), 10000, 100);
    await first.waitForLog((l) => pastDeadline(l, 'again'), 10000);
    await first.stop('SIGKILL');
    f.proxy.releaseReplies();
    await start();
    // JetStream delivers the unacknowledged message again (ackWaitMs), and the route writes it again.
    const [one, two] = await f.peer.take(sid, 2, 20000);
    assert.match(one!.headers['Nats-Msg-Id'] ?? '', /^eventgate:again:nats\/IN\/[^/]+\/1:0:out\.again$/);
    assert.equal(two!.headers['Nats-Msg-Id'], one!.headers['Nats-Msg-Id']);
    assert.deepEqual(await storedOn('out.again'), [1], 'stored once');
  });

  it("a fan-out into one stream of a message carrying another write's gateway-made id stores a copy per target", async () => {
    await f.peer.jsPublish('in.fan', JSON.stringify({ n: 2 }), { 'Nats-Msg-Id': 'eventgate:elsewhere:memory/x/0:0:in.fan' });
    await eventually(async () => assert.deepEqual([await storedOn('out.one'), await storedOn('out.two')], [[2], [2]]), 10000, 100);
  });

  it("an HTTP client's Nats-Msg-Id is the id nats-server reads: a request sent twice is stored once", async () => {
    const gw = f.running[f.running.length - 1]!;
    for (let i = 0; i < 2; i++) {
      const res = await fetch(gw.url('api', '/pub'), { method: 'POST', headers: { 'content-type': 'application/json', 'Nats-Msg-Id': 'order-3' }, body: JSON.stringify({ n: 3 }) });
      assert.equal(res.status, 200);
    }
    await f.peer.jsPublish('out.http', JSON.stringify({ n: 4 }));
    assert.deepEqual(await storedOn('out.http'), [3, 4]);
  });

  // Before, the publisher's id went as it was to both targets: the stream kept out.fan1's copy and
  // dropped out.fan2's as its duplicate, and the request was answered 200 (spec-checklist point 99).
  it("an HTTP client's Nats-Msg-Id on a fan-out into one stream: each target's copy stored once, a request sent twice stored once", async () => {
    const gw = f.running.at(-1) ?? (await start());
    for (let i = 0; i < 2; i++) {
      const res = await fetch(gw.url('api', '/fan'), { method: 'POST', headers: { 'content-type': 'application/json', 'Nats-Msg-Id': 'order-5' }, body: JSON.stringify({ n: 5 }) });
      assert.equal(res.status, 200);
    }
    assert.deepEqual([await storedOn('out.fan1'), await storedOn('out.fan2')], [[5], [5]]);
  });
});

/**
 * A consumed message dead-lettered into a JetStream subject, again and again: its dead-letter
 * writes' PubAcks held in a proxy (each write unanswered past its deadline: the route waits for its answer), then
 * the gateway killed before the source's ack, and the message delivered again to the next gateway,
 * which dead-letters it once more. Every write carries one `Nats-Msg-Id` of the dead-letter path's
 * own (`...:deadletter:<subject>`), and the stream keeps one copy. The routes send to a memory
 * target, so the id comes from the dead-letter topic alone: `invalid` through a validate step's own
 * dead-letter topic, `refused` through the route's `deadletter` (a message the chain refuses). Before,
 * dead-letter writes had no id and the stream kept every copy (docs/spec-checklist.md, point 100).
 * `home` dead-letters into the stream it reads a message that carries its publisher's `Nats-Msg-Id`:
 * that id, sent with the dead-letter write, made the stream drop the copy as a duplicate of the
 * original (point 120).
 */
describe('nats: a message dead-lettered into JetStream again after a redelivery', () => {
  let yaml: string;
  const f = jetStreamPeers();

  before(async () => {
    yaml = `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
${natsSourceAndTarget(f, 'DEAD: { subjects: [dead.>] }')}
routes:
  - name: invalid
    from: { broker: source, topic: in.invalid }
    through:
      - validate: { schema: { type: object, required: [id] }, onInvalid: deadletter, deadletter: { broker: nats, topic: dead.invalid } }
    to: { broker: mem, topic: out }
  - name: refused
    from: { broker: source, topic: in.refused }
    through:
      - validate: { schema: { type: object, required: [id] } }
    to: { broker: mem, topic: out }
    deadletter: { broker: nats, topic: dead.refused }
  # Dead-letters into the stream it reads.
  - name: home
    from: { broker: source, topic: in.home }
    through:
      - validate: { schema: { type: object, required: [id] } }
    to: { broker: mem, topic: out }
    deadletter: { broker: source, topic: in.dead }
  # A core subject (its messages have no identity): the fan-out stores the message in stream IN,
  # its second target fails, and it is dead-lettered into IN too.
  - name: core
    from: { broker: source, topic: core.fan }
    to: [{ broker: source, topic: in.kept }, { broker: source, topic: { expression: nowhere } }]
    deadletter: { broker: source, topic: in.core-dead }
`;
  });

  const routes = ['invalid', 'refused', 'home', 'core'];
  const start = async () => {
    const gw = await startGateway(yaml);
    f.running.push(gw);
    for (const route of routes) await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === route, 30000);
    // Connected through the proxy, its stream declared: holding the proxy's replies holds PubAcks only.
    await gw.waitForLog((l) => l.msg === 'nats connected' && l.broker === 'nats', 30000);
    return gw;
  };
  /** The messages stream DEAD stores, in order: their subject and `n`. */
  const stored = async (): Promise<string[]> => {
    const out: string[] = [];
    for (let seq = 1; seq <= (await f.peer.streamMessages('DEAD')); seq++) {
      const m = (await f.peer.storedMessage('DEAD', seq))!;
      out.push(`${m.subject} ${(JSON.parse(m.data) as { n: number }).n}`);
    }
    return out;
  };

  it('each message is stored once, however often it was dead-lettered', () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        // Every dead-letter write, as the server takes it (the peer reads the server itself, not through the proxy).
        const sid = await f.peer.subscribe('dead.>');
        const writesTo = (subject: string) => f.peer.received(sid).filter((m) => m.subject === subject);
        const first = await start();
        f.proxy.holdReplies();
        await f.peer.jsPublish('in.invalid', JSON.stringify({ n: 1 }));
        await f.peer.jsPublish('in.refused', JSON.stringify({ n: 2 }));
        // Each message's first write timed out unanswered, and the route waits for its answer
        // (earlier releases wrote it again at once: one more copy the stream had to drop).
        await eventually(() => assert.ok(writesTo('dead.invalid').length >= 1 && writesTo('dead.refused').length >= 1), 20000, 100);
        for (const route of ['invalid', 'refused'])
          await first.waitForLog((l) => l.route === route && l.msg === 'a dead-letter write is still out past its ack deadline: the route waits for its answer before it tries again', 20000);
        await first.stop('SIGKILL');
        f.proxy.releaseReplies();

        // JetStream delivers each unacknowledged message again (ackWaitMs), and the route dead-letters it again,
        // answered this time: the next gateway counts both dead-lettered (more than once when a loaded
        // machine kept a try past ackWaitMs and JetStream delivered it once more: each such write is
        // one more that the stream must drop).
        const next = await start();
        await eventually(
          async () => {
            const s = await scrape(next.adminUrl);
            for (const route of ['invalid', 'refused']) assert.ok((s.value('eventgate_route_messages_total', { route, outcome: 'deadlettered' }) ?? 0) >= 1, route);
          },
          20000,
          100,
        );
        assert.deepEqual((await stored()).sort(), ['dead.invalid 1', 'dead.refused 2'], 'each message once in the dead-letter stream');
        for (const [subject, route] of [
          ['dead.invalid', 'invalid'],
          ['dead.refused', 'refused'],
        ] as const) {
          // Written by each gateway: the one killed before its answer, and the next after the redelivery.
          assert.ok(writesTo(subject).length >= 2, `${writesTo(subject).length} writes to ${subject}`);
          const ids = new Set(writesTo(subject).map((m) => m.headers['Nats-Msg-Id']));
          assert.equal(ids.size, 1, `one id for every write to ${subject}: ${[...ids].join(', ')}`);
          assert.match([...ids][0] ?? '', new RegExp(`^eventgate:${route}:nats/IN/[^/]+/\\d+:deadletter:${subject.replace('.', '\\.')}$`));
        }
      },
    ));

  it("a message with its publisher's Nats-Msg-Id, dead-lettered into the stream it came from, is stored there", () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        const gw = f.running.at(-1) ?? (await start());
        const sid = await f.peer.subscribe('in.dead');
        await f.peer.jsPublish('in.home', JSON.stringify({ n: 3 }), { 'Nats-Msg-Id': 'order-3' });
        const [write] = await f.peer.take(sid, 1, 20000);
        await eventually(async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_route_messages_total', { route: 'home', outcome: 'deadlettered' }), 1), 10000, 100);
        const { state } = (await f.peer.jsApi('$JS.API.STREAM.INFO.IN', {})) as { state: { last_seq: number } };
        const subjects: string[] = [];
        for (let seq = 1; seq <= state.last_seq; seq++) subjects.push((await f.peer.storedMessage('IN', seq))?.subject ?? '(none)');
        // The publisher's id on the dead-letter write made the stream drop it as a duplicate of the original.
        assert.ok(subjects.includes('in.dead'), `stream IN holds ${subjects.join(', ')}; the dead-letter write's id was ${write!.headers['Nats-Msg-Id']}`);
        assert.match(write!.headers['Nats-Msg-Id'] ?? '', /^eventgate:home:nats\/IN\/[^/]+\/\d+:deadletter:in\.dead$/);
      },
    ));

  // Before, a message with no identity in its source kept its publisher's id on the dead-letter
  // write: the stream held the fan-out's first copy under that id and dropped the dead-letter copy
  // as its duplicate (docs/spec-checklist.md, point 121).
  it("a message from a core subject with its publisher's Nats-Msg-Id, dead-lettered into the stream a target stored it in, is stored there", () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        const gw = f.running.at(-1) ?? (await start());
        const sid = await f.peer.subscribe('in.core-dead');
        f.peer.publish('core.fan', JSON.stringify({ n: 4 }), { 'Nats-Msg-Id': 'order-4' });
        const [write] = await f.peer.take(sid, 1, 20000);
        await eventually(async () => assert.equal((await scrape(gw.adminUrl)).value('eventgate_route_messages_total', { route: 'core', outcome: 'deadlettered' }), 1), 10000, 100);
        const { state } = (await f.peer.jsApi('$JS.API.STREAM.INFO.IN', {})) as { state: { last_seq: number } };
        const subjects: string[] = [];
        for (let seq = 1; seq <= state.last_seq; seq++) subjects.push((await f.peer.storedMessage('IN', seq))?.subject ?? '(none)');
        assert.ok(subjects.includes('in.kept'), `stream IN holds ${subjects.join(', ')}: the first target's copy`);
        assert.ok(subjects.includes('in.core-dead'), `stream IN holds ${subjects.join(', ')}; the dead-letter write's id was ${write!.headers['Nats-Msg-Id']}`);
        assert.equal(write!.headers['Nats-Msg-Id'], 'eventgate:core:published/order-4:deadletter:in.core-dead');
      },
    ));
});

/**
 * A Kafka record batch no codec can decode (codec id 5, which Kafka does not define), dead-lettered
 * into a JetStream subject as its raw bytes: the write's PubAck held (the subscription writes it
 * again), then the gateway killed before the batch's offsets were committed, so the next gateway
 * reads the batch again and dead-letters it once more. The batch's id is its first record's (offset
 * and the timestamp its header holds), and the stream keeps one copy; before, it kept every write.
 */
describe('nats: an undecodable Kafka batch dead-lettered into JetStream again after a redelivery', () => {
  let yaml: string;
  const f = jetStreamPeers({ kafkaTopic: 'poison' });

  before(async () => {
    yaml = `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  kafka:
    kind: kafka
    brokers: ${f.kafka.bootstrap}
    consumer: ${f.kafka.consumerYaml}
  nats:
    kind: nats
    servers: nats://127.0.0.1:${f.proxy.port}
    ackTimeoutMs: 1000
    streams:
      DEAD: { subjects: [dead.>] }
routes:
  - name: poison
    from: { broker: kafka, topic: ${f.src}, group: ${f.kafka.topic('poison-group')}, startFrom: earliest }
    to: { broker: mem, topic: out }
    deadletter: { broker: nats, topic: dead.poison }
`;
  });

  const start = async () => {
    const gw = await startGateway(yaml);
    f.running.push(gw);
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'poison', 30000);
    await gw.waitForLog((l) => l.msg === 'nats connected' && l.broker === 'nats', 30000);
    return gw;
  };
  /** Two plain records written as one batch under codec id 5, which Kafka does not define (this process's producer only). */
  const produceUndecodable = async () => {
    (kafkajs.CompressionCodecs as unknown as Record<number, unknown>)[5] = () => ({ compress: async (encoder: { buffer: Buffer }) => encoder.buffer });
    const producer = testClient(f.kafka.bootstrap).producer();
    await producer.connect();
    try {
      await producer.send({ topic: f.src, compression: 5 as kafkajs.CompressionTypes, messages: [{ value: 'one' }, { value: 'two' }] });
    } finally {
      await producer.disconnect();
    }
  };

  it('the batch is stored once, however often it was dead-lettered', () =>
    withLogsOnFailure(
      () => f.running,
      async () => {
        const sid = await f.peer.subscribe('dead.poison');
        const first = await start();
        f.proxy.holdReplies();
        await produceUndecodable();
        // The first write timed out unanswered; the route waits for its answer.
        await f.peer.take(sid, 1, 20000);
        await first.waitForLog((l) => l.route === 'poison' && l.msg === 'a dead-letter write is still out past its ack deadline: the route waits for its answer before it tries again', 20000);
        await first.stop('SIGKILL');
        f.proxy.releaseReplies();

        const next = await start();
        await next.waitForLog((l) => l.msg === 'undecodable record batch sent to the dead-letter topic', 30000);
        assert.equal(await f.peer.streamMessages('DEAD'), 1, 'the batch once in the dead-letter stream');
        // Written by each gateway: the one killed before its answer, and the next after the redelivery.
        assert.ok(f.peer.received(sid).length >= 2, `${f.peer.received(sid).length} writes`);
        const ids = new Set(f.peer.received(sid).map((m) => m.headers['Nats-Msg-Id']));
        assert.equal(ids.size, 1, `one id for every write: ${[...ids].join(', ')}`);
        assert.match([...ids][0] ?? '', new RegExp(`^eventgate:poison:kafka/kafka/${f.src}/0/0/\\d+:deadletter:dead\\.poison$`));
      },
    ));
});
