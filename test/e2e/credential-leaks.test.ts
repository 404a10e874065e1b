import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { type RunningGateway, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

/**
 * Credentials never reach an observer (issue #13, docs/security.md): the tap, the log (even with
 * `log.payloads: true`), dead-letter copies, metrics, and the open /readyz.
 */
const TOKEN = 'admin-token-for-tests';
const KEY = 'sensor-key-0123456789';
const UPSTREAM = 'upstream-secret-9876543210';

const config = `
version: 1
admin: { port: 0, token: ${TOKEN} }
log: { level: debug, payloads: true }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: sensors
    from: { listener: api, path: /sensors }
    through:
      - validate: { schema: { type: object, required: [n] }, onInvalid: deadletter }
      - auth: { apiKey: { header: x-sensor-key, keys: { fleet: "${KEY}" } } }
      - validate: { schema: { type: object, properties: { n: { type: integer, maximum: 10 } } } }
      - headers: { set: { x-upstream: '"${'$'}{UPSTREAM}"' } }
    to: { broker: local, topic: sensors }
    deadletter: { broker: local, topic: sensors-dlq }
  - name: sensors-head
    from: { listener: api, path: /sensors-head }
    through:
      - auth: { apiKey: { header: x-sensor-key, keys: { fleet: "${KEY}" } } }
    to: { broker: local, topic: sensors }
  - name: dlq-out
    from: { broker: local, topic: sensors-dlq }
    to: { listener: push, path: /dlq, format: envelope }
`.replace("'\"${'$'}{UPSTREAM}\"'", `'"\${UPSTREAM}"'`);

describe('credentials never reach an observer', () => {
  const gw = useGateway(config, { env: { UPSTREAM } });
  const auth = { authorization: `Bearer ${TOKEN}` };
  const tapUrl = (route: string) => `${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=${route}`;

  it('the tap shows accepted, refused and later-refused messages without the key the auth step reads, and ${VAR} header values redacted', async () => {
    const tap = await WsClient.connect(tapUrl('sensors'), { headers: auth });
    assert.equal((await tap.next()).type, 'hello');
    assert.equal((await post(gw.url('api', '/sensors'), { n: 1 }, { 'x-sensor-key': KEY })).status, 200);
    assert.equal((await post(gw.url('api', '/sensors'), { n: 1 }, { 'x-sensor-key': `${KEY}-wrong` })).status, 401);
    assert.equal((await post(gw.url('api', '/sensors'), { n: 99 }, { 'x-sensor-key': KEY, 'x-api-key': 'another-credential-1234' })).status, 400);
    const events = [await tap.next(), await tap.next(), await tap.next()];
    assert.deepEqual(
      events.map((e) => e.outcome),
      ['delivered', 'rejected', 'invalid'],
    );
    const text = JSON.stringify(events);
    assert.ok(!text.includes(KEY), `no key in the tap: ${text}`);
    assert.ok(!text.includes('another-credential-1234'));
    assert.ok(!text.includes(UPSTREAM), 'the ${VAR} header value is redacted');
    assert.equal(events[0].output.headers['x-upstream'], '[redacted]');
    for (const e of events) assert.equal(e.message.headers['x-sensor-key'], undefined);
    tap.close();
  });

  it('log.payloads: true logs the refused message, never the key (also a valid key refused by a later step)', async () => {
    const from = gw.logs.length;
    assert.equal((await post(gw.url('api', '/sensors'), { n: 50 }, { 'x-sensor-key': KEY })).status, 400);
    assert.equal((await post(gw.url('api', '/sensors'), { n: 1 }, { 'x-sensor-key': `${KEY}-nope` })).status, 401);
    const lines = [await gw.waitForLog((l) => l.msg === 'message invalid', 10000, from), await gw.waitForLog((l) => l.msg === 'message rejected', 10000, from)];
    assert.ok(
      lines.every((l) => (l as any).message !== undefined),
      'payloads are logged',
    );
    // Refused from its head (its auth comes first), a request's body was never read: the line says so, with no value (spec-checklist 1849).
    assert.equal((await post(gw.url('api', '/sensors-head'), { n: 1 }, { 'x-sensor-key': `${KEY}-nope` })).status, 401);
    const head = (await gw.waitForLog((l) => l.msg === 'message rejected' && l.route === 'sensors-head', 10000, from)) as unknown as { message: Record<string, unknown> };
    assert.equal(head.message.bodyNotRead, true, JSON.stringify(head.message));
    assert.ok(!('value' in head.message), JSON.stringify(head.message));
    const text = JSON.stringify(gw.logs.slice(from));
    assert.ok(!text.includes(KEY), `no key in the log: ${text}`);
  });

  it('a dead-letter copy made before the auth step carries no credential header', async () => {
    const dlq = await WsClient.connect(gw.url('push', '/dlq', 'ws'));
    assert.equal((await post(gw.url('api', '/sensors'), { no: 'n' }, { 'x-sensor-key': KEY, 'x-trace-me': 'yes' })).status, 200);
    const copy = await dlq.next();
    assert.deepEqual(copy.value, { no: 'n' });
    assert.equal(copy.headers['x-trace-me'], 'yes', 'other headers travel');
    assert.equal(copy.headers['x-sensor-key'], undefined);
    assert.ok(!JSON.stringify(copy).includes(KEY));
    dlq.close();
  });

  it('metrics and status show no key', async () => {
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`, { headers: auth })).text();
    assert.ok(!metrics.includes(KEY));
    const status = await (await fetch(`${gw.adminUrl}/admin/status`, { headers: auth })).text();
    assert.ok(!status.includes(KEY) && !status.includes(UPSTREAM));
  });
});

describe('the open /readyz names what is not ready and its state, nothing about the network', () => {
  const gw = useGateway();
  const BROKERS = 'kafka-0.eventgate-secret-cluster.invalid:9092';
  const kafkaConfig = (admin: string) => `
version: 1
admin: ${admin}
brokers:
  kafka: { kind: kafka, brokers: ["\${KAFKA_BROKERS}"] }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: r
    from: { listener: api, path: /in }
    to: { broker: kafka, topic: t }
`;
  /** /readyz once it reports the unreachable broker, or its last answer after 20 s. */
  async function notReady(gw: RunningGateway, headers: Record<string, string> = {}): Promise<any> {
    const until = Date.now() + 20000;
    for (;;) {
      const res = await fetch(`${gw.adminUrl}/readyz`, { headers });
      const body = (await res.json()) as any;
      if (Date.now() > until || (res.status === 503 && (body.reasons ?? []).some((r: string) => r.startsWith('broker kafka: unreachable')))) return body;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('with an admin token: a probe without it gets the reasons too (spec §7), as the state, never the address', async () => {
    await gw.start(kafkaConfig(`{ port: 0, token: ${TOKEN} }`), { env: { KAFKA_BROKERS: BROKERS } });
    for (const headers of [{}, { authorization: `Bearer ${TOKEN}` }] as Record<string, string>[]) {
      const body = await notReady(gw, headers);
      assert.deepEqual(body, { status: 'not ready', reasons: ['broker kafka: unreachable'] });
      assert.ok(!JSON.stringify(body).includes('secret-cluster'));
    }
    const status = await (await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).text();
    assert.ok(!status.includes('secret-cluster'), status);
  });

  it('without a token (loopback admin), /readyz names the component and its state only', async () => {
    await gw.start(kafkaConfig('{ port: 0 }'), { env: { KAFKA_BROKERS: BROKERS } });
    const body = await notReady(gw);
    assert.deepEqual(body.reasons, ['broker kafka: unreachable']);
  });
});
