import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { sendPastAnswer } from '../helpers/raw-http.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { tempDir } from '../helpers/reaper.js';
import { fetch } from '../helpers/http.js';

const MAX_BODY = 65536;

/** curl --data-binary of `file` with `headers`: its exit code and the status it printed. */
function curlUpload(url: string, file: string, headers: string[]): Promise<{ exit: number | null; status: string; body: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-s', '-w', '\n%{http_code}', '--data-binary', `@${file}`, ...headers.flatMap((h) => ['-H', h]), url], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.on('error', reject);
    child.on('close', (exit) => {
      const cut = out.lastIndexOf('\n');
      resolve({ exit, status: out.slice(cut + 1), body: out.slice(0, cut) });
    });
  });
}

const KIB64 = Buffer.alloc(64 * 1024, 'a');

/**
 * A refusal that closes the connection (a body over maxBodyBytes, a head over maxHeaderBytes, a
 * request without Host, one node cannot parse) while the client is still sending: the connection
 * lingers (RFC 9112 §9.6), so the client reads the refusal rather than a reset, and nothing it sends
 * meanwhile is taken for a request.
 */
describe('a closing refusal lingers: a client still sending reads it, with no reset', () => {
  let out: WebhookReceiver;
  before(async () => {
    out = await WebhookReceiver.start();
  });
  after(async () => {
    await out?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, maxBodyBytes: ${MAX_BODY}, maxHeaderBytes: 4096 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { http: { url: "${out.url}/hook" } }
`,
  );

  /** Nothing a client sent on a lingering connection was published: the next message is the first the target gets. */
  const nothingPublished = async () => {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', body: '{"marker":1}', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    const [first] = await out.received(1);
    assert.deepEqual(JSON.parse(first!.body.toString()), { marker: 1 });
    assert.equal(out.requests.length, 1);
  };

  const pipelined = (body: string) => `POST /in HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

  it('413 for a Content-Length over maxBodyBytes: the client sends its whole body (and a request behind it), then reads the 413', async () => {
    const size = 4 * 1024 * 1024;
    const tail = pipelined('{"hidden":1}');
    const r = await sendPastAnswer(gw.port('api'), `POST /in HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${size}\r\n\r\n`, KIB64, size / KIB64.length);
    assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
    assert.equal(r.sentAfter, size);
    assert.equal(r.reply?.status, 413);
    assert.equal(r.reply?.headers.connection, 'close');
    assert.equal(JSON.parse(r.reply!.body).code, 'EG_PAYLOAD_TOO_LARGE');
    // What came after the refused body is discarded too, never parsed as a request.
    const t = await sendPastAnswer(gw.port('api'), `POST /in HTTP/1.1\r\nHost: gw\r\nContent-Length: ${MAX_BODY + 1}\r\n\r\n`, Buffer.from('x'.repeat(MAX_BODY + 1) + tail), 1);
    assert.equal(t.error, undefined);
    assert.equal(t.reply?.status, 413);
  });

  it('413 for a chunked body that grows past maxBodyBytes', async () => {
    const chunk = Buffer.concat([Buffer.from(`${KIB64.length.toString(16)}\r\n`), KIB64, Buffer.from('\r\n')]);
    const head = Buffer.concat([Buffer.from('POST /in HTTP/1.1\r\nHost: gw\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n'), chunk, chunk]);
    const r = await sendPastAnswer(gw.port('api'), head, chunk, 64);
    assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
    assert.equal(r.sentAfter, 64 * chunk.length);
    assert.equal(r.reply?.status, 413);
    assert.equal(JSON.parse(r.reply!.body).code, 'EG_PAYLOAD_TOO_LARGE');
  });

  it('400 for a request without Host whose body is still coming', async () => {
    const size = 4 * 1024 * 1024;
    const r = await sendPastAnswer(gw.port('api'), `POST /in HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: ${size}\r\n\r\n`, KIB64, size / KIB64.length);
    assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
    assert.equal(r.reply?.status, 400);
    assert.match(JSON.parse(r.reply!.body).detail, /Host/);
  });

  it('404, 405 and 415 refused before the body, to a client that sent Connection: close, while its body is still coming', async () => {
    const size = 1024 * 1024;
    const cases: [string, number][] = [
      ['POST /nope HTTP/1.1', 404],
      ['PUT /in HTTP/1.1', 405],
      ['POST /in HTTP/1.1\r\nContent-Type: application/xml', 415],
      ['POST /in HTTP/1.1\r\nContent-Encoding: bogus', 415],
    ];
    for (const [head, status] of cases) {
      const r = await sendPastAnswer(gw.port('api'), `${head}\r\nHost: gw\r\nConnection: close\r\nContent-Length: ${size}\r\n\r\n`, KIB64, size / KIB64.length);
      assert.equal(r.error, undefined, `${head}: the client met ${r.error} after the answer`);
      assert.equal(r.sentAfter, size, head);
      assert.equal(r.reply?.status, status, head);
    }
  });

  it("431 (node's parser) for a head over maxHeaderBytes while the client still sends it", async () => {
    const r = await sendPastAnswer(gw.port('api'), `POST /in HTTP/1.1\r\nHost: gw\r\nX-Big: ${'b'.repeat(8192)}`, KIB64, 64);
    assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
    assert.equal(r.sentAfter, 64 * KIB64.length);
    assert.equal(r.reply?.status, 431);
    assert.equal(JSON.parse(r.reply!.body).code, 'EG_HEADERS_TOO_LARGE');
  });

  it("400 (node's parser) for bytes that are not HTTP, and more behind them", async () => {
    const r = await sendPastAnswer(gw.port('api'), 'POST /in HTTP/1.1\r\nHost: gw\r\nContent-Length: nope\r\n\r\n', Buffer.from(pipelined('{"hidden":2}').repeat(500)), 16);
    assert.equal(r.error, undefined, `the client met ${r.error} after the answer`);
    assert.equal(r.reply?.status, 400);
    assert.equal(JSON.parse(r.reply!.body).code, 'EG_BAD_REQUEST');
    await nothingPublished();
  });

  it('a client that never stops sending is closed all the same (the linger is bounded)', async () => {
    const socket = connect(gw.port('api'), '127.0.0.1');
    socket.on('error', () => undefined);
    let stop = false;
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.once('connect', async () => {
      socket.write(`POST /in HTTP/1.1\r\nHost: gw\r\nContent-Length: ${1024 * 1024 * 1024}\r\n\r\n`);
      while (!stop && !socket.destroyed) await new Promise<void>((done) => socket.write(KIB64, () => done()));
    });
    socket.resume();
    await closed;
    stop = true;
  });

  it('curl uploading a body well past maxBodyBytes reads the 413 (exit 0), Content-Length or chunked, every run', async () => {
    const dir = tempDir('eg-linger');
    try {
      const file = join(dir, 'body.txt');
      writeFileSync(file, Buffer.alloc(20 * 1024 * 1024, 'a'));
      for (let run = 0; run < 4; run++) {
        for (const headers of [['Content-Type: text/plain'], ['Content-Type: text/plain', 'Transfer-Encoding: chunked'], ['Content-Type: text/plain', 'Host:']]) {
          const r = await curlUpload(gw.url('api', '/in'), file, headers);
          assert.equal(r.exit, 0, `curl ${headers.join(', ')}: exit ${r.exit}, status ${r.status} (run ${run})`);
          assert.equal(r.status, headers.includes('Host:') ? '400' : '413');
          assert.equal(JSON.parse(r.body).status, Number(r.status));
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
