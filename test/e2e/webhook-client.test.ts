import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createSecureServer, createServer as createH2cServer, type Http2SecureServer, type Http2Server } from 'node:http2';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createTcpServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { createServer as createTlsServer, type TlsOptions } from 'node:tls';
import { makeCertificates } from '../helpers/certificates.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

interface Seen {
  head: string;
  body: string;
  /** Which connection it came on (1, 2, ... in the order they were opened). */
  connection: number;
}

/**
 * A webhook endpoint written on raw sockets, so each answer is exactly the bytes a test scripts:
 * chunked bodies, 1xx answers, answers framed by closing, answers cut short. It reads requests
 * framed by Content-Length (what the gateway sends) and answers each with the next script.
 */
class RawEndpoint {
  readonly seen: Seen[] = [];
  /** Each request takes the first script; the last one stays. A script writes to the socket (and may end it). */
  scripts: ((s: Socket) => void)[] = [(s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n')];
  /** Open connections by number. */
  readonly sockets = new Map<number, Socket>();
  private connections = 0;
  /**
   * Set: a connection idle this long is given up without a word (no `Keep-Alive: timeout`), and
   * the close crosses the next request: it is dropped unread and the connection reset, as a
   * server's idle close that the client had not seen yet when it sent on the connection.
   */
  idleCloseMs: number | undefined;
  private constructor(private readonly server: Server) {}

  static async start(tls?: TlsOptions): Promise<RawEndpoint> {
    let e!: RawEndpoint;
    const onSocket = (socket: Socket) => {
      const id = ++e.connections;
      e.sockets.set(id, socket);
      socket.on('close', () => e.sockets.delete(id));
      socket.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      let idleSince = 0;
      socket.on('data', (chunk: Buffer) => {
        if (e.idleCloseMs !== undefined && idleSince > 0 && performance.now() - idleSince >= e.idleCloseMs) {
          socket.resetAndDestroy();
          return;
        }
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.subarray(0, end).toString('latin1');
          const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
          if (buf.length < end + 4 + length) return;
          const body = buf.subarray(end + 4, end + 4 + length).toString('utf8');
          buf = buf.subarray(end + 4 + length);
          e.seen.push({ head, body, connection: id });
          const script = e.scripts.length > 1 ? e.scripts.shift()! : e.scripts[0]!;
          script(socket);
          idleSince = performance.now();
        }
      });
    };
    const server = tls ? createTlsServer(tls, onSocket) : createTcpServer(onSocket);
    e = new RawEndpoint(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return e;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets.values()) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

const ok =
  (extra = '') =>
  (s: Socket) =>
    s.write(`HTTP/1.1 200 OK\r\ncontent-length: 2\r\n${extra}\r\nok`);

describe("webhook targets' HTTP client, against an endpoint on raw sockets", () => {
  let raw: RawEndpoint;
  let secure: RawEndpoint;
  let untrusted: RawEndpoint;
  /** Serves a certificate the gateway trusts (its CA is trusted) that names no host: not 127.0.0.1. */
  let misnamed: RawEndpoint;
  /** An HTTP/2-only endpoint (node:http2 without allowHTTP1), whose certificate the gateway trusts. */
  let h2only: Http2SecureServer;
  /** An HTTP/2-only endpoint without TLS (h2c: node:http2's createServer). */
  let h2c: Http2Server;
  let idle: RawEndpoint;
  /** Asks for a client certificate of the CA (mutual TLS), which webhook targets do not present. */
  let mutual: RawEndpoint;
  const certs = makeCertificates();
  // The gateway trusts certificate a and the CA (as an operator's NODE_EXTRA_CA_CERTS would), not b.
  const trusted = join(tempFiles({ 'trusted.pem': certs.a.cert + certs.ca.cert }), 'trusted.pem');
  // What a target's own tls.ca trusts: b's self-signed certificate, which the gateway as a whole does not.
  const ownCa = join(tempFiles({ 'b.pem': certs.b.cert }), 'b.pem');
  // A target's tls.ca that a test rewrites on disk: b's certificate at start, not that of the endpoint it names.
  const rotatingCa = join(tempFiles({ 'rotating.pem': certs.b.cert }), 'rotating.pem');

  before(async () => {
    raw = await RawEndpoint.start();
    secure = await RawEndpoint.start(certs.a);
    untrusted = await RawEndpoint.start(certs.b);
    misnamed = await RawEndpoint.start(certs.client);
    h2only = createSecureServer({ cert: certs.a.cert, key: certs.a.key }, (_req, res) => res.end());
    h2only.listen(0, '127.0.0.1');
    await once(h2only, 'listening');
    h2c = createH2cServer((_req, res) => res.end());
    h2c.listen(0, '127.0.0.1');
    await once(h2c, 'listening');
    idle = await RawEndpoint.start();
    idle.idleCloseMs = 100;
    mutual = await RawEndpoint.start({ ...certs.a, ca: certs.ca.cert, requestCert: true, rejectUnauthorized: true });
  });
  const gw = useGateway(
    () => `
version: 1
listeners:
  api: { kind: http, port: 0 }
admin: { port: 0 }
routes:
  - name: raw
    from: { listener: api, path: /raw }
    to: { http: { url: "http://127.0.0.1:${raw.port}/hook?q=1", timeoutMs: 2000, retry: { attempts: 2, backoffMs: 10 } } }
  - name: stalled
    from: { listener: api, path: /stalled }
    to: { http: { url: "http://127.0.0.1:${raw.port}/stalled", timeoutMs: 300, retry: { attempts: 2, backoffMs: 10 } } }
  - name: basic
    from: { listener: api, path: /basic }
    to: { http: { url: "http://us%40er:p%3Ass@127.0.0.1:${raw.port}/basic" } }
  - name: basic-replaced
    from: { listener: api, path: /basic-replaced }
    to: { http: { url: "http://user:pass@127.0.0.1:${raw.port}/basic", headers: { Authorization: '"Bearer t"' } } }
  - name: noted
    from: { listener: api, path: /noted }
    to: { http: { url: "http://127.0.0.1:${raw.port}/noted", headers: { x-note: note } } }
  - name: framed
    from: { listener: api, path: /framed }
    to: { http: { url: "http://127.0.0.1:${raw.port}/framed", headers: { transfer-encoding: '"chunked"' } } }
  - name: typed
    from: { listener: api, path: /typed }
    through:
      - headers: { set: { content-type: kind } }
    to: { http: { url: "http://127.0.0.1:${raw.port}/typed" } }
  - name: secure
    from: { listener: api, path: /secure }
    to: { http: { url: "https://127.0.0.1:${secure.port}/hook" } }
  - name: untrusted
    from: { listener: api, path: /untrusted }
    to: { http: { url: "https://127.0.0.1:${untrusted.port}/hook", retry: { attempts: 1 } } }
  - name: misnamed
    from: { listener: api, path: /misnamed }
    to: { http: { url: "https://127.0.0.1:${misnamed.port}/hook", retry: { attempts: 1 } } }
  - name: h2only
    from: { listener: api, path: /h2only }
    to: { http: { url: "https://127.0.0.1:${(h2only.address() as AddressInfo).port}/hook", retry: { attempts: 1 } } }
  - name: h2c
    from: { listener: api, path: /h2c }
    to: { http: { url: "http://127.0.0.1:${(h2c.address() as AddressInfo).port}/hook", retry: { attempts: 2, backoffMs: 10 } } }
  - name: mutual
    from: { listener: api, path: /mutual }
    to: { http: { url: "https://127.0.0.1:${mutual.port}/hook", retry: { attempts: 2, backoffMs: 10 } } }
  - name: own-ca
    from: { listener: api, path: /own-ca }
    to: { http: { url: "https://127.0.0.1:${untrusted.port}/own", tls: { ca: "${ownCa}" }, retry: { attempts: 1 } } }
  - name: own-ca-computed
    from: { listener: api, path: /own-ca-computed }
    to: { http: { url: { expression: '"https://127.0.0.1:${untrusted.port}/computed"' }, tls: { ca: "${ownCa}" }, retry: { attempts: 1 } } }
  - name: own-ca-only
    from: { listener: api, path: /own-ca-only }
    to: { http: { url: "https://127.0.0.1:${secure.port}/hook", tls: { ca: "${ownCa}" }, retry: { attempts: 1 } } }
  - name: own-ca-rotated
    from: { listener: api, path: /own-ca-rotated }
    to: { http: { url: "https://127.0.0.1:${secure.port}/rotated", tls: { ca: "${rotatingCa}" }, retry: { attempts: 1 } } }
  - name: idle-closing
    from: { listener: api, path: /idle-closing }
    to: { http: { url: "http://127.0.0.1:${idle.port}/hook", retry: { attempts: 1 }, concurrency: 1 } }
`,
    () => ({ env: { NODE_EXTRA_CA_CERTS: trusted } }),
  );
  after(async () => {
    await Promise.all([
      raw?.stop(),
      secure?.stop(),
      untrusted?.stop(),
      misnamed?.stop(),
      idle?.stop(),
      mutual?.stop(),
      new Promise((r) => (h2only ? h2only.close(r) : r(undefined))),
      new Promise((r) => (h2c ? h2c.close(r) : r(undefined))),
    ]);
  });

  const post = async (path: string, body: unknown) => {
    const res = await fetch(gw.url('api', path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as { deliveries?: { attempts: number; status: number }[]; detail?: string; code?: string } };
  };

  it('sends the request line, Host, keep-alive, the headers and the body as node:http did', async () => {
    raw.scripts = [ok()];
    const from = raw.seen.length;
    const r = await post('/raw', { a: 1 });
    assert.equal(r.status, 200);
    const { head, body } = raw.seen[from]!;
    const [line, ...headers] = head.split('\r\n');
    assert.equal(line, 'POST /hook?q=1 HTTP/1.1');
    const h = Object.fromEntries(headers.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    assert.equal(h.host, `127.0.0.1:${raw.port}`);
    assert.equal(h.connection, 'keep-alive');
    assert.equal(h['content-type'], 'application/json');
    assert.match(h.traceparent!, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    assert.equal(h['content-length'], String(Buffer.byteLength(body)));
    assert.deepEqual(JSON.parse(body), { a: 1 });
  });

  it('reads chunked answers and 1xx answers to their end and reuses the connection after them', async () => {
    raw.scripts = [
      (s) => s.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n'),
      (s) => s.write('HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n'),
      ok(),
    ];
    // The rest of the chunked body arrives later, in pieces split inside the framing.
    const from = raw.seen.length;
    const first = post('/raw', { n: 1 });
    while (raw.seen.length === from) await new Promise((r) => setTimeout(r, 10));
    const socket = raw.sockets.get(raw.seen[from]!.connection)!;
    for (const piece of ['6\r', '\n world\r\n', '0\r\nx-trailer: 1\r', '\n\r\n']) {
      await new Promise((r) => setTimeout(r, 20));
      socket.write(piece);
    }
    assert.deepEqual((await first).body.deliveries, [{ endpoint: `http://127.0.0.1:${raw.port}/hook`, status: 200, attempts: 1 }]);
    assert.equal((await post('/raw', { n: 2 })).body.deliveries![0]!.status, 201);
    assert.equal((await post('/raw', { n: 3 })).status, 200);
    const conns = raw.seen.slice(from).map((s) => s.connection);
    assert.equal(new Set(conns).size, 1, `one kept-alive connection for all three: ${conns}`);
  });

  it('keeps a failed answer’s chunked body for the detail, and retries a 503', async () => {
    raw.scripts = [
      (s) => s.write('HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbusy\r\n0\r\n\r\n'),
      (s) => s.write('HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n9\r\nbad field\r\n8\r\n: émoji\r\n0\r\n\r\n'),
      ok(),
    ];
    const r = await post('/raw', { n: 1 });
    assert.equal(r.status, 502);
    assert.equal(r.body.code, 'EG_WEBHOOK_REFUSED');
    assert.match(r.body.detail!, /answered 400: bad field: émoji \(after 2 tries\)/);
  });

  it('takes an answer framed by the end of the connection, and opens a new connection after `Connection: close`', async () => {
    raw.scripts = [(s) => s.end('HTTP/1.1 200 OK\r\n\r\nall of this is the body'), (s) => s.end('HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n'), ok()];
    const from = raw.seen.length;
    assert.equal((await post('/raw', { n: 1 })).body.deliveries![0]!.status, 200);
    assert.equal((await post('/raw', { n: 2 })).body.deliveries![0]!.status, 202);
    assert.equal((await post('/raw', { n: 3 })).status, 200);
    const conns = raw.seen.slice(from).map((s) => s.connection);
    assert.equal(new Set(conns).size, 3, `a new connection after each close: ${conns}`);
  });

  it('counts a 2xx whose body is cut short or stalls as delivered (once), another answer cut short or none as a failed try (retried), and an endpoint that never answers as a timeout', async () => {
    // The status line is the endpoint's word: a 2xx body that ends early or never is no reason to deliver again.
    let from = raw.seen.length;
    raw.scripts = [(s) => s.end('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'), ok()];
    const cut = await post('/raw', { n: 1 });
    assert.equal(cut.status, 200);
    assert.equal(cut.body.deliveries![0]!.attempts, 1);
    assert.equal(raw.seen.length, from + 1, 'sent once');
    from = raw.seen.length;
    raw.scripts = [(s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc'), ok()];
    const stalled = await post('/stalled', { n: 1 });
    assert.equal(stalled.status, 200, JSON.stringify(stalled.body));
    assert.equal(stalled.body.deliveries![0]!.attempts, 1);
    assert.equal(raw.seen.length, from + 1, 'sent once');
    raw.scripts = [(s) => s.end('HTTP/1.1 503 Busy\r\ncontent-length: 10\r\n\r\nabc'), ok()];
    const r = await post('/raw', { n: 1 });
    assert.equal(r.status, 200);
    assert.equal(r.body.deliveries![0]!.attempts, 2);
    // Closed with no answer at all (as a receiver whose idle timeout ends a kept-alive connection the request was on): said so, not "could not be reached".
    // The first try went out on a kept-alive connection: sent once more on a new one (not a try); the second try's new connection gets no such resend.
    from = raw.seen.length;
    raw.scripts = [(s) => s.end(), (s) => s.end(), (s) => s.end(), ok()];
    const closed = await post('/raw', { n: 1 });
    assert.equal(closed.status, 502);
    assert.equal(raw.seen.length, from + 3);
    assert.match(
      closed.body.detail!,
      /\/hook closed the connection before a complete answer \(UND_ERR_SOCKET: other side closed\) \(after 2 tries\); the message may still have reached it \(sending it again may deliver it twice\)$/,
    );
    raw.scripts = [() => undefined, () => undefined, ok()];
    const t = await post('/raw', { n: 2 });
    assert.equal(t.status, 504);
    assert.equal(t.body.code, 'EG_WEBHOOK_TIMEOUT');
    // Bytes that are no HTTP answer came from the endpoint: it was reached (the parser's error has no code).
    from = raw.seen.length;
    raw.scripts = [(s) => s.end('garbage\r\n\r\n'), (s) => s.end('SSH-2.0-OpenSSH_9.6\r\n'), ok()];
    const junk = await post('/raw', { n: 3 });
    assert.equal(junk.status, 502);
    assert.equal(raw.seen.length, from + 2, 'retried');
    assert.match(
      junk.body.detail!,
      /\/hook sent an answer the HTTP client could not read \(Response does not match the HTTP\/1\.1 protocol [^)]*\)\) \(after 2 tries\); the message may still have reached it/,
    );
  });

  it('reads an answer whose headers are large (a 200 with 70 KB of one header or 3,000 headers: delivered once), and says when they are past what it reads', async () => {
    // Past node's 16 KiB the client failed such an answer unread: the endpoint that had accepted
    // the message got it once per try, and the route answered 502.
    const big = (headers: string) => (s: Socket) => s.write(`HTTP/1.1 200 OK\r\n${headers}content-length: 2\r\n\r\nok`);
    let manyHeaders = '';
    for (let i = 0; i < 3000; i++) manyHeaders += `x-h${i}: v\r\n`;
    for (const headers of [`set-cookie: s=${'a'.repeat(70_000)}\r\n`, manyHeaders]) {
      const from = raw.seen.length;
      raw.scripts = [big(headers), ok()];
      const r = await post('/raw', { n: 1 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.deliveries![0]!.attempts, 1);
      assert.equal(raw.seen.length, from + 1, 'sent once');
    }
    // Past 1 MiB the status is not known: a failed try, retried, said so.
    const from = raw.seen.length;
    raw.scripts = [big(`x-huge: ${'a'.repeat(1_100_000)}\r\n`)];
    const over = await post('/raw', { n: 2 });
    assert.equal(over.status, 502, JSON.stringify(over.body));
    assert.equal(raw.seen.length, from + 2);
    assert.match(
      over.body.detail!,
      /\/hook sent an answer whose headers are over 1 MiB, more than the HTTP client reads \(UND_ERR_HEADERS_OVERFLOW\), so its status is not known \(after 2 tries\); the message may still have reached it/,
    );
  });

  it('says what an answer with no usable status was: a 101 switching protocols unasked, a status below 100, a status over 599 (retried as a 5xx, RFC 9110 §15)', async () => {
    const count = async (result: string) =>
      Number(new RegExp(`eventgate_webhook_requests_total\\{route="raw",target="0",result="${result}"\\} (\\d+)`).exec(await (await fetch(`${gw.adminUrl}/metrics`)).text())?.[1] ?? 0);
    // A 101 was said as `closed the connection before a complete answer (UND_ERR_SOCKET: bad upgrade)`;
    // without an Upgrade header, and a status below 100, undici failed an assertion, said as `could not be reached`.
    const switched = /\/hook answered 101 Switching Protocols to a request that asked for no protocol switch, so no answer to it came \(after 2 tries\); the message may still have reached it/;
    for (const [head, detail] of [
      ['HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n', switched],
      ['HTTP/1.1 101 Switching Protocols\r\ncontent-length: 0\r\n\r\n', switched],
      [
        'HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n',
        /\/hook sent an answer the HTTP client could not read \(a status below 100, which HTTP has not\) \(after 2 tries\); the message may still have reached it/,
      ],
    ] as const) {
      const from = raw.seen.length;
      raw.scripts = [(s) => s.write(head)];
      const r = await post('/raw', { n: 1 });
      raw.scripts = [ok()];
      assert.equal(r.status, 502, JSON.stringify(r.body));
      assert.equal(raw.seen.length, from + 2, 'tried twice');
      assert.match(r.body.detail!, detail);
    }
    // RFC 9110 §15: a status outside 100-599 is invalid, and a client SHOULD process it as a 5xx; said so.
    const before = await count('5xx');
    raw.scripts = [(s) => s.write('HTTP/1.1 600 Weird\r\ncontent-length: 4\r\n\r\nodd!')];
    const r = await post('/raw', { n: 2 });
    raw.scripts = [ok()];
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.equal(r.body.code, 'EG_WEBHOOK_FAILED');
    assert.match(r.body.detail!, /\/hook answered 600, a status outside HTTP's 100-599, taken as a server error \(5xx\) as RFC 9110 §15 asks: odd! \(after 2 tries\)$/);
    assert.equal(await count('5xx'), before + 2);
  });

  it('says that an endpoint which reset the connection after the request went out did so, not that it could not be reached', async () => {
    // Each connection is reset once its request is read (the kept-alive one's loss is sent again once, not a try).
    raw.scripts = [(s) => s.resetAndDestroy()];
    const r = await post('/raw', { n: 1 });
    raw.scripts = [ok()];
    assert.equal(r.status, 502, JSON.stringify(r.body));
    assert.match(r.body.detail!, /\/hook reset the connection before a complete answer \(ECONNRESET\) \(after 2 tries\); the message may still have reached it/);
  });

  it("judges a try by its status line when the answer's body then stalls or is cut short: a 410 is refused once with its words, a 429's and a 503's Retry-After are waited", async () => {
    // Taken as a timeout or a closed connection, the 410 was tried again, said "did not answer" or "may
    // still have reached it", and the Retry-After of the 429 and 503 were not read.
    const gone = 'HTTP/1.1 410 Gone\r\ncontent-length: 100\r\n\r\nsubscription removed';
    // The body stalls past timeoutMs (300 ms), or the connection ends 80 bytes short of it.
    for (const [path, answer, endpoint] of [
      ['/stalled', (s: Socket) => s.write(gone), '/stalled'],
      ['/raw', (s: Socket) => s.end(gone), '/hook'],
    ] as const) {
      const from = raw.seen.length;
      raw.scripts = [answer, ok()];
      const r = await post(path, { n: 1 });
      assert.equal(r.status, 502, JSON.stringify(r.body));
      assert.equal(r.body.code, 'EG_WEBHOOK_REFUSED');
      assert.match(r.body.detail!, new RegExp(`${endpoint} answered 410: subscription removed$`));
      assert.equal(raw.seen.length, from + 1, `${path}: sent once`);
    }
    // Each asks for a second; backoffMs is 10 ms, so only the header makes the gateway wait that long.
    for (const [path, answer] of [
      ['/stalled', (s: Socket) => s.write('HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 100\r\n\r\nslow down')],
      ['/raw', (s: Socket) => s.end('HTTP/1.1 503 Busy\r\nretry-after: 1\r\ncontent-length: 100\r\n\r\nbusy')],
    ] as const) {
      const from = raw.seen.length;
      raw.scripts = [answer, ok()];
      const started = performance.now();
      const r = await post(path, { n: 3 });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.deliveries![0]!.attempts, 2);
      assert.equal(raw.seen.length, from + 2);
      assert.ok(performance.now() - started >= 1000, `${path}: the second try waited the Retry-After`);
    }
  });

  it('says that an endpoint answering with an HTTP/2 frame takes only h2c, and not that it may have the message', async () => {
    const r = await post('/h2c', { n: 1 });
    assert.equal(r.status, 502);
    assert.equal(r.body.code, 'EG_WEBHOOK_FAILED');
    assert.match(
      r.body.detail!,
      /\/hook sent an answer the HTTP client could not read \(Response does not match the HTTP\/1\.1 protocol [^)]*\)\); that is an HTTP\/2 frame: the endpoint takes only HTTP\/2 without TLS \(h2c\), and webhook requests are HTTP\/1\.1, which it never read \(after 2 tries\)$/,
    );
  });

  it('sends a request again, once, on a new connection when the kept-alive one it went out on was closed idle by the endpoint, not counting it as a try', async () => {
    // The endpoint gives up connections idle for 100 ms without saying so; each message goes out
    // after 150 ms on the connection the client still keeps. With attempts: 1 every one was 502.
    const answers: number[] = [];
    for (let n = 0; n < 4; n++) {
      if (n > 0) await delay(150);
      const r = await post('/idle-closing', { n });
      answers.push(r.status);
      if (r.status === 200) assert.equal(r.body.deliveries![0]!.attempts, 1);
    }
    assert.deepEqual(answers, [200, 200, 200, 200]);
    // The endpoint's application saw each message once, each on a connection of its own.
    assert.deepEqual(
      idle.seen.map((s) => JSON.parse(s.body).n),
      [0, 1, 2, 3],
    );
    assert.equal(new Set(idle.seen.map((s) => s.connection)).size, 4);
    // Each of the last three went out twice: the request lost with the closed connection is counted
    // (as `connection`, not as a try), so the counts add up to what reached the endpoint. Uncounted,
    // an endpoint that read requests and reset their connections showed no failure at all.
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /eventgate_webhook_requests_total\{route="idle-closing",target="0",result="2xx"\} 4\n/);
    assert.match(metrics, /eventgate_webhook_requests_total\{route="idle-closing",target="0",result="connection"\} 3\n/);
  });

  it('does not follow a redirect: the message is refused, once, naming where it points (without its query)', async () => {
    raw.scripts = [(s) => s.write('HTTP/1.1 301 Moved Permanently\r\nlocation: https://elsewhere.example/hook?token=s3cret\r\ncontent-length: 0\r\n\r\n')];
    const from = raw.seen.length;
    const r = await post('/raw', { n: 1 });
    assert.equal(r.status, 502);
    assert.equal(r.body.code, 'EG_WEBHOOK_REFUSED');
    assert.match(r.body.detail!, /\/hook answered 301 \(a redirect to https:\/\/elsewhere\.example\/hook, not followed: point url there\)$/);
    assert.equal(raw.seen.length, from + 1);
  });

  it('sends the user and password of the URL as Basic authentication (a computed authorization replaces it), naming the endpoint without them', async () => {
    raw.scripts = [ok()];
    const from = raw.seen.length;
    const r = await post('/basic', { n: 1 });
    assert.equal(r.status, 200);
    assert.equal(JSON.stringify(r.body), `{"deliveries":[{"endpoint":"http://127.0.0.1:${raw.port}/basic","status":200,"attempts":1}]}`);
    assert.match(raw.seen[from]!.head, new RegExp(`\r\nauthorization: Basic ${Buffer.from('us@er:p:ss').toString('base64')}(\r\n|$)`, 'i'));
    assert.equal((await post('/basic-replaced', { n: 2 })).status, 200);
    const head = raw.seen[from + 1]!.head;
    assert.match(head, /\r\nauthorization: Bearer t(\r\n|$)/i);
    assert.equal(head.match(/\r\nauthorization:/gi)!.length, 1, head);
  });

  it('refuses a header value with CR or LF (no header injection), sending nothing', async () => {
    const from = raw.seen.length;
    raw.scripts = [ok()];
    const r = await post('/noted', { note: 'fine\r\nx-injected: yes' });
    // The client's data holds the CR/LF: an invalid message, as below (1428).
    assert.equal(r.status, 400);
    assert.equal(r.body.code, 'EG_INVALID_MESSAGE');
    assert.match(r.body.detail!, /headers\.x-note/);
    const good = await post('/noted', { note: 'fine' });
    assert.equal(good.status, 200);
    assert.equal(raw.seen.length, from + 1);
    assert.match(raw.seen[from]!.head, /\r\nx-note: fine/);
    // A header the message itself carries (here set by a step) is checked too.
    const typed = await post('/typed', { kind: 'text/plain\r\nx-injected: yes' });
    assert.equal(typed.status, 400);
    assert.equal(typed.body.code, 'EG_INVALID_MESSAGE');
    assert.match(typed.body.detail!, /header 'content-type'/);
    assert.equal(raw.seen.length, from + 1, 'nothing sent');
    // Framing is the client's: a computed transfer-encoding would contradict the body it sends.
    const framed = await post('/framed', { any: 1 });
    assert.equal(framed.status, 500);
    assert.equal(framed.body.code, 'EG_EXPRESSION_FAILED');
    assert.match(framed.body.detail!, /headers\.transfer-encoding: the HTTP client frames requests itself/);
    assert.equal(raw.seen.length, from + 1, 'nothing sent');
  });

  it('delivers over TLS to an endpoint whose certificate it trusts, and refuses one it does not', async () => {
    secure.scripts = [ok()];
    const r = await post('/secure', { n: 1 });
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(secure.seen.at(-1)!.body), { n: 1 });
    assert.equal((await post('/secure', { n: 2 })).status, 200);
    assert.equal(new Set(secure.seen.map((s) => s.connection)).size, 1, 'the TLS connection is kept alive too');
    const u = await post('/untrusted', { n: 1 });
    assert.equal(u.status, 502);
    assert.match(
      u.body.detail!,
      /could not be reached: the TLS handshake failed \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE): [^)]+\); the gateway trusts the system CAs and those of NODE_EXTRA_CA_CERTS \(or give the CA in tls\.ca\)$/,
    );
    assert.equal(untrusted.seen.length, 0);
    // A trusted certificate for another name: trusting more CAs would not help, the URL's host is what is wrong.
    const m = await post('/misnamed', { n: 1 });
    assert.equal(m.status, 502);
    assert.match(m.body.detail!, /could not be reached: the TLS handshake failed \(ERR_TLS_CERT_ALTNAME_INVALID: [^)]+\); the certificate is not for the host the url names$/);
    assert.equal(misnamed.seen.length, 0);
    // The requests are HTTP/1.1: a server that takes only HTTP/2 refuses the handshake, said in OpenSSL's words alone.
    const h2 = await post('/h2only', { n: 1 });
    assert.equal(h2.status, 502);
    assert.match(
      h2.body.detail!,
      /could not be reached: the TLS handshake failed \(ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL: tlsv1 alert no application protocol\); webhook requests are HTTP\/1\.1, which the endpoint does not take \(an HTTP\/2-only server\)$/,
    );
    // Mutual TLS over TLS 1.3: the endpoint refuses the connection after the client's handshake
    // ended and the request went out; that read as `other side closed ...; the message may still
    // have reached it`, where the endpoint never read it and says why in its alert.
    const mtls = await post('/mutual', { n: 1 });
    assert.equal(mtls.status, 502);
    assert.match(
      mtls.body.detail!,
      /could not be reached: the TLS handshake failed \(ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: tlsv13 alert certificate required\); the endpoint requires a client certificate \(mutual TLS\), which webhook targets do not present \(after 2 tries\)$/,
    );
    assert.equal(mutual.seen.length, 0);
  });

  it("trusts the CA a target's tls.ca gives, instead of the system's and NODE_EXTRA_CA_CERTS's, for a fixed and a computed URL", async () => {
    // Before, a self-signed endpoint could be trusted only process-wide (NODE_EXTRA_CA_CERTS), and `tls` was not a key of `http`.
    const from = untrusted.seen.length;
    untrusted.scripts = [ok()];
    assert.equal((await post('/own-ca', { n: 1 })).status, 200);
    assert.equal((await post('/own-ca', { n: 2 })).status, 200);
    assert.equal((await post('/own-ca-computed', { n: 3 })).status, 200);
    assert.deepEqual(
      untrusted.seen.slice(from).map((s) => [s.head.split(' ')[1], JSON.parse(s.body).n]),
      [
        ['/own', 1],
        ['/own', 2],
        ['/computed', 3],
      ],
    );
    // The file replaces the roots the gateway trusts (as a broker's tls.ca does): certificate a, trusted through NODE_EXTRA_CA_CERTS, is not.
    const before = secure.seen.length;
    const r = await post('/own-ca-only', { n: 4 });
    assert.equal(r.status, 502);
    assert.match(
      r.body.detail!,
      /could not be reached: the TLS handshake failed \((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE): [^)]+\); the target trusts only the CAs of its tls\.ca file$/,
    );
    assert.equal(secure.seen.length, before);
  });

  it('rebuilds the route when its tls.ca file is rewritten on disk, trusting the new file', async () => {
    const refused = await post('/own-ca-rotated', { n: 1 });
    assert.equal(refused.status, 502);
    assert.match(refused.body.detail!, /the target trusts only the CAs of its tls\.ca file$/);
    const from = gw.logs.length;
    const seen = secure.seen.length;
    writeFileSync(rotatingCa, certs.a.cert);
    await gw.waitForLog((l) => l.msg === 'config reloaded', 20000, from);
    const delivered = await post('/own-ca-rotated', { n: 2 });
    assert.equal(delivered.status, 200, JSON.stringify(delivered.body));
    assert.deepEqual(
      secure.seen.slice(seen).map((s) => [s.head.split(' ')[1], JSON.parse(s.body).n]),
      [['/rotated', 2]],
    );
  });

  it('reports a tls.ca file that cannot be read or holds no certificate where it is written, and tls on an http:// url', async () => {
    const dir = tempFiles({
      'key.pem': certs.b.key,
      'b.pem': certs.b.cert,
      'gateway.yaml': [
        'version: 1',
        'listeners:',
        '  api: { kind: http, port: 0 }',
        'routes:',
        '  - { name: a, from: { listener: api, path: /a }, to: { http: { url: "https://h/a", tls: { ca: key.pem } } } }',
        '  - { name: b, from: { listener: api, path: /b }, to: { http: { url: "https://h/b", tls: { ca: nowhere.pem } } } }',
        '  - { name: c, from: { listener: api, path: /c }, to: { http: { url: "http://h/c", tls: { ca: b.pem } } } }',
        '',
      ].join('\n'),
    });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 3, r.stdout);
    assert.equal(lines[0], "gateway.yaml:5:96: CA file 'key.pem' cannot be used: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
    assert.match(lines[1]!, /^gateway\.yaml:6:96: cannot read 'nowhere\.pem' \(.*nowhere\.pem\): /);
    // Read and watched, but a plain-HTTP endpoint never uses it: said where tls is written.
    assert.equal(lines[2], 'gateway.yaml:7:89: tls applies to https:// endpoints only, and this url is http://: write https://, or drop tls');
  });
});
