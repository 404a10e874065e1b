import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { fetch } from '../helpers/http.js';
import { parseReplies, rawHttpText } from '../helpers/raw-http.js';

/** curl posting `body` as given (already compressed) with `headers`: its status and answer. */
function curlPost(url: string, body: Buffer, headers: string[]): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-s', '-w', '\n%{http_code}', '--data-binary', '@-', ...headers.flatMap((h) => ['-H', h]), url], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`curl exited ${code}`));
      const cut = out.lastIndexOf('\n');
      resolve({ status: Number(out.slice(cut + 1)), body: JSON.parse(out.slice(0, cut)) });
    });
    child.stdin.end(body);
  });
}

/**
 * Compressed request bodies (Content-Encoding), as log shippers and telemetry exporters post them:
 * decoded before the route sees them, bounded by maxBodyBytes once decoded, refused with a
 * specific answer when they cannot be. A webhook receiver shows exactly what went on.
 */
describe('HTTP publish of compressed bodies (Content-Encoding)', () => {
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
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1, maxBodyBytes: 4096 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { http: { url: "${out.url}/hook" } }
`,
  );

  /** Posts with fetch, which sends the bytes as given. */
  const send = async (body: Buffer, headers: Record<string, string>) => {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
    return { status: res.status, headers: res.headers, body: (await res.json()) as any };
  };

  it('takes a gzip body from curl and delivers it decompressed, without its Content-Encoding', async () => {
    const before = out.requests.length;
    const event = { order: 41, items: ['tea', 'scones'], note: 'x'.repeat(2000) };
    const reply = await curlPost(gw.url('api', '/in'), gzipSync(JSON.stringify(event)), ['Content-Type: application/json', 'Content-Encoding: gzip']);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    const [got] = (await out.received(before + 1)).slice(before);
    assert.deepEqual(JSON.parse(got!.body), event);
    assert.equal(got!.headers['content-encoding'], undefined, 'the delivered body is not compressed, so the header does not travel');
  });

  it('decodes deflate (zlib and raw), br, x-gzip, identity and two codings in the order they were applied', async () => {
    const json = (n: number) => Buffer.from(JSON.stringify({ n }));
    const cases: [string, Buffer][] = [
      ['deflate', deflateSync(json(1))],
      ['deflate', deflateRawSync(json(2))],
      ['br', brotliCompressSync(json(3))],
      ['x-gzip', gzipSync(json(4))],
      ['identity', json(5)],
      // gzip applied first, then br (RFC 9110 §8.4: listed in the order applied).
      ['gzip, br', brotliCompressSync(gzipSync(json(6)))],
      ['GZIP', gzipSync(json(7))],
    ];
    const before = out.requests.length;
    for (const [coding, body] of cases) {
      const reply = await send(body, { 'content-encoding': coding });
      assert.equal(reply.status, 200, `${coding}: ${JSON.stringify(reply.body)}`);
    }
    const got = (await out.received(before + cases.length)).slice(before);
    assert.deepEqual(
      got.map((r) => JSON.parse(r.body).n),
      [1, 2, 3, 4, 5, 6, 7],
    );
  });

  it('decodes the body of a binary-mode CloudEvent, whose bytes are the data', async () => {
    const before = out.requests.length;
    const bytes = Buffer.from([0x00, 0xff, 0x10, 0x80, 0x7b]);
    const reply = await send(gzipSync(bytes), {
      'content-type': 'application/octet-stream',
      'content-encoding': 'gzip',
      'ce-specversion': '1.0',
      'ce-id': 'z-1',
      'ce-source': '/zip',
      'ce-type': 'blob',
    });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    const [got] = (await out.received(before + 1)).slice(before);
    assert.deepEqual(got!.bytes, bytes, 'the data, not its compressed bytes');
    assert.equal(got!.headers['ce-id'], 'z-1');
  });

  it('stops a body that decompresses past maxBodyBytes with 413, and delivers nothing of it', async () => {
    const before = out.requests.length;
    // 2 KB on the wire, 1 MB once inflated: the limit holds for what the body becomes.
    const bomb = gzipSync(Buffer.from(JSON.stringify({ pad: '0'.repeat(1024 * 1024) })));
    assert.ok(bomb.length < 4096);
    const reply = await send(bomb, { 'content-encoding': 'gzip' });
    assert.equal(reply.status, 413);
    assert.equal(reply.headers.get('content-type'), 'application/problem+json');
    assert.equal(reply.body.code, 'EG_PAYLOAD_TOO_LARGE');
    assert.equal(reply.body.detail, 'the gzip body decompresses to more than 4096 bytes, the most this listener accepts');
    // A body that decompresses to exactly the limit is taken.
    const exact = Buffer.from(JSON.stringify({ pad: 'y'.repeat(4096 - 10) }));
    assert.equal(exact.length, 4096);
    assert.equal((await send(gzipSync(exact), { 'content-encoding': 'gzip' })).status, 200);
    const got = (await out.received(before + 1)).slice(before);
    assert.equal(got.length, 1);
    assert.equal(JSON.parse(got[0]!.body).pad.length, 4086);
  });

  it('answers 400 naming the coding for a body that is not what its Content-Encoding says, and delivers nothing', async () => {
    const before = out.requests.length;
    for (const [coding, body] of [
      ['gzip', Buffer.from('{"plain": "json"}')],
      ['br', Buffer.from('not brotli at all')],
      ['gzip', gzipSync('{"cut": true}').subarray(0, 12)],
      ['gzip', Buffer.alloc(0)],
    ] as const) {
      const reply = await send(body, { 'content-encoding': coding });
      assert.equal(reply.status, 400, coding);
      assert.equal(reply.body.code, 'EG_BAD_REQUEST');
      assert.match(reply.body.detail, new RegExp(`^the body is not valid ${coding} data \\(.+\\), as its Content-Encoding says$`));
    }
    assert.equal((await send(gzipSync('{"after": 1}'), { 'content-encoding': 'gzip' })).status, 200);
    const got = (await out.received(before + 1)).slice(before);
    assert.deepEqual(
      got.map((r) => JSON.parse(r.body)),
      [{ after: 1 }],
    );
  });

  it('answers 415 with Accept-Encoding for a coding it does not decode, rather than parsing compressed bytes', async () => {
    for (const [coding, detail] of [
      ['zstd', "content encoding 'zstd' is not accepted; send the body uncompressed or as gzip, deflate, br"],
      ['gzip, compress', "content encoding 'compress' is not accepted; send the body uncompressed or as gzip, deflate, br"],
      ['gzip, gzip, gzip', '3 content encodings on one body are not accepted; at most 2'],
    ] as const) {
      const reply = await send(Buffer.from('{"a": 1}'), { 'content-encoding': coding });
      assert.equal(reply.status, 415, coding);
      assert.equal(reply.headers.get('accept-encoding'), 'gzip, deflate, br');
      assert.equal(reply.body.code, 'EG_UNSUPPORTED_MEDIA_TYPE');
      assert.equal(reply.body.detail, detail);
    }
  });

  it('answers 501 to a transfer coding other than chunked, rather than reading its bytes as uncoded', async () => {
    const before = out.requests.length;
    // node's parser drops the `gzip` of `gzip, chunked`: the bytes were delivered as sent (here JSON, so a 200).
    const body = '{"te": 1}';
    const raw = await rawHttpText(
      gw.port('api'),
      `POST /in HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    );
    const [reply] = parseReplies(raw);
    assert.equal(reply!.status, 501, raw);
    assert.equal(JSON.parse(reply!.body).code, 'EG_TRANSFER_CODING_UNSUPPORTED');
    const sentinel = await send(Buffer.from('{"te": 2}'), {});
    assert.equal(sentinel.status, 200);
    await out.received(before + 1);
    assert.deepEqual(JSON.parse(out.requests.at(-1)!.body), { te: 2 });
    assert.equal(out.requests.length, before + 1);
  });
});
