import { createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';

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

/**
 * Why a certificate and its private key cannot make a TLS context, with the file at fault: `cert`
 * when it holds no certificate that can be read, `key` when it holds no private key node can read
 * (with the passphrase, when there is one), neither when they are each fine but not a pair (the
 * key is not the certificate's). OpenSSL's own words (`DECODER routines::unsupported`) do not say
 * which of the two files is wrong. Undefined when they make a context.
 */
export function certificateAndKeyProblem(cert: string | Buffer, key: string | Buffer, passphrase?: string): { at: 'cert' | 'key' | undefined; message: string } | undefined {
  // Node takes an empty cert or key as none given: the context is made, and every handshake with it
  // fails (a reload read a certificate file a copy had just truncated, and served no TLS until the write).
  if (cert.length === 0) return { at: 'cert', message: 'the file is empty: it holds no PEM certificate (-----BEGIN CERTIFICATE-----)' };
  if (key.length === 0) return { at: 'key', message: 'the file is empty: it holds no private key' };
  let pairProblem: string;
  try {
    createSecureContext({ cert, key, passphrase });
    return undefined;
  } catch (err) {
    pairProblem = (err as Error).message;
  }
  const certProblem = pemCertificatesProblem(String(cert));
  if (certProblem !== undefined) return { at: 'cert', message: certProblem };
  try {
    createPrivateKey({ key, format: 'pem', ...(passphrase !== undefined ? { passphrase } : {}) });
  } catch (err) {
    return { at: 'key', message: `it holds no private key that can be read${passphrase !== undefined ? ' with the passphrase' : ''} (${(err as Error).message})` };
  }
  return { at: undefined, message: `the key is not the certificate's (${pairProblem})` };
}
