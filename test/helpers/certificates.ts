import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempFiles } from './gateway.js';

export interface Pem {
  cert: string;
  key: string;
  /** Where the two are on disk (for clients that take file names: kcat's ssl.ca.location). */
  certFile: string;
  keyFile: string;
}

/**
 * Self-signed server certificates `a` and `b` (for 127.0.0.1), a CA and a client certificate it
 * signed, made with the openssl CLI in a temporary directory.
 */
export function makeCertificates(): { a: Pem; b: Pem; ca: Pem; client: Pem } {
  const dir = tempFiles({});
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  for (const name of ['a', 'b']) {
    ssl('req', '-x509', ...ecKey, '-keyout', `${name}-key.pem`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=eventgate-${name}`, '-addext', 'subjectAltName=IP:127.0.0.1');
  }
  ssl('req', '-x509', ...ecKey, '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=test-ca');
  ssl('req', ...ecKey, '-keyout', 'client-key.pem', '-out', 'client.csr', '-subj', '/CN=client');
  ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'client.pem', '-days', '1');
  const read = (name: string): Pem => {
    const certFile = join(dir, `${name}.pem`);
    const keyFile = join(dir, `${name}-key.pem`);
    return { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8'), certFile, keyFile };
  };
  return { a: read('a'), b: read('b'), ca: read('ca'), client: read('client') };
}
