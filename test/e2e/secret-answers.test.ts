import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { parseEvents } from '../helpers/sse.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/**
 * Webhook URLs often carry their credential in the path (Slack, Discord and Teams incoming
 * webhooks: https://hooks.slack.com/services/T…/B…/<token>), and operators put them in `${VAR}`s.
 * The gateway named the endpoint — path included — in every answer to the publishing client
 * (the 200's deliveries, a WebSocket ack, the 502's detail), in the log, and in dead-letter
 * headers; a broker's address from `${KAFKA_BROKERS}` reached clients in a 503's DNS error. Like
 * /admin/status, these now show the config's secrets as [redacted] (docs/security.md).
 */
const PATH_TOKEN = 'T00000000-B00000000-XXXXXXXXXXXXXXXXXXXXXXXX';
const URL_TOKEN = 'hook-url-token-5f1c2a9e7d3b';
const KAFKA_HOST = 'kafka-0.eventgate-secret-cluster.invalid';
const BASIC_PASSWORD = 'basic-pass-from-env-91c4';
const LITERAL_PASSWORD = 'literal-pass-in-file-3e7a';

describe('answers, logs and dead-letter records never show a secret from the config', () => {
  let hook: WebhookReceiver;
  before(async () => {
    hook = await WebhookReceiver.start();
    // Accepts /ok/…; anything else is a hook it does not know, answered (as real services do) with the path.
    hook.respond = (r, res) => {
      // Some services echo the credentials they refused.
      if (r.url === '/echo') return void res.writeHead(401).end(`refused ${r.headers.authorization}`);
      res.statusCode = r.url.startsWith('/ok/') ? 200 : 500;
      res.end(r.url.startsWith('/ok/') ? 'ok' : `no such hook: ${r.url}`);
    };
  });
  after(() => hook?.stop());

  const gw = useGateway(
    () => `version: 1
log: {level: debug}
brokers:
  local: {kind: memory}
  kafka: {kind: kafka, brokers: ["\${KAFKA_BROKERS}"], producer: {ackTimeoutMs: 500}}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
routes:
  - name: whole-url-from-env
    from: {listener: api, path: /ok}
    to: {http: {url: "\${OK_HOOK}", retry: {attempts: 1}}}
  - name: token-in-path
    from: {listener: api, path: /down}
    to: {http: {url: "${hook.url}/services/\${PATH_TOKEN}", retry: {attempts: 1}}}
  - name: retried
    from: {listener: api, path: /retried}
    to: {http: {url: "${hook.url}/services/\${PATH_TOKEN}", retry: {attempts: 2, backoffMs: 10}}}
  - name: queued
    from: {listener: api, path: /queued}
    to: {broker: local, topic: queued}
  - name: consumer
    from: {broker: local, topic: queued}
    to: {http: {url: "${hook.url}/services/\${PATH_TOKEN}", retry: {attempts: 1}}}
    deadletter: {broker: local, topic: undeliverable}
  - name: undeliverable
    from: {broker: local, topic: undeliverable}
    to: {listener: api, path: /undeliverable, format: envelope}
  - name: to-kafka
    from: {listener: api, path: /kafka}
    to: {broker: kafka, topic: t}
  - name: default-url
    from: {listener: api, path: /default-url}
    to: {http: {url: "\${UNSET_CRM_HOOK:-${hook.url}/crm/in}", retry: {attempts: 1}}}
  - name: basic-from-env
    from: {listener: api, path: /basic-env}
    to: {http: {url: "${hook.url.replace('//', '//partner:${BASIC_PASSWORD}@')}/echo"}}
  - name: basic-literal
    from: {listener: api, path: /basic-literal}
    to: {http: {url: "${hook.url.replace('//', `//partner:${LITERAL_PASSWORD}@`)}/echo"}}
`,
    () => ({ env: { OK_HOOK: `${hook.url}/ok/${URL_TOKEN}?v=1`, PATH_TOKEN, KAFKA_BROKERS: `${KAFKA_HOST}:9092`, BASIC_PASSWORD } }),
  );

  it("a broker's unreachable address from ${KAFKA_BROKERS} is not in the 503 a client gets", async () => {
    // Right after start a publish fails with the producer's DNS error; later ones may wait out the ack timeout.
    for (let n = 0; n < 3; n++) {
      const r = await post(gw.url('api', '/kafka'), { n });
      assert.equal(r.status, 503);
      assert.equal(r.body.code, 'EG_BROKER_UNAVAILABLE');
      assert.ok(!r.text.includes(KAFKA_HOST), r.text);
    }
    const line = await gw.waitForLog((l) => l.msg === 'message failed' && l.route === 'to-kafka');
    assert.ok(!JSON.stringify(line).includes(KAFKA_HOST), JSON.stringify(line));
  });

  it('a delivery names a webhook whose URL is a secret as [redacted]', async () => {
    const r = await post(gw.url('api', '/ok'), { n: 1 });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.deliveries, [{ endpoint: '[redacted]', status: 200, attempts: 1 }]);
    assert.ok(
      hook.requests.some((q) => q.url === `/ok/${URL_TOKEN}?v=1`),
      'the webhook itself was called at its real URL',
    );
  });

  it("a failed delivery's answer and log line do not quote the token in the webhook's path", async () => {
    const r = await post(gw.url('api', '/down'), { n: 2 });
    assert.equal(r.status, 502);
    assert.ok(!r.text.includes(PATH_TOKEN), r.text);
    // The URL as written is partly from the environment, so it is a secret as a whole (as in /admin/status).
    assert.equal(r.body.detail, '[redacted] answered 500: no such hook: /services/[redacted]');
    const line = await gw.waitForLog((l) => l.msg === 'message failed' && l.route === 'token-in-path');
    assert.ok(!JSON.stringify(line).includes(PATH_TOKEN), JSON.stringify(line));
  });

  it("a webhook URL written as a ${VAR}'s default, with the variable unset, is named: it is the file's text, no secret", async () => {
    // Before: every value with a reference was a secret, whatever gave it, so the log and the 502
    // said `[redacted] answered 500` of an endpoint the file names in plain text.
    const r = await post(gw.url('api', '/default-url'), { n: 3 });
    assert.equal(r.status, 502);
    assert.equal(r.body.detail, `${hook.url}/crm/in answered 500: no such hook: /crm/in`);
    const line = await gw.waitForLog((l) => l.msg === 'message failed' && l.route === 'default-url');
    assert.equal(line.detail, r.body.detail);
  });

  // The gateway makes the Basic credentials itself from the URL's `user:password@` (in the file or
  // from ${VAR}): an endpoint echoing them in its refusal put them in the 502, the log and dead letters.
  it("a URL's user:password is not shown in the Basic credentials an endpoint's refusal echoes", async () => {
    for (const [path, password] of [
      ['/basic-env', BASIC_PASSWORD],
      ['/basic-literal', LITERAL_PASSWORD],
    ] as const) {
      const r = await post(gw.url('api', path), { n: 5 });
      assert.equal(r.status, 502);
      assert.match(r.body.detail as string, /answered 401: refused Basic \[redacted\]$/);
      const base64 = Buffer.from(`partner:${password}`).toString('base64');
      assert.ok(
        hook.requests.some((q) => q.headers.authorization === `Basic ${base64}`),
        'the endpoint got the credentials',
      );
      const route = path === '/basic-env' ? 'basic-from-env' : 'basic-literal';
      const line = await gw.waitForLog((l) => l.msg === 'message failed' && l.route === route);
      for (const shown of [r.text, JSON.stringify(line)]) assert.ok(!shown.includes(base64) && !shown.includes(password), shown);
    }
  });

  it("a retried delivery's debug line does not quote it", async () => {
    assert.equal((await post(gw.url('api', '/retried'), { n: 4 })).status, 502);
    const line = await gw.waitForLog((l) => l.msg === 'webhook try failed; retrying' && l.route === 'retried');
    assert.equal(line.endpoint, '[redacted]');
    assert.ok(!JSON.stringify(line).includes(PATH_TOKEN), JSON.stringify(line));
  });

  it('a dead-letter record does not quote it either', async () => {
    const controller = new AbortController();
    const res = await fetch(gw.url('api', '/undeliverable'), { headers: { accept: 'text/event-stream' }, signal: controller.signal });
    assert.equal(res.status, 200);
    assert.equal((await post(gw.url('api', '/queued'), { n: 3 })).status, 200);
    let text = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      text += decoder.decode(chunk, { stream: true });
      if (parseEvents(text).length > 0) break;
    }
    controller.abort();
    const record = JSON.parse(parseEvents(text)[0]!.data) as { headers: Record<string, string>; value: unknown };
    assert.deepEqual(record.value, { n: 3 });
    const why = JSON.parse(record.headers._eventgate_error!) as { code: string; detail: string };
    assert.equal(why.code, 'EG_WEBHOOK_FAILED');
    assert.ok(!JSON.stringify(record).includes(PATH_TOKEN), JSON.stringify(record));
  });
});
