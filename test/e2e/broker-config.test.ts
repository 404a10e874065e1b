import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runCliInProcess } from '../helpers/cli.js';
import { eventually, runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';

const config = `version: 1
brokers:
  devices:
    kind: mqtt
    url: http://wrong-scheme:1883
    qosByTopic:
      "a/#/b": 1
  rabbit:
    kind: amqp
    url: amqp://guest:guest@localhost:5672
    queues:
      legacy: { declare: false, bindings: [x] }
  nats:
    kind: nats
    servers: "nats://ok:4222, bad host"
    streams:
      ORDERS: { subjects: ["orders.>.x"] }
      bad.name: { subjects: [a] }
      LOGS: { subjects: [logs], maxAgeMs: 60000, duplicateWindowMs: 120000 }
  qos:
    kind: mqtt
    url: mqtt://x
    qos: 3
`;

/** Config mistakes in mqtt, amqp and nats brokers: each one a diagnostic at its line and column, all in one pass, before anything connects. */
describe('mqtt, amqp and nats broker options under eventgate validate', () => {
  it('points at every mistake with file:line:col', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 7), [
      "gateway.yaml:5:10: 'http://wrong-scheme:1883' is not an MQTT server URL: expected mqtt://host:port (or mqtts, ws, wss)",
      "gateway.yaml:7:16: 'a/#/b' is not an MQTT topic filter: '#' must be a whole level, and the last one",
      "gateway.yaml:12:15: queue 'legacy' has declare: false (it must exist already), so it cannot also set bindings, deadLetterExchange or arguments",
      "gateway.yaml:15:14: 'bad host' is not a NATS server: expected nats://host:4222 or host:port",
      "gateway.yaml:17:28: 'orders.>.x' is not a NATS subject: dot-separated tokens, '*' a whole token, '>' only the last",
      "gateway.yaml:18:17: 'bad.name' cannot name a JetStream stream: use letters, digits, _ and -",
      "gateway.yaml:19:69: duplicateWindowMs (120000) is longer than the stream's maxAgeMs (60000): a message id cannot be remembered longer than the message",
    ]);
    // qos: 3 is the schema's to refuse (its wording belongs to the config checker): no "did you mean '0'".
    assert.equal(lines[7], 'gateway.yaml:23:10: brokers.qos.qos must be one of 0, 1, 2, got number 3');
    assert.equal(lines.length, 8);
  });
});

/**
 * Topics a route names as they are, which the server would refuse: validate said `ok`, and at run
 * time mosquitto closed the publish connection on `a/+` (every publish in flight on it failed with
 * the route's, and /readyz flapped), refused the filter `a/#/b` (the route never consumed),
 * nats-server took a publish to `a.>` with a 200 that reached no subscriber of a concrete subject,
 * and refused a subscription to `a.>.b` (-ERR 'Invalid Subject') while the route said it was ready.
 */
describe('topics a route names that its mqtt or nats server would refuse', () => {
  const routes = `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  nt: { kind: nats, servers: "nats://127.0.0.1:4222", streams: { CTL: { subjects: ["ctl.\\x7f.>"] }, "B\\x01D": { subjects: ["bd.>"] } } }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: a, from: { listener: api, path: /a }, to: { broker: mq, topic: "a/+" } }
  - { name: b, from: { listener: api, path: /b }, to: [{ broker: nt, topic: ok }, { broker: nt, topic: "a.>" }] }
  - { name: c, from: { broker: mq, topic: "a/#/b" }, to: { broker: nt, topic: x } }
  - { name: d, from: { broker: nt, topic: "a.>.b" }, to: { broker: mq, topic: x } }
  - { name: e, from: { broker: nt, topic: "fine.*" }, to: { broker: mq, topic: x }, deadletter: { broker: mq, topic: "dead/#" } }
  - { name: f, from: { broker: mq, topic: "s/+/t/#" }, to: { broker: nt, topic: "fine.x" }, deadletter: { broker: nt, topic: "dead.*" } }
  - { name: g, from: { broker: mq, topic: "$share/g/s/+" }, to: { broker: nt, topic: x } }
  - { name: h, from: { listener: api, path: /h }, to: { broker: mq, topic: "$share/g/x" } }
  - { name: i, from: { listener: api, path: /i }, to: { broker: mq, topic: "$SYS/gateway/x" } }
  - { name: j, from: { broker: nt, topic: "in\\0.x" }, to: { broker: nt, topic: "out.\\x01" } }
`;

  it('are config errors at their line and column, in validate and run', async () => {
    const dir = tempFiles({ 'gateway.yaml': routes });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:4:84: 'ctl.\\u007f.>' is not a NATS subject: a NATS subject cannot hold the control character U+007F",
      // The stream's name quoted with its control character escaped, as its subjects are.
      "gateway.yaml:4:111: 'B\\u0001D' cannot name a JetStream stream: use letters, digits, _ and -",
      "gateway.yaml:8:76: 'a/+' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:9:104: 'a.>' cannot be a topic of nats broker 'nt': a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)",
      "gateway.yaml:10:43: 'a/#/b' cannot be a topic of mqtt broker 'mq': '#' must be a whole level, and the last one",
      "gateway.yaml:11:43: 'a.>.b' cannot be a topic of nats broker 'nt': a NATS subject is dot-separated tokens with no whitespace, '*' a whole token, '>' only the last",
      "gateway.yaml:12:118: 'dead/#' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:13:126: 'dead.*' cannot be a topic of nats broker 'nt': a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)",
      // Written as mosquitto_sub takes a shared subscription: subscribed as $share/<group>/$share/g/s/+, it matched nothing.
      `gateway.yaml:14:43: '$share/g/s/+' cannot be a topic of mqtt broker 'mq': a shared subscription is written as the route's topic and group (topic: "s/+", group: "g"): the gateway subscribes through $share/<group>/ itself`,
      // mosquitto answered its PUBACK with 0x87 Not authorized: a 503 for every publish, retried for ever by a consume route.
      "gateway.yaml:15:76: '$share/g/x' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot start with $share, which names shared subscriptions",
      // mosquitto refuses a publish to any topic starting with $SYS: 0x87 over MQTT 5 (a 503, retried for ever by a consume route), a PUBACK for a dropped message over 3.1.1.
      "gateway.yaml:16:76: '$SYS/gateway/x' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot start with $SYS, the server's own topics (mosquitto refuses such a publish)",
      // nats-server took both: the route subscribed to `in<NUL>.x` and published to `out.<SOH>`, which no one meant.
      "gateway.yaml:17:43: 'in\\u0000.x' cannot be a topic of nats broker 'nt': a NATS subject cannot hold the control character U+0000",
      "gateway.yaml:17:80: 'out.\\u0001' cannot be a topic of nats broker 'nt': a NATS subject cannot hold the control character U+0001",
    ]);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr + run.stdout, /'a\/\+' cannot be a topic of mqtt broker 'mq'/);
  });
});

/**
 * Kafka topic names and AMQP routing keys a route names as they are, and the dead-letter topic of
 * a validate step (of any kind): validate said `ok` for all of them. At run time an AMQP routing
 * key over 255 bytes failed every publish with a 503 (`did not acknowledge`, so consume routes
 * retried it) and a consume route on one never started (amqplib refused the binding, retried for
 * ever); a Kafka cluster refuses an illegal topic name on every request (the librdkafka mock
 * cluster the tests use takes any name, so only validate shows it).
 */
describe('Kafka topics, AMQP routing keys and validate-step dead-letter topics a server would refuse', () => {
  const long = (c: string, n: number) => c.repeat(n);
  const routes = `version: 1
brokers:
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
  rb: { kind: amqp, url: "amqp://guest:guest@127.0.0.1:5672" }
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  nt: { kind: nats, servers: "nats://127.0.0.1:4222" }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: k1, from: { listener: api, path: /k1 }, to: [{ broker: kf, topic: "bad topic!" }, { broker: kf, topic: "${long('k', 249)}" }] }
  - { name: k2, from: { listener: api, path: /k2 }, to: { broker: kf, topic: "${long('k', 250)}" } }
  - { name: k3, from: { broker: kf, topic: ".." }, to: { broker: kf, topic: { expression: '"computed " & "later"' } } }
  - { name: k4, from: { broker: kf, topic: in }, to: { broker: kf, topic: out }, deadletter: { broker: kf, topic: "\${DEAD_TOPIC}" } }
  - { name: k5, from: { broker: kf, topic: "orders.*" }, to: { broker: kf, topic: "orders.*" } }
  - { name: a1, from: { listener: api, path: /a1 }, to: [{ broker: rb, topic: "${long('r', 255)}" }, { broker: rb, topic: "${long('é', 128)}" }] }
  - { name: a2, from: { broker: rb, topic: "${long('q', 256)}" }, to: { broker: kf, topic: out } }
  - name: v
    from: { listener: api, path: /v }
    through:
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: kf, topic: "invalid orders" } }
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: rb, topic: "${long('d', 300)}" } }
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: mq, topic: "dead/+" } }
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: nt, topic: "dead.*" } }
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: nt, topic: "dead.ok" } }
    to: { broker: kf, topic: out }
`;
  const kafkaRule = 'a Kafka topic name is 1 to 249 characters among A-Z a-z 0-9 . _ - (and not "." or "..")';
  const onePerRoute = 'a route names one topic as it is: patterns and wildcards are not supported (write a route per topic)';

  it('are config errors at their line and column, in validate and run', async () => {
    const dir = tempFiles({ 'gateway.yaml': routes });
    const env = { DEAD_TOPIC: 'dead letters' };
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:10:79: 'bad topic!' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      `gateway.yaml:11:78: '${long('k', 40)}…' (250 characters) cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      `gateway.yaml:12:44: '..' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      // A value from the environment is shown redacted, in validate as in run (spec-checklist 4997, 4999).
      `gateway.yaml:13:115: '[redacted]' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      // Read as Zilla, Kafka Connect or kafkajs read it, a pattern; a target's is only a bad name.
      `gateway.yaml:14:44: 'orders.*' cannot be a topic of kafka broker 'kf': ${kafkaRule}; ${onePerRoute}`,
      `gateway.yaml:14:83: 'orders.*' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      `gateway.yaml:15:361: '${long('é', 40)}…' (128 characters, 256 bytes) cannot be a topic of amqp broker 'rb': an AMQP routing key is at most 255 bytes`,
      `gateway.yaml:16:44: '${long('q', 40)}…' (256 characters) cannot be a topic of amqp broker 'rb': an AMQP queue name or routing-key pattern is at most 255 bytes`,
      `gateway.yaml:20:103: 'invalid orders' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      `gateway.yaml:21:103: '${long('d', 40)}…' (300 characters) cannot be a topic of amqp broker 'rb': an AMQP routing key is at most 255 bytes`,
      "gateway.yaml:22:103: 'dead/+' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:23:103: 'dead.*' cannot be a topic of nats broker 'nt': a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)",
    ]);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr + run.stdout, /'invalid orders' cannot be a topic of kafka broker 'kf'/);
  });
});

/**
 * A kafka listener's route names the topic its clients produce to; one Kafka would refuse was
 * reported only when the rest of the route was right, so a route with a bad target topic too had
 * its source topic reported on the next run of validate, not this one.
 */
describe('a kafka listener route whose topic Kafka would refuse', () => {
  const kafkaRule = 'a Kafka topic name is 1 to 249 characters among A-Z a-z 0-9 . _ - (and not "." or "..")';
  it("is a config error at its line with the route's other problems, in one pass", async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
listeners:
  kin: { kind: kafka, upstream: kf, port: 0 }
routes:
  - { name: governed, from: { listener: kin, topic: "bad topic" } }
  - { name: moved, from: { listener: kin, topic: ".." }, to: { broker: kf, topic: "also bad" } }
  - { name: pattern, from: { listener: kin, topic: "/orders-.*/" } }
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:7:53: route 'governed': topic 'bad topic' cannot be routed: ${kafkaRule}`,
      `gateway.yaml:8:50: route 'moved': topic '..' cannot be routed: ${kafkaRule}`,
      `gateway.yaml:8:83: 'also bad' cannot be a topic of kafka broker 'kf': ${kafkaRule}`,
      `gateway.yaml:9:52: route 'pattern': topic '/orders-.*/' cannot be routed: ${kafkaRule}; a route names one topic as it is: patterns and wildcards are not supported (write a route per topic)`,
    ]);
  });
});

/**
 * An amqp broker's own names over 255 bytes: validate said `ok`, and amqplib refused the exchange,
 * the queue and the binding at every connect (`Field 'queue' is the wrong type; must be a string
 * (up to 255 chars)`), so the broker never became ready; RabbitMQ takes a longer
 * `deadLetterExchange`, which can name no exchange, and drops what it dead-letters there.
 */
describe('amqp exchange and queue names and binding keys over 255 bytes', () => {
  const long = (c: string, n: number) => c.repeat(n);
  const config = `version: 1
brokers:
  rb:
    kind: amqp
    url: amqp://guest:guest@127.0.0.1:5672
    exchange: { name: "${long('e', 256)}" }
    queues:
      ${long('q', 256)}: { bindings: [ok] }
      fine:
        deadLetterExchange: "${long('x', 300)}"
        bindings: ["${long('b', 256)}", { exchange: "${long('f', 255)}", routingKey: "${long('k', 255)}" }]
  rb2: { kind: amqp, url: "amqp://127.0.0.1", exchange: "${long('é', 128)}" }
`;

  it('are config errors at their line and column', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const limit = 'AMQP names and routing keys are at most 255 bytes';
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:6:23: the exchange name is 256 bytes; ${limit}`,
      `gateway.yaml:8:265: the queue name is 256 bytes; ${limit}`,
      `gateway.yaml:10:29: the dead-letter exchange name is 300 bytes; ${limit}`,
      `gateway.yaml:11:20: the binding key is 256 bytes; ${limit}`,
      `gateway.yaml:12:57: the exchange name is 256 bytes; ${limit}`,
    ]);
  });
});

/**
 * RabbitMQ reserves names starting with `amq.`: it refuses to declare such an exchange or queue
 * (403 ACCESS_REFUSED), and only its own `amq.*` exchanges exist. validate said `ok`, and the broker
 * never became ready (`topology not ready`, at every connect).
 */
describe("amqp exchange and queue names RabbitMQ reserves ('amq.'), and bindings to the default exchange ('')", () => {
  const config = `version: 1
brokers:
  rb:
    kind: amqp
    url: amqp://guest:guest@127.0.0.1:5672
    exchange: amq.events
    queues:
      amq.billing: { bindings: [ok] }
      amq.gen-made-by-the-server: { declare: false }
      fine:
        deadLetterExchange: amq.dlx
        bindings: [{ exchange: amq.fanout, routingKey: k }, { exchange: amq.nope, routingKey: k }]
  rb2: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: amq.direct, type: direct } }
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
  dflt: { kind: amqp, url: "amqp://127.0.0.1", exchange: "", queues: { direct-q: { bindings: [x] }, other-q: { bindings: [{ exchange: "", routingKey: y }, { exchange: ev, routingKey: z }] } } }
routes:
  - { name: r1, from: { broker: rb2, topic: "orders.*", group: amq.mine }, to: { broker: kf, topic: out } }
  - { name: r2, from: { broker: rb2, topic: "orders.*", group: mine }, to: { broker: kf, topic: out } }
  - { name: r3, from: { broker: dflt, topic: "orders.*" }, to: { broker: kf, topic: out } }
  - { name: r4, from: { broker: dflt, topic: direct-q }, to: { broker: dflt, topic: other-q } }
`;

  it("are config errors at their line, but for RabbitMQ's own exchanges and a queue that must exist; so is a binding to the default exchange, or a routing-key route on it", async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const own = 'amq.direct, amq.fanout, amq.headers, amq.match, amq.topic, amq.rabbitmq.trace';
    const refused = "RabbitMQ reserves names starting with 'amq.': it refuses to declare one (403 ACCESS_REFUSED)";
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:6:15: 'amq.events' is not one of RabbitMQ's own exchanges (${own}), and ${refused}`,
      "gateway.yaml:8:20: RabbitMQ reserves queue names starting with 'amq.' and refuses to declare one (403 ACCESS_REFUSED); name it otherwise, or set declare: false for a queue the server made",
      `gateway.yaml:11:29: 'amq.dlx' is not one of RabbitMQ's own exchanges (${own}), and ${refused}`,
      `gateway.yaml:12:73: 'amq.nope' is not one of RabbitMQ's own exchanges (${own}), and ${refused}`,
      "gateway.yaml:15:95: queue 'direct-q' cannot be bound to the default exchange: RabbitMQ binds every queue to the default exchange '' by the queue's own name and refuses any other binding to it (403 ACCESS_REFUSED); a publish with the routing key 'direct-q' reaches it",
      "gateway.yaml:15:123: queue 'other-q' cannot be bound to the default exchange: RabbitMQ binds every queue to the default exchange '' by the queue's own name and refuses any other binding to it (403 ACCESS_REFUSED); a publish with the routing key 'other-q' reaches it",
      "gateway.yaml:17:64: consumer group 'amq.mine' cannot be used with amqp broker 'rb2': it names the queue declared for the route (its from.topic is a routing-key pattern), and RabbitMQ reserves queue names starting with 'amq.' (403 ACCESS_REFUSED)",
      "gateway.yaml:19:46: 'orders.*' cannot be a topic of amqp broker 'dflt': with the default exchange ('') a consume route reads a queue of queues (declare: false for one that exists): as a routing-key pattern it would bind a queue of its own to that exchange, which RabbitMQ refuses (403 ACCESS_REFUSED)",
    ]);
  });
});

/**
 * An amqp routing-key route's group names the durable queue the gateway declares for it: over 255
 * bytes validate said `ok`, and amqplib refused the queue at every try, so the route never started
 * (`amqp consumer could not start; retrying`, for ever). The default group is `eventgate-<route name>`.
 */
describe('an amqp routing-key route whose group, as a queue name, is over 255 bytes', () => {
  const long = (c: string, n: number) => c.repeat(n);
  const config = `version: 1
brokers:
  rb: { kind: amqp, url: "amqp://guest:guest@127.0.0.1:5672", queues: { billing: {} } }
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: g1, from: { broker: rb, topic: "orders.*", group: "${long('g', 256)}" }, to: { broker: kf, topic: out } }
  - { name: g2, from: { broker: rb, topic: billing, group: "${long('g', 300)}" }, to: { broker: kf, topic: out } }
  - { name: "${long('n', 246)}", from: { broker: rb, topic: "x.#" }, to: { broker: kf, topic: out } }
  - { name: "${long('m', 245)}", from: { broker: rb, topic: "y.#" }, to: { broker: kf, topic: out } }
  - { name: g3, from: { broker: kf, topic: in, group: "${long('g', 300)}" }, to: { broker: rb, topic: out } }
  - { name: g4, from: { broker: rb, topic: "z.#", group: "${long('é', 127)}x" }, to: { broker: kf, topic: out } }
`;

  it('is a config error at the group (or the route name its default comes from), in validate and run', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const why = 'it names the queue declared for the route (its from.topic is a routing-key pattern), and an AMQP queue name is at most 255 bytes';
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:8:63: consumer group '${long('g', 40)}…' (256 characters) cannot be used with amqp broker 'rb': ${why}`,
      `gateway.yaml:10:13: consumer group 'eventgate-${long('n', 30)}…' (256 characters) cannot be used with amqp broker 'rb': ${why}`,
    ]);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr + run.stdout, /consumer group 'g{40}…' \(256 characters\) cannot be used with amqp broker 'rb'/);
  });
});

/**
 * An mqtt route's group is the share name of its shared subscription (`$share/<group>/<filter>`):
 * validate said `ok` for one holding `/`, `+` or `#`, and mosquitto 2.0 took `$share/a/b/t` as the
 * share `a` of the filter `b/t`, so a route with group `a/b` on topic `t` read `b/t`, never `t`.
 */
/**
 * A JetStream group is one durable consumer per stream, which reads one subject; an amqp
 * routing-key route's group is one queue, bound for every pattern its routes read. Two routes of
 * one config reading different subjects or patterns through it validated: the JetStream routes
 * made the consumer again for their own subjects in turn (messages of both skipped), the amqp
 * routes each got the other's messages.
 */
describe('two routes of one group reading different subjects of a JetStream stream, or different amqp patterns', () => {
  const hook = 'to: { http: { url: "http://127.0.0.1:9/a" } }';
  const config = `version: 1
brokers:
  nats: { kind: nats, servers: "nats://127.0.0.1:4222", streams: { S: { subjects: ["s.>"] }, T: { subjects: ["t.>"] } } }
  rb: { kind: amqp, url: "amqp://127.0.0.1", queues: { billing: { bindings: [b.*] } } }
routes:
  - { name: same-subject-1, from: { broker: nats, topic: s.a, group: g }, ${hook} }
  - { name: same-subject-2, from: { broker: nats, topic: s.a, group: g }, ${hook} }
  - { name: other-stream, from: { broker: nats, topic: t.a, group: g }, ${hook} }
  - { name: core-a, from: { broker: nats, topic: core.a, group: g }, ${hook} }
  - { name: core-b, from: { broker: nats, topic: core.b, group: g }, ${hook} }
  - { name: other-subject, from: { broker: nats, topic: s.b, group: g }, ${hook} }
  - { name: orders, from: { broker: rb, topic: "orders.*", group: shared }, ${hook} }
  - { name: refunds, from: { broker: rb, topic: "refunds.*", group: shared }, ${hook} }
  - { name: billing-1, from: { broker: rb, topic: billing, group: shared }, ${hook} }
  - { name: billing-2, from: { broker: rb, topic: billing, group: shared }, ${hook} }
  - { name: returns, from: { broker: rb, topic: "returns.*", group: shared }, to: { broker: nowhere, topic: r } }
`;

  it("is a config error at the second route's group, a route with another error too; one subject or pattern shared, another stream, core subjects and queues of `queues` are not", async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:11:69: route 'other-subject' reads 's.b' with group 'g', as route 'same-subject-1' reads 's.a': on broker 'nats' that group is JetStream consumer 'g' of stream 'S', which reads one subject, so the two routes cannot both read through it; give one of them another group",
      "gateway.yaml:13:69: route 'refunds' reads 'refunds.*' with group 'shared', as route 'orders' reads 'orders.*': on broker 'rb' that group is queue 'shared', bound for both patterns, so each route would get messages of the other; give one of them another group",
      // A route with an error elsewhere (its target) is compared too: both said in one pass (spec-checklist 1806).
      "gateway.yaml:16:69: route 'returns' reads 'returns.*' with group 'shared', as route 'orders' reads 'orders.*': on broker 'rb' that group is queue 'shared', bound for both patterns, so each route would get messages of the other; give one of them another group",
      "gateway.yaml:16:93: broker 'nowhere' is not defined; defined brokers: nats, rb",
    ]);
  });
});

/**
 * A JetStream consumer's name has no `.`: groups `a.b` and `a_b` both name consumer `a_b`. Two
 * routes reading one subject with them validated, and then split its messages through that one
 * consumer, where two groups each read every message.
 */
describe('two routes reading one JetStream subject with groups that name one consumer', () => {
  const hook = 'to: { http: { url: "http://127.0.0.1:9/a" } }';
  const config = `version: 1
brokers:
  nats: { kind: nats, servers: "nats://127.0.0.1:4222", streams: { S: { subjects: ["s.>"] } } }
routes:
  - { name: dotted, from: { broker: nats, topic: s.a, group: a.b }, ${hook} }
  - { name: underscored, from: { broker: nats, topic: s.a, group: a_b }, ${hook} }
  - { name: x.y, from: { broker: nats, topic: s.a }, ${hook} }
  - { name: x_y, from: { broker: nats, topic: s.a }, ${hook} }
  - { name: core-dotted, from: { broker: nats, topic: core.a, group: c.d }, ${hook} }
  - { name: core-underscored, from: { broker: nats, topic: core.a, group: c_d }, ${hook} }
  - { name: live.a, from: { broker: nats, topic: s.a }, to: { listener: ws, path: /a } }
  - { name: live_a, from: { broker: nats, topic: s.a }, to: { listener: ws, path: /b } }
  - { name: p.q, from: { broker: nats, topic: s.b }, to: { listener: ws, path: /c } }
  - { name: p_q, from: { broker: nats, topic: s.c }, to: { listener: ws, path: /d } }
  - { name: live-c, from: { broker: nats, topic: s.a }, to: { listener: ws, path: /e } }
listeners:
  ws: { kind: websocket, port: 0 }
`;

  it("is a config error at the second route's group (its name, for a default group), naming the other route; core subjects' queue groups are not", async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:6:67: route 'underscored' reads 's.a' with group 'a_b', as route 'dotted' reads it with group 'a.b': on broker 'nats' both groups are JetStream consumer 'a_b' of stream 'S', so the two routes would split its messages instead of each reading all of them; give one of them a group that names another consumer",
      "gateway.yaml:8:13: route 'x_y' reads 's.a' with group 'eventgate-x_y', as route 'x.y' reads it with group 'eventgate-x.y': on broker 'nats' both groups are JetStream consumer 'eventgate-x_y' of stream 'S', so the two routes would split its messages instead of each reading all of them; give one of them a group that names another consumer",
      // Routes forwarding to listeners have a group of their own on each instance, named after the route as well.
      "gateway.yaml:12:13: route 'live_a' reads 's.a' with group 'eventgate-live_a-<instance>', as route 'live.a' reads it with group 'eventgate-live.a-<instance>': on broker 'nats' both groups are JetStream consumer 'eventgate-live_a-<instance>' of stream 'S', so the two routes would split its messages instead of each reading all of them; rename one of the routes (its group on each instance is named after it)",
      "gateway.yaml:14:13: route 'p_q' reads 's.c' with group 'eventgate-p_q-<instance>', as route 'p.q' reads 's.b': on broker 'nats' that group is JetStream consumer 'eventgate-p_q-<instance>' of stream 'S', which reads one subject, so the two routes cannot both read through it; rename one of the routes (its group on each instance is named after it)",
    ]);
  });
});

/**
 * A JetStream route reads a stream's subjects through a durable consumer only when its filter is
 * inside one stream. One that reaches into a stream without being inside it (`orders.>` beside a
 * stream of `orders.*`) validated silently and read everything as core NATS, at most once, the
 * stream's stored messages not through it.
 */
describe('a nats route whose subject filter reaches into a stream without being inside it', () => {
  it('is a warning at its from.topic; filters inside a stream, and core ones beside it, are not', async () => {
    const hook = 'to: { http: { url: "http://127.0.0.1:9/a" } }';
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  nt: { kind: nats, servers: "tls://127.0.0.1:4222", streams: { ORD: { subjects: ["orders.*", "ev.>"] } } }
routes:
  - { name: inside, from: { broker: nt, topic: "orders.*" }, ${hook} }
  - { name: deeper, from: { broker: nt, topic: "ev.a.*.c" }, ${hook} }
  - { name: core, from: { broker: nt, topic: "orders.eu.*" }, ${hook} }
  - { name: wide, from: { broker: nt, topic: "orders.>" }, ${hook} }
  - { name: all, from: { broker: nt, topic: ">" }, ${hook} }
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const rest = 'without being inside it: the route reads it all as core NATS, at most once and only while connected, not through a durable consumer of the stream';
    assert.deepEqual(r.stderr.trim().split('\n'), [
      `gateway.yaml:8:46: warning: route 'wide': 'orders.>' reaches into stream 'ORD' (its subject 'orders.*') ${rest}; read 'orders.*' in a route of its own, or make the stream hold all of 'orders.>' [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `gateway.yaml:9:45: warning: route 'all': '>' reaches into stream 'ORD' (its subject 'orders.*') ${rest}; read 'orders.*' in a route of its own, or make the stream hold all of '>' [EG_CONFIG_SUSPICIOUS_TOPIC]`,
    ]);
  });
});

describe('an mqtt route whose group cannot be a share name', () => {
  const config = `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  plain: { kind: mqtt, url: "mqtt://127.0.0.1:1883", sharedSubscriptions: false }
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
routes:
  - { name: m1, from: { broker: mq, topic: t, group: "a/b" }, to: { broker: kf, topic: out } }
  - { name: m2, from: { broker: mq, topic: t, group: "a+" }, to: { broker: kf, topic: out } }
  - { name: m3, from: { broker: plain, topic: t, group: "a/b" }, to: { broker: kf, topic: out } }
  - { name: m6, from: { broker: mq, topic: t, group: "a.b-c_d" }, to: { broker: kf, topic: out } }
`;

  it('is a config error at the group (route names, which default groups come from, cannot hold them)', async () => {
    const dir = tempFiles({ 'gateway.yaml': config });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const why = 'it is the share name of the MQTT shared subscription ($share/<group>/<filter>), which cannot hold /, + or # (after a /, the server reads the rest as the filter)';
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:7:54: consumer group 'a/b' cannot be used with mqtt broker 'mq': ${why}`,
      `gateway.yaml:8:54: consumer group 'a+' cannot be used with mqtt broker 'mq': ${why}`,
    ]);
  });
});

/**
 * A route's `qos` (issue #17: "QoS per route") is an MQTT setting: on another kind of broker, on a
 * listener source or a non-broker target it would change nothing, and a value other than 0, 1 or
 * 2 (a quoted "1" included) cannot be one. Each is a config error at its key or value.
 */
describe("a route's qos where it cannot apply", () => {
  it('is refused by the schema on listener sources and http targets, and for values other than 0, 1, 2', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: a, from: { listener: api, path: /a, qos: 1 }, to: { broker: mq, topic: a } }
  - { name: b, from: { listener: api, path: /b }, to: [{ broker: mq, topic: x, qos: 3 }, { broker: mq, topic: y, qos: "1" }] }
  - { name: c, from: { listener: api, path: /c }, to: { http: { url: "http://127.0.0.1:9/" }, qos: 1 } }
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 4, r.stdout);
    assert.equal(lines[0], "gateway.yaml:7:49: routes[0].from: 'qos' belongs with 'from.broker', not 'from.listener'");
    // A number out of range gets no hint (the allowed values are listed); a quoted number is told to lose its quotes.
    assert.equal(lines[1], 'gateway.yaml:8:85: routes[1].to[0].qos must be one of 0, 1, 2, got number 3');
    assert.equal(lines[2], 'gateway.yaml:8:119: routes[1].to[1].qos must be one of 0, 1, 2, got string "1" (write it without quotes: 1)');
    assert.equal(lines[3], "gateway.yaml:9:95: routes[2].to: 'qos' belongs with broker or listener targets, not 'http' targets (webhook options go inside 'http')");
  });

  it('is refused at its key on a source, target or dead-letter topic of a broker that is not mqtt', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
  mem: { kind: memory }
routes:
  - { name: a, from: { broker: kf, topic: in, qos: 1 }, to: { broker: mq, topic: a, qos: 2 } }
  - { name: b, from: { broker: mq, topic: "in/#", qos: 0 }, to: { broker: mem, topic: out, qos: 1 }, deadletter: { broker: kf, topic: dead, qos: 1 } }
  - { name: c, from: { broker: mq, topic: "c/#", qos: 2 }, to: { broker: mq, topic: out, qos: 0 }, deadletter: { broker: mq, topic: dead, qos: 1 } }
  - name: d
    from: { broker: mq, topic: "d/#" }
    through:
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: mq, topic: invalid, qos: 0 } }
      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: kf, topic: invalid, qos: 1 } }
      - validate: { schema: { type: object, required: [id] }, onInvalid: deadletter, deadletter: { broker: mq, topic: invalid, qos: "2" } }
    to: { broker: mq, topic: out }
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:7:47: 'qos' is a setting of mqtt brokers: broker 'kf' is a kafka broker, which has no QoS levels",
      "gateway.yaml:8:92: 'qos' is a setting of mqtt brokers: broker 'mem' is a memory broker, which has no QoS levels",
      "gateway.yaml:8:141: 'qos' is a setting of mqtt brokers: broker 'kf' is a kafka broker, which has no QoS levels",
      // A validate step's own dead-letter topic takes a qos as the route's does: mqtt only, 0, 1 or 2.
      "gateway.yaml:14:112: 'qos' is a setting of mqtt brokers: broker 'kf' is a kafka broker, which has no QoS levels",
      'gateway.yaml:15:133: routes[3].through[2].validate.deadletter.qos must be one of 0, 1, 2, got string "2" (write it without quotes: 2)',
    ]);
  });
});

/**
 * A server URL whose port is not one, or that is no URL: validate said `ok`; at run time mqtt.js
 * threw at start (`could not start gateway.yaml: Port should be >= 0 and < 65536`, naming no broker
 * or line), nats.js (`Invalid URL`) and amqplib (`Expected amqp: or amqps: as the protocol; got `)
 * retried for ever, mqtt.js took port 0 and the host `%zz` for its defaults (127.0.0.1:1883) and
 * connected to `broker` for `broker host`. Now a config error at the URL, in validate and run.
 */
describe('server URLs whose port or host is not one', () => {
  it('are config errors at the URL, in validate and run', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  m1: { kind: mqtt, url: "mqtt://127.0.0.1:99999" }',
        '  m2: { kind: mqtt, url: "mqtt://127.0.0.1:0" }',
        '  m3: { kind: mqtt, url: "mqtts://user:pass@[::1]:8883" }',
        '  n1: { kind: nats, servers: "nats://127.0.0.1:4222, 127.0.0.1:70000" }',
        '  a1: { kind: amqp, url: "amqp://user:pass@127.0.0.1:99999/vhost" }',
        '  a2: { kind: amqp, url: "amqps://user:pass@127.0.0.1/vhost?heartbeat=30" }',
        '  m4: { kind: mqtt, url: "mqtt://%zz" }',
        '  m5: { kind: mqtt, url: "mqtt://broker host" }',
        '  a3: { kind: amqp, url: "amqp://user:pa#ss@127.0.0.1/" }',
        '  n2: { kind: nats, servers: ["[::1]:4222", "tls://[::1]", "nats://gateway:${NATS_PASSWORD}@127.0.0.1:4222", "nats://s3cr3t-token@127.0.0.1"] }',
        '  n3: { kind: nats, servers: "ws://127.0.0.1:8080" }',
        '  a4: { kind: amqp, url: "amqp://127.0.0.1/?heartbeat=abc&frameMax=1&channelMax=65535&maxFrameSize=1024&maxFrameSize=0" }',
        '',
      ].join('\n'),
    });
    const env = { NATS_PASSWORD: 'hunter22' };
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:3:26: 'mqtt://127.0.0.1:99999' names port 99999, but a port is a number from 1 to 65535",
      "gateway.yaml:4:26: 'mqtt://127.0.0.1:0' names port 0, but a port is a number from 1 to 65535",
      "gateway.yaml:6:30: '127.0.0.1:70000' names port 70000, but a port is a number from 1 to 65535",
      "gateway.yaml:7:26: 'amqp://user:***@127.0.0.1:99999/vhost' names port 99999, but a port is a number from 1 to 65535",
      "gateway.yaml:9:26: 'mqtt://%zz' names host '%zz', which is not a host name or IP address",
      "gateway.yaml:10:26: 'mqtt://broker host' is not a URL: scheme://user:password@host:port/path, with @ # / : and spaces in the user and password percent-encoded",
      "gateway.yaml:11:26: 'amqp://user:***@127.0.0.1/' is not a URL: scheme://user:password@host:port/path, with @ # / : and spaces in the user and password percent-encoded",
      "gateway.yaml:12:60: 'nats://gateway:***@127.0.0.1:4222' holds credentials, which the NATS client does not send: give them as the broker's `user` and `password` (or `token`)",
      "gateway.yaml:12:110: 'nats://***@127.0.0.1' holds credentials, which the NATS client does not send: give them as the broker's `user` and `password` (or `token`)",
      "gateway.yaml:13:30: 'ws://127.0.0.1:8080' is a WebSocket URL, but the gateway's NATS client speaks the NATS protocol over TCP: give the server's client port (nats://host:4222, or tls://host:4222 for TLS)",
      'gateway.yaml:14:26: the URL parameter heartbeat=abc is not a whole number from 0 to 65535',
      "gateway.yaml:14:26: the URL parameter frameMax=1 is under 4096, AMQP's least frame size (0 takes the server's)",
      // amqplib refused to connect with it, every try (`maxFrameSize must be 0 (no limit) or an integer of at least 4096`).
      "gateway.yaml:14:26: the URL parameter maxFrameSize=1024 is under 4096, AMQP's least frame size (0 for no limit)",
    ]);
    assert.doesNotMatch(r.stdout + r.stderr, /pass@|pa#ss|s3cr3t|hunter22/, 'a password quoted in a config error');
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stderr, /^gateway\.yaml:3:26: 'mqtt:\/\/127\.0\.0\.1:99999' names port 99999/m);
    assert.doesNotMatch(run.stdout + run.stderr, /pass@|pa#ss|s3cr3t|hunter22/, 'a password quoted in a config error');
    assert.doesNotMatch(run.stdout + run.stderr, /could not start/);
  });

  // The schema's own refusals quoted the value whole: a webhook URL's password and query (an API key) too.
  it('whose value the schema refuses are quoted without their password and query', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  m: { kind: mqtt, url: "mqtt://127.0.0.1", qos: "mqtt://gw:qos-pw-3c8@127.0.0.1" }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    to: { http: { url: "http://hook:hook-pw-7a2@127.0.0.1:0/x?apikey=hook-key-51f" } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      'gateway.yaml:3:50: brokers.m.qos must be one of 0, 1, 2, got string "mqtt://gw:***@127.0.0.1"',
      'gateway.yaml:8:24: routes[0].to.http.url must be an http(s) URL (http://host[:port]/path, port 1–65535), got string "http://hook:***@127.0.0.1:0/x?..."',
    ]);
    const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.doesNotMatch(r.stdout + r.stderr + run.stdout + run.stderr, /qos-pw|hook-pw|hook-key/, 'a secret quoted in a config error');
  });

  /**
   * A password with an unencoded `/`, `?` or `#` ends the authority before its `@`: validate said
   * `ok` and the gateway dialled the user's name as a host. Now a warning at an amqp or mqtt URL (an
   * '@' in a vhost or path is legal), an error at a nats server (a NATS URL has no path) and a kafka
   * entry (`user@host:9092` is never an address), the password masked in each.
   */
  it('whose password ends the host early: a warning for amqp and mqtt, an error for nats and kafka', async () => {
    const warned = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  a1: { kind: amqp, url: "amqp://gateway:12/ab@rabbitmq" }',
        '  a2: { kind: amqp, url: "amqp://gateway:${AMQP_PASSWORD}@rabbitmq/vhost" }',
        '  m1: { kind: mqtt, url: "mqtt://gateway:4?q@mosquitto:1883" }',
        '  m2: { kind: mqtt, url: "mqtts://gateway:#x@mosquitto" }',
        '  a3: { kind: amqp, url: "amqp://guest:guest@rabbitmq/team@eu" }',
        '  a4: { kind: amqp, url: "amqp://rabbitmq/team@eu" }',
        '  a5: { kind: amqp, url: "amqp://rabbitmq/?heartbeet=30&locale=en_US&frameMax=0" }',
        // The rest of a password after its `?` is no URL parameter to name (it was: 'Zq9@rabbitmq').
        '  a6: { kind: amqp, url: "amqp://gateway:12?Zq9@rabbitmq" }',
        '',
      ].join('\n'),
    });
    const env = { AMQP_PASSWORD: '/Zq+w' };
    const ok = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: warned, env });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const early = "a password holding '/', '?' or '#' ends the host early";
    assert.deepEqual(ok.stderr.trim().split('\n'), [
      `gateway.yaml:3:26: warning: 'amqp://gateway:***@rabbitmq' has an '@' after its host 'gateway': ${early}, and the gateway would connect to 'gateway'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
      `gateway.yaml:4:26: warning: 'amqp://gateway:***@rabbitmq/vhost' has an '@' after its host 'gateway': ${early}, and the gateway would connect to 'gateway'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
      `gateway.yaml:5:26: warning: 'mqtt://gateway:***@mosquitto:1883' has an '@' after its host 'gateway': ${early}, and the gateway would connect to 'gateway'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
      `gateway.yaml:6:26: warning: 'mqtts://gateway:***@mosquitto' has an '@' after its host 'gateway': ${early}, and the gateway would connect to 'gateway'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
      `gateway.yaml:8:26: warning: 'amqp://***@eu' has an '@' after its host 'rabbitmq': ${early}, and the gateway would connect to 'rabbitmq'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
      "gateway.yaml:9:26: warning: the URL parameter 'heartbeet' is not one the AMQP client reads (heartbeat, channelMax, frameMax, maxFrameSize, locale): it is ignored [EG_CONFIG_SERVER_URL]",
      `gateway.yaml:10:26: warning: 'amqp://gateway:***@rabbitmq' has an '@' after its host 'gateway': ${early}, and the gateway would connect to 'gateway'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path [EG_CONFIG_SERVER_URL]`,
    ]);
    assert.doesNotMatch(ok.stdout + ok.stderr, /ab@|Zq\+w|4\?q|#x|Zq9/, 'a password quoted in a config warning');
    const refused = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  n1: { kind: nats, servers: ["nats://gateway:12/ab@127.0.0.1:4222"] }',
        '  k1: { kind: kafka, brokers: ["gateway@kafka:9092", "gateway:s3cr3t@kafka:9092"] }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: refused });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const sasl = "is not a broker address: it holds credentials before an '@', which kafka does not read there: give them as the broker's `sasl` (username, password), and the address as host:port";
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:3:31: 'nats://gateway:***@127.0.0.1:4222' holds credentials, which the NATS client does not send: give them as the broker's `user` and `password` (or `token`)",
      `gateway.yaml:4:32: '***@kafka:9092' ${sasl}`,
      `gateway.yaml:4:54: 'gateway:***@kafka:9092' ${sasl}`,
    ]);
    assert.doesNotMatch(r.stdout + r.stderr, /ab@|s3cr3t/, 'a password quoted in a config error');
  });
});

/**
 * An amqp route whose `from.topic` is one typo off a queue of `queues`: the config reads it as a
 * routing key (the route declares a queue of its own bound to the exchange), so the route gets
 * nothing of the queue meant, and validate said `ok` without a word. Now a warning at the topic
 * (exit 0: a routing key so spelt may be meant), none for the queue itself, a pattern or a key
 * unlike any queue.
 */
describe('an amqp route reading a routing key one typo off a queue', () => {
  it('gets a warning at its topic, with the queue it likely meant', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  rb: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: ev, type: topic }, queues: { billing: { bindings: ["orders.*"] }, orders: {} } }',
        '  m: { kind: memory }',
        'routes:',
        '  - { name: typo, from: { broker: rb, topic: billng }, to: { broker: m, topic: a } }',
        '  - { name: queue, from: { broker: rb, topic: billing }, to: { broker: m, topic: a } }',
        '  - { name: pattern, from: { broker: rb, topic: "orders.*" }, to: { broker: m, topic: a } }',
        '  - { name: key, from: { broker: rb, topic: payments.created }, to: { broker: m, topic: a } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), 'ok');
    assert.deepEqual(r.stderr.trim().split('\n'), [
      "gateway.yaml:6:46: warning: route 'typo': 'billng' is not a queue of this broker's queues (did you mean 'billing'?): the route reads it as a routing key, through a queue of its own bound to exchange 'ev', and gets nothing of queue 'billing' [EG_CONFIG_SUSPICIOUS_TOPIC]",
    ]);
    const json = await runCli(['validate', '-c', 'gateway.yaml', '--format', 'json'], { cwd: dir });
    assert.equal(json.code, 0, json.stdout + json.stderr);
    assert.match(json.stderr, /gateway\.yaml:6:46: warning: route 'typo'/);
  });

  /**
   * A fanout exchange routes every message to every bound queue, and a headers exchange by binding
   * arguments the config cannot give (a binding without them matches everything): a routing-key
   * pattern or binding key there filtered nothing, and validate said `ok` (seen on RabbitMQ 3.10: a
   * queue bound to a fanout exchange with `anything` got a publish with key `whatever`). Now a
   * warning at each, none for `#`, `''`, or a key on a topic exchange. RabbitMQ's own exchanges
   * (`amq.headers`) have their type whatever the config says: the feedback-loop check took
   * `amq.headers` as a topic exchange, and missed the loop of route `back`; and the warning took
   * `amq.rabbitmq.trace` (the firehose's topic exchange) as the `fanout` the config said.
   */
  it('warns of a routing key a fanout or headers exchange does not route by', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  fx: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: fx, type: fanout }, queues: { q1: { bindings: [orders.eu, ""] } } }',
        '  hd: { kind: amqp, url: "amqp://127.0.0.1", exchange: amq.headers, queues: { q2: { bindings: [{ exchange: amq.topic, routingKey: a.b }] } } }',
        // The firehose's exchange is a topic one whatever `type` says: its pattern filters.
        '  tr: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: amq.rabbitmq.trace, type: fanout } }',
        '  m: { kind: memory }',
        'routes:',
        '  - { name: eu, from: { broker: fx, topic: orders.eu }, to: { broker: m, topic: a } }',
        '  - { name: every, from: { broker: fx, topic: "#" }, to: { broker: m, topic: a } }',
        '  - { name: h, from: { broker: hd, topic: "orders.*" }, to: { broker: m, topic: a } }',
        // amq.headers is a headers exchange whatever `type` says: this route reads what it writes.
        '  - { name: back, from: { broker: hd, topic: "orders.#" }, to: { broker: hd, topic: audit } }',
        '  - { name: firehose, from: { broker: tr, topic: "publish.#" }, to: { broker: m, topic: a } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), 'ok');
    const fanout = "exchange 'fx' is a fanout exchange, which routes every message to every queue bound to it whatever the routing key";
    const headers =
      "exchange 'amq.headers' is a headers exchange, which routes by a binding's arguments (x-match and header values), never by the routing key, and a binding without arguments matches every message";
    const instead = "read a queue of queues bound with 'arguments', filter on $topic, or use a topic or direct exchange";
    assert.deepEqual(r.stderr.trim().split('\n'), [
      `gateway.yaml:3:111: warning: queue 'q1' gets every message published to exchange 'fx', not only those with routing key 'orders.eu': ${fanout} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `gateway.yaml:8:44: warning: route 'eu': gets every message published to exchange 'fx', not only those with routing key 'orders.eu': ${fanout} (filter on $topic, or use a topic or direct exchange) [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `gateway.yaml:10:43: warning: route 'h': gets every message published to exchange 'amq.headers', not only those with routing key 'orders.*': ${headers} (${instead}) [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `gateway.yaml:11:46: warning: route 'back': gets every message published to exchange 'amq.headers', not only those with routing key 'orders.#': ${headers} (${instead}) [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      "gateway.yaml:11:64: warning: route 'back' writes topic 'audit' of broker 'hd', which the topic it reads ('orders.#') matches, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic) [EG_CONFIG_FEEDBACK_LOOP]",
    ]);
  });

  // Seen on RabbitMQ 3.10: a message published to the stream while the gateway was stopped never
  // reached the route after its restart, which went on with the next (spec-checklist 2981).
  it('warns of a route reading a stream queue, which RabbitMQ keeps no position of', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  r: { kind: amqp, url: "amqp://127.0.0.1", queues: { s: { bindings: [a.*], arguments: { x-queue-type: stream } }, q: { bindings: [a.*], arguments: { x-queue-type: quorum } } } }',
        '  m: { kind: memory }',
        'routes:',
        '  - { name: s, from: { broker: r, topic: s }, to: { broker: m, topic: a } }',
        '  - { name: q, from: { broker: r, topic: q }, to: { broker: m, topic: a } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.stderr.trim().split('\n'), [
      "gateway.yaml:6:42: warning: route 's': queue 's' is a stream (x-queue-type: stream), for which RabbitMQ keeps no position of an AMQP 0-9-1 consumer: the route reads from the stream's end each time it subscribes (a start, a reconnect), and what was published while it was not subscribed never reaches it; read a quorum or classic queue bound for the same keys [EG_CONFIG_SUSPICIOUS_TOPIC]",
    ]);
  });

  it('takes binding arguments on a headers exchange only, an x-match RabbitMQ knows, and a binding of a routing key or arguments (2192)', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  hx: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: hx, type: headers }, queues: { eu: { bindings: [{ arguments: { region: eu } }] } } }',
        '  tx:',
        '    kind: amqp',
        '    url: "amqp://127.0.0.1"',
        '    exchange: { name: tx, type: topic }',
        '    queues:',
        '      q: { bindings: [{ routingKey: "a.*", arguments: { region: eu } }, { exchange: other }] }',
        'routes:',
        '  - { name: r, from: { broker: hx, topic: eu }, to: { broker: tx, topic: a.b } }',
        '',
      ].join('\n'),
      // Valid: a binding to RabbitMQ's own headers exchange, whose routing key is read by nothing.
      'warn.yaml': 'version: 1\nbrokers:\n  hx: { kind: amqp, url: "amqp://127.0.0.1", queues: { q: { bindings: [{ exchange: amq.match, routingKey: a.b, arguments: { x-match: any, n: 1 } }] } } }\n',
      'bad-match.yaml': 'version: 1\nbrokers:\n  hx: { kind: amqp, url: "amqp://127.0.0.1", exchange: amq.headers, queues: { q: { bindings: [{ arguments: { x-match: some } }] } } }\n',
      // Filters nothing, or nothing passes, or one key where a pattern was meant (2450, 2610).
      'suspicious.yaml': [
        'version: 1',
        'brokers:',
        '  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883", qosByTopic: { "plant.*.temp": 2, "a/+/b": 0 } }',
        '  rd: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: ev, type: direct }, queues: { q1: { bindings: ["orders.*", plain] } } }',
        '  rt: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: ev2, type: topic }, queues: { q2: { bindings: ["orders/+", "orders.*"] } } }',
        '  rh:',
        '    kind: amqp',
        '    url: "amqp://127.0.0.1"',
        '    exchange: { name: evh, type: headers }',
        '    queues:',
        '      q3: { bindings: [{ arguments: { x-match: all } }] }',
        '      q4: { bindings: [{ arguments: { x-match: any, x-region: eu } }] }',
        '      q5: { bindings: [{ arguments: { region: eu } }, { arguments: { x-match: any-with-x, x-region: eu } }] }',
        '  nt: { kind: nats, servers: "nats://127.0.0.1:4222", streams: { PLANT: { subjects: ["plant/+/temp", "orders.>"] } } }',
        '  mem: { kind: memory }',
        'routes:',
        '  - { name: d, from: { broker: rd, topic: "orders.#" }, to: { broker: mem, topic: o } }',
        '  - { name: d2, from: { broker: rd, topic: orders }, to: { broker: mem, topic: o } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:9:55: exchange 'tx' is a topic exchange, which routes by the routing key and ignores binding arguments (RabbitMQ reads them on a headers exchange only): bind to a headers exchange, or filter with the routingKey",
      "gateway.yaml:9:73: a binding needs a 'routingKey', or 'arguments' on a headers exchange",
    ]);
    const warned = await runCliInProcess(['validate', '-c', 'warn.yaml'], { cwd: dir });
    assert.equal(warned.code, 0, warned.stdout + warned.stderr);
    assert.equal(
      warned.stderr.trim(),
      "warn.yaml:3:107: warning: queue 'q' is bound to exchange 'amq.match' by its arguments alone: routing key 'a.b' chooses nothing: exchange 'amq.match' is a headers exchange, which routes by a binding's arguments (x-match and header values), never by the routing key, and a binding without arguments matches every message [EG_CONFIG_SUSPICIOUS_TOPIC]",
    );
    const suspicious = await runCliInProcess(['validate', '-c', 'suspicious.yaml'], { cwd: dir });
    assert.equal(suspicious.code, 0, suspicious.stdout + suspicious.stderr);
    const foreign = (filter: string, kind: string, name: string, one: string, separator: string, meant: string) =>
      `'${filter}' is written in another broker's wildcard syntax: ${kind} reads it as the one ${name} of that name, and nothing else; its wildcards are '${one}' (one level) and '#' (every level below), between '${separator}' (did you mean '${meant}'?)`;
    const direct = (key: string) =>
      `'${key}' is written as a pattern, but exchange 'ev' is a direct exchange, which compares whole routing keys: it matches only messages published with the routing key '${key}', its '*' and '#' as they are (use a topic exchange for patterns)`;
    assert.deepEqual(suspicious.stderr.trim().split('\n'), [
      `suspicious.yaml:3:81: warning: qosByTopic: ${foreign('plant.*.temp', 'MQTT', 'topic', '+', '/', 'plant/+/temp')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `suspicious.yaml:4:111: warning: queue 'q1': ${direct('orders.*')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `suspicious.yaml:5:111: warning: queue 'q2': ${foreign('orders/+', 'AMQP', 'routing key', '*', '.', 'orders.*')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      "suspicious.yaml:11:37: warning: queue 'q3' is bound to headers exchange 'evh' by arguments naming no header to match ({x-match: all}): it gets every message published there; name the headers and values it is for (region: eu) [EG_CONFIG_SUSPICIOUS_TOPIC]",
      "suspicious.yaml:12:37: warning: queue 'q4' is bound to headers exchange 'evh' by arguments naming no header to match ({x-match: any, x-region: eu}): it gets no message published there; name the headers and values it is for (region: eu) [EG_CONFIG_SUSPICIOUS_TOPIC]",
      `suspicious.yaml:14:86: warning: stream 'PLANT': ${foreign('plant/+/temp', 'NATS', 'subject', '*', '.', 'plant.*.temp').replace("'#' (every", "'>' (every")} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `suspicious.yaml:17:43: warning: route 'd': ${direct('orders.#')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
    ]);
    const bad = await runCliInProcess(['validate', '-c', 'bad-match.yaml'], { cwd: dir });
    assert.equal(bad.code, 1);
    assert.equal(bad.stdout.trim(), 'bad-match.yaml:3:119: brokers.hx.queues.q.bindings[0].arguments.x-match must be one of "all", "any", "all-with-x", "any-with-x", got string "some"');
  });

  it("warns of a publish's routing key written as a pattern: RabbitMQ routes it as that one key, where MQTT and NATS refuse a wildcard in a topic published to", async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'listeners:',
        '  api: { kind: http, port: 0 }',
        'brokers:',
        '  rt: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: ev, type: topic } }',
        '  rf: { kind: amqp, url: "amqp://127.0.0.1", exchange: { name: fan, type: fanout } }',
        'routes:',
        '  - { name: one, from: { listener: api, path: /one }, to: { broker: rt, topic: "orders.*" } }',
        '  - { name: many, from: { listener: api, path: /many }, to: [{ broker: rt, topic: orders.created }, { broker: rt, topic: "#" }, { broker: rf, topic: "a.*" }] }',
        // Not patterns: a `*` or `#` inside a word, and a key computed per message.
        '  - { name: words, from: { listener: api, path: /words }, to: [{ broker: rt, topic: "orders.*x" }, { broker: rt, topic: { expression: kind } }] }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const pattern = (key: string) =>
      `routing key '${key}' is written as a pattern, but a publish's routing key is no pattern: RabbitMQ routes it as the one key of that name, its '*' and '#' as they are, to the queues bound with a pattern matching that text (such as '#'), not to those bound for the keys the pattern would match; publish to a key of its own (orders.created), computed per message if need be (topic: {expression: ...})`;
    assert.deepEqual(r.stderr.trim().split('\n'), [
      `gateway.yaml:8:80: warning: route 'one': ${pattern('orders.*')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
      `gateway.yaml:9:122: warning: route 'many': ${pattern('#')} [EG_CONFIG_SUSPICIOUS_TOPIC]`,
    ]);
  });
});

/**
 * Queue arguments RabbitMQ checks at every declare: one it refuses (406 PRECONDITION_FAILED -
 * invalid arg) left the queue undeclared and its routes waiting, `queue 'Q' on broker 'B' is not as
 * declared` in /readyz, though no queue was on the server (seen on RabbitMQ 3.10 with each value
 * below, and with q4's dead-letter routing key on a queue with no dead-letter exchange,
 * `routing_key_but_no_dlx_defined`). Now config errors at the argument. And an amqp broker with an
 * error of its own, read by a route, crashed validate (`Cannot read properties of undefined
 * (reading 'type')`): the feedback-loop check read its options as written as compiled settings.
 */
describe('amqp queue arguments RabbitMQ would refuse', () => {
  it('are config errors at the argument, and a broker with an error of its own does not crash validate', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  rb:',
        '    kind: amqp',
        '    url: "amqp://127.0.0.1"',
        '    queues:',
        '      q1: { arguments: { x-message-ttl: 1.5, x-max-length: -1, x-max-length-bytes: "10", x-expires: 0 } }',
        '      q2: { arguments: { x-overflow: reject, x-queue-type: quorom, x-max-priority: 300, x-single-active-consumer: "true" } }',
        // x-delivery-limit -1 turns RabbitMQ 4's default limit off; 3.10 declares it too: not an error.
        '      q3: { durable: false, arguments: { x-queue-type: quorum, x-overflow: reject-publish-dlx, x-delivery-limit: -1, x-custom: [1] } }',
        '      q4: { arguments: { x-message-ttl: 0, x-queue-mode: lazy, x-dead-letter-routing-key: dead } }',
        '      q5: { deadLetterExchange: dlx, arguments: { x-dead-letter-routing-key: dead } }',
        '  m: { kind: memory }',
        'routes:',
        '  - { name: r, from: { broker: rb, topic: "orders.*" }, to: { broker: m, topic: a } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const refused = (name: string) => `RabbitMQ refuses to declare the queue (406 PRECONDITION_FAILED - invalid arg '${name}')`;
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:7:41: queue 'q1': x-message-ttl must be a whole number, 0 or more, not 1.5: ${refused('x-message-ttl')}`,
      `gateway.yaml:7:60: queue 'q1': x-max-length must be a whole number, 0 or more, not -1: ${refused('x-max-length')}`,
      `gateway.yaml:7:84: queue 'q1': x-max-length-bytes must be a whole number, 0 or more, not the string "10": ${refused('x-max-length-bytes')}; write it without quotes`,
      `gateway.yaml:7:101: queue 'q1': x-expires must be a whole number, 1 or more, not 0: ${refused('x-expires')}`,
      `gateway.yaml:8:38: queue 'q2': x-overflow must be one of drop-head, reject-publish, reject-publish-dlx, not "reject": ${refused('x-overflow')}`,
      `gateway.yaml:8:60: queue 'q2': x-queue-type must be one of classic, quorum, stream, not "quorom" (did you mean 'quorum'?): ${refused('x-queue-type')}`,
      `gateway.yaml:8:84: queue 'q2': x-max-priority must be a whole number from 0 to 255, not 300: ${refused('x-max-priority')}`,
      `gateway.yaml:8:115: queue 'q2': x-single-active-consumer must be a boolean, not "true": ${refused('x-single-active-consumer')}; write it without quotes`,
      "gateway.yaml:9:22: queue 'q3': a quorum queue is always durable: RabbitMQ refuses to declare one with durable: false (406 PRECONDITION_FAILED - invalid property 'non-durable')",
      "gateway.yaml:10:91: queue 'q4': x-dead-letter-routing-key needs a dead-letter exchange to route by (the queue's deadLetterExchange, or x-dead-letter-exchange): RabbitMQ refuses to declare the queue without one (406 PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key')",
    ]);
  });
});

/**
 * A broker whose own options fail the schema (`qos: 7`) is left out of the compile; the topics the
 * routes gave it went unchecked in that pass (a `to` with a wildcard was reported only once `qos`
 * was fixed). Now checked in the same pass, on every kind, from a route's `from`, `to` and
 * `deadletter`.
 */
describe('topics of a broker whose own options are invalid', () => {
  it('are checked in the same pass', async () => {
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'brokers:',
        '  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883", qos: 7 }',
        '  nt: { kind: nats, servers: "nats://127.0.0.1:4222", prefetch: 0 }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - { name: a, from: { listener: api, path: /a }, to: { broker: mq, topic: "x/#" } }',
        '  - { name: b, from: { broker: nt, topic: "a.>.b" }, to: { broker: nt, topic: ok }, deadletter: { broker: mq, topic: "dead/+" } }',
        '',
      ].join('\n'),
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      'gateway.yaml:3:56: brokers.mq.qos must be one of 0, 1, 2, got number 7',
      'gateway.yaml:4:65: brokers.nt.prefetch must be >= 1',
      "gateway.yaml:7:76: 'x/#' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
      "gateway.yaml:8:43: 'a.>.b' cannot be a topic of nats broker 'nt': a NATS subject is dot-separated tokens with no whitespace, '*' a whole token, '>' only the last",
      "gateway.yaml:8:118: 'dead/+' cannot be a topic of mqtt broker 'mq': an MQTT topic to publish to cannot hold the wildcards + or #",
    ]);
  });
});

/**
 * MQTT 5 carries `sessionExpirySeconds` as a four-byte integer: a larger value (9999999999)
 * validated `ok`, and each consume route's CONNECT failed to encode without a word: the route never
 * connected, nothing was logged, `/readyz` said `broker mq: connecting` for good. Now a config error
 * at the key; the largest value (never expiring) connects against mosquitto.
 */
describe('mqtt sessionExpirySeconds past a four-byte integer', () => {
  let mqtt: MessageServer;
  before(async () => {
    mqtt = await startMosquitto();
  });
  after(async () => {
    await mqtt?.stop();
  });
  const gw = useGateway();
  const config = (seconds: number) => `version: 1
admin: { port: 0 }
brokers:
  mq: { kind: mqtt, url: ${mqtt.url}, protocolVersion: 5, clientId: eg-expiry-${process.pid}, sessionExpirySeconds: ${seconds} }
  m: { kind: memory }
routes:
  - { name: held, from: { broker: mq, topic: expiry/a }, to: { broker: m, topic: x } }
  - { name: sink, from: { broker: m, topic: x }, to: { broker: m, topic: y } }
`;

  it('is a config error at the key; the largest value connects', async () => {
    const dir = tempFiles({ 'gateway.yaml': config(4294967296) });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^gateway\.yaml:4:\d+: brokers\.mq\.sessionExpirySeconds must be <= 4294967295$/m);
    await gw.start(config(4294967295));
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000, 100);
    // Its log line, not /readyz's answer: the line can come through the pipe after the answer.
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'held', 30000);
  });
});

/**
 * AMQP's basic.qos prefetch count is 16 bits: `prefetch: 70000` validated `ok`, and amqplib threw
 * (`The value of "value" is out of range. It must be >= 0 and <= 65535`) at every start of every
 * consume route's channel, retried for ever. Now a config error at the key.
 */
describe('an amqp prefetch past 65535', () => {
  it('is a config error at the key', async () => {
    const dir = tempFiles({ 'gateway.yaml': 'version: 1\nbrokers:\n  rb: { kind: amqp, url: "amqp://127.0.0.1", prefetch: 70000 }\n' });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.equal(r.stdout.trim(), 'gateway.yaml:3:56: brokers.rb.prefetch must be <= 65535');
  });
});

describe("a target's key on a broker whose messages have no key", () => {
  it('is refused at its key for mqtt, amqp and nats (it was computed and dropped); kafka and memory keep theirs', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }
  rb: { kind: amqp, url: "amqp://127.0.0.1:5672" }
  nt: { kind: nats, servers: "127.0.0.1:4222", streams: { S: { subjects: ["js.>"] } } }
  kf: { kind: kafka, brokers: "127.0.0.1:9092" }
  mem: { kind: memory }
listeners:
  api: { kind: http, port: 8080 }
routes:
  - { name: a, from: { listener: api, path: /a }, to: [{ broker: mq, topic: a, key: id }, { broker: kf, topic: a, key: id }] }
  - { name: b, from: { listener: api, path: /b }, to: [{ broker: rb, topic: b, key: id }, { broker: mem, topic: b, key: id }] }
  - { name: c, from: { listener: api, path: /c }, to: [{ broker: nt, topic: core.c, key: id }, { broker: nt, topic: js.c, key: id }] }
  - { name: d, from: { listener: api, path: /d }, to: [{ broker: mq, topic: d }, { broker: rb, topic: d }, { broker: nt, topic: d }] }
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const header = 'carry it in a header instead: `headers: {set: {key: ...}}`';
    assert.deepEqual(r.stdout.trim().split('\n'), [
      `gateway.yaml:11:80: broker 'mq' is an mqtt broker, whose messages have no key: a \`key\` would be dropped (${header}, an MQTT 5 user property)`,
      "gateway.yaml:12:80: broker 'rb' is an amqp broker, whose messages have no key: a `key` would be dropped (the target's `topic` is the routing key; carry a key in a header instead: `headers: {set: {key: ...}}`)",
      `gateway.yaml:13:85: broker 'nt' is a nats broker, whose messages have no key: a \`key\` would be dropped (${header})`,
      `gateway.yaml:13:123: broker 'nt' is a nats broker, whose messages have no key: a \`key\` would be dropped (${header})`,
    ]);
  });
});
