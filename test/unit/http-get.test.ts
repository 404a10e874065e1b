import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { httpGet } from '../../src/core/http-get.js';

/**
 * httpGet (jwksUrl, AsyncAPI remote $refs, plan --admin) against a real server that compresses its
 * answer whether asked or not, as an object stored compressed (S3's Content-Encoding metadata) is
 * served: fetch, which these callers used before, undid the coding; raw gzip bytes are no key set.
 */
describe('httpGet: an answer with a Content-Encoding', () => {
  const keySet = JSON.stringify({ keys: [] });
  let server: Server;
  let base: string;
  before(async () => {
    server = createServer((req, res) => {
      if (req.url === '/gzip') res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(keySet));
      else if (req.url === '/br') res.writeHead(200, { 'content-encoding': 'br' }).end(brotliCompressSync(keySet));
      else if (req.url === '/bomb') res.writeHead(200, { 'content-encoding': 'gzip' }).end(gzipSync(Buffer.alloc(1024 * 1024)));
      else if (req.url === '/broken') res.writeHead(200, { 'content-encoding': 'gzip' }).end('not gzip');
      else res.writeHead(200, { 'content-encoding': 'compress' }).end('raw');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('gives the body decoded (gzip, br), as fetch did', async () => {
    for (const coding of ['gzip', 'br']) {
      const a = await httpGet(`${base}/${coding}`, { maxBytes: 1000 });
      assert.equal(a.body.toString('utf8'), keySet, coding);
      assert.equal(a.tooLarge, false);
    }
  });

  it('is tooLarge when the body decodes to more than maxBytes (a small answer that inflates to a MiB)', async () => {
    const a = await httpGet(`${base}/bomb`, { maxBytes: 64 * 1024 });
    assert.equal(a.tooLarge, true);
    assert.equal(a.body.length, 0);
  });

  it('fails on a body that is not of its coding, and gives an unknown coding as sent (as fetch)', async () => {
    await assert.rejects(httpGet(`${base}/broken`), /not valid gzip data/);
    assert.equal((await httpGet(`${base}/other`)).body.toString(), 'raw');
  });
});
