import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { WsClient } from '../helpers/clients.js';

const config = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
chains:
  main:
    - validate: { schema: { type: object } }
    - filter: 'true'
routes:
  - name: in
    from: { listener: api, path: /in }
    through: [main, { transform: '$' }]
    to: { broker: local, topic: events }
  - name: out
    from: { broker: local, topic: events }
    to: { listener: push, path: /out, format: envelope }
`;

describe('admin API (spec §7)', () => {
  const gw = useGateway(config);

  it('GET /healthz answers 200 while the process runs', async () => {
    const res = await fetch(`${gw.adminUrl}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  });

  it('GET /readyz answers 200 when every listener is bound and every broker connected', async () => {
    const res = await fetch(`${gw.adminUrl}/readyz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ready' });
  });

  it('GET /admin/status reports the config version, when it was loaded, the last reload error, listeners, brokers and routes', async () => {
    const res = await fetch(`${gw.adminUrl}/admin/status`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/json');
    const status = (await res.json()) as any;
    assert.match(status.version, /^[0-9a-f]{12}$/);
    assert.ok(Math.abs(Date.parse(status.loadedAt) - Date.now()) < 60000, status.loadedAt);
    assert.equal(status.lastReloadError, null);
    assert.deepEqual(
      status.listeners.map((l: any) => [l.name, l.kind, l.port, l.ready]),
      [
        ['api', 'http', gw.port('api'), true],
        ['push', 'websocket', gw.port('push'), true],
      ],
    );
    assert.deepEqual(
      status.brokers.map((b: any) => [b.name, b.kind, b.ready]),
      [['local', 'memory', true]],
    );
    assert.deepEqual(
      status.routes.map(({ name, from, steps, to }: any) => ({ name, from, steps, to })),
      [
        { name: 'in', from: { type: 'listener', listener: 'api', path: '/in' }, steps: ['validate', 'filter', 'transform'], to: [{ broker: 'local', topic: 'events' }] },
        { name: 'out', from: { type: 'broker', broker: 'local', topic: 'events' }, steps: [], to: [{ listener: 'push', path: '/out', format: 'envelope' }] },
      ],
    );
  });

  it('answers 404 problem+json for an unknown admin path and 405 with Allow for a wrong method', async () => {
    const missing = await fetch(`${gw.adminUrl}/admin/nothing`);
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('content-type'), 'application/problem+json');
    const wrong = await fetch(`${gw.adminUrl}/admin/status`, { method: 'DELETE' });
    assert.equal(wrong.status, 405);
    assert.equal(wrong.headers.get('allow'), 'GET, HEAD');
  });

  it('answers HEAD as GET without the body, as uptime monitors and load balancers probe', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics', '/admin/status']) {
      const res = await fetch(`${gw.adminUrl}${path}`, { method: 'HEAD' });
      assert.equal(res.status, 200, `HEAD ${path}`);
      assert.equal(await res.text(), '');
    }
  });
});

describe('admin API with a token', () => {
  const gw = useGateway('version: 1\nadmin:\n  port: 0\n  token: ${ADMIN_TOKEN}\n', { env: { ADMIN_TOKEN: 's3cret-token' } });

  it('keeps /healthz and /readyz open and asks for the bearer token everywhere else', async () => {
    assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);
    const anonymous = await fetch(`${gw.adminUrl}/admin/status`);
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get('www-authenticate') ?? '', /^Bearer /);
    assert.equal((await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
    const ok = await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: 'Bearer s3cret-token' } });
    assert.equal(ok.status, 200);
    assert.doesNotMatch(await ok.text(), /s3cret-token/, 'the token never appears in the status');
  });

  it('logs a config warning for a token shorter than 16 characters, naming its length and not the token', () => {
    const warning = gw.logs.find((l) => l.msg === 'config warning' && l.code === 'EG_CONFIG_WEAK_TOKEN');
    assert.ok(warning, JSON.stringify(gw.logs.map((l) => l.msg)));
    assert.equal(warning.level, 'warn');
    assert.match(String(warning.diagnostic), /gateway\.yaml:4:10: admin\.token is 12 characters long; a token shorter than 16 characters can be guessed/);
    assert.equal(JSON.stringify(gw.logs).includes('s3cret-token'), false);
  });

  it('answers 429 with Retry-After to an address that sent 10 wrong tokens, good token or not, probes aside; other addresses unaffected', async () => {
    // From 127.0.0.2, so the other tests' requests (127.0.0.1) are not refused with it.
    const from = (localAddress: string, path: string, token?: string) => fetch(`${gw.adminUrl}${path}`, { localAddress, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 10; i++) assert.equal((await from('127.0.0.2', '/admin/status', `guess-${i}`)).status, 401, `guess ${i}`);
    const locked = await from('127.0.0.2', '/admin/status', 'guess-10');
    assert.equal(locked.status, 429);
    const wait = Number(locked.headers.get('retry-after'));
    assert.ok(wait >= 1 && wait <= 60, `Retry-After: ${locked.headers.get('retry-after')}`);
    assert.equal(((await locked.json()) as { code: string }).code, 'EG_RATE_LIMITED');
    // The right token too: were it let through, each refused guess would still say it was wrong.
    assert.equal((await from('127.0.0.2', '/admin/status', 's3cret-token')).status, 429);
    assert.equal((await from('127.0.0.2', '/metrics')).status, 429);
    await assert.rejects(WsClient.connect(`${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=x&token=s3cret-token`, { localAddress: '127.0.0.2' }), { statusCode: 429 });
    assert.equal((await from('127.0.0.2', '/healthz')).status, 200);
    assert.equal((await from('127.0.0.2', '/readyz')).status, 200);
    assert.equal((await from('127.0.0.1', '/admin/status', 's3cret-token')).status, 200);
    // A request without a token guesses nothing and counts for nothing.
    for (let i = 0; i < 12; i++) assert.equal((await from('127.0.0.3', '/admin/status')).status, 401);
    assert.equal((await from('127.0.0.3', '/admin/status', 's3cret-token')).status, 200);
    await gw.waitForLog((l) => /a client sent too many wrong tokens/.test(String(l.msg)));
    const warnings = gw.logs.filter((l) => /a client sent too many wrong tokens/.test(String(l.msg)));
    assert.equal(warnings.length, 1, JSON.stringify(warnings));
    assert.equal(warnings[0]!.level, 'warn');
    assert.equal(warnings[0]!.client, '127.0.0.2');
    assert.equal(JSON.stringify(gw.logs).includes('guess-'), false, 'the tokens tried are not logged');
  });

  it('lets an address locked out for wrong tokens in again after a reload that changes admin.token, not after one that keeps it', async () => {
    // From 127.0.0.4: the test before locked 127.0.0.2 out, which the token's change clears too.
    const from = (token: string) => fetch(`${gw.adminUrl}/admin/status`, { localAddress: '127.0.0.4', headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 10; i++) assert.equal((await from(`guess-${i}`)).status, 401, `guess ${i}`);
    assert.equal((await from('s3cret-token')).status, 429);
    // A reload that keeps the token keeps the lockout: a routine reload must not let a guesser go on.
    const kept = await gw.reconfigure('version: 1\nadmin:\n  port: 0\n  token: ${ADMIN_TOKEN}\nlog: { level: info }\n', 'gateway.yaml', { whole: true });
    assert.equal(kept.msg, 'config reloaded', JSON.stringify(kept));
    assert.equal((await from('s3cret-token')).status, 429);
    // The operator rotates the token (because of the guesses, or to let a locked-out job in with the new one).
    const rotated = await gw.reconfigure('version: 1\nadmin:\n  port: 0\n  token: rotated-admin-token-0123\n', 'gateway.yaml', { whole: true });
    assert.equal(rotated.msg, 'config reloaded', JSON.stringify(rotated));
    assert.equal((await from('rotated-admin-token-0123')).status, 200);
    // Counting starts again, against the new token: the old one is a wrong token now.
    assert.equal((await from('s3cret-token')).status, 401);
    const cleared = gw.logs.find((l) => /admin\.token changed/.test(String(l.msg)));
    assert.ok(cleared, 'the reload says it let locked-out addresses in again');
    assert.ok(Number(cleared.lockedOut) >= 1, JSON.stringify(cleared));
    assert.equal(JSON.stringify(gw.logs).includes('rotated-admin-token'), false, 'the token is not logged');
  });
});
