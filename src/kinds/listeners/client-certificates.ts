import { X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { TlsMaterial } from './transport.js';

/**
 * Mutual TLS judges a client's certificate once, in its handshake. A reload that changes what
 * `tls.ca` trusts (a client CA taken out, another put in its place, `ca` added) applies to new
 * handshakes only, so a connection whose certificate the new CA refuses would go on publishing and
 * receiving for as long as it stays open, as a WebSocket or an event stream does for days. As a
 * revoked API key closes the connections it opened (1008), such a connection is found here and
 * cut off by its listener.
 */

/** Whether a reload's TLS files change whom mutual TLS lets in (the listener's `ca`). */
export function clientTrustChanged(before: TlsMaterial | undefined, after: TlsMaterial | undefined): boolean {
  return before !== undefined && after?.ca !== undefined && before.ca !== after.ca;
}

/**
 * Whether the client of `socket` would pass a handshake against the CA bundle `caPem`: a certificate
 * of the chain its handshake was verified with is in the bundle or was signed by one of it, and
 * none on the way is expired. A socket that is not TLS (none to judge) passes; a TLS client that
 * presented no certificate does not (it came in while the listener had no `ca`).
 */
export function trustedBy(caPem: string): (socket: Duplex | null) => boolean {
  const anchors: X509Certificate[] = [];
  for (const block of caPem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? []) {
    try {
      anchors.push(new X509Certificate(block));
    } catch {
      // The load checked the bundle (tls.ts); a block node cannot read trusts nothing.
    }
  }
  return (socket) => {
    const tls = socket as TLSSocket | null;
    if (typeof tls?.getPeerCertificate !== 'function') return true;
    const now = Date.now();
    const seen = new Set<string>();
    for (let c: PeerCertificate | undefined = tls.getPeerCertificate(true); c?.raw !== undefined && !seen.has(c.fingerprint256); c = (c as { issuerCertificate?: PeerCertificate }).issuerCertificate) {
      seen.add(c.fingerprint256);
      const cert = new X509Certificate(c.raw);
      if (Date.parse(cert.validTo) < now) return false;
      if (anchors.some((a) => a.fingerprint256 === cert.fingerprint256 || (cert.checkIssued(a) && cert.verify(a.publicKey)))) return true;
    }
    return false;
  };
}
