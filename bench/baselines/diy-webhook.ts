/**
 * Baseline for webhook: what one would write by hand. `POST /in` bodies are parsed as JSON (the
 * gateway parses them too: its routes work on values) and go into an in-memory queue (answered 200
 * once queued, as a memory topic answers); one consumer takes them in order and POSTs each, as
 * JSON, to SINK_URL over a kept-alive connection, the next only after a 2xx (the same
 * at-least-once, one-at-a-time delivery as the gateway's consume route; retried on failure).
 */
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce } from './announce.js';

const sink = new URL(process.env.SINK_URL!);
const agent = new Agent({ keepAlive: true, maxSockets: 1 });
const queue: unknown[] = [];
let consuming = false;

function deliver(value: unknown): Promise<boolean> {
  const body = Buffer.from(JSON.stringify(value));
  return new Promise((resolve) => {
    const req = request({ host: sink.hostname, port: Number(sink.port), path: sink.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode! >= 200 && res.statusCode! < 300));
    });
    req.on('error', () => resolve(false));
    req.end(body);
  });
}

async function consume(): Promise<void> {
  if (consuming) return;
  consuming = true;
  while (queue.length > 0) {
    if (await deliver(queue[0]!)) queue.shift();
  }
  consuming = false;
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
    void consume();
  });
});
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
