/**
 * The webhook target's HTTP client: undici's Agent (the client behind Node's own fetch), one per
 * target, keeping up to `concurrency` connections alive per origin with one request at a time on
 * each. node:http's client (ClientRequest, the Agent's bookkeeping, the IncomingMessage stream)
 * cost more CPU per request than the rest of a delivery's path; undici's dispatch API costs a
 * fraction of it and leaves HTTP/1.1 framing (chunked answers, 1xx, close-delimited bodies,
 * connection reuse) to a client that is maintained for it. A delivery needs only the status, the
 * `Retry-After` header and, for a failure, the beginning of the body; a 2xx body is read and
 * dropped so the connection can be reused.
 */
import type { Dispatcher } from 'undici';
import { whenUsed } from '../when-used.js';

/** undici is loaded with the first webhook target: a gateway without one pays neither its memory nor its start-up time. */
const undici = whenUsed<typeof import('undici')>(import.meta.url, 'undici');

/** A request as the target prepared it: header names in lower case, values checked. */
export interface ClientRequest {
  /** `http(s)://host:port`. */
  origin: string;
  /** Path and query string. */
  path: string;
  method: 'POST' | 'PUT' | 'PATCH';
  /** Name, value, name, value, ... */
  headers: string[];
  body: Buffer;
}

/** A complete answer: its status, `Retry-After`, and (for non-2xx answers) up to MAX_TEXT characters of its body. */
export interface ClientAnswer {
  status: number;
  retryAfter: string | undefined;
  text: string;
}

/** How a request ended: an answer, or why there is none (the error's `code` when it has one). */
export type ClientCallback = (err: (Error & { code?: string }) | undefined, answer: ClientAnswer | undefined) => void;

/** A request in flight; abort() ends it (its connection is closed) without a callback. */
export interface Exchange {
  abort(): void;
}

/** Body bytes of a failed answer kept for the log (enough for MAX_TEXT characters of UTF-8). */
const MAX_TEXT = 4096;
const ABORTED = new Error('the webhook target gave up on this request');

export class HttpClient {
  private readonly agent: Dispatcher;

  constructor(connections: number) {
    this.agent = new (undici().Agent)({ connections, pipelining: 1 });
  }

  request(req: ClientRequest, done: ClientCallback): Exchange {
    let abort: ((err: Error) => void) | undefined;
    let over = false;
    let status = 0;
    let retryAfter: string | undefined;
    let kept: Buffer[] | undefined;
    let keptBytes = 0;
    const finish = (err: Error | undefined, answer: ClientAnswer | undefined) => {
      if (over) return;
      over = true;
      done(err, answer);
    };
    // undici's own handler interface (raw header buffers): its newer one parses every answer's headers into an object first.
    const handler: Dispatcher.DispatchHandler = {
      onConnect: (a) => {
        abort = a;
        if (over) a(ABORTED);
      },
      onHeaders: (statusCode, rawHeaders) => {
        status = statusCode;
        for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
          const name = rawHeaders[i]!;
          if (name.length === 11 && name.toString('latin1').toLowerCase() === 'retry-after') retryAfter = rawHeaders[i + 1]!.toString('latin1');
        }
        if (statusCode >= 300) kept = [];
        return true;
      },
      onData: (chunk) => {
        if (kept && keptBytes < MAX_TEXT) {
          kept.push(chunk);
          keptBytes += chunk.length;
        }
        return true;
      },
      onComplete: () => finish(undefined, { status, retryAfter, text: kept ? Buffer.concat(kept).toString('utf8').slice(0, MAX_TEXT) : '' }),
      onError: (err) => finish(err, undefined),
    };
    this.agent.dispatch({ origin: req.origin, path: req.path, method: req.method, headers: req.headers, body: req.body, headersTimeout: 0, bodyTimeout: 0 }, handler);
    return {
      abort: () => {
        if (over) return;
        over = true;
        abort?.(ABORTED);
      },
    };
  }

  /** Closes every connection: requests in flight end with an error (the route is stopping and gave them their grace). */
  close(): void {
    void this.agent.destroy().catch(() => undefined);
  }
}
