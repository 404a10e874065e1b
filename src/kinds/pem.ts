import { X509Certificate } from 'node:crypto';

/**
 * What a CA file must hold, for brokers (the servers' CA) and listeners (mutual TLS): node takes
 * text without a certificate in it as no CA at all, so every peer would be untrusted. Why PEM text
 * `text` is not one or more certificates, or undefined.
 */
export function pemCertificatesProblem(text: string): string | undefined {
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return 'it holds no PEM certificate (-----BEGIN CERTIFICATE-----)';
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      return `its certificate ${i + 1} cannot be read: ${(err as Error).message}`;
    }
  }
  return undefined;
}
