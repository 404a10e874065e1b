import { UNTRUSTED_CHAIN } from '../tls-failures.js';

/**
 * What /readyz and a 503 say of a broker that cannot connect: `login refused` when the server
 * turned the gateway's credentials down, `tls refused` when a TLS handshake failed (the server's
 * certificate not trusted or not for that name, or ours refused, or the server closed the
 * connection in the handshake: closedInHandshake): the server is there, and the fix is in
 * credentials, certificates or the URL, not the network. Else `unreachable`. /readyz shows the part
 * before the colon; the error's own words follow it.
 */
export function notConnectedDetail(why: string, refused: 'login' | 'tls' | undefined, err?: unknown): string {
  return `${refused === undefined ? 'unreachable' : `${refused} refused`}: ${why}${refused === 'tls' ? brokerTlsHint(err) : ''}`;
}

/**
 * Where a broker's failed handshake's fix is, when node's code says: node's words
 * (`self-signed certificate`) named the cause but not the broker's option that fixes it. None for an
 * expired certificate (node says so) or a refused client certificate (the server's alert).
 */
function brokerTlsHint(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return '';
  if (UNTRUSTED_CHAIN.has(code)) return "; trust the server's CA with the broker's tls.ca";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') return '; the certificate is not for the host the broker connects to';
  return '';
}
