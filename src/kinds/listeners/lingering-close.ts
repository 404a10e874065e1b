import type { Socket } from 'node:net';

/**
 * The lingering close (RFC 9112 §9.6) of a connection an answer closes while its client may still
 * be sending (a 413 to a body still arriving, a 431, a 400, a drain's `Connection: close`): node
 * closes such a socket as soon as the answer is handed to the kernel, and a socket closed with bytes
 * its client sent still unread is reset by the kernel. The reset drops what the kernel has not
 * transmitted yet (the answer itself), and a client still writing gets a send failure (curl: exit
 * 55) before it reads the answer: it never learns why. Lingering, the connection sends its answers
 * and its end (FIN), then reads and discards what the client still sends, and closes once the
 * client has closed its side, or at a bound, so a client cannot hold a connection (or anything
 * else) longer than LINGER_MS nor make the gateway read more than LINGER_MAX_BYTES.
 */

/** How long a connection may linger at most, whatever the client does (nginx: lingering_time). */
export const LINGER_MS = 5000;
/** How many bytes a lingering connection reads and discards at most before it is closed. */
export const LINGER_MAX_BYTES = 64 * 1024 * 1024;

const LINGERING = Symbol('eventgate.lingering');
type LingeringSocket = Socket & { [LINGERING]?: Promise<void> };

/**
 * Closes the connection lingering, now: what is written goes first, then the FIN. node's HTTP parser
 * is detached first (its 'data' and 'end' listeners): nothing read from now on is parsed, so none of
 * it is taken for a request, and a body that ends early or garbage behind it is no parse error (whose
 * answer, node's or answerClientError's, destroys the socket). Adding a 'data' listener makes node
 * hand the socket's reads back from its parser to the stream (generateSocketListenerWrapper in
 * lib/_http_server.js, node 20.20); node's own 'close' listener stays and frees the parser.
 */
export function closeLingering(socket: Socket): void {
  const s = socket as LingeringSocket;
  if (s[LINGERING] || s.destroyed) return;
  s[LINGERING] = new Promise<void>((resolve) => s.once('close', () => resolve()));
  let read = 0;
  s.removeAllListeners('data');
  s.removeAllListeners('end');
  s.on('data', (chunk: Buffer) => {
    read += chunk.length;
    if (read > LINGER_MAX_BYTES) s.destroy();
  });
  const bound = setTimeout(() => s.destroy(), LINGER_MS).unref();
  s.once('close', () => clearTimeout(bound));
  s.on('error', noop);
  let waiting = 2;
  const close = () => --waiting === 0 && s.destroy();
  if (s.readableEnded) close();
  else s.once('end', close);
  s.end();
  if (s.writableFinished) close();
  else s.once('finish', close);
  s.resume();
}

/**
 * Makes node's own close of this connection (`socket.destroySoon()`, which node 20.20's resOnFinish
 * calls once an answer that closes the connection is out) a lingering one. Called only where such
 * an answer is given (a closing refusal, a drain), so the plain request path does no more work.
 */
export function lingerWhenClosed(socket: Socket): void {
  socket.destroySoon = () => closeLingering(socket);
}

/**
 * Answers a connection node has handed over raw (an upgrade request or a CONNECT, refused) and
 * closes it lingering. node stops reading such a socket when it hands it over: ended outright, it
 * was never read again, so it never saw the client's FIN, and a client that sent more than node
 * had read (a body, the frames it meant to send) kept it open for good, counting toward
 * maxConnections and holding the server's close() (a shutdown waited for ever); destroyed after
 * the answer, it reset the connection. Lingering reads (and discards) what the client still sends,
 * within the same bounds. One that can no longer be written is destroyed.
 */
export function answerAndCloseLingering(socket: Socket, answer: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.write(answer);
  closeLingering(socket);
}

/** Settles once a lingering connection has closed; undefined if it is not lingering. */
export function lingeringClosed(socket: Socket): Promise<void> | undefined {
  return (socket as LingeringSocket)[LINGERING];
}

function noop(): void {}
