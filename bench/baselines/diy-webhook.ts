/**
 * Baseline for webhook: what one would write by hand. `POST /in` bodies are parsed as JSON (the
 * gateway parses them too: its routes work on values) and go into an in-memory queue (answered 200
 * once queued, as a memory topic answers); CONCURRENCY consumers (default 1) take them in order and
 * POST each, as JSON, to SINK_URL over kept-alive connections, each taking the next only after a
 * 2xx (at-least-once, as the gateway's consume route; a failed one is retried).
 */
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce } from './announce.js';

const sink = new URL(process.env.SINK_URL!);
const concurrency = Number(process.env.CONCURRENCY ?? 1);
const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
const queue: unknown[] = [];
let consumers = 0;

function deliver(value: unknown): Promise<boolean> {
  const body = Buffer.from(JSON.stringify(value));
  return new Promise((resolve) => {
    const req = request(
      { host: sink.hostname, port: Number(sink.port), path: sink.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode! >= 200 && res.statusCode! < 300));
      },
    );
    req.on('error', () => resolve(false));
    req.end(body);
  });
}

async function consume(): Promise<void> {
  consumers++;
  while (queue.length > 0) {
    const value = queue.shift();
    while (!(await deliver(value))) {
      // retried until the endpoint takes it
    }
  }
  consumers--;
}

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
    queue.push(value);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
    res.end('{}');
    if (consumers < concurrency) void consume();
  });
});
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
