import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { eventually } from './gateway.js';

export interface Held {
  n: number;
  key: string;
  res: ServerResponse;
}

/**
 * A webhook endpoint that answers only when the test lets it: it counts the requests in flight
 * (overall and per key) at the moment each arrives, so concurrency is measured where it happens.
 */
export class SlowEndpoint {
  readonly arrivals: { n: number; key: string }[] = [];
  readonly held: Held[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** The most requests of one key in flight at once. */
  maxPerKey = 0;
  private readonly perKey = new Map<string, number>();
  /** Called on each arrival; answers (res.end) now or later. Default: hold until release(). */
  onArrival: (h: Held) => void = (h) => this.held.push(h);
  private constructor(private readonly server: Server) {}

  static async start(): Promise<SlowEndpoint> {
    const server = createServer();
    const e = new SlowEndpoint(server);
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const { n } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { n: number };
        const key = String(req.headers['x-key']);
        e.arrivals.push({ n, key });
        e.inFlight++;
        e.maxInFlight = Math.max(e.maxInFlight, e.inFlight);
        const k = (e.perKey.get(key) ?? 0) + 1;
        e.perKey.set(key, k);
        e.maxPerKey = Math.max(e.maxPerKey, k);
        res.on('finish', () => {
          e.inFlight--;
          e.perKey.set(key, e.perKey.get(key)! - 1);
        });
        e.onArrival({ n, key, res });
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return e;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Answers every held request with `status` (the oldest first). */
  release(status = 200): void {
    for (const h of this.held.splice(0)) h.res.writeHead(status).end();
  }

  reset(): void {
    this.held.length = 0;
    this.arrivals.length = 0;
    this.maxInFlight = 0;
    this.maxPerKey = 0;
  }

  /**
   * What `publish` sends (messages numbered `ns`) is held until `inHand` requests wait at once,
   * then every one is answered: the route kept exactly `inHand` in hand, and each message came once.
   */
  async takesInWindowsOf(inHand: number, ns: readonly number[], publish: () => Promise<void>): Promise<void> {
    this.reset();
    this.onArrival = (h) => this.held.push(h);
    await publish();
    await eventually(() => assert.equal(this.held.length, inHand), 15000, 50);
    this.onArrival = (h) => h.res.end();
    this.release();
    await eventually(() => assert.equal(this.arrivals.length, ns.length), 15000, 50);
    assert.equal(this.maxInFlight, inHand);
    assert.deepEqual(
      this.arrivals.map((a) => a.n).sort((a, b) => a - b),
      [...ns].sort((a, b) => a - b),
    );
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/**
 * Holds each request until every key of `keys` that still has requests to come (`perKey` each)
 * has one in flight, then answers the oldest: so the keys were in flight side by side, and a
 * gateway that held them back (one request at a time) stalls here. The first request of `failOnce`
 * is answered 503 once: the target retries it before that key's next message goes.
 */
export function answerSideBySide(e: SlowEndpoint, keys: readonly string[], perKey: number, failOnce?: string): void {
  let failed = false;
  const answered = new Map<string, number>();
  const open = () => keys.filter((k) => (answered.get(k) ?? 0) < perKey).length;
  e.onArrival = (h) => {
    e.held.push(h);
    while (e.held.length > 0 && e.held.length >= open()) {
      const oldest = e.held.shift()!;
      const fail = oldest.key === failOnce && !failed;
      if (fail) failed = true;
      else answered.set(oldest.key, (answered.get(oldest.key) ?? 0) + 1);
      oldest.res.writeHead(fail ? 503 : 200).end();
    }
  };
}

/**
 * After answerSideBySide, with message n of key `keys[n % keys.length]`: waits for all `total`
 * and the one retry, then checks the keys went side by side, one request per key at a time, each
 * key's messages in order, the one that failed once retried right after its first try.
 */
export async function arrivedSideBySide(e: SlowEndpoint, keys: readonly string[], total: number, failedOnce: string): Promise<void> {
  await eventually(() => assert.equal(e.arrivals.length, total + 1, JSON.stringify({ arrivals: e.arrivals, held: e.held.map((h) => h.n) })), 30000, 50);
  assert.equal(e.maxPerKey, 1, 'one request per key in flight');
  assert.ok(e.maxInFlight >= keys.length, `keys went side by side (at most ${e.maxInFlight} in flight)`);
  for (const [i, key] of keys.entries()) {
    const expected = Array.from({ length: total }, (_, n) => n).filter((n) => n % keys.length === i);
    assert.deepEqual(
      e.arrivals.filter((a) => a.key === key).map((a) => a.n),
      key === failedOnce ? [expected[0]!, ...expected] : expected,
      `order of ${key}`,
    );
  }
}
