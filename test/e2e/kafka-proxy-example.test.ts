import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { repoRoot, useGateway } from '../helpers/gateway.js';
import { kcatConsumeAll, kcatProduceLines, startKafka, type KafkaCluster } from '../helpers/kafka.js';

const values = async (bootstrap: string, topic: string) => (await kcatConsumeAll(bootstrap, topic)).map((r) => r.value);

describe('examples/kafka-proxy.yaml (the docs/kafka-proxy.md walkthrough)', () => {
  let kafka: KafkaCluster;

  before(async () => {
    kafka = await startKafka({ brokers: 1 });
    await kafka.createTopic('light.measured', 1);
    await kafka.createTopic('light.measured.audit', 1);
  });
  const gw = useGateway(
    () => readFileSync(join(repoRoot, 'examples/kafka-proxy.yaml'), 'utf8'),
    () => ({
      files: { 'asyncapi-3.0/streetlights.yaml': readFileSync(join(repoRoot, 'examples/asyncapi-3.0/streetlights.yaml'), 'utf8') },
      env: { KAFKA_BROKERS: kafka.bootstrap, PROXY_PORT: '0', ADMIN_PORT: '0' },
    }),
  );
  after(async () => {
    await kafka?.stop();
  });

  it('passes a lightMeasured record, refuses one that is not, and tags on the audit topic', async () => {
    const proxy = `127.0.0.1:${gw.port('kafka-in')}`;
    const good = '{"id":7,"lumens":640,"sentAt":"2026-11-23T10:00:00Z"}';
    const bad = '{"id":7,"lumens":"bright"}';
    assert.equal((await kcatProduceLines(proxy, 'light.measured', [good])).code, 0);
    assert.match((await kcatProduceLines(proxy, 'light.measured', [bad])).stderr, /Broker failed to validate record/);
    assert.deepEqual(await values(kafka.bootstrap, 'light.measured'), [good]);
    assert.equal((await kcatProduceLines(proxy, 'light.measured.audit', [bad])).code, 0);
    const [audited] = await kcatConsumeAll(kafka.bootstrap, 'light.measured.audit');
    assert.equal(audited!.value, bad);
    assert.equal(audited!.headers['checked-by'], 'eventgate');
    assert.match(audited!.headers._asyncapi_eg_validation_error!, /lumens/);
  });

  // The walkthrough's last command: `curl -s localhost:9000/admin/status | jq '.listeners[] | select(.kind == "kafka")'`.
  it("shows the listener's loopback addresses in /admin/status, and redacts the cluster's from KAFKA_BROKERS", async () => {
    const status = (await gw.status()).listeners.find((l: { name: string }) => l.name === 'kafka-in');
    // host: ${PROXY_HOST:-127.0.0.1}, advertisedHost: ${ADVERTISED_HOST:-127.0.0.1}: loopback is no secret.
    assert.equal(status.host, '127.0.0.1');
    assert.equal(status.advertisedHost, '127.0.0.1');
    assert.ok(status.ports.length > 0);
    for (const p of status.ports) assert.equal(p.upstream, '[redacted]');
    assert.ok(!JSON.stringify(status).includes(kafka.bootstrap));
  });
});
