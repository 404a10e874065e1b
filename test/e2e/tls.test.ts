import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect as connectH2, constants as h2, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { IncomingMessage } from 'node:http';
import { Agent, request } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import type { TLSSocket } from 'node:tls';
import { openBrowserPage } from '../helpers/browser.js';
import { makeCertificates } from '../helpers/certificates.js';
import { runCliInProcess } from '../helpers/cli.js';
import { WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { fetch } from '../helpers/http.js';
import { memoryRoutesCaughtUp } from '../helpers/prometheus.js';

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

/** curl over TLS trusting `ca`: `-w` appends the HTTP version and status on a last line. */
function curlTls(ca: string, args: string[]): Promise<{ version: string; status: number; body: string }> {
  return new Promise((resolve, reject) => {
    execFile('curl', ['-s', '--cacert', ca, '-w', '\n%{http_version} %{http_code}', ...args], (err, stdout) => {
      if (err) return reject(err);
      const cut = stdout.lastIndexOf('\n');
      const [version, status] = stdout.slice(cut + 1).split(' ');
      resolve({ version: version!, status: Number(status), body: stdout.slice(0, cut) });
    });
  });
}

/** An event stream on an HTTP/2 session: its `data:` lines as they arrive. */
function h2Stream(
  session: ClientHttp2Session,
  path: string,
  headers: Record<string, string> = {},
): { stream: ClientHttp2Stream; status: Promise<number>; data: string[]; ids: string[]; next: (n: number) => Promise<string[]> } {
  const stream = session.request({ ':path': path, accept: 'text/event-stream', ...headers });
  const data: string[] = [];
  const ids: string[] = [];
  let text = '';
  let wake = () => {};
  stream.setEncoding('utf8').on('data', (c: string) => {
    text += c;
    let i: number;
    while ((i = text.indexOf('\n')) !== -1) {
      const line = text.slice(0, i);
      text = text.slice(i + 1);
      if (line.startsWith('data: ')) data.push(line.slice(6));
      else if (line.startsWith('id: ')) ids.push(line.slice(4));
    }
    wake();
  });
  const next = async (n: number) => {
    while (data.length < n) await new Promise<void>((r) => (wake = r));
    return data.slice(0, n);
  };
  return { stream, status: once(stream, 'response').then(([h]) => Number(h[':status'])), data, ids, next };
}

/** A request on an HTTP/2 session: status and body. */
function h2Request(session: ClientHttp2Session, headers: Record<string, string>, body?: string | Buffer): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', 'content-type': 'application/json', ...headers });
    let text = '';
    let head: Record<string, unknown> = {};
    stream.on('response', (h) => (head = h));
    stream.setEncoding('utf8').on('data', (c: string) => (text += c));
    stream.on('end', () => resolve({ status: Number(head[':status']), body: text, headers: head }));
    stream.on('error', reject);
    stream.end(body);
  });
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;

/**
 * `held`: a webhook that answers nothing until released, so a frame on /ws/held stays in hand.
 * Its try is held for as long as the test takes to reach the release (a `plan`, a reload), which
 * on a loaded machine outlasted the default 10 s `timeoutMs`: the try was cut and tried again,
 * and the ack said `attempts: 2`. So the hold is bounded by the test, not by a timer.
 */
const config = (slowHeadersMs: number, held: string) => `version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  secure: {kind: http, port: 0, http2: true, events: {maxBufferedBytes: 16384}, maxBodyBytes: 65536, maxHeaders: 20, maxHeaderBytes: 4096, requestTimeoutMs: 2000, headersTimeoutMs: 2000, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
  mutual: {kind: http, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem, ca: certs/ca.pem}}
  wss: {kind: websocket, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
  mutualWss: {kind: websocket, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem, ca: certs/ca.pem}}
  slow: {kind: websocket, port: 0, headersTimeoutMs: ${slowHeadersMs}, requestTimeoutMs: 60000, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
routes:
  - name: in
    from: {listener: secure, path: /in}
    to: {broker: local, topic: t}
  - name: events
    from: {broker: local, topic: t}
    to: {listener: secure, path: /events}
  - name: envelopes
    from: {broker: local, topic: t}
    to: {listener: secure, path: /envelopes, format: envelope}
  - name: mutual
    from: {listener: mutual, path: /in}
    to: {broker: local, topic: t}
  - name: out
    from: {broker: local, topic: t}
    to: {listener: wss, path: /ws/out}
  - name: mutual-out
    from: {broker: local, topic: t}
    to: {listener: mutualWss, path: /ws/out}
  - name: mutual-events
    from: {broker: local, topic: t}
    to: {listener: mutual, path: /events}
  - name: slow
    from: {listener: slow, path: /ws/in}
    to: {broker: local, topic: t}
  - name: mutual-held
    from: {listener: mutualWss, path: /ws/held}
    ack: true
    to: {http: {url: '${held}', timeoutMs: 3600000}}
`;

describe('TLS listeners', () => {
  const certs = makeCertificates();
  const trust = { ca: [certs.a.cert, certs.b.cert] };
  let held: HeldTarget;
  before(async () => {
    held = await HeldTarget.start();
  });
  after(async () => {
    await held?.stop();
  });
  const gw = useGateway(() => config(60_000, held.url), { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key, 'certs/ca.pem': certs.ca.cert } });

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

  it("counts and says the handshakes of clients that refuse the listener's certificate (a page's browser that does not trust it sees only a failed connection), not those of clients that speak plain HTTP", async () => {
    const refusals = async (listener: string) => {
      const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
      const line = text.split('\n').find((l) => l.startsWith(`eventgate_listener_tls_certificate_refusals_total{listener="${listener}"}`));
      return line === undefined ? undefined : Number(line.split(' ').pop());
    };
    const before = { wss: await refusals('wss'), secure: await refusals('secure') };
    assert.equal(typeof before.wss, 'number');
    // openssl verifying against no CA it was given: it ends the handshake with an "unknown CA" alert, as Chromium does with "certificate unknown".
    const untrusting = (port: number) =>
      new Promise<void>((resolve) => {
        const s = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-verify_return_error'], { stdio: ['pipe', 'ignore', 'ignore'] });
        s.stdin.end();
        s.on('exit', () => resolve());
      });
    const from = gw.logs.length;
    await untrusting(gw.port('wss'));
    await untrusting(gw.port('wss'));
    await untrusting(gw.port('secure'));
    await assert.rejects(fetch(gw.url('wss', '/ws/out'), { method: 'GET' }));
    const trusted = await WsClient.connect(gw.url('wss', '/ws/out', 'wss'), { ca: trust.ca });
    trusted.close();
    await eventually(async () => assert.deepEqual({ wss: await refusals('wss'), secure: await refusals('secure') }, { wss: before.wss! + 2, secure: before.secure! + 1 }));
    const said = await gw.waitForLog((l) => l.listener === 'wss' && /refused the listener's TLS certificate/.test(l.msg), 5000, from);
    assert.equal(said.level, 'warn');
    assert.match(String(said.reason), /unknown ca/);
    const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as { listeners: Record<string, { tlsCertificateRefusals?: number }> };
    assert.equal(stats.listeners.wss?.tlsCertificateRefusals, before.wss! + 2);
  });

  it('requires a client certificate signed by `ca` (mutual TLS)', async () => {
    await assert.rejects(postTls(gw.port('mutual'), '/in', '{}', trust));
    const r = await postTls(gw.port('mutual'), '/in', '{}', { ...trust, cert: certs.client.cert, key: certs.client.key });
    assert.equal(r.status, 200);
  });

  it('cuts off the open connections of clients whose certificate a reload of `ca` no longer trusts', async () => {
    const mine = { ...trust, cert: certs.client.cert, key: certs.client.key };
    // The tests before published to the topic: once its forwards are through it, none of that can reach the clients opened here.
    await memoryRoutesCaughtUp(gw.adminUrl);
    const client = await WsClient.connect(gw.url('mutualWss', '/ws/out', 'wss'), mine);
    // A publisher whose frame is in hand (the webhook holds it) when the reload comes.
    const publisher = await WsClient.connect(gw.url('mutualWss', '/ws/held', 'wss'), mine);
    publisher.send({ n: 'held' });
    await eventually(() => assert.equal(held.bodies.length, 1));
    // An event stream, and a kept-alive connection that has published once.
    const stream = request({ host: '127.0.0.1', port: gw.port('mutual'), path: '/events', headers: { accept: 'text/event-stream' }, agent: false, ...mine });
    stream.end();
    const [res] = (await once(stream, 'response')) as [IncomingMessage];
    let streamed = '';
    res.setEncoding('utf8').on('data', (c: string) => (streamed += c));
    const ended = once(res, 'end');
    const agent = new Agent({ keepAlive: true, ...mine });
    const kept = await new Promise<TLSSocket>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: gw.port('mutual'), path: '/in', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (r) => {
        const socket = r.socket as TLSSocket;
        r.resume();
        r.on('end', () => (r.statusCode === 200 ? resolve(socket) : reject(new Error(`status ${r.statusCode}`))));
      });
      req.on('error', reject);
      req.end('{"n":"mutual"}');
    });
    assert.deepEqual(await client.next(), { n: 'mutual' });
    const keptClosed = once(kept, 'close');
    // plan says so beforehand, for the listeners whose CA changes only: a renewed server
    // certificate beside it (in a copy of the config) cuts off nobody.
    gw.write('next/gateway.yaml', config(60_000, held.url));
    gw.write('next/certs/server.pem', certs.b.cert);
    gw.write('next/certs/server-key.pem', certs.b.key);
    gw.write('next/certs/ca.pem', certs.b.cert);
    const plan = await runCliInProcess(['plan', '-c', join(gw.dir, 'next/gateway.yaml'), '--admin', gw.adminUrl]);
    assert.deepEqual(
      plan.stdout.split('\n').filter((l) => l.startsWith('clients disconnected')),
      ['mutual', 'mutualWss'].map((l) => `clients disconnected: listener ${l}: clients whose certificate the new tls.ca does not trust (mutual TLS) are cut off; the others stay`),
      plan.stdout,
    );
    // Another CA in place of the one that signed the client's certificate (a revoked client CA).
    const from = gw.logs.length;
    gw.write('certs/ca.pem', certs.b.cert);
    await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, from);
    const closed = await client.waitClose();
    assert.deepEqual(closed, { code: 1008, reason: 'client certificate no longer trusted (a reload changed tls.ca)' });
    // The publisher is closed only once its frame is answered: it was cut off at once, its ack lost.
    held.release();
    assert.deepEqual(await publisher.next(), { type: 'ack', frame: 1, deliveries: [{ endpoint: held.url, status: 200, attempts: 1 }] });
    assert.deepEqual(await publisher.waitClose(), { code: 1008, reason: 'client certificate no longer trusted (a reload changed tls.ca)' });
    await ended;
    assert.match(streamed, /event: eventgate\.end\ndata: \{"status":403,"reason":"client certificate no longer trusted \(a reload changed tls\.ca\)"\}/);
    await keptClosed;
    agent.destroy();
    await assert.rejects(postTls(gw.port('mutual'), '/in', '{}', mine));
    const back = gw.logs.length;
    gw.write('certs/ca.pem', certs.ca.cert);
    await gw.waitForLog((l) => l.msg === 'config reloaded', 10_000, back);
    assert.equal((await postTls(gw.port('mutual'), '/in', '{}', mine)).status, 200);
  });

  const secureStatus = async () => ((await gw.status()).listeners as { name: string; eventStreams: number; inFlight: number; slowStreamsClosed: number }[]).find((l) => l.name === 'secure')!;

  it('serves HTTP/2 to curl --http2 (a publish, an event stream, an error) and HTTP/1.1 to clients without h2, on one port', async () => {
    const port = gw.port('secure');
    await memoryRoutesCaughtUp(gw.adminUrl);
    const session = connectH2(`https://127.0.0.1:${port}`, { ca: trust.ca });
    const events = h2Stream(session, '/events');
    assert.equal(await events.status, 200);
    const published = await curlTls(certs.a.certFile, ['--http2', '-H', 'content-type: application/json', '-d', '{"via":"curl"}', `https://127.0.0.1:${port}/in`]);
    assert.deepEqual([published.version, published.status], ['2', 200], published.body);
    assert.deepEqual(await events.next(1), ['{"via":"curl"}']);
    // curl's own event stream, on a connection of its own (its head on stdout too, -D -): it gets the next message.
    const curl = spawn('curl', ['-s', '-N', '-D', '-', '--http2', '--cacert', certs.a.certFile, '-H', 'accept: text/event-stream', `https://127.0.0.1:${port}/events`]);
    let streamed = '';
    curl.stdout.setEncoding('utf8').on('data', (c: string) => (streamed += c));
    await eventually(async () => assert.equal((await secureStatus()).eventStreams, 2));
    assert.equal((await postTls(port, '/in', '{"via":"http/1.1"}', trust)).status, 200);
    await eventually(() => assert.match(streamed, /data: \{"via":"http\/1\.1"\}/));
    assert.match(streamed, /^HTTP\/2 200/);
    curl.kill();
    const missing = await curlTls(certs.a.certFile, ['--http2', '-d', '{}', `https://127.0.0.1:${port}/nowhere`]);
    assert.deepEqual([missing.version, missing.status], ['2', 404]);
    assert.equal(JSON.parse(missing.body).code, 'EG_NOT_FOUND');
    const old = await curlTls(certs.a.certFile, ['--http1.1', '-H', 'content-type: application/json', '-d', '{}', `https://127.0.0.1:${port}/in`]);
    assert.deepEqual([old.version, old.status], ['1.1', 200]);
    session.destroy();
  });

  it('carries many event streams and requests at once on one HTTP/2 connection, resumes one with Last-Event-ID, and takes no pseudo-header for a header', async () => {
    await memoryRoutesCaughtUp(gw.adminUrl);
    const session = connectH2(`https://127.0.0.1:${gw.port('secure')}`, { ca: trust.ca });
    const streams = Array.from({ length: 20 }, () => h2Stream(session, '/events'));
    const envelopes = h2Stream(session, '/envelopes');
    for (const s of [...streams, envelopes]) assert.equal(await s.status, 200);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, n) => h2Request(session, { ':path': '/in' }, JSON.stringify({ n }))));
    assert.deepEqual(
      answers.map((a) => a.status),
      answers.map(() => 200),
    );
    assert.equal(session.alpnProtocol, 'h2');
    const expected = Array.from({ length: 20 }, (_, n) => JSON.stringify({ n })).sort();
    for (const s of streams) assert.deepEqual((await s.next(20)).sort(), expected);
    // A stream resumed with Last-Event-ID (the 10th event's) on the same connection gets the 10 after it first.
    const first = streams[0]!;
    const resumed = h2Stream(session, '/events', { 'last-event-id': first.ids[9]! });
    assert.deepEqual(await resumed.next(10), first.data.slice(10, 20));
    const envelope = JSON.parse((await envelopes.next(1))[0]!) as { headers: Record<string, string> };
    assert.equal(envelope.headers['content-type'], 'application/json');
    assert.deepEqual(
      Object.keys(envelope.headers).filter((k) => k.startsWith(':')),
      [],
      'the request line of HTTP/2 (:method, :path, ...) is no header of the message',
    );
    session.destroy();
    await eventually(async () => assert.equal((await secureStatus()).eventStreams, 0));
  });

  it('bounds HTTP/2 requests as HTTP/1.1 ones (header count and size 431, body 413, time 408), publishes nothing of a stream the client resets, and closes a stream that does not read', async () => {
    await memoryRoutesCaughtUp(gw.adminUrl);
    const session = connectH2(`https://127.0.0.1:${gw.port('secure')}`, { ca: trust.ca });
    // headersTimeoutMs (2 s), as on HTTP/1.1: a connection that sends no request is closed.
    const idle = connectH2(`https://127.0.0.1:${gw.port('secure')}`, { ca: trust.ca });
    idle.on('error', () => {});
    const idleClosed = once(idle, 'close');
    const events = h2Stream(session, '/events');
    assert.equal(await events.status, 200);
    const headers = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`x-h${i}`, '1']));
    // 20 headers and the four pseudo-headers: within maxHeaders (20), which counts headers only.
    assert.equal((await h2Request(session, { ':path': '/in', ...headers(19) }, '{"n":"many"}')).status, 200);
    const tooMany = await h2Request(session, { ':path': '/in', ...headers(20) }, '{"n":"too many"}');
    assert.equal(tooMany.status, 431, tooMany.body);
    assert.match(JSON.parse(tooMany.body).detail, /more than 20 headers/);
    const tooLarge = await h2Request(session, { ':path': '/in', 'x-big': 'a'.repeat(4096) }, '{"n":"large head"}');
    assert.equal(tooLarge.status, 431, tooLarge.body);
    assert.equal(JSON.parse(tooLarge.body).code, 'EG_HEADERS_TOO_LARGE');
    const big = await h2Request(session, { ':path': '/in' }, Buffer.from(JSON.stringify({ n: 'x'.repeat(70_000) })));
    assert.equal(big.status, 413, big.body);
    assert.equal(JSON.parse(big.body).code, 'EG_PAYLOAD_TOO_LARGE');
    // A whole JSON value, then the client resets the stream before the 100 bytes it announced: not a message.
    const reset = session.request({ ':method': 'POST', ':path': '/in', 'content-type': 'application/json', 'content-length': '100' });
    reset.on('error', () => {});
    reset.write('{"n":"reset"}');
    await delay(200);
    reset.close(h2.NGHTTP2_CANCEL);
    // requestTimeoutMs (2 s): a body that stops arriving is refused, and nothing of it published.
    const slow = session.request({ ':method': 'POST', ':path': '/in', 'content-type': 'application/json' });
    slow.write('{"n":"slow"}');
    const [slowHead] = await once(slow, 'response');
    assert.equal(slowHead[':status'], 408);
    slow.destroy();
    // CONNECT (no proxy here): 405 on its stream, as HTTP/1.1's, not a raw HTTP/1.1 answer inside a 200.
    const connect = await h2Request(session, { ':method': 'CONNECT', ':authority': 'example.com:443' });
    assert.equal(connect.status, 405, connect.body);
    assert.equal(JSON.parse(connect.body).code, 'EG_METHOD_NOT_ALLOWED');
    // Expect: 100-continue, as on HTTP/1.1: a body refused on its head alone is told so before it is sent, with no 100 first.
    const expecting = session.request({ ':method': 'POST', ':path': '/in', 'content-type': 'application/json', 'content-length': '70000', expect: '100-continue' }, { endStream: false });
    expecting.on('error', () => {});
    let continued = false;
    expecting.on('continue', () => (continued = true));
    const [expectHead] = await once(expecting, 'response');
    assert.deepEqual([expectHead[':status'], continued], [413, false]);
    expecting.destroy();
    // The expectation is case-insensitive (RFC 9110 §10.1.1), as node reads it on HTTP/1.1: its 100, then the body.
    const body = '{"n":"continued"}';
    const capital = session.request({ ':method': 'POST', ':path': '/in', 'content-type': 'application/json', 'content-length': String(body.length), expect: '100-Continue' }, { endStream: false });
    capital.on('continue', () => capital.end(body));
    const [capitalHead] = await once(capital, 'response');
    assert.equal(capitalHead[':status'], 200);
    capital.resume();
    await eventually(async () => assert.equal((await secureStatus()).inFlight, 0));
    assert.equal((await h2Request(session, { ':path': '/in' }, '{"n":"after"}')).status, 200, 'the connection goes on');
    assert.deepEqual(await events.next(3), ['{"n":"many"}', body, '{"n":"after"}']);
    // A stream that stops reading is closed once events.maxBufferedBytes wait for it; the connection and its other streams go on.
    const stalled = h2Stream(session, '/events');
    assert.equal(await stalled.status, 200);
    stalled.stream.pause();
    const closedBefore = (await secureStatus()).slowStreamsClosed;
    const large = JSON.stringify({ n: 'big', pad: 'a'.repeat(40_000) });
    for (let i = 0; i < 8; i++) assert.equal((await h2Request(session, { ':path': '/in' }, large)).status, 200);
    await eventually(async () => assert.equal((await secureStatus()).slowStreamsClosed, closedBefore + 1));
    assert.equal((await events.next(10)).length, 10);
    session.destroy();
    // node's own bound is none: without the gateway's, this connection would stay open for keepAliveTimeoutMs (65 s).
    const giveUp = new AbortController();
    const closed = await Promise.race([idleClosed.then(() => true), delay(30_000, false, { signal: giveUp.signal })]);
    giveUp.abort();
    assert.ok(closed, 'an HTTP/2 connection with no request is still open after 30 s');
  });

  it('lets a browser page with 8 open event streams still POST to the same listener over HTTP/2, and get its message on every stream', async () => {
    await memoryRoutesCaughtUp(gw.adminUrl);
    const browser = await openBrowserPage({ ignoreHTTPSErrors: true });
    try {
      const { page } = browser;
      // Any answer of the listener gives the page its origin; this one is a 404.
      await page.goto(`https://127.0.0.1:${gw.port('secure')}/`);
      await page.evaluate(() => {
        const g = globalThis as any;
        g.seen = [];
        g.opened = 0;
        for (let i = 0; i < 8; i++) {
          const es = new g.EventSource('/events');
          es.onopen = () => g.opened++;
          es.onmessage = (e: { data: string }) => g.seen.push(`${i}:${e.data}`);
        }
      });
      await page.waitForFunction(() => (globalThis as any).opened === 8, undefined, { timeout: 15_000 });
      // Over HTTP/1.1 this POST waits for ever: the six connections Chromium opens per host:port are all held by streams.
      // Bounded, so that it fails rather than hangs; 10 s is far beyond an answer's time.
      const status = await page.evaluate(() =>
        fetch('/in', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"from":"page"}', signal: AbortSignal.timeout(10_000) }).then(
          (r) => r.status,
          (err: Error) => err.name,
        ),
      );
      assert.equal(status, 200);
      await page.waitForFunction(() => (globalThis as any).seen.length === 8, undefined, { timeout: 15_000 });
      const seen = (await page.evaluate(() => (globalThis as any).seen)) as string[];
      assert.deepEqual(
        seen.sort(),
        Array.from({ length: 8 }, (_, i) => `${i}:{"from":"page"}`),
      );
      // The page's own load: the streams and the POST share its connection (a fetch's resource
      // entry was once missing from the page's timeline on a loaded machine).
      const protocol = await page.evaluate(() => ((globalThis as any).performance.getEntriesByType('navigation')[0] as { nextHopProtocol: string } | undefined)?.nextHopProtocol);
      assert.equal(protocol, 'h2');
    } finally {
      await browser.close();
    }
  });

  it('bounds the TLS handshake by headersTimeoutMs, as changed by a reload: a client that connects and sends nothing is cut off', async () => {
    await gw.reconfigure(config(300, held.url));
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
    await memoryRoutesCaughtUp(gw.adminUrl);
    const client = await WsClient.connect(gw.url('wss', '/ws/out', 'wss'), { ca: trust.ca });
    // An HTTP/2 connection and its event stream, open across the rotation.
    const before = connectH2(`https://127.0.0.1:${port}`, { ca: trust.ca });
    const events = h2Stream(before, '/events');
    assert.equal(await events.status, 200);
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
    assert.deepEqual(await events.next(1), ['{"n":2}'], 'an HTTP/2 stream opened before the rotation still receives');
    before.destroy();
    // New connections get the new certificate, and still HTTP/2: the new context keeps ALPN.
    const after = connectH2(`https://127.0.0.1:${port}`, { ca: trust.ca });
    const [, socket] = await once(after, 'connect');
    assert.equal((socket as TLSSocket).getPeerCertificate().fingerprint256, fingerprintOf(certs.b.cert));
    assert.equal(after.alpnProtocol, 'h2');
    assert.equal((await h2Request(after, { ':path': '/in' }, '{"n":3}')).status, 200);
    after.destroy();
  });

  it('rejects a reload whose certificate and key do not match, or whose certificate or key is empty, and keeps serving the old one', async () => {
    const from = gw.logs.length;
    gw.write('certs/server-key.pem', certs.a.key);
    const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10_000, from);
    assert.match(String(rejected.diagnostic), /certs\/server\.pem.*cannot be used/);
    const r = await postTls(gw.port('secure'), '/in', '{}', trust);
    assert.equal(r.fingerprint, fingerprintOf(certs.b.cert));
    // Emptied, as a copy over the file does before it writes: node took '' as no certificate (or no
    // key), the reload applied it, and every handshake failed until the write came.
    const running = { 'certs/server.pem': certs.b.cert, 'certs/server-key.pem': certs.b.key };
    for (const [file, what] of [
      ['certs/server-key.pem', 'TLS key'],
      ['certs/server.pem', 'TLS certificate'],
      ['certs/server-key.pem', 'TLS key'],
    ] as const) {
      const at = gw.logs.length;
      gw.write(file, '');
      const emptied = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10_000, at);
      assert.match(String(emptied.diagnostic), new RegExp(`: ${what} '${file}' cannot be used: the file is empty`));
      assert.equal((await postTls(gw.port('secure'), '/in', '{}', trust)).fingerprint, fingerprintOf(certs.b.cert));
      gw.write(file, running[file]);
      await gw.waitForLog((l) => l.msg === 'config unchanged' || l.msg === 'config reloaded', 10_000, at);
    }
  });
});
