import type { ConnectionOptions } from 'node:tls';
import type { BrokerCompileContext } from '../contracts.js';
import { Type, type Static } from '../define.js';
import { certificateAndKeyProblem, pemCertificatesProblem } from '../pem.js';

/** The client TLS object of a broker kind; `server` names the peer in the descriptions ("the host of the URL"). */
export function clientTlsOptions(server: string, description?: string) {
  return Type.Object(
    {
      ca: Type.Optional(
        Type.String({
          minLength: 1,
          description:
            "PEM file of the CA(s) to trust (one holding no certificate is a config error: node would trust no server). With `cert` and `key`, the three are checked at load: a key that is not the certificate's, or a wrong `passphrase`, is a config error at `tls`.",
        }),
      ),
      cert: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the client certificate.' })),
      key: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the client key.' })),
      passphrase: Type.Optional(Type.String({ description: 'Passphrase of the client key.' })),
      servername: Type.Optional(Type.String({ minLength: 1, description: `Server name for SNI and certificate checks (default: ${server}).` })),
      rejectUnauthorized: Type.Optional(
        Type.Boolean({
          default: true,
          description:
            'Refuse servers whose certificate is not trusted. `false` is a warning (EG_CONFIG_INSECURE_TLS): any certificate is then accepted, so anyone on the network path can pose as the broker; trust its CA with `ca` instead.',
        }),
      ),
    },
    { additionalProperties: false, ...(description ? { description } : {}) },
  );
}

/** `tls:` as the MQTT, AMQP and NATS brokers write it: PEM files relative to the config. */
export const TLS_OPTIONS = clientTlsOptions(
  'the host of the URL',
  'TLS: `{ca, cert, key, passphrase, servername, rejectUnauthorized}`, PEM files relative to this config (watched: a new certificate reconnects the broker).',
);
export type TlsOptions = Static<typeof TLS_OPTIONS>;

/**
 * Reads the files `tls` names (problems reported under `at`); false when one cannot be read or
 * cert and key come alone.
 */
export function compileTls(tls: TlsOptions | undefined, ctx: BrokerCompileContext, at = 'tls'): ConnectionOptions | undefined | false {
  if (!tls) return undefined;
  const out: ConnectionOptions = {};
  let ok = true;
  for (const file of ['ca', 'cert', 'key'] as const) {
    const name = tls[file];
    if (name === undefined) continue;
    const text = ctx.readFile(name, [at, file]);
    if (text === undefined) ok = false;
    else out[file] = text;
  }
  if (tls.passphrase !== undefined) out.passphrase = tls.passphrase;
  if (tls.servername !== undefined) out.servername = tls.servername;
  if (tls.rejectUnauthorized !== undefined) out.rejectUnauthorized = tls.rejectUnauthorized;
  // Allowed (a lab broker's self-made certificate), but never silently: it turns TLS's authentication off.
  if (tls.rejectUnauthorized === false) {
    ctx.warn(
      [at, 'rejectUnauthorized'],
      'EG_CONFIG_INSECURE_TLS',
      `${at}.rejectUnauthorized is false: any certificate is accepted, so whoever is on the network path can pose as the broker and read what the gateway sends it, its password included; give the server's CA in '${at}.ca' instead (and '${at}.servername' for a name its certificate has)`,
    );
  }
  if (ok && (out.cert === undefined) !== (out.key === undefined)) {
    ctx.report([at], 'EG_CONFIG_SCHEMA', `a client certificate needs both 'cert' and 'key'`);
    ok = false;
  }
  // Node ignores a CA file without a certificate in it: every server would then be untrusted
  // (`self-signed certificate`), which reads as the server's fault, not the file's.
  const caProblem = out.ca === undefined ? undefined : pemCertificatesProblem(String(out.ca));
  if (caProblem !== undefined) {
    ctx.report([at, 'ca'], 'EG_CONFIG_FILE', `CA file '${tls.ca}' cannot be used: ${caProblem}`);
    ok = false;
  }
  // What node would throw at every connect (a file that is not PEM, a key not the certificate's, a wrong passphrase).
  if (out.cert !== undefined && out.key !== undefined) {
    const problem = certificateAndKeyProblem(out.cert as string, out.key as string, out.passphrase);
    if (problem !== undefined) {
      const what = problem.at === 'cert' ? `client certificate '${tls.cert}'` : problem.at === 'key' ? `client key '${tls.key}'` : `client certificate '${tls.cert}' and key '${tls.key}'`;
      ctx.report(problem.at === undefined ? [at] : [at, problem.at], 'EG_CONFIG_FILE', `${what} cannot be used: ${problem.message}`);
      ok = false;
    }
  }
  return ok ? out : false;
}
