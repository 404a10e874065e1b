/**
 * The webhook target's HTTP/1.1 client: one request at a time per kept-alive connection, at most
 * as many connections as requests in flight. node:http's client (ClientRequest, the Agent's
 * per-request bookkeeping, the IncomingMessage stream) cost 25–35 µs of CPU per request here, more
 * than the rest of a delivery's path; a webhook needs none of it: the request is a head and a
 * body written at once, the answer a status, two headers and a body read to its end (so the
 * connection can be reused) and kept only when it explains a failure.
 *
 * Answers are framed as RFC 9112 §6.3 says: no body for 1xx (skipped: a final answer follows),
 * 204 and 304; else chunked, else Content-Length, else until the server closes the connection
 * (which is then not reused). A connection is reused only after a complete answer that does not
 * ask to close it.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** Where a request goes. */
export interface ClientEndpoint {
  secure: boolean;
  hostname: string;
  port: number;
}

/** A complete answer: its status, `Retry-After`, and (for non-2xx answers) up to MAX_TEXT characters of its body. */
export interface ClientAnswer {
  status: number;
  retryAfter: string | undefined;
  text: string;
}

/** How a request ended: an answer, or why there is none (the error's `code`, as node:net or this parser names it). */
export type ClientCallback = (err: NodeJS.ErrnoException | undefined, answer: ClientAnswer | undefined) => void;

/** What node:http allows in a response head by default. */
const MAX_HEAD = 16 * 1024;
/** Body characters of a failed answer kept for the log. */
const MAX_TEXT = 4096;
const STATUS_LINE = /^HTTP\/1\.([01]) (\d{3})/;
/** A chunk-size line: at most 12 hex digits (no chunk of a terabyte), extensions ignored. */
const CHUNK_SIZE = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/;

/** A request in flight on one connection; abort() ends it (the connection is closed, no callback). */
export interface Exchange {
  abort(): void;
}

class Connection implements Exchange {
  readonly socket: Socket;
  private done: ClientCallback | undefined;
  /** Undecoded bytes of the answer as latin1 text (one character per byte). */
  private buf = '';
  /** What the next bytes are: the head, a body of known length, a body up to the close, or a chunked body's parts. */
  private phase: 'head' | 'length' | 'close' | 'size' | 'data' | 'crlf' | 'trailers' = 'head';
  private status = 0;
  private retryAfter: string | undefined;
  private keepAlive = true;
  /** Body bytes still expected (length), or of the current chunk (data). */
  private remaining = 0;
  private text = '';
  /** The answer is a 2xx: its body is read and dropped. */
  private dropBody = true;

  constructor(
    private readonly pool: ConnectionPool,
    readonly key: string,
    endpoint: ClientEndpoint,
  ) {
    const { hostname, port } = endpoint;
    this.socket = endpoint.secure ? tlsConnect({ host: hostname, port, servername: isIP(hostname) ? undefined : hostname }) : netConnect({ host: hostname, port });
    this.socket.setNoDelay(true);
    this.socket.on('data', (chunk: Buffer) => this.read(chunk));
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
    this.socket.on('close', () => this.closed());
  }

  get busy(): boolean {
    return this.done !== undefined;
  }

  send(data: Buffer, done: ClientCallback): void {
    this.done = done;
    this.buf = '';
    this.phase = 'head';
    this.text = '';
    this.retryAfter = undefined;
    this.socket.ref();
    this.socket.write(data);
  }

  /** Sends the head and a large body without copying them together. */
  sendParts(head: Buffer, body: Buffer, done: ClientCallback): void {
    this.done = done;
    this.buf = '';
    this.phase = 'head';
    this.text = '';
    this.retryAfter = undefined;
    this.socket.ref();
    this.socket.cork();
    this.socket.write(head);
    this.socket.write(body);
    process.nextTick(() => this.socket.uncork());
  }

  abort(): void {
    this.done = undefined;
    this.socket.destroy();
  }

  private read(chunk: Buffer): void {
    if (!this.done) {
      // Bytes nobody asked for: the connection is out of step, never reuse it.
      this.socket.destroy();
      return;
    }
    this.buf += chunk.toString('latin1');
    for (;;) {
      switch (this.phase) {
        case 'head': {
          const end = this.buf.indexOf('\r\n\r\n');
          if (end < 0) return this.buf.length > MAX_HEAD ? this.fail(protocolError('HPE_HEADER_OVERFLOW')) : undefined;
          if (!this.head(this.buf.slice(0, end))) return;
          this.buf = this.buf.slice(end + 4);
          continue; // a 1xx answer stays in 'head': the final one follows
        }
        case 'length': {
          const n = Math.min(this.remaining, this.buf.length);
          if (n > 0) this.keep(this.buf.slice(0, n));
          this.remaining -= n;
          if (this.remaining > 0) {
            this.buf = '';
            return;
          }
          // Bytes past the answer: the connection is out of step, not reused.
          if (this.buf.length > n) this.keepAlive = false;
          this.buf = '';
          return this.complete();
        }
        case 'close':
          this.keep(this.buf);
          this.buf = '';
          return;
        case 'size': {
          const eol = this.buf.indexOf('\r\n');
          if (eol < 0) return this.buf.length > MAX_HEAD ? this.fail(protocolError('HPE_INVALID_CHUNK_SIZE')) : undefined;
          const m = CHUNK_SIZE.exec(this.buf.slice(0, eol));
          if (!m) return this.fail(protocolError('HPE_INVALID_CHUNK_SIZE'));
          this.buf = this.buf.slice(eol + 2);
          this.remaining = parseInt(m[1]!, 16);
          this.phase = this.remaining === 0 ? 'trailers' : 'data';
          continue;
        }
        case 'data': {
          const n = Math.min(this.remaining, this.buf.length);
          this.keep(this.buf.slice(0, n));
          this.remaining -= n;
          this.buf = this.buf.slice(n);
          if (this.remaining > 0) return;
          this.phase = 'crlf';
          continue;
        }
        case 'crlf':
          if (this.buf.length < 2) return;
          if (!this.buf.startsWith('\r\n')) return this.fail(protocolError('HPE_INVALID_CHUNK_SIZE'));
          this.buf = this.buf.slice(2);
          this.phase = 'size';
          continue;
        case 'trailers': {
          // Trailer lines (ignored) up to an empty one.
          const eol = this.buf.indexOf('\r\n');
          if (eol < 0) return this.buf.length > MAX_HEAD ? this.fail(protocolError('HPE_HEADER_OVERFLOW')) : undefined;
          this.buf = this.buf.slice(eol + 2);
          if (eol > 0) continue;
          if (this.buf.length > 0) this.keepAlive = false;
          this.buf = '';
          return this.complete();
        }
      }
    }
  }

  /** Reads a head; false when it failed the request. */
  private head(head: string): boolean {
    const m = STATUS_LINE.exec(head);
    if (!m) {
      this.fail(protocolError('HPE_INVALID_CONSTANT'));
      return false;
    }
    const status = Number(m[2]);
    let length = -1;
    let chunked = false;
    let connection = '';
    let retryAfter: string | undefined;
    for (let at = head.indexOf('\r\n'); at >= 0; ) {
      const next = head.indexOf('\r\n', at + 2);
      const line = next < 0 ? head.slice(at + 2) : head.slice(at + 2, next);
      at = next;
      const colon = line.indexOf(':');
      if (colon <= 0) continue;
      const name = line.slice(0, colon).toLowerCase();
      if (name === 'content-length') {
        const v = line.slice(colon + 1).trim();
        if (!/^\d+$/.test(v) || (length >= 0 && Number(v) !== length)) {
          this.fail(protocolError('HPE_INVALID_CONTENT_LENGTH'));
          return false;
        }
        length = Number(v);
      } else if (name === 'transfer-encoding') chunked = /(^|,)\s*chunked\s*$/i.test(line.slice(colon + 1));
      else if (name === 'connection') connection += `${line.slice(colon + 1).toLowerCase()},`;
      else if (name === 'retry-after') retryAfter = line.slice(colon + 1).trim();
    }
    if (status < 200 && status !== 101) {
      this.phase = 'head';
      return true;
    }
    this.status = status;
    this.retryAfter = retryAfter;
    this.dropBody = status >= 200 && status < 300;
    this.keepAlive = m[1] === '1' ? !/(^|[\s,])close\s*,/.test(connection) : /(^|[\s,])keep-alive\s*,/.test(connection);
    if (status === 204 || status === 304 || status === 101) {
      if (status === 101) this.keepAlive = false;
      this.phase = 'length';
      this.remaining = 0;
    } else if (chunked) {
      this.phase = 'size';
    } else if (length >= 0) {
      this.phase = 'length';
      this.remaining = length;
    } else {
      this.phase = 'close';
      this.keepAlive = false;
    }
    return true;
  }

  private keep(latin1: string): void {
    if (!this.dropBody && this.text.length < MAX_TEXT) this.text += latin1;
  }

  private answer(): ClientAnswer {
    const text = this.text === '' ? '' : Buffer.from(this.text, 'latin1').toString('utf8').slice(0, MAX_TEXT);
    return { status: this.status, retryAfter: this.retryAfter, text };
  }

  private complete(): void {
    const done = this.done!;
    this.done = undefined;
    const answer = this.answer();
    if (this.keepAlive) this.pool.release(this);
    else this.socket.destroy();
    done(undefined, answer);
  }

  private fail(err: NodeJS.ErrnoException): void {
    const done = this.done;
    this.done = undefined;
    this.socket.destroy();
    done?.(err, undefined);
  }

  private closed(): void {
    this.pool.forget(this);
    if (!this.done) return;
    // An answer framed by the end of the connection is complete now; anything else was cut.
    if (this.phase === 'close') {
      this.keepAlive = false;
      return this.complete();
    }
    this.fail(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }));
  }
}

function protocolError(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`invalid HTTP answer (${code})`), { code });
}

/** Kept-alive connections per origin; idle ones do not keep the process alive. */
export class ConnectionPool {
  private readonly idle = new Map<string, Connection[]>();
  private readonly all = new Set<Connection>();
  private closed = false;

  constructor(private readonly maxIdlePerOrigin: number) {}

  /** Sends `head` + `body` (the head already holds Host, Content-Length and the blank line); `done` is called once. */
  request(endpoint: ClientEndpoint, head: string, body: Buffer, done: ClientCallback): Exchange {
    const key = `${endpoint.secure ? 's' : ''}${endpoint.hostname}:${endpoint.port}`;
    const conn = this.idle.get(key)?.pop() ?? this.open(key, endpoint);
    if (this.closed) conn.socket.destroy();
    if (body.length <= 16 * 1024) {
      // One write, one syscall: head and body copied together (small bodies, the usual case).
      const headLength = Buffer.byteLength(head, 'latin1');
      const data = Buffer.allocUnsafe(headLength + body.length);
      data.write(head, 0, headLength, 'latin1');
      body.copy(data, headLength);
      conn.send(data, done);
    } else conn.sendParts(Buffer.from(head, 'latin1'), body, done);
    return conn;
  }

  private open(key: string, endpoint: ClientEndpoint): Connection {
    const conn = new Connection(this, key, endpoint);
    this.all.add(conn);
    return conn;
  }

  release(conn: Connection): void {
    if (this.closed || conn.socket.destroyed) return;
    let list = this.idle.get(conn.key);
    if (!list) {
      list = [];
      this.idle.set(conn.key, list);
    }
    if (list.length >= this.maxIdlePerOrigin) {
      conn.socket.destroy();
      return;
    }
    conn.socket.unref();
    list.push(conn);
  }

  forget(conn: Connection): void {
    this.all.delete(conn);
    const list = this.idle.get(conn.key);
    const i = list ? list.indexOf(conn) : -1;
    if (i >= 0) list!.splice(i, 1);
  }

  /** Closes every connection; requests in flight fail with ECONNRESET. */
  close(): void {
    this.closed = true;
    for (const conn of this.all) conn.socket.destroy();
    this.idle.clear();
  }
}
