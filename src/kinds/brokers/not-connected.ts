import { UNTRUSTED_CHAIN } from '../tls-failures.js';

/**
 * What /readyz and a 503 say of a broker that cannot connect: `login refused` when the server
 * turned the gateway's credentials down (`client id refused`: its MQTT client id), `tls refused` when a TLS handshake failed (the server's
 * certificate not trusted or not for that name, or ours refused, or the server closed the
 * connection in the handshake: closedInHandshake): the server is there, and the fix is in
 * credentials, certificates or the URL, not the network. Else `unreachable`. /readyz shows the part
 * before the colon; the error's own words follow it.
 */
export function notConnectedDetail(why: string, refused: 'login' | 'client id' | 'tls' | undefined, err?: unknown): string {
  return `${refused === undefined ? 'unreachable' : `${refused} refused`}: ${why}${refused === 'tls' ? brokerTlsHint(err) : ''}`;
}

/**
 * Where a broker's failed handshake's fix is, when node's code says: node's words
 * (`self-signed certificate`) named the cause but not the broker's option that fixes it, and the
 * server's alerts (`tlsv13 alert certificate required`) name neither. None for an expired
 * certificate (node says so).
 */
function brokerTlsHint(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return '';
  if (UNTRUSTED_CHAIN.has(code)) return "; trust the server's CA with the broker's tls.ca";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID' || code === 'HOSTNAME_MISMATCH') return '; the certificate is not for the host the broker connects to';
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED') return "; the server requires a client certificate (mutual TLS): give one with the broker's tls.cert and tls.key";
  // What a Go server (nats-server) says both for a client certificate it refuses and for none given.
  if (code === 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE') return "; the server refused the client certificate, or requires one (mutual TLS): check the broker's tls.cert and tls.key";
  if (code === 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA') return "; the server does not trust the CA of the broker's client certificate (tls.cert)";
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER') return '; the port does not speak TLS (a TLS scheme or `tls` pointed at a plain port?)';
  return '';
}
