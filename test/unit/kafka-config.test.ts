import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultRegistry } from '../../src/kinds/index.js';
import type { KafkaSettings } from '../../src/kinds/brokers/kafka.js';
import { loadPlan } from '../../src/plan/compile.js';
import { makeCertificates } from '../helpers/certificates.js';
import { tempFiles } from '../helpers/gateway.js';

async function load(yaml: string, env: Record<string, string> = {}, files: Record<string, string> = {}) {
  const dir = tempFiles({ 'gateway.yaml': yaml, ...files });
  const result = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env });
  return { ...result, dir, problems: result.diagnostics.map((d) => `${d.line}:${d.column} ${d.code} ${d.message}`) };
}

const kafkaBroker = (body: string) => `version: 1
brokers:
  k:
    kind: kafka
${body}
`;

describe('kafka broker config', () => {
  it('splits a comma-separated broker list from the environment', async () => {
    const { plan, problems } = await load(kafkaBroker('    brokers: ${KAFKA_BROKERS}'), { KAFKA_BROKERS: 'a.example:9092, b.example:9093,[::1]:9094' });
    assert.deepEqual(problems, []);
    assert.deepEqual((plan!.brokers.get('k')!.options as unknown as KafkaSettings).brokers, ['a.example:9092', 'b.example:9093', '[::1]:9094']);
  });

  it('accepts a list whose entries are themselves comma-separated, and fills in the defaults', async () => {
    const { plan, problems } = await load(kafkaBroker('    brokers: ["${KAFKA_BROKERS}", c:9092]'), { KAFKA_BROKERS: 'a:9092,b:9092' });
    assert.deepEqual(problems, []);
    const s = plan!.brokers.get('k')!.options as unknown as KafkaSettings;
    assert.deepEqual(s.brokers, ['a:9092', 'b:9092', 'c:9092']);
    assert.equal(s.clientId, 'eventgate');
    assert.equal(s.producer.ackTimeoutMs, 5000);
    assert.equal(s.producer.acks, 'all');
    assert.equal(s.consumer.startFrom, undefined, 'each route picks its own start position unless the broker says');
  });

  it('points at the entry that is not host:port, saying what is wrong with it', async () => {
    const { problems } = await load(kafkaBroker('    brokers:\n      - good:9092\n      - no-port-here\n      - good:99999\n      - kafka://good:9092\n      - fd00::1:9092'));
    assert.deepEqual(problems, [
      "7:9 EG_CONFIG_SCHEMA 'no-port-here' is not a broker address: expected host:port",
      "8:9 EG_CONFIG_SCHEMA 'good:99999' is not a broker address: port 99999 is not between 1 and 65535",
      "9:9 EG_CONFIG_SCHEMA 'kafka://good:9092' is not a broker address: expected host:port without a scheme ('good:9092')",
      "10:9 EG_CONFIG_SCHEMA 'fd00::1:9092' is not a broker address: an IPv6 address is written in brackets before its port ('[fd00::1]:9092')",
    ]);
  });

  // 1007 (c): `[fe80::1%eth0]:9092` was "not a broker address", though node connects to it.
  it('takes an IPv6 address with a zone id where the address is link-local (or ::1), and says why not elsewhere', async () => {
    const good = await load(kafkaBroker('    brokers: ["[fe80::1%eth0]:9092", "[FE80::abcd:1%2]:9093", "[::1%lo]:9094", "[fe80::1%br-1a2b.100]:9095"]'));
    assert.deepEqual(good.problems, []);
    assert.deepEqual((good.plan!.brokers.get('k')!.options as unknown as KafkaSettings).brokers, ['[fe80::1%eth0]:9092', '[FE80::abcd:1%2]:9093', '[::1%lo]:9094', '[fe80::1%br-1a2b.100]:9095']);
    const bad = await load(
      kafkaBroker(
        '    brokers:\n      - "[fd00::1%eth0]:9092"\n      - "[fe80::1%]:9092"\n      - "[fe80::1%a/b]:9092"\n      - "[fe80::1%interface-name-too-long]:9092"\n      - "[fec0::1%eth0]:9092"\n      - "host%eth0:9092"',
      ),
    );
    assert.deepEqual(bad.problems, [
      "6:9 EG_CONFIG_SCHEMA '[fd00::1%eth0]:9092' is not a broker address: a zone id (%eth0) is only for a link-local address (fe80::/10) or ::1, which fd00::1 is not",
      "7:9 EG_CONFIG_SCHEMA '[fe80::1%]:9092' is not a broker address: a zone id names an interface (eth0) or its index (2): 1 to 15 letters, digits, '-', '_', '.' or '~', not ''",
      "8:9 EG_CONFIG_SCHEMA '[fe80::1%a/b]:9092' is not a broker address: a zone id names an interface (eth0) or its index (2): 1 to 15 letters, digits, '-', '_', '.' or '~', not 'a/b'",
      "9:9 EG_CONFIG_SCHEMA '[fe80::1%interface-name-too-long]:9092' is not a broker address: a zone id names an interface (eth0) or its index (2): 1 to 15 letters, digits, '-', '_', '.' or '~', not 'interface-name-too-long'",
      "10:9 EG_CONFIG_SCHEMA '[fec0::1%eth0]:9092' is not a broker address: a zone id (%eth0) is only for a link-local address (fe80::/10) or ::1, which fec0::1 is not",
      "11:9 EG_CONFIG_SCHEMA 'host%eth0:9092' is not a broker address: expected host:port",
    ]);
  });

  it("checks a kafka listener's host and advertisedHost with a zone id as the brokers' addresses", async () => {
    const listener = (host: string, advertised: string) =>
      kafkaBroker(`    brokers: ["[::1%lo]:9092"]\nlisteners:\n  kin: { kind: kafka, upstream: k, port: 0, host: "${host}", advertisedHost: "${advertised}" }`);
    assert.deepEqual((await load(listener('::1%lo', 'fe80::1%eth0'))).problems, []);
    assert.deepEqual((await load(listener('fd00::2%eth0', 'fe80::1%a b'))).problems, [
      "7:51 EG_CONFIG_SCHEMA 'fd00::2%eth0' is not an address the listener can bind: a zone id (%eth0) is only for a link-local address (fe80::/10) or ::1, which fd00::2 is not",
      "7:83 EG_CONFIG_SCHEMA 'fe80::1%a b' is not an address the listener can name to clients: a zone id names an interface (eth0) or its index (2): 1 to 15 letters, digits, '-', '_', '.' or '~', not 'a b'",
    ]);
  });

  it('refuses a broker list from the environment that names no broker', async () => {
    const { problems } = await load(kafkaBroker('    brokers: ${KAFKA_BROKERS}'), { KAFKA_BROKERS: ' , ' });
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^5:14 EG_CONFIG_SCHEMA no broker address here/);
  });

  it("says what Kafka's own acks numbers are written as here", async () => {
    const { problems } = await load(kafkaBroker('    brokers: [a:9092]\n    producer:\n      acks: 1'));
    assert.deepEqual(problems, ['7:13 EG_CONFIG_SCHEMA brokers.k.producer.acks must be one of "all", "leader", "none", got number 1 (1 is written \'leader\' here)']);
    const quoted = await load(kafkaBroker('    brokers: [a:9092]\n    producer: { acks: "-1" }'));
    assert.match(quoted.problems.join('\n'), /got string "-1" \(-1 is written 'all' here\)$/);
  });

  it('refuses an idempotent producer without acks: all, at the idempotent option', async () => {
    const { problems } = await load(kafkaBroker('    brokers: [a:9092]\n    producer:\n      acks: leader\n      idempotent: true'));
    assert.deepEqual(problems, ["8:19 EG_CONFIG_SCHEMA an idempotent producer needs acks: all (acks is 'leader')"]);
  });

  it('refuses a heartbeat interval that is not below the session timeout', async () => {
    const { problems } = await load(kafkaBroker('    brokers: [a:9092]\n    consumer: { sessionTimeoutMs: 3000, heartbeatIntervalMs: 3000 }'));
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^6:62 EG_CONFIG_SCHEMA heartbeatIntervalMs \(3000\) must be lower than sessionTimeoutMs \(3000\)/);
  });

  // Real PEM files: the compile checks that a CA file holds a certificate and that a cert and key go together.
  const certs = makeCertificates();

  it('reads TLS files relative to the config, and names the one that is missing', async () => {
    const ok = await load(
      kafkaBroker('    brokers: [a:9093]\n    ssl: { ca: certs/ca.pem, cert: certs/me.pem, key: certs/me.key }'),
      {},
      {
        'certs/ca.pem': certs.ca.cert,
        'certs/me.pem': certs.client.cert,
        'certs/me.key': certs.client.key,
      },
    );
    assert.deepEqual(ok.problems, []);
    const s = ok.plan!.brokers.get('k')!.options as unknown as KafkaSettings;
    assert.deepEqual(s.ssl, { ca: certs.ca.cert, cert: certs.client.cert, key: certs.client.key });
    assert.ok(ok.files.includes(join(ok.dir, 'certs/ca.pem')), 'the CA file is watched');

    const missing = await load(kafkaBroker('    brokers: [a:9093]\n    ssl: { ca: certs/nope.pem }'));
    assert.equal(missing.problems.length, 1);
    assert.match(missing.problems[0]!, /^6:16 EG_CONFIG_FILE cannot read 'certs\/nope.pem'/);
  });

  it('changes the broker key when a referenced certificate changes, so a reload replaces the broker', async () => {
    const yaml = kafkaBroker('    brokers: [a:9093]\n    ssl: { ca: ca.pem }');
    const a = (await load(yaml, {}, { 'ca.pem': certs.a.cert })).plan!.brokers.get('k')!.key;
    const b = (await load(yaml, {}, { 'ca.pem': certs.b.cert })).plan!.brokers.get('k')!.key;
    assert.notEqual(a, b);
  });

  it('refuses an unknown SASL mechanism through the schema', async () => {
    const { problems } = await load(kafkaBroker('    brokers: [a:9092]\n    sasl: { mechanism: kerberos, username: u, password: p }'));
    assert.ok(
      problems.some((p) => p.startsWith('6:')),
      problems.join('\n'),
    );
  });
});

describe('computed topics on broker targets', () => {
  const routes = (topic: string) => `version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: r
    from: { listener: api, path: /in }
    to: { broker: local, topic: ${topic} }
`;

  it('compiles a topic expression once, keeping a literal topic as it is', async () => {
    const literal = (await load(routes('plain.name'))).plan!.routes.get('r')!.to[0]!;
    assert.equal(literal.type === 'broker' && literal.topicExpr, undefined);
    const computed = (await load(routes(`{ expression: '"t-" & region' }`))).plan!.routes.get('r')!.to[0]!;
    assert.ok(computed.type === 'broker' && computed.topicExpr !== undefined);
  });

  it('reports a topic expression that does not compile at its position', async () => {
    const { problems } = await load(routes(`{ expression: '"t-" & (' }`));
    assert.equal(problems.length, 1);
    // Column 55 is the unclosed '(' (54, pinned before, was the quoted-scalar off-by-one fixed on the foundation branch).
    assert.match(problems[0]!, /^9:55 EG_CONFIG_EXPRESSION JSONata expression does not compile/);
  });
});
