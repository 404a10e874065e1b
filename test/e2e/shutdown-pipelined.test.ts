import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { request as httpsRequest } from 'node:https';
import { describe, it } from 'node:test';
import { makeCertificates } from '../helpers/certificates.js';
import { eventually, type RunningGateway, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';
import { freePort } from '../helpers/ports.js';
import { idleConnection, parseReplies, rawHttpText, rawPost, type RawReply } from '../helpers/raw-http.js';
import { fetch } from '../helpers/http.js';
import { LINGER_MAX_BYTES } from '../../src/kinds/listeners/lingering-close.js';

/**
 * A client that pipelines: several POSTs written back to back on one connection before any
 * answer. node starts them all at once (the gateway publishes each) but answers them in order, so
 * at a drain the answers of those behind a slow one are still waiting their turn.
 */

/** `/slow` delivers to a webhook that holds what it gets, `/fast` to one that answers at once. */
const config = (slow: string, fast: string, { host = '127.0.0.1', port = 0, tls = false } = {}) => `
version: 1
admin: { port: 0, drainTimeoutMs: 300 }
listeners:
  api: { kind: http, port: ${port}, host: ${host}${tls ? ', tls: { cert: server.pem, key: server-key.pem }' : ''} }
routes:
  - name: slow
    from: { listener: api, path: /slow }
    to: { http: { url: "${slow}", timeoutMs: 60000 } }
  - name: fast
    from: { listener: api, path: /fast }
    to: { http: { url: "${fast}", timeoutMs: 60000 } }
`;

const MAY_OR_MAY_NOT = (reason: string, drainMs: number) =>
  new RegExp(
    `^(${reason}; the request did not finish within drainTimeoutMs \\(${drainMs} ms\\): its message|the route stopped before http:\\/\\/127\\.0\\.0\\.1:\\d+\\/ answered: the message) may or may not have been delivered$`,
  );

describe('pipelined HTTP requests: one answer each, in order, at a drain too', () => {
  const gw = useGateway();

  it('on SIGTERM answers every pipelined request: those delivered 200, those still held by their target 503, only the last answer closing the connection', () =>
    withTargets(async (slow, fast) => {
      const g = await gw.start(config(slow.url, fast.url));
      const sent = [rawPost('/fast', { n: 1 }), rawPost('/slow', { n: 2 }), rawPost('/fast', { n: 3 }), rawPost('/slow', { n: 4 }), rawPost('/fast', { n: 5 })];
      const text = rawHttpText(g.port('api'), sent.join(''), 20_000);
      // Every one started: the fast ones delivered (and answered, their answers waiting behind the
      // held one), the slow ones in flight.
      await eventually(() => assert.equal(fast.bodies.length, 3));
      await eventually(() => assert.equal(slow.bodies.length, 2));
      await waitInFlight(g, 2);
      assert.deepEqual(await g.stop('SIGTERM'), { code: 0, signal: null });
      const replies = parseReplies(await text);
      assert.deepEqual(
        replies.map((r) => r.status),
        [200, 503, 200, 503, 200],
        show(replies),
      );
      for (const i of [1, 3]) {
        const body = JSON.parse(replies[i]!.body);
        assert.equal(body.code, 'EG_SHUTTING_DOWN');
        assert.match(body.detail, MAY_OR_MAY_NOT('gateway shutting down', 300));
      }
      // A connection: close on an earlier answer would make node drop those behind it.
      for (const r of replies.slice(0, -1)) assert.notEqual(r.headers.connection, 'close', show(replies));
      // Each 200 is a delivery, made once.
      assert.deepEqual(fast.bodies.map((b) => JSON.parse(b).n).sort(), [1, 3, 5]);
      assert.deepEqual(slow.bodies.map((b) => JSON.parse(b).n).sort(), [2, 4]);
    }));

  it('takes on nothing pipelined behind a refusal that closes the connection, though an earlier request is still in flight: node would never send its answer', () =>
    withTargets(async (slow, fast) => {
      const g = await gw.start(config(slow.url, fast.url));
      const hostless = 'POST /fast HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{"n": 0}';
      const text = rawHttpText(g.port('api'), rawPost('/slow', { n: 1 }) + hostless + rawPost('/fast', { n: 2 }), 20_000);
      // Bytes that are no request behind a held one, then more as fast as the gateway reads them:
      // the 400 waits behind the held answer, and nothing more is read meanwhile. Before, all that
      // came was read and discarded till the answer went (GBs behind a webhook's tries), past the
      // LINGER_MAX_BYTES a closing connection reads.
      const flood = floodBehind(g.port('api'), `${rawPost('/slow', { n: 4 })}NOT HTTP\r\n\r\n`, 4 * LINGER_MAX_BYTES);
      await eventually(() => assert.equal(slow.bodies.length, 2));
      // The refusal (400, connection: close) waits behind the held one; the request behind it is not taken on.
      await waitInFlight(g, 2);
      await flood.stalled;
      slow.release();
      const flooded = await flood.closed;
      assert.ok(flooded.written < LINGER_MAX_BYTES, `the gateway read ${flooded.written} bytes of no request while the answer before them waited`);
      assert.deepEqual(
        parseReplies(flooded.text).map((r) => [r.status, r.headers.connection]),
        [
          [200, 'keep-alive'],
          [400, 'close'],
        ],
      );
      const replies = parseReplies(await text);
      assert.deepEqual(
        replies.map((r) => [r.status, r.headers.connection]),
        [
          [200, 'keep-alive'],
          [400, 'close'],
        ],
      );
      // Before, n 2 was delivered, its answer never sent: the endpoint's first message is the one posted now.
      assert.equal((await fetch(g.url('api', '/fast'), { method: 'POST', body: '{"n": 3}', headers: { 'content-type': 'application/json' } })).status, 200);
      assert.deepEqual(
        fast.bodies.map((b) => JSON.parse(b).n),
        [3],
      );
    }));

  // A reload replaces the listener two ways: on another address the new one starts first and the
  // old one retires in the background; on the same port (TLS switched on) the old one stops, then
  // the new one takes its port.
  for (const change of ['another host', 'TLS on the same port'] as const) {
    it(`when a reload replaces the listener (${change}), answers the pipelined requests it still holds in order: delivered 200, held 503, a body still arriving 503 "not published" with the only connection: close`, () =>
      withTargets(async (slow, fast) => {
        const certs = change === 'TLS on the same port' ? makeCertificates() : undefined;
        // A takeover needs the port the config names (port 0 would be a new one each time).
        const first = certs ? await freePort() : 0;
        const g = await gw.start(config(slow.url, fast.url, { port: first }), certs ? { files: { 'server.pem': certs.a.cert, 'server-key.pem': certs.a.key } } : {});
        const partial = 'POST /fast HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"n": 6';
        const sent = [rawPost('/fast', { n: 1 }), rawPost('/slow', { n: 2 }), rawPost('/fast', { n: 3 }), rawPost('/slow', { n: 4 }), rawPost('/fast', { n: 5 }), partial];
        const text = rawHttpText(g.port('api'), sent.join(''), 20_000);
        await eventually(() => assert.equal(fast.bodies.length, 3));
        await eventually(() => assert.equal(slow.bodies.length, 2));
        await waitInFlight(g, 3);
        const port = certs ? first : await freePort('127.0.0.2');
        const next = certs ? config(slow.url, fast.url, { port, tls: true }) : config(slow.url, fast.url, { host: '127.0.0.2', port });
        assert.equal((await g.reconfigure(next)).msg, 'config reloaded');
        const replies = parseReplies(await text);
        assert.deepEqual(
          replies.map((r) => r.status),
          [200, 503, 200, 503, 200, 503],
          show(replies),
        );
        for (const i of [1, 3]) assert.match(JSON.parse(replies[i]!.body).detail, MAY_OR_MAY_NOT('listener replaced by a reload', 300));
        assert.equal(
          JSON.parse(replies[5]!.body).detail,
          'listener replaced by a reload; the request did not finish within drainTimeoutMs (300 ms): its body had not all arrived, so nothing of it was published',
        );
        assert.deepEqual(
          replies.map((r) => r.headers.connection === 'close'),
          [false, false, false, false, false, true],
        );
        assert.deepEqual(fast.bodies.map((b) => JSON.parse(b).n).sort(), [1, 3, 5]);
        // The successor serves.
        const url = certs ? `https://127.0.0.1:${port}/fast` : `http://127.0.0.2:${port}/fast`;
        assert.equal(await postStatus(url, { n: 7 }, certs?.a.cert), 200);
        assert.deepEqual(fast.bodies.map((b) => JSON.parse(b).n).sort(), [1, 3, 5, 7]);
      }));
  }

  it('on SIGTERM also answers what node had not read yet (held back while answers piled up behind a held one): 503 "retry", never published', () =>
    withTargets(async (slow, fast) => {
      const g = await gw.start(config(slow.url, fast.url));
      const socket = await idleConnection(g.port('api'));
      let text = '';
      socket.setEncoding('latin1').on('data', (d: string) => (text += d));
      // One held, then enough delivered behind it that their queued answers pass node's 16 KiB
      // mark: the next request read makes node stop reading the connection.
      socket.write(rawPost('/slow', { n: 0 }) + Array.from({ length: 100 }, (_, i) => rawPost('/fast', { n: i + 1 })).join(''));
      await eventually(() => assert.equal(fast.bodies.length, 100));
      // Their answers wait in node's queue (only the held one is in flight).
      await waitInFlight(g, 1);
      socket.write(rawPost('/fast', { n: 101 }));
      await eventually(() => assert.equal(fast.bodies.length, 101));
      await waitInFlight(g, 1);
      // Not read while the answers wait: node holds these back (the end shows it: never published, refused by the drain).
      socket.write(rawPost('/fast', { n: 102 }) + rawPost('/fast', { n: 103 }));
      assert.deepEqual(await g.stop('SIGTERM'), { code: 0, signal: null });
      await socket.closedByServer;
      const replies = parseReplies(text);
      assert.deepEqual(
        replies.map((r) => r.status),
        [503, ...Array.from({ length: 101 }, () => 200), 503, 503],
        show(replies.filter((r) => r.status !== 200)),
      );
      assert.match(JSON.parse(replies[0]!.body).detail, MAY_OR_MAY_NOT('gateway shutting down', 300));
      for (const r of replies.slice(-2)) assert.equal(JSON.parse(r.body).detail, 'the gateway is shutting down; retry on another instance');
      for (const r of replies.slice(0, -1)) assert.notEqual(r.headers.connection, 'close');
      assert.equal(fast.bodies.length, 101);
    }));
});

/** POSTs JSON over http or (trusting `ca`) https; the status. */
function postStatus(url: string, body: unknown, ca?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const send = url.startsWith('https:') ? httpsRequest : request;
    const req = send(url, { method: 'POST', headers: { 'content-type': 'application/json' }, ...(ca ? { ca: [ca] } : {}) }, (res) => {
      res.resume().on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

/**
 * A client that writes `head`, then garbage as fast as the gateway reads it, until it has its
 * 400. `stalled` settles once the gateway stops reading (nothing taken for 500 ms: a trigger, no
 * assertion) or `limit` bytes went; `closed` with what was written and read once the connection closes.
 */
function floodBehind(port: number, head: string, limit: number): { stalled: Promise<void>; closed: Promise<{ written: number; text: string }> } {
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  let written = 0;
  let text = '';
  let progressed = Date.now();
  const chunk = Buffer.alloc(1 << 20, 0x41);
  const pump = () => {
    for (let more = true; more && written < limit && socket.writable; more = socket.write(chunk)) {
      written += chunk.length;
      progressed = Date.now();
    }
    if (written < limit && socket.writable) socket.once('drain', pump);
  };
  socket.once('connect', () => {
    socket.write(head);
    pump();
  });
  socket.setEncoding('latin1').on('data', (d: string) => {
    text += d;
    if (/ 400 /.test(text) && socket.writable) socket.end();
  });
  const stalled = new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (written >= limit || Date.now() - progressed > 500) {
        clearInterval(check);
        resolve();
      }
    }, 100);
  });
  const closed = new Promise<{ written: number; text: string }>((resolve) => socket.once('close', () => resolve({ written, text })));
  return { stalled, closed };
}

/** Runs `body` with a webhook receiver that holds what it gets (`slow`) and one that answers at once (`fast`), stopping both after. */
async function withTargets(body: (slow: HeldTarget, fast: HeldTarget) => Promise<void>): Promise<void> {
  const slow = await HeldTarget.start();
  const fast = await HeldTarget.start();
  fast.release();
  try {
    await body(slow, fast);
  } finally {
    await slow.stop();
    await fast.stop();
  }
}

function show(replies: RawReply[]): string {
  return JSON.stringify(replies.map((r) => [r.status, r.headers.connection, r.body]));
}

/** Waits until the HTTP listener reports `n` requests in flight (seen through /admin/status). */
async function waitInFlight(g: RunningGateway, n: number): Promise<void> {
  await eventually(async () => {
    const status = await g.status();
    assert.equal(status.listeners.find((l: { name: string }) => l.name === 'api').inFlight, n);
  });
}
