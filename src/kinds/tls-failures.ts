import { TLSSocket } from 'node:tls';

/*
 * What a failed TLS connection means, for whoever made it (brokers' /readyz reasons, webhook
 * failures): node's codes sorted into the causes whose fixes differ.
 */

/** Certificate chains node could not trace to a CA it trusts: trusting the server's CA is the fix. */
export const UNTRUSTED_CHAIN: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
]);

/** OpenSSL's certificate verification codes as node gives them (`SELF_SIGNED_CERT_IN_CHAIN`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...), node's own (`ERR_TLS_CERT_ALTNAME_INVALID`) and handshake alerts (`ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`). */
const TLS_CODE = /CERT|CRL|SIGNATURE|^INVALID_CA$|^INVALID_PURPOSE$|^PATH_LENGTH_EXCEEDED$|^HOSTNAME_MISMATCH$|^ERR_SSL_|^ERR_TLS_/;

/** Whether `err` is a TLS failure: the server's certificate not trusted or not for its name, or ours refused. */
export function isTlsFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && TLS_CODE.test(code);
}

/**
 * OpenSSL's own words for an `ERR_SSL_*` failure (`tlsv1 alert no application protocol`), which node
 * gives as the error's `reason`; its message wraps them in a line of OpenSSL internals (`807CE93D417F0000:error:0A000460:SSL routines:ssl3_read_bytes:...:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 120`).
 */
export function tlsReason(err: Error & { code?: unknown; reason?: unknown }): string {
  // Not every error's code is node's string: an MQTT refusal's is its reason code (a number).
  return typeof err.code === 'string' && err.code.startsWith('ERR_SSL_') && typeof err.reason === 'string' ? err.reason : err.message;
}

/**
 * A broker's words for a failed connection: OpenSSL's own for an `ERR_SSL_*` failure, with node's
 * code after them; node's message for the others (`certificate has expired`).
 */
export function brokerTlsWords(err: Error): string {
  const reason = tlsReason(err);
  return reason === err.message ? err.message : `${reason} (${(err as { code?: unknown }).code})`;
}

/** TLS sockets whose TCP connection is made and whose handshake is not done yet. */
const inHandshake = new WeakSet<TLSSocket>();

/** Follows `socket`'s TLS handshake, for closedInHandshake(); any other stream is returned as it is. */
export function followTlsHandshake<S>(socket: S): S {
  if (socket instanceof TLSSocket) {
    socket.once('connect', () => inHandshake.add(socket));
    socket.once('secureConnect', () => inHandshake.delete(socket));
  }
  return socket;
}

/**
 * Whether `err` is the server closing a followed TLS socket after accepting its TCP connection and
 * before the handshake was done: a server that does not speak TLS on that port (mosquitto resets a
 * connection that opens with a ClientHello, and node says only `read ECONNRESET`). The server is
 * there; what is wrong is the scheme or the port.
 */
export function closedInHandshake(socket: unknown, err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return socket instanceof TLSSocket && inHandshake.has(socket) && (code === 'ECONNRESET' || code === 'EPIPE');
}

/** What a broker says of a connection closedInHandshake(), with node's own words (`err`) after it. */
export function closedInHandshakeReason(err: Error): string {
  return `the server closed the connection in the TLS handshake (${err.message}): it does not seem to speak TLS on this port (a TLS scheme or \`tls\` pointed at a plain port?)`;
}
