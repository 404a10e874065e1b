import { request } from 'node:http';

/**
 * The part of `fetch` the tests use, over node:http. Node 20 loads its `fetch` (undici, with web
 * streams and a WebAssembly HTTP parser) on first use: ~150 ms of CPU in each test file's process,
 * ~20 s over a run (docs/testing.md "Time budget"). A test that reads a response as a stream
 * (Server-Sent Events) keeps the global `fetch`.
 *
 * What it keeps of `fetch`: the default headers a gateway could answer differently without
 * (`accept: * / *`, and `content-type: text/plain;charset=UTF-8` for a string body that names
 * none); a connection refused or reset rejects with a `TypeError('fetch failed')` whose `cause`
 * is the socket's error; a `signal` aborts with its reason; header names are matched without
 * regard to case and repeated ones joined with ", ". Redirects are not followed (the gateway
 * sends none), and only http: URLs are taken.
 */
export interface FetchInit {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
  /** The source address to connect from (not `fetch`'s: a test that is several clients, 127.0.0.2 and so on). */
  localAddress?: string;
}

/** A response's headers, read as a `Headers` is. */
export class ReplyHeaders {
  readonly #values = new Map<string, string>();

  constructor(raw: readonly string[]) {
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      const previous = this.#values.get(name);
      this.#values.set(name, previous === undefined ? raw[i + 1]! : `${previous}, ${raw[i + 1]!}`);
    }
  }

  get(name: string): string | null {
    return this.#values.get(name.toLowerCase()) ?? null;
  }

  has(name: string): boolean {
    return this.#values.has(name.toLowerCase());
  }

  entries(): IterableIterator<[string, string]> {
    return this.#values.entries();
  }

  forEach(each: (value: string, name: string) => void): void {
    for (const [name, value] of this.#values) each(value, name);
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.#values.entries();
  }
}

/** A whole response, read before it is handed over. */
export class Reply {
  readonly ok: boolean;

  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly headers: ReplyHeaders,
    readonly bytes: Buffer,
  ) {
    this.ok = status >= 200 && status < 300;
  }

  /** The body is read whole, so a copy is this reply again. */
  clone(): Reply {
    return this;
  }

  async text(): Promise<string> {
    return this.bytes.toString('utf8');
  }

  async json(): Promise<any> {
    return JSON.parse(this.bytes.toString('utf8'));
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    return this.bytes.buffer.slice(this.bytes.byteOffset, this.bytes.byteOffset + this.bytes.byteLength) as ArrayBuffer;
  }
}

export function fetch(url: string | URL, init: FetchInit = {}): Promise<Reply> {
  const target = new URL(url);
  if (target.protocol !== 'http:') return Promise.reject(new TypeError(`test fetch takes http: URLs only, not ${target.protocol}`));
  const headers: Record<string, string> = { accept: '*/*' };
  for (const [name, value] of Object.entries(init.headers ?? {})) headers[name.toLowerCase()] = value;
  if (typeof init.body === 'string' && headers['content-type'] === undefined) headers['content-type'] = 'text/plain;charset=UTF-8';
  const body = init.body === undefined ? undefined : typeof init.body === 'string' ? Buffer.from(init.body) : init.body;
  if (body !== undefined) headers['content-length'] = String(body.byteLength);
  const { signal } = init;
  return new Promise<Reply>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const req = request(target, { method: (init.method ?? 'GET').toUpperCase(), headers, localAddress: init.localAddress });
    const onAbort = () => req.destroy(signal!.reason as Error);
    signal?.addEventListener('abort', onAbort, { once: true });
    const fail = (err: Error) => {
      signal?.removeEventListener('abort', onAbort);
      reject(signal?.aborted ? signal.reason : new TypeError('fetch failed', { cause: err }));
    };
    req.on('error', fail);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', fail);
      res.on('end', () => {
        signal?.removeEventListener('abort', onAbort);
        resolve(new Reply(res.statusCode!, res.statusMessage ?? '', new ReplyHeaders(res.rawHeaders), Buffer.concat(chunks)));
      });
    });
    req.end(body);
  });
}
