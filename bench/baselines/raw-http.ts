/**
 * Baseline for http-memory: what node:http alone costs for the same exchange — read the body,
 * JSON.parse it, answer 200 with a small JSON body. Runs in its own process, like the gateway.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce } from './announce.js';

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let value: unknown;
    try {
      value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400).end();
      return;
    }
    const body = JSON.stringify({ accepted: typeof value === 'object' });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
