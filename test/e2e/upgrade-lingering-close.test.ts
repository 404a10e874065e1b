import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { parseReply, sendPastAnswer } from '../helpers/raw-http.js';

const KEY = 'k-0123456789abcdef';
const KIB64 = Buffer.alloc(64 * 1024, 'a');
/** What a client goes on sending once it has read the refusal: more than node reads at once, more than the kernel buffers. */
const TIMES = 64;
const HANDSHAKE = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
const upgrade = (path: string, headers = '') => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${HANDSHAKE}${headers}\r\n`;

/**
 * A refused WebSocket handshake (or CONNECT) is answered on the socket node hands over, which node
 * no longer reads: ended outright, it never saw what the client still sent, nor its FIN. A client
 * that goes on sending after the refusal (the frames it meant to send, a body) stalled once the
 * kernel's buffers were full, and the connection stayed open for good, holding maxConnections and
 * the gateway's shutdown. The refusal now closes it lingering (lingering-close.ts), as the http
 * listener's closing refusals do.
 */
describe('a refused handshake closes lingering: a client still sending reads the refusal, and its connection closes', () => {
  const gw = useGateway(
    () => `
version: 1
brokers:
  local: { kind: memory }
listeners:
  ws: { kind: websocket, port: 0, host: 127.0.0.1, origins: ["https://app.example"], maxHeaders: 12 }
admin: { port: 0, token: "\${ADMIN_TOKEN}" }
routes:
  - name: in
    from: { listener: ws, path: /in }
    through:
      - auth: { apiKey: { header: X-Api-Key, keys: { alice: "${KEY}" } } }
    to: { broker: local, topic: t }
`,
    { env: { ADMIN_TOKEN: 'admin-token-0123456789' } },
  );

  const refusals: [string, () => string, number, string][] = [
    ['an unknown path', () => upgrade('/nowhere'), 404, 'EG_NOT_FOUND'],
    ['no credential (auth, checked asynchronously)', () => upgrade('/in'), 401, 'EG_UNAUTHORIZED'],
    ['a wrong credential', () => upgrade('/in', 'X-Api-Key: wrong-key-0123456789\r\n'), 401, 'EG_UNAUTHORIZED'],
    ['a foreign Origin', () => upgrade('/in', `X-Api-Key: ${KEY}\r\nOrigin: https://evil.example\r\n`), 403, 'EG_ORIGIN_NOT_ALLOWED'],
    ['more than maxHeaders headers', () => upgrade('/in', Array.from({ length: 10 }, (_, i) => `X-H${i}: ${i}\r\n`).join('')), 431, 'EG_HEADERS_TOO_LARGE'],
    ['a version other than 13', () => upgrade('/in').replace('Version: 13', 'Version: 7'), 426, 'EG_UPGRADE_REQUIRED'],
    ['a handshake that is not a GET', () => upgrade('/in').replace('GET', 'POST'), 405, 'EG_METHOD_NOT_ALLOWED'],
    ['a handshake with a body', () => upgrade('/in', 'Content-Length: 1048576\r\n'), 400, 'EG_BAD_REQUEST'],
    ['a handshake with a chunked body', () => upgrade('/in', `X-Api-Key: ${KEY}\r\nTransfer-Encoding: chunked\r\n`), 400, 'EG_BAD_REQUEST'],
  ];
  for (const [what, head, status, code] of refusals) {
    it(`${status} for ${what}`, async () => {
      const r = await sendPastAnswer(gw.port('ws'), head(), KIB64, TIMES);
      assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
      assert.equal(r.sentAfter, TIMES * KIB64.length);
      assert.equal(r.reply?.status, status);
      assert.equal(r.reply?.headers.connection, 'close');
      assert.equal(JSON.parse(r.reply!.body).code, code);
    });
  }

  it('400 for a handshake with valid credentials whose body is a WebSocket frame (it was upgraded, and the body read as the first frame)', async () => {
    const payload = Buffer.from('{"smuggled":true}');
    const mask = Buffer.from([1, 2, 3, 4]);
    const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
    const head = Buffer.concat([Buffer.from(upgrade('/in', `X-Api-Key: ${KEY}\r\nContent-Length: ${frame.length}\r\n`)), frame]);
    const r = await sendPastAnswer(gw.port('ws'), head, KIB64, 1);
    assert.equal(r.reply?.status, 400, `answered ${r.reply?.status}`);
    assert.match(JSON.parse(r.reply!.body).detail, /a WebSocket handshake has no body/);
  });

  it('405 for CONNECT, on the websocket listener and on the admin server', async () => {
    for (const port of [gw.port('ws'), Number(new URL(gw.adminUrl).port)]) {
      const r = await sendPastAnswer(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', KIB64, TIMES);
      assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
      assert.equal(r.sentAfter, TIMES * KIB64.length);
      assert.equal(r.reply?.status, 405);
    }
  });

  it("the admin server's refused upgrades: 401 for the tap without the token, 404 for no endpoint", async () => {
    const admin = Number(new URL(gw.adminUrl).port);
    for (const [path, status] of [
      ['/admin/tap?route=in', 401],
      ['/admin/nowhere', 404],
    ] as const) {
      const r = await sendPastAnswer(admin, upgrade(path), KIB64, TIMES);
      assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
      assert.equal(r.sentAfter, TIMES * KIB64.length);
      assert.equal(r.reply?.status, status);
    }
  });

  it('a refused client that keeps its connection open and sending is closed all the same (bounded), and the shutdown is not held', async () => {
    const socket = connect(gw.port('ws'), '127.0.0.1');
    socket.on('error', () => undefined);
    let text = '';
    socket.setEncoding('latin1').on('data', (d: string) => (text += d));
    let stop = false;
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.once('connect', async () => {
      socket.write(upgrade('/nowhere'));
      while (!stop && !socket.destroyed) await new Promise<void>((done) => socket.write(KIB64, () => done()));
    });
    await closed;
    stop = true;
    assert.equal(parseReply(text)?.status, 404);
    // Another refused client holds its connection open, sending more than node read, as the gateway stops.
    const held = connect(gw.port('ws'), '127.0.0.1');
    held.on('error', () => undefined);
    await new Promise<void>((resolve) => held.once('connect', () => resolve()));
    held.write(upgrade('/nowhere'));
    held.write(Buffer.alloc(1024 * 1024, 'a'));
    try {
      const exit = await gw.stop();
      assert.equal(exit.code, 0);
    } finally {
      held.destroy();
    }
  });
});
