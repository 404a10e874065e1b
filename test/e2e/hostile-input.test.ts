import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { rawHttp } from '../helpers/raw-http.js';
import { prng } from '../helpers/prng.js';
import { fetch } from '../helpers/http.js';

const SAMPLES = ['{"id":7,"lumens":640,"tags":["a","b"],"nested":{"x":[1,2,{"y":null}]}}', '[1,2,3,{"a":"b"}]', '"just a string"', '{"text":"h\\u00e9llo \\ud83d\\ude00","n":-0.5e-3}'];

/** Hostile bodies chosen on purpose: each must be refused with this status. */
const KNOWN: [string, Buffer | string, string, number][] = [
  ['invalid UTF-8', Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]), 'application/json', 400],
  ['overlong UTF-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]), 'application/json', 400],
  ['lone surrogate bytes', Buffer.concat([Buffer.from('"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"')]), 'application/json', 400],
  ['number beyond a double', '{"n":1e400}', 'application/json', 400],
  ['negative number beyond a double', '[-' + '9'.repeat(400) + ']', 'application/json', 400],
  ['deep nesting', '['.repeat(100_000) + ']'.repeat(100_000), 'application/json', 400],
  ['deep nesting, unclosed', '{"a":'.repeat(10_000), 'application/json', 400],
  ['__proto__ key', '{"__proto__":{"polluted":true}}', 'application/json', 400],
  ['escaped __proto__ key', '{"\\u005f_proto__":{"polluted":true}}', 'application/json', 400],
  ['nested __proto__', '{"a":[{"b":{"__proto__":{"isAdmin":true}}}]}', 'application/json', 400],
  ['constructor.prototype', '{"constructor":{"prototype":{"polluted":true}}}', 'application/json', 400],
  ['a name given twice', '{"id":"x","id":1}', 'application/json', 400],
  ['a name given twice, once escaped, nested', '{"id":1,"a":[{"k":1,"\\u006b":2}]}', 'application/json', 400],
  ['truncated JSON', '{"id":7,"lumens":6', 'application/json', 400],
  ['empty body', '', 'application/json', 400],
  ['trailing garbage', '{"a":1} x', 'application/json', 400],
  ['NaN literal', '{"a":NaN}', 'application/json', 400],
  ['single quotes', "{'a':1}", 'application/json', 400],
  ['NUL bytes', Buffer.from([0x7b, 0x00, 0x7d]), 'application/json', 400],
  ['UTF-16 body', Buffer.from('{"a":1}', 'utf16le'), 'application/json', 400],
  ['XML', '<a>1</a>', 'application/xml', 415],
  ['form', 'a=1&b=2', 'application/x-www-form-urlencoded', 415],
  ['multipart', '--x\r\n\r\n--x--', 'multipart/form-data; boundary=x', 415],
  ['invalid UTF-8 as text/plain', Buffer.from([0x61, 0xff, 0x62]), 'text/plain', 400],
];

const RAW_REQUESTS = [
  'GARBAGE\r\n\r\n',
  'POST /in HTTP/9.9\r\nHost: x\r\n\r\n',
  'POST /in HTTP/1.1\r\nHost: x\r\nno-colon-header\r\n\r\n',
  'POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n',
  'POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n{}{}{}',
  'POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
  'POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\n{}\r\n0\r\n\r\n',
  'POST /in\0 HTTP/1.1\r\nHost: x\r\n\r\n',
  'POST /in HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n',
  '\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03',
];

const sent = { http: 0, ws: 0, raw: 0 };

describe('hostile input (fuzz)', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, maxBodyBytes: 1048576}
  push: {kind: websocket, port: 0}
chains:
  everything:
    - validate: {schema: {type: object, required: [id]}, onInvalid: tag}
    - filter: 'true'
    - headers: {set: {x-kind: '$type($)'}}
    - transform: '{"v": $, "q": $query, "h": $headers."x-kind"}'
    - ratelimit: {rate: 100000, per: second}
routes:
  - name: in
    from: {listener: api, path: /in}
    through: everything
    to: {broker: local, topic: t}
  - name: ws-in
    from: {listener: push, path: /ws}
    through: everything
    to: {broker: local, topic: t}
    ack: true
  - name: out
    from: {broker: local, topic: t}
    to: {listener: push, path: /ws/out}
`);

  /** Posts raw bytes; every answer must be a clean one: 2xx, or 4xx with a problem+json body. */
  async function postRaw(body: Buffer | string, contentType: string, path = '/in'): Promise<number> {
    sent.http++;
    const res = await fetch(gw.url('api', path), { method: 'POST', body, headers: { 'content-type': contentType } });
    const text = await res.text();
    assert.ok(res.status < 500, `status ${res.status} for a ${Buffer.byteLength(body)}-byte ${contentType} body: ${text}`);
    if (res.status >= 400) {
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(JSON.parse(text).status, res.status);
    }
    return res.status;
  }

  it('refuses each known hostile body with the right 4xx', async () => {
    for (const [name, body, type, status] of KNOWN) {
      assert.equal(await postRaw(body, type), status, name);
    }
  });

  it('answers every randomly mutated body cleanly (2xx or 4xx), 300 of them, 10 at a time', async () => {
    const random = prng(0xe7e2a7e);
    const mutate = (): Buffer => {
      let b = Buffer.from(SAMPLES[Math.floor(random() * SAMPLES.length)]!);
      const ops = 1 + Math.floor(random() * 3);
      for (let i = 0; i < ops; i++) {
        const at = Math.floor(random() * (b.length + 1));
        switch (Math.floor(random() * 7)) {
          case 0: // truncate
            b = b.subarray(0, at);
            break;
          case 1: // flip a byte to anything, including invalid UTF-8
            if (b.length > 0) b[at % b.length] = Math.floor(random() * 256);
            break;
          case 2: // insert structural characters
            b = Buffer.concat([b.subarray(0, at), Buffer.from(['{', '[', '"', ':', ',', '}', ']', '\\'][Math.floor(random() * 8)]!), b.subarray(at)]);
            break;
          case 3: // a poisoned key
            b = Buffer.concat([Buffer.from('{"__proto__":'), b, Buffer.from('}')]);
            break;
          case 4: // deeper
            b = Buffer.concat([Buffer.from('['.repeat(40)), b, Buffer.from(']'.repeat(40))]);
            break;
          case 5: // a huge number
            b = Buffer.from(`[${b.toString('latin1')},1${'0'.repeat(1 + Math.floor(random() * 400))}]`, 'latin1');
            break;
          default: // duplicate
            b = Buffer.concat([b, b]);
        }
      }
      return b;
    };
    const statuses = new Map<number, number>();
    for (let round = 0; round < 30; round++) {
      const results = await Promise.all(Array.from({ length: 10 }, () => postRaw(mutate(), random() < 0.9 ? 'application/json' : 'text/plain')));
      for (const s of results) statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
    assert.ok((statuses.get(400) ?? 0) > 0 && (statuses.get(200) ?? 0) > 0, `a fuzz run should see both accepted and refused bodies: ${JSON.stringify([...statuses])}`);
  });

  it('answers malformed HTTP with 4xx or a closed connection, never 5xx', async () => {
    for (const req of RAW_REQUESTS) {
      sent.raw++;
      const reply = await rawHttp(gw.port('api'), Buffer.from(req, 'latin1'));
      if (reply) assert.ok(reply.status >= 400 && reply.status < 500, `${JSON.stringify(req)} → ${reply.status}`);
    }
  });

  it('answers CONNECT with 405 problem+json on http, websocket and admin ports, instead of dropping the connection', async () => {
    const ports: [string, number, string][] = [
      ['http', gw.port('api'), 'GET, HEAD, POST'],
      ['websocket', gw.port('push'), 'GET'],
      ['admin', Number(new URL(gw.adminUrl).port), 'GET, POST, PUT'],
    ];
    for (const [name, port, allow] of ports) {
      for (const target of ['example.com:443', '/in']) {
        sent.raw++;
        const reply = await rawHttp(port, `CONNECT ${target} HTTP/1.1\r\nHost: example.com:443\r\n\r\n`);
        assert.equal(reply?.status, 405, `${name} ${target}`);
        assert.equal(reply!.headers['content-type'], 'application/problem+json');
        assert.equal(reply!.headers.allow, allow);
        assert.match(JSON.parse(reply!.body).detail, /^CONNECT is not supported: this server is not a proxy; use /);
      }
    }
  });

  it('refuses an HTTP/1.1 request without Host as problem+json', async () => {
    const reply = await rawHttp(gw.port('api'), 'POST /in HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
    assert.equal(reply?.status, 400);
    assert.equal(reply!.headers['content-type'], 'application/problem+json');
    assert.equal(JSON.parse(reply!.body).detail, 'an HTTP/1.1 request must have a Host header');
  });

  it('keeps query parameters named __proto__ or constructor as plain data', async () => {
    const out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const ws = await WsClient.connect(gw.url('push', '/ws?__proto__=x&constructor=y', 'ws'));
    ws.send({ id: 1 });
    assert.equal((await ws.next()).type, 'ack');
    const q = (await out.next()).q;
    assert.equal(Object.getOwnPropertyDescriptor(q, '__proto__')?.value, 'x');
    assert.equal(Object.getOwnPropertyDescriptor(q, 'constructor')?.value, 'y');
    ws.close();
    const r = await fetch(gw.url('api', '/in?__proto__[polluted]=1&constructor[prototype][x]=1'), {
      method: 'POST',
      body: '{"id":1}',
      headers: { 'content-type': 'application/json', constructor: 'z' },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys((await out.next()).q).sort(), ['__proto__[polluted]', 'constructor[prototype][x]']);
    out.close();
  });

  it('answers hostile WebSocket frames with error frames, closing only for protocol violations', async () => {
    let ws = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    const reconnect = async () => {
      ws = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    };
    for (const [name, body, type, status] of KNOWN) {
      if (type !== 'application/json' || Buffer.byteLength(body) > 1024 * 1024) continue;
      sent.ws++;
      ws.ws.send(body, { binary: false });
      const invalidUtf8 = Buffer.isBuffer(body) && !isUtf8(body);
      if (invalidUtf8) {
        // RFC 6455 §8.1: a text frame that is not UTF-8 fails the connection (1007).
        assert.equal((await ws.waitClose()).code, 1007, name);
        await reconnect();
        continue;
      }
      const frame = await ws.next();
      assert.equal(frame.type, 'error', name);
      assert.equal(frame.status, status, name);
    }
    ws.ws.send(Buffer.from([0x00, 0xff, 0x10]), { binary: true });
    const binary = await ws.next();
    assert.equal(binary.status, 415);
    ws.send({ id: 2 });
    assert.equal((await ws.next()).type, 'ack', 'the connection still works after every refusal');
    ws.close();
  });

  it('is still serving afterwards, with no crash and no unexpected failure logged', async () => {
    assert.equal(await postRaw('{"id":99}', 'application/json'), 200);
    assert.equal(gw.process.exitCode, null);
    const bad = gw.logs.filter((l) => /uncaught|unhandled|failed unexpectedly/.test(l.msg) || l.level === 'fatal');
    assert.deepEqual(bad, []);
    assert.ok(sent.http > 300 && sent.ws > 10 && sent.raw === RAW_REQUESTS.length + 6);
  });
});

function isUtf8(b: Buffer): boolean {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
}
