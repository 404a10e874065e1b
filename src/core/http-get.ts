/**
 * The GET the gateway and its CLI make of servers the operator names: `plan --admin`'s admin API,
 * an `auth` step's jwksUrl, an AsyncAPI document's remote `$ref`. node's own http/https client, not
 * fetch: fetch refuses the ports the Fetch standard blocks for browsers (10080, 6000, 6665-6669,
 * 6697, 5060, ...: "bad port"), on which such a server answers like on any other. Like those
 * callers' fetch: redirects are not followed (the caller sees the 3xx and its Location), the
 * system's CAs (and NODE_EXTRA_CA_CERTS) are trusted, no proxy is used, and a URL with a user or
 * password is refused. An answer sent compressed, though no Accept-Encoding asked for it (an object
 * stored gzipped, as S3 serves one), is decoded as fetch decoded it, to no more than `maxBytes`. Webhook targets have their own client (src/kinds/targets/webhook-client.ts),
 * built for many POSTs a second.
 */
import { type IncomingHttpHeaders, type IncomingMessage, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { constants as bufferConstants } from 'node:buffer';
import { contentCodings, decodeBody } from './content-coding.js';

export interface HttpGetOptions {
  /** Header names in lower case. `accept` is `*\/*` and `user-agent` `eventgate` unless given. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Ends the request, the answer's body too, rejecting with the signal's reason (`AbortSignal.timeout`'s is a TimeoutError, as fetch's). */
  readonly signal?: AbortSignal;
  /** Gives up after this long without a byte from the server: an error whose `code` is ETIMEDOUT. */
  readonly idleTimeoutMs?: number;
  /** The most bytes of body read: an answer with more (by its Content-Length, or as read) is `tooLarge`, the rest not read. */
  readonly maxBytes?: number;
  /** Whether the body of an answer with this status is read (default: every body); one not read is dropped with its connection. */
  readonly readBody?: (status: number) => boolean;
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The body, its Content-Encoding (gzip, deflate, br) undone; empty when it was not read or was too large. */
  readonly body: Buffer;
  /** The body holds (or decodes to) more than `maxBytes`. */
  readonly tooLarge: boolean;
}

/** GETs `url` (http: or https:); rejects when there is no answer, with the error's `code` (ECONNREFUSED, ENOTFOUND, ETIMEDOUT, ...) saying why. */
export function httpGet(url: string | URL, options: HttpGetOptions = {}): Promise<HttpAnswer> {
  const { signal, idleTimeoutMs, maxBytes = Infinity, readBody = () => true } = options;
  const target = typeof url === 'string' ? new URL(url) : url;
  if (target.protocol !== 'http:' && target.protocol !== 'https:') return Promise.reject(new TypeError(`only http: and https: URLs are fetched, not ${target.protocol}`));
  // fetch refused these; here the user and password would go out as Basic credentials to a server that asked for none.
  if (target.username !== '' || target.password !== '') return Promise.reject(new TypeError('a URL with a user or password (user:password@) is not fetched'));
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise((resolve, reject) => {
    let settled = false;
    const settle = (err: unknown, answer?: HttpAnswer) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      if (answer) resolve(answer);
      else reject(err);
    };
    const onAbort = () => {
      settle(signal!.reason);
      req.destroy();
    };
    // fetch sent both too: a server may refuse a request that names no client.
    const headers = { accept: '*/*', 'user-agent': 'eventgate', ...options.headers };
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    // A connection of its own (`Connection: close`): node's global agent gives a request its idle
    // sockets' 5 s timeout, which cut a schema server that took longer than that to answer; these
    // requests are few (a key set every few minutes, a document's references, one plan).
    const req = send(target, { headers, agent: false, ...(idleTimeoutMs !== undefined ? { timeout: idleTimeoutMs } : {}) }, (res: IncomingMessage) => {
      const status = res.statusCode ?? 0;
      const answer = (body: Buffer, tooLarge: boolean): HttpAnswer => ({ status, headers: res.headers, body, tooLarge });
      const declared = Number(res.headers['content-length']);
      if (!readBody(status) || declared > maxBytes) {
        settle(undefined, answer(Buffer.alloc(0), declared > maxBytes && readBody(status)));
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        if (bytes > maxBytes) {
          settle(undefined, answer(Buffer.alloc(0), true));
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.on('error', (err) => settle(err));
      let ended = false;
      res.on('end', () => {
        ended = true;
        const body = Buffer.concat(chunks);
        // A coding fetch did not know either (compress, ...) is given as sent, as fetch gave it.
        const codings = contentCodings(res.headers['content-encoding']);
        if (!codings.ok || codings.codings.length === 0) return settle(undefined, answer(body, false));
        decodeBody(body, codings.codings, Math.min(maxBytes, bufferConstants.MAX_LENGTH)).then((decoded) => {
          if (decoded.ok) settle(undefined, answer(decoded.body, false));
          else if (decoded.problem.code === 'EG_PAYLOAD_TOO_LARGE') settle(undefined, answer(Buffer.alloc(0), true));
          else settle(new Error(`the answer's ${decoded.problem.detail.replace(/^the /, '')}`));
        });
      });
      // A connection closed before the body's end is no answer (fetch failed such a read too); one
      // closed after it, while the body is decoded, is the usual end of a `Connection: close`.
      res.on('close', () => ended || settle(Object.assign(new Error('the connection closed before the answer ended'), { code: 'ECONNRESET' })));
    });
    if (idleTimeoutMs !== undefined)
      req.on('timeout', () => {
        settle(Object.assign(new Error(`no answer within ${idleTimeoutMs! / 1000} s`), { code: 'ETIMEDOUT' }));
        req.destroy();
      });
    req.on('error', (err) => settle(err));
    signal?.addEventListener('abort', onAbort, { once: true });
    req.end();
  });
}

/** A header's one value (the first of a repeated one). */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}
