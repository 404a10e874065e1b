import { once } from 'node:events';
import WebSocket from 'ws';

export interface HttpReply {
  status: number;
  headers: Headers;
  body: any;
  text: string;
}

/** POSTs JSON (or a raw string with its own content type) and parses the JSON reply. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpReply> {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(url, { method: 'POST', body: raw, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  let parsed: any;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** A WebSocket client that queues what it receives, so tests can await frames in order. */
export class WsClient {
  readonly frames: string[] = [];
  private waiting: ((f: string) => void)[] = [];
  closed: { code: number; reason: string } | undefined;
  private closeWaiters: ((c: { code: number; reason: string }) => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const f = data.toString();
      const w = this.waiting.shift();
      if (w) w(f);
      else this.frames.push(f);
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      for (const w of this.closeWaiters.splice(0)) w(this.closed);
    });
  }

  static async connect(url: string, options: WebSocket.ClientOptions = {}): Promise<WsClient> {
    const ws = new WebSocket(url, options);
    const client = new WsClient(ws);
    await Promise.race([
      once(ws, 'open'),
      once(ws, 'unexpected-response').then(([, res]) => {
        throw Object.assign(new Error(`handshake refused: ${(res as { statusCode: number }).statusCode}`), { statusCode: (res as { statusCode: number }).statusCode });
      }),
      once(ws, 'error').then(([err]) => {
        throw err;
      }),
    ]);
    return client;
  }

  send(value: unknown): void {
    this.ws.send(typeof value === 'string' ? value : JSON.stringify(value));
  }

  /** The next frame, parsed as JSON; rejects after `timeoutMs`. */
  async next(timeoutMs = 5000): Promise<any> {
    return JSON.parse(await this.nextText(timeoutMs));
  }

  nextText(timeoutMs = 5000): Promise<string> {
    const queued = this.frames.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.splice(this.waiting.indexOf(w), 1);
        reject(new Error('timed out waiting for a frame'));
      }, timeoutMs);
      const w = (f: string) => {
        clearTimeout(timer);
        resolve(f);
      };
      this.waiting.push(w);
    });
  }

  /** Resolves when nothing arrives for `ms` (asserts silence). */
  async nothingFor(ms: number): Promise<string | undefined> {
    await new Promise((r) => setTimeout(r, ms));
    return this.frames.shift();
  }

  waitClose(timeoutMs = 5000): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for close')), timeoutMs);
      this.closeWaiters.push((c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
  }

  close(): void {
    this.ws.close();
  }
}
