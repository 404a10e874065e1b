import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eventually } from './gateway.js';

export interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The body as it arrived (binary data). */
  bytes: Buffer;
  /** The client port: requests over one kept-alive connection share it. */
  remotePort: number;
}

/**
 * A real HTTP endpoint for webhook targets to call: records every request and answers what
 * `respond` says (200 by default). Waiters resolve once `n` requests arrived.
 */
export class WebhookReceiver {
  readonly requests: Received[] = [];
  respond: (r: Received, res: ServerResponse) => void = (_r, res) => res.end('ok');
  private waiters: { n: number; resolve: () => void }[] = [];
  private constructor(private readonly server: Server) {}

  static async start(): Promise<WebhookReceiver> {
    const server = createServer();
    const receiver = new WebhookReceiver(server);
    server.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const bytes = Buffer.concat(chunks);
        const r: Received = { method: req.method!, url: req.url!, headers: req.headers, body: bytes.toString('utf8'), bytes, remotePort: req.socket.remotePort! };
        receiver.requests.push(r);
        receiver.respond(r, res);
        for (const w of [...receiver.waiters]) {
          if (receiver.requests.length >= w.n) {
            receiver.waiters.splice(receiver.waiters.indexOf(w), 1);
            w.resolve();
          }
        }
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return receiver;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Resolves once `n` requests arrived in all (rejects after timeoutMs with what arrived). */
  received(n: number, timeoutMs = 15000): Promise<Received[]> {
    if (this.requests.length >= n) return Promise.resolve(this.requests.slice(0, n));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`expected ${n} webhook requests, got ${this.requests.length}`)), timeoutMs);
      this.waiters.push({ n, resolve: () => (clearTimeout(timer), resolve(this.requests.slice(0, n))) });
    });
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** Waits for message `total - 1` at the receiver's `path` (the route delivers in order), then checks that every number came once, in order. */
export async function everyOnceInOrder(receiver: WebhookReceiver, path: string, total: number): Promise<void> {
  const numbers = () => receiver.requests.filter((r) => r.url === path).map((r) => (JSON.parse(r.body) as { n: number }).n);
  await eventually(() => assert.ok(numbers().includes(total - 1), `message ${total - 1} delivered (${numbers().length} so far)`), 30000, 50);
  const got = numbers();
  const missing = Array.from({ length: total }, (_, i) => i).filter((n) => !got.includes(n));
  assert.deepEqual(missing, [], `${missing.length} of ${total} messages missing once the last one came`);
  assert.deepEqual(
    got,
    Array.from({ length: total }, (_, i) => i),
    'each message once, in order',
  );
}
