import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { makeCertificates } from '../helpers/certificates.js';
import { eventually, startGateway, useGateway, type RunningGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduceLines, runProcess, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { scrape } from '../helpers/prometheus.js';

const { Kafka, logLevel } = kafkajs;

const SCHEMA = '{ type: object, required: [id], properties: { id: { type: integer } } }';

/** Kafka clients reach the proxy over TLS (security.protocol=ssl) when the kafka listener has `tls`. */
describe('kafka listener with tls: clients connect with security.protocol=ssl', async () => {
  const certs = makeCertificates();
  let kafka: KafkaCluster;
  let topic = '';
  const gw = useGateway(
    async () => {
      kafka = await startKafka({ brokers: 2 });
      topic = kafka.topic('tls');
      await kafka.createTopic(topic, 2);
      return `
version: 1
admin: { port: 0 }
brokers:
  cluster: { kind: kafka, brokers: "${kafka.bootstrap}" }
listeners:
  kafka-tls:
    kind: kafka
    upstream: cluster
    host: 127.0.0.1
    port: 0
    tls: { cert: certs/server.pem, key: certs/server-key.pem }
  kafka-mtls:
    kind: kafka
    upstream: cluster
    host: 127.0.0.1
    port: 0
    tls: { cert: certs/server.pem, key: certs/server-key.pem, ca: certs/ca.pem }
  kafka-capped:
    kind: kafka
    upstream: cluster
    host: 127.0.0.1
    port: 0
    maxConnections: 1
    tls: { cert: certs/server.pem, key: certs/server-key.pem }
routes:
  - name: tls-in
    from: { listener: kafka-tls, topic: ${topic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
  - name: capped-in
    from: { listener: kafka-capped, topic: ${topic} }
`;
    },
    { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key, 'certs/ca.pem': certs.ca.cert } },
  );
  after(() => kafka?.stop());
  const proxy = () => `127.0.0.1:${gw.port('kafka-tls')}`;
  // librdkafka checks the certificate and that it names the host it connects to (127.0.0.1 here).
  const ssl = () => ['security.protocol=ssl', `ssl.ca.location=${certs.a.certFile}`];

  it('kcat produces through TLS, is told INVALID_RECORD over TLS, and consumes through TLS', async () => {
    const ok = await kcatProduceLines(proxy(), topic, ['{"id":1}', '{"id":2}'], ssl());
    assert.equal(ok.code, 0, ok.stderr);
    const refused = await kcatProduceLines(proxy(), topic, ['{"id":"three"}'], ssl());
    assert.match(refused.stderr, /Broker: Broker failed to validate record/);
    const direct = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value).sort();
    assert.deepEqual(direct, ['{"id":1}', '{"id":2}']);
    const through = await runProcess('kcat', ['-C', '-b', proxy(), ...ssl().flatMap((p) => ['-X', p]), '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%s\n'], '', 30000);
    assert.equal(through.code, 0, through.stderr);
    assert.deepEqual(through.stdout.trim().split('\n').sort(), ['{"id":1}', '{"id":2}']);
  });

  it('kafkajs produces through TLS with the CA it trusts', async () => {
    const producer = new Kafka({ brokers: [proxy()], ssl: { ca: [certs.a.cert] }, logLevel: logLevel.NOTHING, retry: { retries: 1 } }).producer();
    await producer.connect();
    try {
      const [ack] = await producer.send({ topic, messages: [{ value: '{"id":4}' }] });
      assert.equal(ack!.errorCode, 0);
    } finally {
      await producer.disconnect();
    }
    assert.ok((await kcatConsumeAll(kafka.bootstrap, topic)).some((r) => r.value === '{"id":4}'));
  });

  it('closes a client that speaks plaintext to the TLS port; TLS clients go on', async () => {
    const [host, port] = proxy().split(':');
    const plain = connect(Number(port), host!);
    plain.on('error', () => {});
    const closed = new Promise<void>((resolve) => plain.on('close', () => resolve()));
    // An ApiVersions v0 request, as a plaintext client opens with.
    plain.write(Buffer.from([0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0, 0]));
    await closed;
    const after = await kcatProduceLines(proxy(), topic, ['{"id":5}'], ssl());
    assert.equal(after.code, 0, after.stderr);
  });

  it('counts connections still in their TLS handshake against maxConnections, and cuts one off that does not finish it within 10 s', async () => {
    // Clients that connect and never start the handshake: counted only once it was done, they were held 120 s each, unbounded.
    const open = () => {
      const socket = connect(gw.port('kafka-capped'), '127.0.0.1');
      socket.on('error', () => {});
      return socket;
    };
    const first = open();
    await once(first, 'connect');
    const second = open();
    const giveUp = new AbortController();
    const closed = await Promise.race([once(second, 'close').then(() => true), delay(30_000, false, { signal: giveUp.signal })]);
    giveUp.abort();
    second.destroy();
    assert.ok(closed, 'a second connection to a TLS kafka listener with maxConnections: 1 is still open after 30 s');
    // node closed it (the count of connections in their handshake): logged and counted as the plaintext ports' are.
    const warning = await gw.waitForLog((l) => l.msg === 'connection limit reached; closing new connections' && l.listener === 'kafka-capped');
    assert.equal(warning.dropped, 1);
    assert.equal((await scrape(gw.adminUrl)).value('eventgate_listener_connections_dropped_total', { listener: 'kafka-capped' }), 1);
    // And the one let in is cut off by the handshake's bound (10 s, as an http listener's head), not held node's 120 s.
    const bound = new AbortController();
    const firstClosed = await Promise.race([once(first, 'close').then(() => true), delay(30_000, false, { signal: bound.signal })]);
    bound.abort();
    first.destroy();
    assert.ok(firstClosed, 'a connection to a TLS kafka listener that never starts its handshake is still open after 30 s');
  });

  it('is refused by a client that does not trust its certificate', async () => {
    // Certificate `b` is not the one the listener serves: librdkafka fails the handshake and reports it.
    const r = await kcatProduceLines(proxy(), topic, ['{"id":6}'], ['security.protocol=ssl', `ssl.ca.location=${certs.b.certFile}`, 'message.timeout.ms=5000']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /certificate verify failed|SSL handshake failed/i);
  });

  it('with `ca`, takes only clients that present a certificate the CA signed (mutual TLS)', async () => {
    const mtls = `127.0.0.1:${gw.port('kafka-mtls')}`;
    const withCert = await kcatProduceLines(mtls, topic, ['{"id":7}'], [...ssl(), `ssl.certificate.location=${certs.client.certFile}`, `ssl.key.location=${certs.client.keyFile}`]);
    assert.equal(withCert.code, 0, withCert.stderr);
    const without = await kcatProduceLines(mtls, topic, ['{"id":8}'], [...ssl(), 'message.timeout.ms=5000']);
    assert.notEqual(without.code, 0);
    const stored = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value);
    assert.ok(stored.includes('{"id":7}') && !stored.includes('{"id":8}'));
    // A reload that puts another CA in place of the client's (a revoked client CA) closes the
    // connections it opened with its certificate: it cannot go on producing on them.
    const client = { ca: [certs.a.cert], cert: certs.client.cert, key: certs.client.key };
    const producer = new Kafka({ brokers: [mtls], ssl: client, logLevel: logLevel.NOTHING, retry: { retries: 1 } }).producer();
    await producer.connect();
    try {
      await producer.send({ topic, messages: [{ key: 'k', value: '{"id":9}' }] });
      const from = gw.logs.length;
      gw.write('certs/ca.pem', certs.b.cert);
      await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, from);
      const cut = await gw.waitForLog((l) => l.msg === 'client certificate no longer trusted after reload; closing its connection', 10_000, from);
      assert.equal(cut.listener, 'kafka-mtls');
      await assert.rejects(producer.send({ topic, messages: [{ key: 'k', value: '{"id":"revoked"}' }] }));
    } finally {
      await producer.disconnect();
      const back = gw.logs.length;
      gw.write('certs/ca.pem', certs.ca.cert);
      await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, back);
    }
    const after = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value);
    assert.ok(after.includes('{"id":9}') && !after.includes('{"id":"revoked"}'), `cluster has ${after}`);
  });

  it('serves a renewed certificate to new connections without rebinding; open connections go on', async () => {
    const port = gw.port('kafka-tls');
    const producer = new Kafka({ brokers: [proxy()], ssl: { ca: [certs.a.cert] }, logLevel: logLevel.NOTHING, retry: { retries: 1 } }).producer();
    await producer.connect();
    try {
      // One key: both sends go to the same partition, over the same broker connection.
      await producer.send({ topic, messages: [{ key: 'k', value: '{"id":10}' }] });
      const from = gw.logs.length;
      gw.write('certs/server.pem', certs.b.cert);
      gw.write('certs/server-key.pem', certs.b.key);
      await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, from);
      assert.equal(gw.port('kafka-tls'), port);
      // A new connection gets the renewed certificate: a client trusting only it gets through.
      const renewed = await kcatProduceLines(proxy(), topic, ['{"id":11}'], ['security.protocol=ssl', `ssl.ca.location=${certs.b.certFile}`]);
      assert.equal(renewed.code, 0, renewed.stderr);
      // The producer trusts only the old certificate: it can go on only on the connections it has.
      await producer.send({ topic, messages: [{ key: 'k', value: '{"id":12}' }] });
    } finally {
      await producer.disconnect();
    }
    const stored = (await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value);
    assert.ok(
      ['{"id":10}', '{"id":11}', '{"id":12}'].every((v) => stored.includes(v)),
      `cluster has ${stored}`,
    );
  });
});

/**
 * The proxy's own connections to the cluster over TLS (the upstream broker's `ssl`). The mock
 * cluster speaks only plaintext, so a real TLS Kafka endpoint is put in front of it: a second
 * gateway whose kafka listener serves TLS (tested with kcat and kafkajs above).
 */
describe('kafka listener whose upstream cluster is reached over TLS', async () => {
  const certs = makeCertificates();
  let kafka: KafkaCluster;
  let inner: RunningGateway | undefined;
  let topic = '';
  const edge = useGateway(
    async () => {
      kafka = await startKafka({ brokers: 2 });
      topic = kafka.topic('upstream-tls');
      await kafka.createTopic(topic, 2);
      inner = await startGateway(
        `
version: 1
brokers:
  mock: { kind: kafka, brokers: "${kafka.bootstrap}" }
listeners:
  inner: { kind: kafka, upstream: mock, host: 127.0.0.1, port: 0, tls: { cert: certs/server.pem, key: certs/server-key.pem } }
`,
        { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key } },
      );
      const tlsCluster = `127.0.0.1:${inner.port('inner')}`;
      return `
version: 1
admin: { port: 0 }
brokers:
  tls-cluster: { kind: kafka, brokers: ["${tlsCluster}"], ssl: { ca: certs/ca.pem } }
  untrusted: { kind: kafka, brokers: ["${tlsCluster}"], ssl: { ca: certs/other.pem } }
  # The TLS cluster without \`ssl\`: the proxy speaks plaintext to it.
  no-ssl: { kind: kafka, brokers: ["${tlsCluster}"] }
listeners:
  edge: { kind: kafka, upstream: tls-cluster, host: 127.0.0.1, port: 0 }
  edge-untrusted: { kind: kafka, upstream: untrusted, host: 127.0.0.1, port: 0 }
  edge-no-ssl: { kind: kafka, upstream: no-ssl, host: 127.0.0.1, port: 0 }
routes:
  - name: edge-in
    from: { listener: edge, topic: ${topic} }
    through: [ { validate: { schema: ${SCHEMA}, onInvalid: reject } } ]
`;
    },
    { files: { 'certs/ca.pem': certs.a.cert, 'certs/other.pem': certs.b.cert } },
  );
  after(async () => {
    await inner?.stop();
    await kafka?.stop();
  });

  it('produces (valid and refused) and consumes through a proxy that reaches the cluster over TLS', async () => {
    const proxy = `127.0.0.1:${edge.port('edge')}`;
    const ok = await kcatProduceLines(proxy, topic, ['{"id":1}', '{"id":2}']);
    assert.equal(ok.code, 0, ok.stderr);
    const refused = await kcatProduceLines(proxy, topic, ['{"id":"three"}']);
    assert.match(refused.stderr, /Broker: Broker failed to validate record/);
    assert.deepEqual((await kcatConsumeAll(kafka.bootstrap, topic)).map((r) => r.value).sort(), ['{"id":1}', '{"id":2}']);
    const through = await runProcess('kcat', ['-C', '-b', proxy, '-t', topic, '-o', 'beginning', '-e', '-q', '-f', '%s\n'], '', 30000);
    assert.equal(through.code, 0, through.stderr);
    assert.deepEqual(through.stdout.trim().split('\n').sort(), ['{"id":1}', '{"id":2}']);
  });

  it('does not talk to an upstream whose certificate it does not trust, and says why', async () => {
    const proxy = `127.0.0.1:${edge.port('edge-untrusted')}`;
    const r = await kcatProduceLines(proxy, topic, ['{"id":9}'], ['message.timeout.ms=5000']);
    assert.notEqual(r.code, 0);
    await eventually(() => assert.ok(edge.logs.some((l) => l.msg === 'kafka client connection closed: upstream problem' && /self-signed certificate|unable to verify/.test(String(l.reason)))));
    assert.ok(!(await kcatConsumeAll(kafka.bootstrap, topic)).some((x) => x.value === '{"id":9}'));
    // Each connection it closed counts in /metrics as an upstream problem, none as a bad request.
    const s = await scrape(edge.adminUrl);
    const closed = (reason: string) => s.value('eventgate_kafka_listener_closed_connections_total', { listener: 'edge-untrusted', reason });
    assert.ok(closed('upstream')! >= 1, s.text);
    assert.equal(closed('bad_request'), 0);
  });

  it('says that an upstream which closed the connection without a word may want TLS', async () => {
    // The TLS cluster takes the proxy's plaintext ApiVersions for a bad handshake and closes the
    // connection; before, the client's connection was closed too and nothing was logged or counted.
    const proxy = `127.0.0.1:${edge.port('edge-no-ssl')}`;
    const r = await kcatProduceLines(proxy, topic, ['{"id":10}'], ['message.timeout.ms=3000']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Disconnected while requesting ApiVersion/);
    const line = await edge.waitForLog((l) => l.msg === 'kafka client connection closed: upstream problem' && l.listener === 'edge-no-ssl');
    assert.match(
      String(line.reason),
      /^the cluster closed the connection without answering anything \(the first request: API key 18 v\d\): .*a cluster that expects TLS with a plaintext connection \(does the upstream broker need `ssl`\?\)$/,
    );
    const s = await scrape(edge.adminUrl);
    assert.ok(s.value('eventgate_kafka_listener_closed_connections_total', { listener: 'edge-no-ssl', reason: 'upstream' })! >= 1, s.text);
  });
});
