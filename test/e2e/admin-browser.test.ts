import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';

/**
 * A web page the operator opens must not reach the admin API through their browser (issue #13,
 * docs/security.md): DNS rebinding (a foreign Host), cross-site requests (a foreign Origin, the
 * tap's upgrade included), and cross-site form posts. The admin API here has NO token, as on a
 * developer's machine: these checks are what protects it.
 */
const config = `version: 1
admin: {port: 0, allowedHosts: [gateway.internal]}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
routes:
  - name: orders
    from: {listener: api, path: /orders}
    to: {broker: local, topic: orders}
`;

describe('the admin API refuses what a browser on another site would send', () => {
  const gw = useGateway(config);
  /** A second gateway, for the test that needs a token. */
  const withToken = useGateway();
  let port: number;
  const raw = (head: string, body = '') => rawHttp(port, `${head}\r\nConnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);

  before(() => {
    port = Number(new URL(gw.adminUrl).port);
  });

  it('refuses a DNS-rebound Host on every admin endpoint, but answers probes and configured and loopback names', async () => {
    for (const path of ['/admin/status', '/admin/asyncapi', '/metrics', '/']) {
      const r = await raw(`GET ${path} HTTP/1.1\r\nHost: attacker.example:${port}`);
      assert.equal(r?.status, 403, `${path}: ${r?.body}`);
      assert.match(r!.body, /does not answer to Host 'attacker\.example/);
    }
    assert.equal((await raw(`GET /healthz HTTP/1.1\r\nHost: 10.1.2.3:${port}`))?.status, 200);
    assert.equal((await raw(`GET /readyz HTTP/1.1\r\nHost: 10.1.2.3:${port}`))?.status, 200);
    for (const host of [`gateway.internal:${port}`, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
      assert.equal((await raw(`GET /admin/status HTTP/1.1\r\nHost: ${host}`))?.status, 200, host);
    }
  });

  it('refuses a cross-site form POST to /admin/reload (with or without Origin), and accepts a same-origin one', async () => {
    const form = await raw(`POST /admin/reload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded`, 'a=1');
    assert.equal(form?.status, 403);
    assert.equal(JSON.parse(form!.body).code, 'EG_ORIGIN_NOT_ALLOWED');
    // Browsers that leave Origin out still send the form's content type.
    for (const type of ['application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'text/plain']) {
      const r = await raw(`POST /admin/reload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: ${type}`, 'a=1');
      assert.equal(r?.status, 415, type);
    }
    const from = gw.logs.length;
    const same = await raw(`POST /admin/reload HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: http://127.0.0.1:${port}`);
    assert.equal(same?.status, 200, same?.body);
    // The gateway logs before it answers, but its stdout and the admin socket are read in either order here.
    await gw.waitForLog((l) => /config (unchanged|reloaded)/.test(l.msg), 10000, from);
    // The refused ones reloaded nothing: one reload, the same-origin one.
    assert.equal(gw.logs.filter((l) => /config (unchanged|reloaded)/.test(l.msg)).length, 1);
  });

  it("refuses a cross-site GET with an Origin (a page's fetch) and a PUT of an AsyncAPI document from another origin", async () => {
    const r = await raw(`GET /admin/status HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: http://evil.example`);
    assert.equal(r?.status, 403);
    const put = await raw(`PUT /admin/asyncapi HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nOrigin: null\r\nContent-Type: application/yaml`, 'asyncapi: 3.0.0');
    assert.equal(put?.status, 403);
  });

  it("refuses the tap's WebSocket upgrade from another origin or a rebound Host; the same origin may watch", async () => {
    const tap = `${gw.adminUrl.replace('http', 'ws')}/admin/tap?route=orders`;
    await assert.rejects(WsClient.connect(tap, { headers: { origin: 'https://evil.example' } }), { statusCode: 403 });
    await assert.rejects(WsClient.connect(tap, { headers: { host: `rebound.example:${port}` } }), { statusCode: 403 });
    const own = await WsClient.connect(tap, { headers: { origin: gw.adminUrl } });
    assert.equal((await own.next()).type, 'hello');
    assert.equal((await post(gw.url('api', '/orders'), { n: 1 })).status, 200);
    assert.equal((await own.next()).outcome, 'delivered');
    own.close();
  });

  it('with a token: a request bearing it in Authorization passes any Host (Prometheus scraping a pod by address); without it, the Host check holds', async () => {
    await withToken.start(config.replace('admin: {port: 0, allowedHosts: [gateway.internal]}', 'admin: {port: 0, token: scrape-token-1234}'));
    const p = Number(new URL(withToken.adminUrl).port);
    const scrape = await rawHttp(p, `GET /metrics HTTP/1.1\r\nHost: 10.1.2.3:${p}\r\nAuthorization: Bearer scrape-token-1234\r\nConnection: close\r\n\r\n`);
    assert.equal(scrape?.status, 200);
    const rebound = await rawHttp(p, `GET /metrics HTTP/1.1\r\nHost: attacker.example:${p}\r\nConnection: close\r\n\r\n`);
    assert.equal(rebound?.status, 403);
    const tokenInQuery = await rawHttp(p, `GET /admin/status?token=scrape-token-1234 HTTP/1.1\r\nHost: attacker.example:${p}\r\nConnection: close\r\n\r\n`);
    assert.equal(tokenInQuery?.status, 403);
  });
});
