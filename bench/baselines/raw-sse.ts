/**
 * Baseline for sse-fanout: a hand-written node:http Server-Sent Events broadcaster. `POST /publish`
 * bodies are written as one `data:` event to every `GET` stream, then answered 200.
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce } from './announce.js';

const streams = new Set<ServerResponse>();

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    streams.add(res);
    res.on('close', () => streams.delete(res));
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const event = Buffer.from(`data: ${Buffer.concat(chunks).toString('utf8')}\n\n`);
    for (const s of streams) s.write(event);
    res.writeHead(200, { 'content-length': 2 });
    res.end('{}');
  });
});
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
