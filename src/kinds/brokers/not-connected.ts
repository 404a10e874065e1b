/**
 * What /readyz and a 503 say of a broker that cannot connect: `login refused` when the server
 * turned the gateway's credentials down, `tls refused` when a TLS handshake failed (the server's
 * certificate not trusted or not for that name, or ours refused): the server is there, and the fix
 * is in credentials or certificates, not the network. Else `unreachable`. /readyz shows the part
 * before the colon; the error's own words follow it.
 */
export function notConnectedDetail(why: string, refused: 'login' | 'tls' | undefined): string {
  return `${refused === undefined ? 'unreachable' : `${refused} refused`}: ${why}`;
}

/** OpenSSL's certificate verification codes as node gives them (`SELF_SIGNED_CERT_IN_CHAIN`, `UNABLE_TO_VERIFY_LEAF_SIGNATURE`, ...), node's own (`ERR_TLS_CERT_ALTNAME_INVALID`) and handshake alerts (`ERR_SSL_TLSV1_ALERT_UNKNOWN_CA`). */
const TLS_CODE = /CERT|CRL|SIGNATURE|^INVALID_CA$|^INVALID_PURPOSE$|^PATH_LENGTH_EXCEEDED$|^HOSTNAME_MISMATCH$|^ERR_SSL_|^ERR_TLS_/;

/** Whether `err` is a TLS failure: the server's certificate not trusted or not for its name, or ours refused. */
export function isTlsFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && TLS_CODE.test(code);
}
