/**
 * An AMQP connection's failures in words (/readyz, 503s, the log), and ending a connection whose
 * server stopped answering.
 */

import { Socket } from 'node:net';
import type { ChannelModel } from 'amqplib';
import type { AmqpSettings } from '../amqp.js';
import { resetGivenUp } from '../given-up.js';
import { brokerTlsWords } from '../../tls-failures.js';

/**
 * Why a connect failed, in words. amqplib's `connect ETIMEDOUT` is its own: nothing came back
 * within `connectTimeoutMs`, the AMQP handshake included. Something that accepts the TCP
 * connection and says nothing (another kind of server on that port, one still starting) gets
 * it on every retry, and read as a network timeout it sent people looking in the wrong place.
 */
export function connectFailure(err: Error, settings: AmqpSettings): string {
  if (err.message !== 'connect ETIMEDOUT') return brokerTlsWords(err);
  let where = 'the server';
  try {
    where = new URL(settings.url).host || where;
  } catch {
    /* the URL was checked when the config loaded */
  }
  return `no answer from ${where} within connectTimeoutMs (${settings.connectTimeoutMs} ms), the AMQP handshake included: is it a RabbitMQ (AMQP 0-9-1) port, and is the server up?`;
}

/**
 * What the server said when it closed the connection itself (a connection.close with a reply code:
 * 530 NOT_ALLOWED for a channel over the user's limit or a vhost it does not have, 320
 * CONNECTION_FORCED from an operator or a shutdown), as /readyz and a 503 say it: `closed by the
 * server: 530 NOT_ALLOWED - number of channels ...`. The server is there and said why, which
 * `unreachable` would hide. Undefined for anything else (a socket error, the gateway's own close,
 * a channel the server closed). amqplib words it `Connection closed: 530 (NOT-ALLOWED) with message
 * "NOT_ALLOWED - ..."`, or `Handshake terminated by server: ...` while connecting; RabbitMQ starts
 * the text with the code's name, another server may not.
 */
export function closedByServer(err: unknown, vhost: string): string | undefined {
  if (!(err instanceof Error)) return undefined;
  // Refused at connection.open: amqplib drops the server's words there (RabbitMQ's 530 says which).
  if (err.message.startsWith('Expected ConnectionOpenOk; got <ConnectionClose'))
    return `closed by the server: it refused to open virtual host '${vhost}' (one it does not have, one the user may not use, or a connection limit reached; the server's log says which)`;
  const said = /^(?:Connection closed|Handshake terminated by server): (.*)$/s.exec(err.message);
  const words = said ? replyText(said[1]!) : undefined;
  return words === undefined ? undefined : `closed by the server: ${words}`;
}

/**
 * What the server said when it closed a channel (amqplib's `Channel closed by server: 403
 * (ACCESS-REFUSED) with message "..."`), as `403 ACCESS_REFUSED - ...`; undefined for anything else.
 */
export function channelClosedByServer(err: Error): string | undefined {
  const said = /^Channel closed by server: (.*)$/s.exec(err.message);
  return said ? replyText(said[1]!) : undefined;
}

/** The reply code of a channel.close for a declare whose queue the server has otherwise (other arguments, durability, exclusivity). */
const PRECONDITION_FAILED = 406;

/**
 * The server's words when it refused a queue's declare because it has the queue otherwise (406:
 * `406 PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue ...`); undefined for any
 * other failure. amqplib words it `Operation failed: QueueDeclare; 406 (PRECONDITION-FAILED) with
 * message "..."`.
 */
export function declaredOtherwise(err: unknown): string | undefined {
  if (!(err instanceof Error) || (err as { code?: unknown }).code !== PRECONDITION_FAILED) return undefined;
  const said = /^(?:Operation failed: QueueDeclare; |Channel closed by server: )(.*)$/s.exec(err.message);
  return said ? (replyText(said[1]!) ?? err.message) : undefined;
}

/**
 * How the server's words of declaredOtherwise() read as the state of the queue: a 406 is also the
 * answer to arguments the server does not take for the queue at all (`invalid arg 'x-delivery-limit'
 * ... of queue type rabbit_classic_queue`, `invalid property 'non-durable'`), when there is no queue
 * on the server to differ from.
 */
export function declaredOtherwiseState(words: string): 'refused as declared' | 'not as declared' {
  return /PRECONDITION_FAILED - invalid (?:arg|property) /.test(words) ? 'refused as declared' : 'not as declared';
}

/** amqplib's `530 (NOT-ALLOWED) with message "NOT_ALLOWED - ..."` as `530 NOT_ALLOWED - ...`. */
function replyText(close: string): string | undefined {
  const said = /^(\d+) \(([A-Z-]+)\) with message "(.*)"$/s.exec(close);
  if (!said) return undefined;
  const name = said[2]!.replace(/-/g, '_');
  const text = said[3]!;
  return `${said[1]} ${text.startsWith(name) ? text : `${name} - ${text}`}`;
}

/**
 * Whether the server closed a channel, not the connection, for what was asked on it (404 NOT_FOUND,
 * 406 PRECONDITION_FAILED, 403 ACCESS_REFUSED for a resource): amqplib's `Operation failed:
 * QueueDeclare; 406 (...)` or `Channel closed by server: 404 (...)`, with the reply code.
 */
export function refusedOnChannel(err: unknown): boolean {
  return err instanceof Error && /^(?:Operation failed: \w+; |Channel closed by server: )\d+ \(/.test(err.message);
}

/**
 * Ends a connection at once, without the close handshake a server that stopped answering never
 * completes. With an error: amqplib learns of a socket's end only from 'error' or 'end', and a
 * plain destroy() emits neither, so the broker would never reconnect.
 */
export function dropConnection(conn: ChannelModel): void {
  (socketOf(conn) as { destroy(err?: Error): void } | undefined)?.destroy(new Error('the server did not answer a close within connectTimeoutMs'));
}

/** What resetConnection tells amqplib: the broker's own doing, not a failure to log. */
export const RESET_WITH_ITS_PAIR = "reset by the gateway with the broker's other connection";

/**
 * Ends a connection at once with a reset (given-up.ts: what it had not delivered is dropped, not
 * sent on to a server the path comes back to), and tells amqplib, which learns of its socket's end
 * only from 'error' or 'end' (a reset emits neither): told nothing, its close() waited for a
 * CloseOk that could not come, until its heartbeat gave the connection up two intervals later (a
 * minute or two), warning `Heartbeat timeout`. A TLS socket, which cannot be reset, is destroyed
 * (a FIN) with the same error, for the same reason: its close() over a dead path waited just so.
 */
export function resetConnection(conn: ChannelModel): void {
  const socket = socketOf(conn);
  // amqplib listens for its socket's errors from the connection's open on; one nobody heard would throw.
  if (!(socket instanceof Socket) || socket.listenerCount('error') === 0) return void conn.close().catch(() => undefined);
  if (resetGivenUp(socket)) socket.emit('error', new Error(RESET_WITH_ITS_PAIR));
  else socket.destroy(new Error(RESET_WITH_ITS_PAIR));
}

/** The connection's socket (a field of amqplib's connection under the channel model). */
export function socketOf(conn: ChannelModel): unknown {
  return (conn as unknown as { connection?: { stream?: unknown } }).connection?.stream;
}
