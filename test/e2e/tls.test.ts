import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { request } from 'node:https';
import { connect } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { makeCertificates } from '../helpers/certificates.js';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

interface HttpsReply {
  status: number;
  body: string;
  fingerprint: string;
}

function postTls(port: number, path: string, body: string, options: { ca: string[]; cert?: string; key?: string }): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent: false, headers: { 'content-type': 'application/json' }, ...options }, (res) => {
      const fingerprint = (res.socket as TLSSocket).getPeerCertificate().fingerprint256;
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text, fingerprint }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

const config = (slowHeadersMs: number) => `version: 1
brokers:
  local: {kind: memory}
listeners:
  secure: {kind: http, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
  mutual: {kind: http, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem, ca: certs/ca.pem}}
  wss: {kind: websocket, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
  slow: {kind: websocket, port: 0, headersTimeoutMs: ${slowHeadersMs}, requestTimeoutMs: 60000, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
routes:
  - name: in
    from: {listener: secure, path: /in}
    to: {broker: local, topic: t}
  - name: mutual
    from: {listener: mutual, path: /in}
    to: {broker: local, topic: t}
  - name: out
    from: {broker: local, topic: t}
    to: {listener: wss, path: /ws/out}
  - name: slow
    from: {listener: slow, path: /ws/in}
    to: {broker: local, topic: t}
`;

describe('TLS listeners', () => {
  const certs = makeCertificates();
  const trust = { ca: [certs.a.cert, certs.b.cert] };
  const gw = useGateway(config(60_000), { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key, 'certs/ca.pem': certs.ca.cert } });

  it('serves HTTPS and WSS with the configured certificate', async () => {
    const client = await WsClient.connect(gw.url('wss', '/ws/out', 'wss'), { ca: trust.ca });
    const r = await postTls(gw.port('secure'), '/in', '{"n":1}', trust);
    assert.equal(r.status, 200, r.body);
    assert.equal(r.fingerprint, fingerprintOf(certs.a.cert));
    assert.deepEqual(await client.next(), { n: 1 });
    client.close();
  });

  it('refuses clients that speak plain HTTP to a TLS port, and keeps serving', async () => {
    await assert.rejects(fetch(gw.url('secure', '/in'), { method: 'POST', body: '{}' }));
    assert.equal((await postTls(gw.port('secure'), '/in', '{}', trust)).status, 200);
  });

  it('requires a client certificate signed by `ca` (mutual TLS)', async () => {
    await assert.rejects(postTls(gw.port('mutual'), '/in', '{}', trust));
    const r = await postTls(gw.port('mutual'), '/in', '{}', { ...trust, cert: certs.client.cert, key: certs.client.key });
    assert.equal(r.status, 200);
  });

  it('bounds the TLS handshake by headersTimeoutMs, as changed by a reload: a client that connects and sends nothing is cut off', async () => {
    await gw.reconfigure(config(300));
    const socket = connect(gw.port('slow'), '127.0.0.1');
    socket.on('error', () => {});
    // node's own handshake bound is 120 s: a connection silent that long would still be open.
    const giveUp = new AbortController();
    const closed = await Promise.race([once(socket, 'close').then(() => true), delay(30_000, false, { signal: giveUp.signal })]);
    giveUp.abort();
    socket.destroy();
    assert.ok(closed, 'a connection that never starts its TLS handshake is still open after 30 s');
  });
  it('picks up a replaced certificate on reload without rebinding, keeping open connections', async () => {
    const port = gw.port('secure');
    const client = await WsClient.connect(gw.url('wss', '/ws/out', 'wss'), { ca: trust.ca });
    const from = gw.logs.length;
    gw.write('certs/server.pem', certs.b.cert);
    gw.write('certs/server-key.pem', certs.b.key);
    await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, from);
    assert.equal(gw.port('secure'), port);
    const r = await postTls(port, '/in', '{"n":2}', trust);
    assert.equal(r.status, 200);
    assert.equal(r.fingerprint, fingerprintOf(certs.b.cert));
    assert.deepEqual(await client.next(), { n: 2 }, 'a client connected before the rotation still receives');
    client.close();
  });

  it('rejects a reload whose certificate and key do not match, and keeps serving the old one', async () => {
    const from = gw.logs.length;
    gw.write('certs/server-key.pem', certs.a.key);
    const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10_000, from);
    assert.match(String(rejected.diagnostic), /certs\/server\.pem.*cannot be used/);
    const r = await postTls(gw.port('secure'), '/in', '{}', trust);
    assert.equal(r.fingerprint, fingerprintOf(certs.b.cert));
  });
});
