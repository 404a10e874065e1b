import type { ConnectionOptions } from 'node:tls';
import type { BrokerCompileContext } from '../contracts.js';

/** `tls:` as the MQTT, AMQP and NATS brokers write it: PEM files relative to the config. */
export interface TlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  passphrase?: string;
  servername?: string;
  rejectUnauthorized?: boolean;
}

export const TLS_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  description: 'TLS settings; PEM files relative to this config (watched: a new certificate reconnects the broker).',
  properties: {
    ca: { type: 'string', minLength: 1, description: 'PEM file of the CA(s) to trust.' },
    cert: { type: 'string', minLength: 1, description: 'PEM file of the client certificate.' },
    key: { type: 'string', minLength: 1, description: 'PEM file of the client key.' },
    passphrase: { type: 'string', description: 'Passphrase of the client key.' },
    servername: { type: 'string', minLength: 1, description: 'Server name for SNI and certificate checks.' },
    rejectUnauthorized: { type: 'boolean', default: true, description: 'Refuse servers whose certificate does not verify.' },
  },
} as const;

/** Reads the files `tls` names; undefined (problems reported) when one cannot be read or cert/key come alone. */
export function compileTls(tls: TlsOptions | undefined, ctx: BrokerCompileContext): ConnectionOptions | undefined | false {
  if (!tls) return undefined;
  const out: ConnectionOptions = {};
  let ok = true;
  for (const file of ['ca', 'cert', 'key'] as const) {
    const name = tls[file];
    if (name === undefined) continue;
    const text = ctx.readFile(name, ['tls', file]);
    if (text === undefined) ok = false;
    else out[file] = text;
  }
  if (tls.passphrase !== undefined) out.passphrase = tls.passphrase;
  if (tls.servername !== undefined) out.servername = tls.servername;
  if (tls.rejectUnauthorized !== undefined) out.rejectUnauthorized = tls.rejectUnauthorized;
  if (ok && (out.cert === undefined) !== (out.key === undefined)) {
    ctx.report(['tls'], 'EG_CONFIG_SCHEMA', `a client certificate needs both 'cert' and 'key'`);
    ok = false;
  }
  return ok ? out : false;
}
