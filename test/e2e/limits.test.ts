import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { scrape } from '../helpers/prometheus.js';
import { idleConnection, parseReply, rawHttp, type RawReply } from '../helpers/raw-http.js';

// A webhook that answers nothing until released: a frame on the push listener's /held stays in hand.
let held: HeldTarget | undefined;

const config = (maxHeaders: number, briefKeepAliveMs = 300, maxPayloadBytes = 100) => `version: 1
admin: {port: 0}
# debug: ws's error for a frame over maxPayloadBytes ('client error') is said there, as ws reads it.
log: {level: debug}
brokers:
  local: {kind: memory}
listeners:
  small: {kind: http, port: 0, maxBodyBytes: 100, maxHeaderBytes: 1024, maxHeaders: ${maxHeaders}, maxJsonDepth: 5}
  slow: {kind: http, port: 0, headersTimeoutMs: 300, requestTimeoutMs: 600}
  few: {kind: http, port: 0, maxConnections: 2}
  brief: {kind: http, port: 0, keepAliveTimeoutMs: ${briefKeepAliveMs}}
  push: {kind: websocket, port: 0, maxPayloadBytes: ${maxPayloadBytes}, maxJsonDepth: 5, maxHeaders: ${maxHeaders}}
  crowded: {kind: websocket, port: 0, maxConnections: 1}
routes:
  - name: small
    from: {listener: small, path: /in}
    to: {broker: local, topic: t}
  - name: slow
    from: {listener: slow, path: /in}
    to: {broker: local, topic: t}
  - name: few
    from: {listener: few, path: /in}
    to: {broker: local, topic: t}
  - name: brief
    from: {listener: brief, path: /in}
    to: {broker: local, topic: t}
  - name: ws
    from: {listener: push, path: /ws}
    to: {broker: local, topic: t}
    ack: true
  - name: crowded
    from: {listener: crowded, path: /ws}
    to: {broker: local, topic: t}
  - name: held
    from: {listener: push, path: /held}
    to: {http: {url: '${held?.url}'}}
    ack: true
`;

function request(path: string, headers: string[] = [], body = ''): string {
  return `POST ${path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n${headers.map((h) => `${h}\r\n`).join('')}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

/** Sends `request` on an open keep-alive socket and resolves with the one reply it gets. */
function exchange(socket: Socket, request: string): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => done(new Error(`no reply within 10 s: ${text.slice(0, 200)}`)), 10_000);
    const onData = (d: string) => {
      text += d;
      const reply = parseReply(text);
      if (reply && text.includes('\r\n\r\n') && Buffer.byteLength(reply.body) >= Number(reply.headers['content-length'])) done(undefined, reply);
    };
    const onClose = () => done(new Error(`closed before a reply: ${text.slice(0, 200)}`));
    const done = (err?: Error, reply?: RawReply) => {
      clearTimeout(timer);
      socket.off('data', onData).off('close', onClose);
      if (err) reject(err);
      else resolve(reply!);
    };
    socket.setEncoding('latin1').on('data', onData).once('close', onClose);
    socket.write(request);
  });
}

const keepAlive = (body: string) => `POST /in HTTP/1.1\r\nHost: gw\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

const nested = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

describe('input limits', () => {
  before(async () => {
    held = await HeldTarget.start();
  });
  after(async () => held?.stop());
  const gw = useGateway(() => config(10));

  it('answers 413 for a body over maxBodyBytes', async () => {
    const r = await post(gw.url('small', '/in'), { pad: 'x'.repeat(200) });
    assert.equal(r.status, 413);
    assert.equal(r.body.code, 'EG_PAYLOAD_TOO_LARGE');
  });

  it('answers 431 with a problem body for a request head over maxHeaderBytes', async () => {
    const r = await rawHttp(gw.port('small'), request('/in', [`x-big: ${'a'.repeat(2000)}`], '{}'));
    assert.equal(r?.status, 431);
    assert.equal(r?.headers['content-type'], 'application/problem+json');
    assert.equal(JSON.parse(r!.body).code, 'EG_HEADERS_TOO_LARGE');
  });

  it('answers 431 for more headers than maxHeaders, and accepts exactly maxHeaders', async () => {
    // Host, Connection and Content-Length count too.
    const tooMany = await rawHttp(
      gw.port('small'),
      request(
        '/in',
        Array.from({ length: 8 }, (_, i) => `x-h${i}: ${i}`),
        '{}',
      ),
    );
    assert.equal(tooMany?.status, 431);
    assert.match(JSON.parse(tooMany!.body).detail, /more than 10 headers/);
    const enough = await rawHttp(
      gw.port('small'),
      request(
        '/in',
        Array.from({ length: 7 }, (_, i) => `x-h${i}: ${i}`),
        '{}',
      ),
    );
    assert.equal(enough?.status, 200);
  });

  it('answers 400 for JSON nested deeper than maxJsonDepth, and accepts maxJsonDepth', async () => {
    const deep = await post(gw.url('small', '/in'), nested(6));
    assert.equal(deep.status, 400);
    assert.equal(deep.body.code, 'EG_JSON_TOO_DEEP');
    // Brackets inside strings are not nesting.
    assert.equal((await post(gw.url('small', '/in'), `[[[[["${'['.repeat(20)}\\"]"]]]]]`)).status, 200);
    assert.equal((await post(gw.url('small', '/in'), nested(5))).status, 200);
  });

  // One byte order mark may come before JSON, and is left off what goes on; a second is no JSON.
  // It was taken (the decoder and secure-json-parse each skipped one) and sent on, a mark first.
  it('answers 400 for a body or frame that starts with two byte order marks', async () => {
    const twice = '\ufeff\ufeff{"a":1}';
    const body = await post(gw.url('small', '/in'), twice);
    assert.equal(body.status, 400);
    assert.equal(body.body.code, 'EG_BAD_JSON');
    assert.match(body.body.detail, /two byte order marks/);
    assert.equal((await post(gw.url('small', '/in'), '\ufeff{"a":1}')).status, 200);
    const ws = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    ws.send(twice);
    const err = await ws.next();
    assert.deepEqual([err.type, err.status, err.code], ['error', 400, 'EG_BAD_JSON']);
    ws.send('\ufeff{"a":1}');
    assert.equal((await ws.next()).type, 'ack');
    ws.close();
  });

  it('answers 408 and closes when the headers do not arrive within headersTimeoutMs', async () => {
    const r = await rawHttp(gw.port('slow'), 'POST /in HTTP/1.1\r\nHost: gw\r\n');
    assert.equal(r?.status, 408);
    assert.equal(JSON.parse(r!.body).code, 'EG_REQUEST_TIMEOUT');
  });

  it('answers 408 when the body does not arrive within requestTimeoutMs', async () => {
    const r = await rawHttp(gw.port('slow'), 'POST /in HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\n\r\n{"a"');
    assert.equal(r?.status, 408);
  });

  it('keeps an idle keep-alive connection open past the header and request timeouts, for keepAliveTimeoutMs (65 s)', async () => {
    const socket = await idleConnection(gw.port('slow'));
    const first = await exchange(socket, keepAlive('{}'));
    assert.equal(first.status, 200);
    assert.equal(first.headers['keep-alive'], 'timeout=65');
    // Idle for longer than requestTimeoutMs (600 ms) and node's timeout check (every second).
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal((await exchange(socket, keepAlive('{}'))).status, 200);
    socket.destroy();
  });

  it('closes a keep-alive connection idle for keepAliveTimeoutMs', async () => {
    const socket = await idleConnection(gw.port('brief'));
    assert.equal((await exchange(socket, keepAlive('{}'))).status, 200);
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([socket.closedByServer.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 4000)))]);
    clearTimeout(timer);
    assert.ok(closed, 'an idle connection of a listener with keepAliveTimeoutMs 300 was still open after 4 s');
    socket.destroy();
  });

  it('closes connections beyond maxConnections and serves again once one is free', async () => {
    const port = gw.port('few');
    const a = await idleConnection(port);
    const b = await idleConnection(port);
    assert.equal(await rawHttp(port, request('/in', [], '{}')), undefined, 'the third connection should be closed unanswered');
    const warned = await gw.waitForLog((l) => l.msg === 'connection limit reached; closing new connections' && l.listener === 'few');
    assert.equal(warned.level, 'warn');
    assert.equal(warned.dropped, 1);
    assert.equal(warned.maxConnections, 2);
    // Counted for alerts too; every listener's series is there from the start.
    const metrics = await scrape(gw.adminUrl);
    assert.equal(metrics.types.get('eventgate_listener_connections_dropped_total'), 'counter');
    assert.equal(metrics.value('eventgate_listener_connections_dropped_total', { listener: 'few' }), 1);
    assert.equal(metrics.value('eventgate_listener_connections_dropped_total', { listener: 'push' }), 0);
    a.destroy();
    const deadline = Date.now() + 5000;
    let answered;
    while (!(answered = await rawHttp(port, request('/in', [], '{}')))) assert.ok(Date.now() < deadline, 'never served again');
    assert.equal(answered.status, 200);
    b.destroy();
  });

  it('closes WebSocket connections beyond maxConnections, logged and counted as the http listeners do', async () => {
    const ws = await WsClient.connect(gw.url('crowded', '/ws', 'ws'));
    assert.equal(await rawHttp(gw.port('crowded'), request('/ws')), undefined, 'the second connection should be closed unanswered');
    const warned = await gw.waitForLog((l) => l.msg === 'connection limit reached; closing new connections' && l.listener === 'crowded');
    assert.equal(warned.dropped, 1);
    assert.equal((await scrape(gw.adminUrl)).value('eventgate_listener_connections_dropped_total', { listener: 'crowded' }), 1);
    ws.close();
  });

  it('closes a WebSocket client with 1009 when a frame is over maxPayloadBytes', async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    ws.send({ pad: 'x'.repeat(200) });
    assert.equal((await ws.waitClose()).code, 1009);
  });

  it('answers a frame nested deeper than maxJsonDepth with an error frame and keeps the connection', async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    ws.send(nested(6));
    const err = await ws.next();
    assert.equal(err.status, 400);
    assert.equal(err.code, 'EG_JSON_TOO_DEEP');
    ws.send(nested(5));
    assert.equal((await ws.next()).type, 'ack');
    ws.close();
  });

  it('refuses a WebSocket handshake with too many headers before the upgrade', async () => {
    const headers = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`x-h${i}`, String(i)]));
    await assert.rejects(WsClient.connect(gw.url('push', '/ws', 'ws'), { headers }), (err: { statusCode?: number }) => err.statusCode === 431);
  });

  it('applies changed limits in place on reload, keeping the socket', async () => {
    const port = gw.port('small');
    assert.equal((await gw.reconfigure(config(20))).msg, 'config reloaded');
    assert.equal(gw.port('small'), port);
    const r = await rawHttp(
      port,
      request(
        '/in',
        Array.from({ length: 15 }, (_, i) => `x-h${i}: ${i}`),
        '{}',
      ),
    );
    assert.equal(r?.status, 200);
  });

  it('applies a changed keepAliveTimeoutMs on reload, keeping the socket, and closes idle connections by it', async () => {
    const port = gw.port('brief');
    assert.equal((await gw.reconfigure(config(20, 7000))).msg, 'config reloaded');
    assert.equal(gw.port('brief'), port);
    const socket = await idleConnection(port);
    const reply = await exchange(socket, keepAlive('{}'));
    assert.equal(reply.status, 200);
    assert.equal(reply.headers['keep-alive'], 'timeout=7', 'the Keep-Alive header announces the new timeout');
    socket.destroy();

    assert.equal((await gw.reconfigure(config(20, 300))).msg, 'config reloaded');
    const brief = await idleConnection(port);
    assert.equal((await exchange(brief, keepAlive('{}'))).status, 200);
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([brief.closedByServer.then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), 4000)))]);
    clearTimeout(timer);
    assert.ok(closed, 'an idle connection was still open 4 s after a reload set keepAliveTimeoutMs 300');
    brief.destroy();
  });

  // ws fixes a connection's frame bound when it opens: a lowered bound (against a flood of large
  // frames) let the clients already connected go on sending up to the old one, and a raised one
  // closed them with 1009 "over maxPayloadBytes (N bytes)" for frames under that N.
  it('applies a reloaded maxPayloadBytes to the clients already connected, and says the bound that closed them', async () => {
    const frame = (bytes: number) => JSON.stringify({ pad: 'x'.repeat(bytes - 10) });
    const connected = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    connected.send(frame(100));
    assert.equal((await connected.next()).type, 'ack');

    assert.equal((await gw.reconfigure(config(20, 300, 200))).msg, 'config reloaded');
    connected.send(frame(150));
    assert.equal((await connected.next()).type, 'ack', 'a frame under the raised bound, from a client connected before the reload');
    connected.send(frame(250));
    assert.deepEqual(await connected.waitClose(), { code: 1009, reason: 'a frame over maxPayloadBytes (200 bytes)' });

    const early = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    assert.equal((await gw.reconfigure(config(20, 300, 50))).msg, 'config reloaded');
    early.send(frame(80));
    assert.deepEqual(await early.waitClose(), { code: 1009, reason: 'a frame over maxPayloadBytes (50 bytes)' }, 'a frame over the lowered bound, from a client connected before the reload');
  });

  // ws fails the connection as it reads the frame's length; the close waits for the frames before
  // it to be answered, and a reload meanwhile must not change the bound its reason names.
  it('names in a 1009 the bound the frame went over, when a reload changes maxPayloadBytes while the frames before it are answered', async () => {
    assert.equal((await gw.reconfigure(config(20, 300, 100))).msg, 'config reloaded');
    const c = await WsClient.connect(gw.url('push', '/held', 'ws'));
    c.send({ n: 1 });
    await held!.waitBodies(1);
    const from = gw.logs.length;
    c.send({ pad: 'x'.repeat(200) });
    // ws failed it as it read its length, over the bound of 100, before the reload raises the bound over it.
    await gw.waitForLog((l) => l.msg === 'client error' && l.path === '/held' && l.err === 'Max payload size exceeded', 10000, from);
    assert.equal((await gw.reconfigure(config(20, 300, 1000))).msg, 'config reloaded');
    held!.release();
    assert.equal((await c.next()).type, 'ack');
    assert.deepEqual(await c.waitClose(), { code: 1009, reason: 'a frame over maxPayloadBytes (100 bytes)' });
  });
});
