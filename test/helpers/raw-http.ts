import { connect, type Socket } from 'node:net';

export interface RawReply {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends bytes exactly as given (for requests no well-behaved client would make) and resolves with
 * everything the server sent once it closes the connection; `undefined` when it closed without
 * answering.
 */
export async function rawHttp(port: number, request: string | Buffer, timeoutMs = 10_000): Promise<RawReply | undefined> {
  return parseReply(await rawHttpText(port, request, timeoutMs));
}

/** rawHttp() without the parsing: every byte the server sent (latin1) until it closed the connection. */
export function rawHttpText(port: number, request: string | Buffer, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1', () => socket.write(request));
    let received = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; received: ${received.slice(0, 200)}`));
    }, timeoutMs);
    socket.setEncoding('latin1').on('data', (d: string) => (received += d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
  });
}

export function parseReply(text: string): RawReply | undefined {
  if (text === '') return undefined;
  const end = text.indexOf('\r\n\r\n');
  const head = text.slice(0, end === -1 ? text.length : end).split('\r\n');
  const status = Number(head[0]!.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status, headers, body: end === -1 ? '' : text.slice(end + 4) };
}

/** A socket that stays connected (and silent) until destroyed; resolves once connected. */
export function idleConnection(port: number): Promise<Socket & { closedByServer: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const closedByServer = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve(Object.assign(socket, { closedByServer })));
    socket.once('error', reject);
  });
}

/** Every response in `text` (latin1, as rawHttpText gives it), in order: a pipelining client's answers. */
export function parseReplies(text: string): RawReply[] {
  const replies: RawReply[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf('\r\n\r\n', at);
    if (end === -1) throw new Error(`a truncated response head: ${JSON.stringify(text.slice(at, at + 200))}`);
    const head = parseReply(text.slice(at, end + 4))!;
    const length = Number(head.headers['content-length']);
    if (!Number.isInteger(length)) throw new Error(`a response without content-length: ${JSON.stringify(text.slice(at, end))}`);
    replies.push({ ...head, body: text.slice(end + 4, end + 4 + length) });
    at = end + 4 + length;
  }
  return replies;
}

/** A POST of `body` (JSON) to `path`, as bytes a pipelining client writes back to back. */
export function rawPost(path: string, body: unknown): string {
  const text = JSON.stringify(body);
  return `POST ${path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
}

export interface Exchange {
  reply: RawReply | undefined;
  /** The socket error the client met (EPIPE, ECONNRESET), if any. */
  error: string | undefined;
  /** Bytes the client wrote after it had read the answer, all of them taken by the connection. */
  sentAfter: number;
}

/**
 * A client that writes `head`, reads the gateway's whole answer, then goes on sending what it
 * meant to send (`more`, `times` over: a body, the rest of a head), as a client still uploading
 * does, and only then closes its side. On a connection the gateway closed outright, those bytes
 * meet a reset (node: EPIPE or ECONNRESET), the way curl's send fails (exit 55) before it reads the
 * answer; on a lingering one they are read and discarded, and the connection ends cleanly.
 */
export function sendPastAnswer(port: number, head: string | Buffer, more: Buffer, times: number): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    // Half-open, as curl: the gateway's FIN after its answer does not end the client's own sending.
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    let text = '';
    let error: string | undefined;
    let sentAfter = 0;
    let answered = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the connection did not close within 30 s; received: ${text.slice(0, 300)}`));
    }, 30_000);
    const keepSending = async () => {
      for (let i = 0; i < times && !socket.destroyed; i++) {
        const ok = await new Promise<boolean>((done) => socket.write(more, (err) => done(!err)));
        if (!ok) return;
        sentAfter += more.length;
      }
      socket.end();
    };
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      text += d;
      const reply = parseReply(text);
      if (answered || !reply || !text.includes('\r\n\r\n') || Buffer.byteLength(reply.body, 'latin1') < Number(reply.headers['content-length'])) return;
      answered = true;
      void keepSending();
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (error ??= err.code ?? err.message));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ reply: parseReply(text), error, sentAfter });
    });
    socket.write(head);
  });
}
