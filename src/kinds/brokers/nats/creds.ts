import { createRequire } from 'node:module';

/**
 * NATS credentials files (`.creds`, as `nsc generate creds` and `nsc add user` write them): a user
 * JWT and the user's NKey seed, each between `-----BEGIN ...-----` and `------END ...------` lines.
 * Read at compile, without the nats client (validate loads none). Errors name the file and what
 * is wrong, never its contents: the seed is a secret, and a JWT is a bearer of claims.
 */

/** What a credentials file gives the broker: the JWT sent at connect, the seed that signs the server's nonce. */
export interface NatsCreds {
  jwt: string;
  seed: string;
  /** When the JWT stops being valid (its `exp`, ms since the epoch), if it says. */
  expiresAt: number | undefined;
  /** When the JWT starts being valid (its `nbf`, ms since the epoch), if it says: nats-server refuses it before. */
  notBefore: number | undefined;
  /** When it was issued (its `iat`, ms since the epoch), if it says: its lifetime sets how early an expiry is warned of. */
  issuedAt: number | undefined;
}

/** A user's NKey seed as nk and nsc write it: `SU`, then base32 of the key and its checksum (58 characters in all). */
export const USER_SEED = /^SU[A-Z2-7]{56}$/;

/** A line that opens or closes a block: dashes, words, dashes (nats.js and the Go client take any such line). */
const FENCE = /^-{3,}[^-\n]*-{3,}$/;

/**
 * The JWT and seed of a credentials file's text, or why it holds none (a sentence to follow the
 * file's name). The first block is the JWT, the second the seed, as both NATS clients read it.
 */
export function parseCreds(text: string): NatsCreds | { problem: string } {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const blocks: string[] = [];
  for (let i = 0; i < lines.length && blocks.length < 2; i++) {
    if (!FENCE.test(lines[i]!)) continue;
    const end = lines.findIndex((l, j) => j > i && FENCE.test(l));
    if (end < 0) break;
    blocks.push(lines.slice(i + 1, end).join(''));
    i = end;
  }
  const shape = 'a user JWT and its NKey seed, each between -----BEGIN ...----- and ------END ...------ lines, as `nsc generate creds` writes them';
  if (blocks.length < 2) return { problem: `is not a NATS credentials file: it should hold ${shape}${blocks.length === 1 ? ' (it has one such block)' : ''}` };
  const [jwt, seed] = blocks as [string, string];
  const claims = jwtClaims(jwt);
  if (typeof claims === 'string') return { problem: `holds no user JWT in its first block: ${claims}` };
  // A v1 JWT (nsc before 2.0, often without an expiry) says its type among the standard claims;
  // nats-server still takes it, reading that type first, as nats-io/jwt v2 does.
  const type = typeof claims.type === 'string' && claims.type !== '' ? claims.type : (claims.nats as { type?: unknown } | undefined)?.type;
  if (type !== 'user')
    return {
      problem: `holds no user JWT in its first block: the JWT is ${typeof type === 'string' ? `of type '${type}'` : 'not a NATS JWT (no nats.type)'}, where a user's (nats.type 'user') is needed`,
    };
  if (!USER_SEED.test(seed)) return { problem: 'holds no user NKey seed in its second block (SU... of 58 characters)' };
  // nats-server would refuse the signature as 'Authorization Violation', which names neither part.
  const owner = userPublicKey(seed);
  if (owner === undefined) return { problem: 'holds no valid user NKey seed in its second block (its checksum does not match)' };
  if (owner !== claims.sub) return { problem: "holds a seed that is not the JWT's user's (the seed's public key is not the JWT's `sub`): a JWT and a seed from different users" };
  return { jwt, seed, expiresAt: jwtTime(claims.exp), notBefore: jwtTime(claims.nbf), issuedAt: jwtTime(claims.iat) };
}

/** A JWT time claim (seconds since the epoch) in ms, or undefined when absent or 0 (nats-io/jwt writes 0 for none). */
function jwtTime(claim: unknown): number | undefined {
  return typeof claim === 'number' && claim > 0 ? claim * 1000 : undefined;
}

/** A JWT's claims, or why it is not a JWT (never quoting it). */
function jwtClaims(jwt: string): Record<string, unknown> | string {
  const parts = jwt.split('.');
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return 'a JWT is three base64url parts joined by dots';
  try {
    const claims: unknown = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
    if (claims !== null && typeof claims === 'object' && !Array.isArray(claims)) return claims as Record<string, unknown>;
  } catch {
    // Said below.
  }
  return "the JWT's claims (its middle part) are not a JSON object";
}

/** nkeys.js, the NKey library of nats.js itself, loaded only for a credentials file (validate of other configs loads none). */
let nkeysModule: typeof import('nkeys.js') | undefined;
const nkeys = () => (nkeysModule ??= createRequire(import.meta.url)('nkeys.js') as typeof import('nkeys.js'));

/** The public key (`U...`) of a user seed (`SU...`), as the server derives it; undefined when its checksum is wrong. */
export function userPublicKey(seed: string): string | undefined {
  // Loaded outside the try: a module that cannot load is no seed's fault.
  const lib = nkeys();
  try {
    return lib.fromSeed(new TextEncoder().encode(seed)).getPublicKey();
  } catch {
    return undefined;
  }
}

/**
 * Why a refused login may be the file's JWT: it expired, or is not valid yet (its `nbf`), by this
 * machine's clock (nats-server then says only `Authorization Violation`).
 */
export function credsRefusalHint(creds: NatsCreds | undefined, now = Date.now()): string {
  const why = credsTimeProblem(creds, now);
  return why === undefined ? '' : `; the user JWT of credsFile ${why}`;
}

/**
 * Why the JWT cannot log in now by this machine's clock (expired, or not valid yet), with what to
 * do, or undefined. nats-server checks both claims against its own clock, with no leeway.
 */
export function credsTimeProblem(creds: NatsCreds | undefined, now = Date.now()): string | undefined {
  if (creds?.expiresAt !== undefined && creds.expiresAt <= now) return `expired at ${new Date(creds.expiresAt).toISOString()}: give the broker a new one (nsc generate creds)`;
  if (creds?.notBefore !== undefined && creds.notBefore > now)
    return `is not valid before ${new Date(creds.notBefore).toISOString()} (its nbf): nats-server refuses it until then; check this machine's and the server's clocks, or issue one valid now`;
  return undefined;
}

/** The most an expiry is warned of ahead: a week, time to get a new file through a change process. */
export const EXPIRY_WARNING_MS = 7 * 24 * 3600 * 1000;

/**
 * When to warn that the JWT is about to expire (ms since the epoch), or undefined for a JWT that
 * never does: EXPIRY_WARNING_MS before its `exp`, or a fifth of its lifetime (`exp` − `iat`) before
 * when that is shorter, so a short-lived JWT rotated in time (an hour's, renewed every 40 minutes)
 * is never warned of, while one left to run out is, 12 minutes ahead.
 */
export function expiryWarningAt(creds: NatsCreds | undefined): number | undefined {
  if (creds?.expiresAt === undefined) return undefined;
  const lifetime = creds.issuedAt === undefined ? Number.POSITIVE_INFINITY : creds.expiresAt - creds.issuedAt;
  return creds.expiresAt - Math.min(EXPIRY_WARNING_MS, Math.max(0, lifetime) / 5);
}
