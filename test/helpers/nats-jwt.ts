import { randomUUID } from 'node:crypto';
import { nkeys } from 'nats';

/**
 * NATS decentralized auth (nats-server's operator mode) made in the test: an operator, accounts
 * signed by it, users signed by an account, each a JWT (base64url header and claims, ed25519
 * signature by the issuer's NKey, as nats-io/jwt v2 encodes them), and users' `.creds` files.
 */

type KeyPair = ReturnType<typeof nkeys.createUser>;

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const b64url = (s: string | Uint8Array) => Buffer.from(s).toString('base64url');

/**
 * A JWT of `subject`'s public key, signed by `issuer`. `claims` go beside the standard ones (`exp`, `nbf` and `iat` in seconds; `iat` now unless given).
 * `v1`: as nats-io/jwt v1 (nsc before 2.0) encoded them, which nats-server still takes: `type` among the
 * standard claims rather than in `nats`, no `nats.version`, alg `ed25519`, the signature of the claims part only.
 */
export function natsJwt(issuer: KeyPair, subject: string, nats: Record<string, unknown>, claims: { name?: string; exp?: number; nbf?: number; iat?: number; v1?: boolean } = {}): string {
  const header = b64url(JSON.stringify({ typ: 'JWT', alg: claims.v1 ? 'ed25519' : 'ed25519-nkey' }));
  const { type, ...fields } = nats;
  const body = {
    jti: randomUUID(),
    iat: claims.iat ?? Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    name: claims.name ?? subject.slice(0, 8),
    sub: subject,
    ...(claims.exp === undefined ? {} : { exp: claims.exp }),
    ...(claims.nbf === undefined ? {} : { nbf: claims.nbf }),
    ...(claims.v1 ? { type, nats: fields } : { nats: { ...nats, version: 2 } }),
  };
  const payload = b64url(JSON.stringify(body));
  const signed = `${header}.${payload}`;
  return `${signed}.${b64url(issuer.sign(new TextEncoder().encode(claims.v1 ? payload : signed)))}`;
}

/** No limit on anything. */
const UNLIMITED_ACCOUNT = { subs: -1, data: -1, payload: -1, imports: -1, exports: -1, wildcards: true, conn: -1, leaf: -1 };
/** JetStream without limits (an account JWT without storage limits has JetStream off; the system account may not have it). */
const UNLIMITED_JETSTREAM = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

export interface NatsAccount {
  key: KeyPair;
  jwt: string;
  /** A key the account's JWT lists in `signing_keys`: users it signs name the account as `issuer_account`. */
  signingKey?: KeyPair;
}

/** An operator, its system account and one account for the gateway's users. */
export interface NatsOperator {
  operator: KeyPair;
  operatorJwt: string;
  system: NatsAccount;
  account: NatsAccount;
  /**
   * A user of `account` (`deny`: subjects it may not publish to; `exp`, `nbf`, `iat`: seconds since the epoch; `account`: another
   * issuer, whose signing key signs it when it has one, as `nsc add user --account A -K <signing key>` does; `v1`: a JWT as nsc before 2.0 wrote it).
   */
  user(options?: { deny?: string[]; exp?: number; nbf?: number; iat?: number; account?: NatsAccount; v1?: boolean }): NatsUser;
  /** An account the operator signed, or `signer` (another operator) did; `signingKey`: with a signing key in its JWT's `signing_keys`. */
  newAccount(signer?: KeyPair, options?: { signingKey?: boolean }): NatsAccount;
}

export interface NatsUser {
  key: KeyPair;
  jwt: string;
  /** The user's `.creds` file, as `nsc generate creds` writes it. */
  creds: string;
  /** CONNECT fields for the text protocol: the JWT and the server's nonce signed. */
  login(nonce: string): Record<string, string>;
}

export function natsOperator(): NatsOperator {
  const operator = nkeys.createOperator();
  const operatorJwt = natsJwt(operator, operator.getPublicKey(), { type: 'operator' }, { name: 'eventgate-test' });
  const newAccount = (signer: KeyPair = operator, { jetstream = true, signingKey = false } = {}): NatsAccount => {
    const key = nkeys.createAccount();
    const limits = jetstream ? { ...UNLIMITED_ACCOUNT, ...UNLIMITED_JETSTREAM } : UNLIMITED_ACCOUNT;
    const signing = signingKey ? nkeys.createAccount() : undefined;
    const nats = { type: 'account', limits, default_permissions: { pub: {}, sub: {} }, ...(signing ? { signing_keys: [signing.getPublicKey()] } : {}) };
    return { key, jwt: natsJwt(signer, key.getPublicKey(), nats), ...(signing ? { signingKey: signing } : {}) };
  };
  const account = newAccount();
  return {
    operator,
    operatorJwt,
    system: newAccount(operator, { jetstream: false }),
    account,
    newAccount: (signer, options) => newAccount(signer, options),
    user(options = {}) {
      const key = nkeys.createUser();
      const of = options.account ?? account;
      const jwt = natsJwt(
        of.signingKey ?? of.key,
        key.getPublicKey(),
        {
          type: 'user',
          pub: options.deny ? { deny: options.deny } : {},
          sub: {},
          subs: -1,
          data: -1,
          payload: -1,
          ...(of.signingKey ? { issuer_account: of.key.getPublicKey() } : {}),
        },
        { exp: options.exp, nbf: options.nbf, iat: options.iat, v1: options.v1 },
      );
      const seed = text(key.getSeed());
      return {
        key,
        jwt,
        creds: `-----BEGIN NATS USER JWT-----\n${jwt}\n------END NATS USER JWT------\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\nNKEYs are sensitive and should be treated as secrets.\n\n-----BEGIN USER NKEY SEED-----\n${seed}\n------END USER NKEY SEED------\n\n*************************************************************\n`,
        login: (nonce) => ({ jwt, sig: b64url(key.sign(new TextEncoder().encode(nonce))) }),
      };
    },
  };
}
