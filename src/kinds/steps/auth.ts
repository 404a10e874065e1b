import { createHash, createPublicKey, X509Certificate, type KeyObject, type webcrypto } from 'node:crypto';
import { createRequire } from 'node:module';
import type { JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from 'jose';
import { parse as parseYaml } from '../../config/yaml.js';
import { problem, type Problem } from '../../core/errors.js';
import { headerValue, type HttpAnswer, httpGet } from '../../core/http-get.js';
import type { Identity, Message, MessageContext, RequestMeta } from '../../core/message.js';
import type { StepStop } from '../../core/outcome.js';
import type { Admission, CompiledStep, Credential, StepCompileContext, StepRouteContext } from '../contracts.js';
import { defineStep, exactlyOne, mapOf, oneOf, stringMatching, Type, type Static, type TSchema } from '../define.js';

type ClaimValue = string | number | boolean;

const DEFAULT_API_KEY_HEADER = 'x-api-key';
/** Shorter keys can be guessed; a `sha256:` digest stands for a key of any length the operator chose. */
const MIN_API_KEY_LENGTH = 16;
/** RFC 7518 §3.2: an HMAC key must be at least as long as the hash output. */
const MIN_HMAC_SECRET_CHARS = 32;
const HMAC_ALGORITHMS = ['HS256', 'HS384', 'HS512'];
/** The key types (`kty`) of JSON Web Keys that can verify a token. */
const JWK_TYPES = ['RSA', 'EC', 'OKP', 'oct'];

/** A JWK that may verify signatures, as jose's key sets judge `use` and `key_ops` (RFC 7517 §4.2, §4.3). */
function verifies(jwk: unknown): boolean {
  const { use, key_ops: ops } = jwk as { use?: unknown; key_ops?: unknown };
  return (use === undefined || use === 'sig') && (ops === undefined || (Array.isArray(ops) && ops.includes('verify')));
}
const ASYMMETRIC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const SHA256_DIGEST = /^sha256:([0-9a-f]{64})$/i;
/** A JWKS URL's keys: refetched for an unknown key id at most this often (jose's cooldown), kept this long by default. */
const JWKS_COOLDOWN_MS = 30_000;
const JWKS_MAX_AGE_MS = 10 * 60_000;
const JWKS_MIN_MAX_AGE_MS = 1_000;
/** jose's errors that judge a token against a key set it has: not a failure to fetch the set. */
const KEY_SET_VERDICTS = new Set(['ERR_JWKS_NO_MATCHING_KEY', 'ERR_JWKS_MULTIPLE_MATCHING_KEYS', 'ERR_JOSE_NOT_SUPPORTED']);
/** After a fetch of a JWKS URL failed, the next is not tried before this: tokens that need it meanwhile are 503. */
const JWKS_RETRY_AFTER_FAILURE_MS = 2_000;
const JWKS_TIMEOUT_MS = 5_000;
/**
 * The most of a jwksUrl's answer that is read: a provider's key set is a few KiB (a dozen RSA keys,
 * about 10 KiB). A URL that names another document (a download, a stream) was read whole, as fast
 * as it came, for the 5 s of the fetch (344 MB in one run), and then called "did not answer".
 */
const JWKS_MAX_BYTES = 1024 * 1024;

/**
 * The outcome of checking one request's credentials. `until` bounds how long the answer may be
 * reused for the same request (a WebSocket connection's handshake): a JWT's expiry.
 */
type Verdict = { ok: true; identity: Identity; until: number } | { ok: false; problem: Problem; failed?: true };

interface Verifier {
  verify(req: RequestMeta): Verdict | Promise<Verdict>;
  /** Removes the credential from what travels on: the header from the message, the parameter from $query. */
  strip(msg: Message, ctx: MessageContext): Message;
  /** Headers it reads the credential from. */
  headers: string[];
  /** The verifier as one route runs it (a jwksUrl's key set kept in the route's step state, its warnings in the route's log). */
  forRoute?(rt: StepRouteContext): Verifier;
}

const nonEmpty = Type.String({ minLength: 1 });
const oneOrMore = <T extends TSchema>(item: T, description?: string) => oneOf([item, Type.Array(item, { minItems: 1 })], description === undefined ? {} : { description });
const claimValue = Type.Unsafe<ClaimValue>({ type: ['string', 'number', 'boolean'] });

const apiKeyOptions = Type.Object(
  {
    header: Type.Optional(Type.String({ minLength: 1, description: `Header carrying the key (default \`${DEFAULT_API_KEY_HEADER}\` unless \`query\` is set).` })),
    query: Type.Optional(Type.String({ minLength: 1, description: 'Query parameter carrying the key (for browsers opening WebSockets).' })),
    keys: Type.Optional(
      mapOf(oneOrMore(nonEmpty), {
        minProperties: 1,
        description: `Principal → key (or list of keys), each at least ${MIN_API_KEY_LENGTH} characters or written as \`sha256:<hex digest>\` of the key.`,
      }),
    ),
    keysFile: Type.Optional(Type.String({ minLength: 1, description: 'YAML/JSON file with the same principal → key map; watched. A syntax error in it is reported at its line and column there.' })),
  },
  {
    additionalProperties: false,
    description: `The key is read from \`header\` or the \`query\` parameter and looked up in \`keys\` or \`keysFile\` (compared as SHA-256 digests). A missing or unknown key is 401, with \`WWW-Authenticate: ApiKey header="<header>"\` (\`query="<query>"\` for the query parameter).`,
    ...exactlyOne(['keys', 'keysFile']),
  },
);

const jwtOptions = Type.Object(
  {
    secret: Type.Optional(
      Type.String({
        minLength: MIN_HMAC_SECRET_CHARS,
        description: `HMAC secret (HS256/384/512), at least ${MIN_HMAC_SECRET_CHARS} characters, so 32 bytes or more (RFC 7518 §3.2: 256 bits for HS256).`,
      }),
    ),
    publicKey: Type.Optional(Type.String({ minLength: 1, description: 'PEM file with the public key (SPKI) or an X.509 certificate; watched.' })),
    jwksFile: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'JSON Web Key Set file; watched. Read as JSON whatever its name: a syntax error is reported at its line and column there. A set with no key of a type that verifies tokens (kty RSA, EC, OKP or oct) is refused at load, not left to refuse every token.',
      }),
    ),
    jwksUrl: Type.Optional(
      stringMatching('^https?://', 'an https URL (https://host/path; http only on a loopback host)', {
        description:
          'JSON Web Key Set URL (https, or http on a loopback host; no `user:password@`); cached for `jwksCacheMaxAgeMs`, refetched for unknown key ids at most every 30 s. While it cannot be fetched (tried again at most every 2 s, each failure a warning), tokens are verified with the last key set it gave; a token none of those keys verifies, or any token before a first fetch succeeded, answers 503.',
      }),
    ),
    jwksCacheMaxAgeMs: Type.Optional(
      Type.Integer({
        minimum: JWKS_MIN_MAX_AGE_MS,
        default: JWKS_MAX_AGE_MS,
        description: `How long keys fetched from \`jwksUrl\` are used before the set is fetched again (by the next token; at least ${JWKS_MIN_MAX_AGE_MS} ms). A token whose signature a key held verifies is judged at once while that fetch goes on; others wait for it (up to 5 s). Should the fetch fail, the keys it had are still used until one succeeds, so a short age makes the gateway notice rotations sooner without making it depend on the identity provider being up.`,
        examples: [300000],
      }),
    ),
    algorithms: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        minItems: 1,
        description:
          "Accepted signature algorithms (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384/512, EdDSA); default HS256/384/512 for a secret, the key's own for a PEM key, the asymmetric ones for a JWKS. An unknown name, one a `publicKey` does not verify, or an HMAC one with `jwksUrl` (a published key set is public) is a config error.",
      }),
    ),
    issuer: Type.Optional(oneOrMore(nonEmpty, 'Accepted issuer (`iss`), or a list.')),
    audience: Type.Optional(oneOrMore(nonEmpty, 'Accepted audience (`aud`), or a list.')),
    requiredClaims: Type.Optional(
      mapOf(oneOrMore(claimValue), {
        description: 'Claim → accepted value (or list; array claims and the space-separated `scope` must contain one); a valid token without it is refused with 403.',
      }),
    ),
    query: Type.Optional(Type.String({ minLength: 1, description: 'Query parameter that may carry the token instead of Authorization: Bearer.' })),
    principalClaim: Type.Optional(
      Type.String({
        minLength: 1,
        default: 'sub',
        description: 'The claim that becomes `$principal` (a string or a number; a token whose claim holds anything else, an object or a list, is refused with 401: RFC 7519 makes `sub` a string).',
      }),
    ),
    clockToleranceSec: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 300,
        default: 0,
        description:
          'Clock skew allowed when checking `exp` and `nbf`. `iat` (when the token was issued) is not checked against the clock, as RFC 7519 leaves it informational: a token from an issuer whose clock runs ahead is accepted; a token not valid yet says so with `nbf`.',
      }),
    ),
    requireExp: Type.Optional(
      Type.Boolean({
        default: false,
        description:
          'Refuse (401) tokens without an `exp` claim, which would otherwise be accepted for ever. A WebSocket client admitted with a token is closed with 4401 when it expires (an event stream is ended).',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      'The token comes from `Authorization: Bearer` or the `query` parameter and is verified with exactly one key source. Missing, malformed, expired, badly signed, wrong issuer/audience: 401; failing requiredClaims: 403.',
    ...exactlyOne(['secret', 'publicKey', 'jwksFile', 'jwksUrl']),
  },
);

/** Exported for forward targets' `auth:` (same options, checked at the subscriber's handshake). */
export const authOptions = Type.Object(
  { apiKey: Type.Optional(apiKeyOptions), jwt: Type.Optional(jwtOptions) },
  { additionalProperties: false, minProperties: 1, maxProperties: 1, description: 'Exactly one of apiKey or jwt.' },
);
export type AuthOptions = Static<typeof authOptions>;
type ApiKeyOptions = Static<typeof apiKeyOptions>;
type JwtOptions = Static<typeof jwtOptions>;

export const authStep = defineStep({
  kind: 'auth',
  options: authOptions,
  doc: {
    summary:
      "Lets a message through only when the client's credentials are valid, and makes its identity available to later steps as `$principal` (and, for JWTs, `$claims`). " +
      '`apiKey` takes a key from a header (default `x-api-key`) or a query parameter and looks it up in `keys` / `keysFile` (principal → key; keys are compared as SHA-256 digests, and may be written as `sha256:<hex>`). ' +
      '`jwt` takes a token from `Authorization: Bearer` or the `query` parameter and verifies it (jose) with `secret`, `publicKey`, `jwksFile` or `jwksUrl`, checking `algorithms`, `issuer`, `audience`, expiry and `requiredClaims`. ' +
      'A missing or invalid credential (unknown key, bad signature, expired, wrong issuer or audience) answers 401; a valid token that fails `requiredClaims` answers 403. ' +
      "On WebSocket routes the check runs at the handshake: a refused client gets 401/403 instead of a connection. On an HTTP publish route whose chain begins with `auth` it runs on the request's head, before the body is read: a client without credentials gets the 401, whatever its body (an `auth` after other steps runs in its turn, after the body was read and judged). The credential is removed from the message (header) and from `$query` before later steps. " +
      'Key and certificate files are watched: editing one reloads the route. Only for routes from a listener.',
    example:
      'chains:\n  publishers:                  # JWTs\n    - auth:\n        jwt:\n          jwksUrl: https://login.example.com/.well-known/jwks.json\n          jwksCacheMaxAgeMs: 300000   # refetch every 5 min; the keys held serve while the IdP is down\n          issuer: https://login.example.com/\n          audience: eventgate\n          requiredClaims: {scope: publish}\n  sensors:                     # or API keys\n    - auth:\n        apiKey:\n          header: x-api-key\n          keys:\n            sensor-fleet: ${SENSOR_KEY}\n            dashboard: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
  },
  compile(options, ctx) {
    const verifier = options.apiKey ? apiKeyVerifier(options.apiKey, ctx) : options.jwt ? jwtVerifier(options.jwt, ctx) : undefined;
    if (!verifier) return undefined;
    return authenticator(verifier, credentialsOf(options));
  },
});

/** Where the options have a client present its credential, as the verifiers read it: a header, a query parameter, or both. */
function credentialsOf(o: AuthOptions): Credential[] {
  if (o.jwt) return [{ in: 'header', name: 'authorization', token: 'JWT' }, ...(o.jwt.query === undefined ? [] : [{ in: 'query' as const, name: o.jwt.query, token: 'JWT' as const }])];
  const header = o.apiKey?.header ?? (o.apiKey?.query === undefined ? DEFAULT_API_KEY_HEADER : undefined);
  return [
    ...(header === undefined ? [] : [{ in: 'header' as const, name: header.toLowerCase(), token: 'apiKey' as const }]),
    ...(o.apiKey?.query === undefined ? [] : [{ in: 'query' as const, name: o.apiKey.query, token: 'apiKey' as const }]),
  ];
}

/**
 * The compiled step. Verdicts are cached per request object, so a WebSocket client's handshake
 * credentials are verified once and not again for every frame — until a JWT expires, after
 * which its frames are refused. A reload compiles a new step with an empty cache, so changed
 * keys apply to connected clients from their next frame.
 */
function authenticator(verifier: Verifier, credentials: readonly Credential[]): CompiledStep {
  const verdicts = new WeakMap<RequestMeta, Verdict & { ok: true }>();
  const check = (req: RequestMeta): Verdict | Promise<Verdict> => {
    const cached = verdicts.get(req);
    if (cached && Date.now() < cached.until) return cached;
    const v = verifier.verify(req);
    const remember = (verdict: Verdict) => {
      if (verdict.ok) verdicts.set(req, verdict);
      return verdict;
    };
    return v instanceof Promise ? v.then(remember) : remember(v);
  };
  const finish = (verdict: Verdict, msg: Message, ctx: MessageContext): Message | StepStop => {
    // A key set that could not be fetched is the gateway's failure, not the client's: logged as a warning, counted as failed.
    if (!verdict.ok) return { stop: verdict.failed ? 'failed' : 'rejected', problem: verdict.problem };
    ctx.identity = verdict.identity;
    return verifier.strip(msg, ctx);
  };
  return {
    kind: 'auth',
    keepsValue: true,
    needsClient: true,
    binds: ['principal', 'claims'],
    credentialHeaders: verifier.headers,
    credentials,
    run(msg, ctx) {
      if (!ctx.request) return { stop: 'rejected', problem: problem('EG_UNAUTHORIZED', 'this message did not come from a client request, so it carries no credentials') };
      const v = check(ctx.request);
      return v instanceof Promise ? v.then((verdict) => finish(verdict, msg, ctx)) : finish(v, msg, ctx);
    },
    async admit(req): Promise<Admission> {
      const verdict = await check(req);
      return verdict.ok ? { ok: true, identity: verdict.identity, ...(Number.isFinite(verdict.until) ? { until: verdict.until } : {}) } : verdict;
    },
    ...(verifier.forRoute ? { forRoute: (rt: StepRouteContext) => authenticator(verifier.forRoute!(rt), credentials) } : {}),
  };
}

/**
 * A JWKS file's content; undefined when it cannot be read or is no JSON (reported). Parsed as JSON
 * whatever its name (`keys.jwks`, `jwks` from a ConfigMap key), keeping positions, so a syntax
 * error (a hand edit cut short, a reload reading a file being written) is reported at its line and
 * column in that file, as a schema file's is.
 */
function readKeySet(file: string, ctx: StepCompileContext): unknown {
  if (ctx.readDocument) return ctx.readDocument(file, ['jwt', 'jwksFile'], { json: true })?.value;
  const text = ctx.readFile(file, ['jwt', 'jwksFile']);
  return text === undefined ? undefined : JSON.parse(text);
}

// ---- apiKey --------------------------------------------------------------------------------

function apiKeyVerifier(o: ApiKeyOptions, ctx: StepCompileContext): Verifier | undefined {
  let map: unknown = o.keys;
  let at: (string | number)[] = ['apiKey', 'keys'];
  if (o.keysFile !== undefined) {
    at = ['apiKey', 'keysFile'];
    if (ctx.readDocument) {
      // Parsed keeping positions: a syntax error is reported at its line and column in the keys file itself.
      const doc = ctx.readDocument(o.keysFile, at);
      if (doc === undefined) return undefined;
      map = doc.value;
    } else {
      const text = ctx.readFile(o.keysFile, at);
      if (text === undefined) return undefined;
      try {
        map = parseYaml(text);
      } catch (err) {
        ctx.report(at, 'EG_CONFIG_FILE', `keys file '${o.keysFile}' is not valid YAML/JSON: ${(err as Error).message.split('\n')[0]}`);
        return undefined;
      }
    }
  }
  // Keys are held (and compared) as SHA-256 digests: a map lookup of the presented key's digest
  // takes no longer for a near miss than for a far one, and the plan holds no plain keys.
  const byDigest = new Map<string, string>();
  const problems: string[] = [];
  if (map === null || typeof map !== 'object' || Array.isArray(map) || Object.keys(map).length === 0) {
    problems.push('must map each principal to a key or a list of keys');
  } else {
    for (const [principal, value] of Object.entries(map as Record<string, unknown>)) {
      const list = Array.isArray(value) ? value : [value];
      for (const key of list) {
        if (typeof key !== 'string') {
          problems.push(`the key of '${principal}' must be a string`);
          continue;
        }
        const digest = SHA256_DIGEST.exec(key)?.[1]?.toLowerCase();
        if (digest === undefined && key.length < MIN_API_KEY_LENGTH) {
          problems.push(`the key of '${principal}' is shorter than ${MIN_API_KEY_LENGTH} characters; use a longer random key (or its sha256:<hex> digest)`);
          continue;
        }
        const d = digest ?? sha256(key);
        const other = byDigest.get(d);
        if (other !== undefined && other !== principal) problems.push(`'${principal}' and '${other}' share a key; a key must name one principal`);
        byDigest.set(d, principal);
      }
    }
  }
  if (problems.length > 0) {
    const where = o.keysFile !== undefined ? `keys file '${o.keysFile}'` : 'apiKey.keys';
    for (const p of problems) ctx.report(at, o.keysFile !== undefined ? 'EG_CONFIG_FILE' : 'EG_CONFIG_SCHEMA', `${where}: ${p}`);
    return undefined;
  }
  const header = o.header ?? (o.query === undefined ? DEFAULT_API_KEY_HEADER : undefined);
  const headerName = header?.toLowerCase();
  const param = o.query;
  const where = [headerName && `header ${headerName}`, param && `query parameter ${param}`].filter(Boolean).join(' or ');
  // RFC 9110 §15.5.2: a 401 carries a challenge. No scheme is registered for API keys; this is the
  // form some APIs use, naming where the key goes.
  const challenge = { 'www-authenticate': `ApiKey ${[headerName && `header=${quoted(headerName)}`, param && `query=${quoted(param)}`].filter(Boolean).join(', ')}` };
  return {
    verify(req) {
      const presented = (headerName && first(req.headers[headerName])) || (param && first(req.query[param])) || undefined;
      if (presented === undefined) return refuse('EG_UNAUTHORIZED', `an API key is required (${where})`, challenge);
      const principal = byDigest.get(sha256(presented));
      if (principal === undefined) return refuse('EG_UNAUTHORIZED', 'the API key is not valid', challenge);
      return { ok: true, identity: { principal, claims: undefined }, until: Infinity };
    },
    strip: (msg, ctx) => stripCredential(msg, ctx, headerName, param),
    headers: headerName ? [headerName] : [],
  };
}

// ---- jwt -----------------------------------------------------------------------------------

function jwtVerifier(o: JwtOptions, ctx: StepCompileContext): Verifier | undefined {
  // The schema guarantees exactly one key source.
  let key: Uint8Array | KeyObject | JWTVerifyGetKey;
  if (o.algorithms !== undefined) {
    // A name jose does not know (a typo, \`none\`) verifies nothing: every token would be refused 401, with nothing said at load.
    const unknown = o.algorithms.filter((a) => !HMAC_ALGORITHMS.includes(a) && !ASYMMETRIC_ALGORITHMS.includes(a));
    if (unknown.length > 0) {
      ctx.report(
        ['jwt', 'algorithms'],
        'EG_CONFIG_SCHEMA',
        `unknown signature algorithm ${unknown.map((a) => `'${a}'`).join(', ')}; known: ${[...HMAC_ALGORITHMS, ...ASYMMETRIC_ALGORITHMS].join(', ')}`,
      );
      return undefined;
    }
  }
  if (o.jwksCacheMaxAgeMs !== undefined && o.jwksUrl === undefined) {
    ctx.report(['jwt', 'jwksCacheMaxAgeMs'], 'EG_CONFIG_SCHEMA', 'jwksCacheMaxAgeMs applies to keys fetched from a jwksUrl, and this jwt has none');
    return undefined;
  }
  let algorithms = o.algorithms;
  /** For a jwksUrl: why its last fetch failed. */
  let remote: (() => string) | undefined;
  let forRoute: ((rt: StepRouteContext) => Verifier) | undefined;
  if (o.secret !== undefined) {
    key = new TextEncoder().encode(o.secret);
    algorithms ??= HMAC_ALGORITHMS;
    const wrong = algorithms.filter((a) => !HMAC_ALGORITHMS.includes(a));
    if (wrong.length > 0) {
      ctx.report(['jwt', 'algorithms'], 'EG_CONFIG_SCHEMA', `a secret verifies only HMAC algorithms (${HMAC_ALGORITHMS.join(', ')}), not ${wrong.join(', ')}`);
      return undefined;
    }
  } else if (o.publicKey !== undefined) {
    const pem = ctx.readFile(o.publicKey, ['jwt', 'publicKey']);
    if (pem === undefined) return undefined;
    if (pem.includes('PRIVATE KEY')) {
      ctx.report(['jwt', 'publicKey'], 'EG_CONFIG_FILE', `'${o.publicKey}' holds a private key; the gateway only needs (and should only have) the public key`);
      return undefined;
    }
    try {
      key = pem.includes('BEGIN CERTIFICATE') ? new X509Certificate(pem).publicKey : createPublicKey(pem);
    } catch (err) {
      ctx.report(['jwt', 'publicKey'], 'EG_CONFIG_FILE', `'${o.publicKey}' is not a PEM public key or certificate: ${(err as Error).message}`);
      return undefined;
    }
    const own = algorithmsFor(key);
    const wrong = (algorithms ?? []).filter((a) => !own.includes(a));
    if (wrong.length > 0) {
      // An HMAC algorithm here is the classic confusion (a token "signed" with the public key's text); jose refuses such tokens, but the route would accept none.
      ctx.report(['jwt', 'algorithms'], 'EG_CONFIG_SCHEMA', `the ${key.asymmetricKeyType} key in '${o.publicKey}' verifies ${own.join(', ')}, not ${wrong.join(', ')}`);
      return undefined;
    }
    algorithms ??= own;
  } else if (o.jwksFile !== undefined) {
    let set: { keys?: unknown };
    try {
      set = readKeySet(o.jwksFile, ctx) as { keys?: unknown };
      if (set === undefined) return undefined;
      key = jose().createLocalJWKSet(set as Parameters<ReturnType<typeof jose>['createLocalJWKSet']>[0]);
    } catch (err) {
      ctx.report(['jwt', 'jwksFile'], 'EG_CONFIG_FILE', `'${o.jwksFile}' is not a JSON Web Key Set: ${(err as Error).message}`);
      return undefined;
    }
    // A set with no key of a known type verifies no token: every request would be refused 401, with nothing said at load.
    const typed = Array.isArray(set.keys) ? set.keys.filter((k) => JWK_TYPES.includes((k as { kty?: unknown } | null)?.kty as string)) : [];
    if (typed.length === 0) {
      ctx.report(['jwt', 'jwksFile'], 'EG_CONFIG_FILE', `'${o.jwksFile}' holds no key to verify tokens with (a key whose kty is ${JWK_TYPES.join(', ')})`);
      return undefined;
    }
    // jose skips a key marked for another use (`use: enc`, `key_ops` without `verify`): a set of only such keys refuses every token as well.
    if (!typed.some(verifies)) {
      ctx.report(
        ['jwt', 'jwksFile'],
        'EG_CONFIG_FILE',
        `'${o.jwksFile}' holds no key to verify tokens with: its keys are marked for another use (a "use" other than "sig", or "key_ops" without "verify")`,
      );
      return undefined;
    }
    algorithms ??= ASYMMETRIC_ALGORITHMS;
  } else {
    const url = new URL(o.jwksUrl!);
    if (url.protocol !== 'https:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
      ctx.report(['jwt', 'jwksUrl'], 'EG_CONFIG_SCHEMA', 'jwksUrl must use https (http is accepted only on a loopback host): keys fetched in the clear could be replaced');
      return undefined;
    }
    // fetch() refuses a URL with credentials, and said so with the URL, password and all, in every warning: each token was 503.
    if (url.username !== '' || url.password !== '') {
      ctx.report(['jwt', 'jwksUrl'], 'EG_CONFIG_SCHEMA', 'jwksUrl must not hold a user or password (user:password@): a key set is public, and the fetch would be refused, every token 503');
      return undefined;
    }
    const hmac = (algorithms ?? []).filter((a) => HMAC_ALGORITHMS.includes(a));
    if (hmac.length > 0) {
      ctx.report(
        ['jwt', 'algorithms'],
        'EG_CONFIG_SCHEMA',
        `a key set served at a URL is public: with ${hmac.join(', ')}, a shared secret published in it would let anyone make tokens; list asymmetric algorithms, or use secret or jwksFile`,
      );
      return undefined;
    }
    const maxAgeMs = o.jwksCacheMaxAgeMs ?? JWKS_MAX_AGE_MS;
    const set = remoteKeySet(url, maxAgeMs);
    key = set.getKey;
    remote = set.lastFailure;
    algorithms ??= ASYMMETRIC_ALGORITHMS;
    // Each route keeps its key set in its step state: a reload that rebuilds the route with this step unchanged keeps the keys it had.
    forRoute = (rt) => {
      const own = rt.state(() => remoteKeySet(url, maxAgeMs));
      own.warn = rt.warn;
      return verifierWith(own.getKey, own.lastFailure);
    };
  }
  const verifyOptions = { algorithms, issuer: o.issuer, audience: o.audience, clockTolerance: o.clockToleranceSec ?? 0, ...(o.requireExp ? { requiredClaims: ['exp'] } : {}) };
  const required = Object.entries(o.requiredClaims ?? {}).map(([name, v]) => [name, Array.isArray(v) ? v : [v]] as const);
  const principalClaim = o.principalClaim ?? 'sub';
  const param = o.query;
  const toleranceMs = (o.clockToleranceSec ?? 0) * 1000;

  const verifierWith = (key: Uint8Array | KeyObject | JWTVerifyGetKey, remote: (() => string) | undefined): Verifier => ({
    verify: (req) => verify(req, key, remote),
    strip: (msg, ctx) => stripCredential(msg, ctx, undefined, param),
    headers: ['authorization'],
  });
  const verify = async (req: RequestMeta, key: Uint8Array | KeyObject | JWTVerifyGetKey, remote: (() => string) | undefined): Promise<Verdict> => {
    const token = bearer(req, param);
    if (typeof token !== 'string') return token;
    let payload: JWTPayload;
    try {
      ({ payload } = await jose().jwtVerify(token, key as Uint8Array, verifyOptions));
    } catch (err) {
      const tried = await eachMatchingKey(err, token, verifyOptions);
      if (!tried.ok) return jwtFailure(tried.err, remote);
      payload = tried.payload;
    }
    for (const [name, accepted] of required) {
      const have = claimValues(name, payload[name]);
      if (!accepted.some((a) => have.includes(a))) {
        return refuse('EG_FORBIDDEN', have.length === 0 ? `the token has no '${name}' claim, which this route requires` : `the token's '${name}' claim is not one this route accepts`, {
          'www-authenticate': 'Bearer realm="eventgate", error="insufficient_scope"',
        });
      }
    }
    const p = payload[principalClaim];
    // A principal claim that names no one (`sub: {...}`; RFC 7519 makes `sub` a string) is a malformed
    // token, not an anonymous one: a ratelimit keyed on `$principal` would fall back to the address.
    if (p !== undefined && p !== null && typeof p !== 'string' && typeof p !== 'number') return invalidToken(`the token's "${principalClaim}" claim is not a string`);
    const identity: Identity = { principal: typeof p === 'string' || typeof p === 'number' ? String(p) : undefined, claims: payload as Record<string, unknown> };
    return { ok: true, identity, until: typeof payload.exp === 'number' ? payload.exp * 1000 + toleranceMs : Infinity };
  };
  const verifier = verifierWith(key, remote);
  return forRoute ? { ...verifier, forRoute } : verifier;
}

/** On a jwksUrl's candidates from the keys held while the URL fails: the fetch's failure, the verdict when none verifies. */
const UNJUDGED = Symbol('the key set could not be fetched');

/** A jwksUrl's keys; `warn` is where a failed fetch is told while older keys stand in (the route's log, once it runs). */
interface RemoteKeySet {
  getKey: JWTVerifyGetKey;
  lastFailure: () => string;
  warn: StepRouteContext['warn'] | undefined;
}

/**
 * jose's remote key set, whose fetches are spaced after a failure too, and whose last keys stay in
 * use while fetches fail. jose's cooldown starts only from a fetch that succeeded: while the URL
 * failed (down, 500, not a key set), every token with a key id it did not know — anyone can write
 * one, unsigned — sent a fetch to the identity provider, one request to the gateway making one to
 * it. And once its keys are `maxAgeMs` old, jose fetches before judging a token and throws when
 * that fails: an identity provider down for a minute refused every client (as Envoy's and Kong's
 * JWT filters do not). A token none of the last keys verifies keeps the fetch's failure (503): it
 * may be signed by a key published since.
 */
function remoteKeySet(url: URL, maxAgeMs: number): RemoteKeySet {
  let failedAt = -Infinity;
  let failure = '';
  const where = url.origin + url.pathname;
  const set: RemoteKeySet = { getKey: undefined as unknown as JWTVerifyGetKey, lastFailure: () => failure, warn: undefined };
  /** The keys of the last fetch that gave a key set, and when it came. */
  let last: { getKey: JWTVerifyGetKey; keys: number; at: number } | undefined;
  const failed = (why: string) => {
    failedAt = Date.now();
    failure = why;
    if (last)
      set.warn?.(
        { jwksUrl: where, where: `jwksUrl could not be fetched: ${why}`, keys: last.keys, fetchedAgoS: Math.round((failedAt - last.at) / 1000) },
        'signing keys could not be fetched; tokens are verified with the keys fetched before',
      );
  };
  const spacedFetch = async (input: string, init: RequestInit): Promise<Response> => {
    if (Date.now() - failedAt < JWKS_RETRY_AFTER_FAILURE_MS) throw new Error('the key set could not be fetched a moment ago');
    let res: HttpAnswer;
    try {
      // Not fetch, which refuses the ports the Fetch standard blocks for browsers (src/core/http-get.ts).
      // Only a 200's body can be the key set: another answer's is not read (a large error page
      // was said to be too large for a key set, when the status says what is wrong).
      res = await httpGet(input, {
        headers: Object.fromEntries(new Headers(init.headers)),
        signal: init.signal ?? undefined,
        maxBytes: JWKS_MAX_BYTES,
        readBody: (status) => status === 200,
      });
    } catch (err) {
      const e = err as Error & { code?: string };
      failed(init.signal?.aborted ? `it did not answer within ${JWKS_TIMEOUT_MS / 1000} s` : `it cannot be reached: ${e.code ?? e.message}`);
      throw err;
    }
    if (res.status !== 200) {
      const location = headerValue(res.headers, 'location');
      failed(`it answered ${res.status}${location ? ` redirecting to ${location} (redirects are not followed: give jwksUrl as that URL)` : ''}`);
      // No body: one is not allowed with a 204 or 304 (the Response constructor throws).
      return new Response(null, { status: res.status });
    }
    if (res.tooLarge) {
      failed(`it answered with more than ${JWKS_MAX_BYTES / 1024} KiB, more than any key set holds (is jwksUrl the key set's own URL?); the rest was not read`);
      throw new Error('the key set answer is too large');
    }
    const text = new TextDecoder().decode(res.body);
    if (!isKeySet(text)) failed('it answered 200 with something that is not a JSON Web Key Set ({"keys": [...]})');
    else kept(text);
    return new Response(text, { status: res.status });
  };
  const j = jose();
  const kept = (text: string) => {
    try {
      const jwks = JSON.parse(text) as { keys: object[] };
      last = { getKey: j.createLocalJWKSet(jwks as Parameters<typeof j.createLocalJWKSet>[0]), keys: jwks.keys.length, at: Date.now() };
    } catch {
      // jose refuses it too: its own fetch fails, and the keys held before stay.
    }
  };
  const remote = j.createRemoteJWKSet(url, { timeoutDuration: JWKS_TIMEOUT_MS, cooldownDuration: JWKS_COOLDOWN_MS, cacheMaxAge: maxAgeMs, [j.customFetch]: spacedFetch });
  set.getKey = async (header, token) => {
    // Keys `maxAgeMs` old: jose fetches them again before it judges the token, so while the URL is
    // slow (up to JWKS_TIMEOUT_MS) every token waited for that fetch, with keys in hand that verify
    // it. A token whose signature a held key verifies is judged with it at once, the fetch going on
    // behind it (as Envoy's jwt_authn refreshes in the background); any other waits for the fetch, as
    // before (a key id the set did not have, several it could name, a key id reused for a new key).
    if (last !== undefined && Date.now() - last.at >= maxAgeMs) {
      try {
        const key = await last.getKey(header, token);
        await j.flattenedVerify(token, key);
        void remote(header, token).catch(() => undefined);
        return key;
      } catch {
        // Judged as below.
      }
    }
    try {
      return await remote(header, token);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (last === undefined || (code !== undefined && KEY_SET_VERDICTS.has(code))) throw err;
      try {
        return await last.getKey(header, token);
      } catch (held) {
        // Several held keys the token could name: each is tried (eachMatchingKey), and a token none
        // of them verifies keeps the fetch's failure, as one no held key matches does.
        if ((held as { code?: string }).code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw Object.assign(held as object, { [UNJUDGED]: err });
        throw err;
      }
    }
  };
  return set;
}

/**
 * A key set with more than one key the token could name (a kid two keys share, or no kid and
 * several keys of its type): jose names none and hands the candidates over. Each is a key the
 * set trusts, so each is tried, as Envoy's jwt_authn does; the first that verifies the signature
 * gives the verdict (its claims may still fail). Were none tried, every token of such a set would
 * be refused. Candidates from the keys a jwksUrl held while it fails that none verifies are not a
 * verdict: the token may be signed by a key published since (503, as remoteKeySet says).
 */
async function eachMatchingKey(err: unknown, token: string, options: JWTVerifyOptions): Promise<{ ok: true; payload: JWTPayload } | { ok: false; err: unknown }> {
  if ((err as { code?: string }).code !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS' || !(Symbol.asyncIterator in (err as object))) return { ok: false, err };
  let last: unknown;
  for await (const key of err as AsyncIterable<webcrypto.CryptoKey>) {
    try {
      return { ok: true, payload: (await jose().jwtVerify(token, key, options)).payload };
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return { ok: false, err: e };
      last = e;
    }
  }
  return { ok: false, err: (err as { [UNJUDGED]?: unknown })[UNJUDGED] ?? last ?? err };
}

function isKeySet(text: string): boolean {
  try {
    return Array.isArray((JSON.parse(text) as { keys?: unknown } | null)?.keys);
  } catch {
    return false;
  }
}

function bearer(req: RequestMeta, param: string | undefined): string | Verdict {
  const header = first(req.headers.authorization);
  const fromQuery = param === undefined ? undefined : first(req.query[param]);
  // Another scheme's credentials (`Basic`, which a browser adds by itself on a site behind basic
  // auth, EventSource and WebSocket requests included) are not this step's: the query's token is.
  if (header !== undefined && !(fromQuery && !/^Bearer(?:[ \t]|$)/i.test(header))) {
    const m = /^Bearer[ \t]+([^ \t]+)[ \t]*$/i.exec(header);
    if (!m) return refuse('EG_UNAUTHORIZED', 'the Authorization header must be "Bearer <token>"', { 'www-authenticate': 'Bearer realm="eventgate", error="invalid_request"' });
    return m[1]!;
  }
  if (fromQuery) return fromQuery;
  return refuse('EG_UNAUTHORIZED', `a bearer token is required (Authorization: Bearer <token>${param ? ` or ?${param}=<token>` : ''})`, { 'www-authenticate': 'Bearer realm="eventgate"' });
}

/** jose's failures → 401 with a reason that helps the client and reveals nothing about the key. */
function jwtFailure(err: unknown, remote: (() => string) | undefined): Verdict {
  const code = (err as { code?: string }).code;
  const reasons: Record<string, string> = {
    ERR_JWT_EXPIRED: 'the token has expired',
    ERR_JWS_SIGNATURE_VERIFICATION_FAILED: 'the token signature does not verify',
    ERR_JOSE_ALG_NOT_ALLOWED: 'the token is signed with an algorithm this route does not accept',
    ERR_JWKS_NO_MATCHING_KEY: 'no known key matches the token',
    ERR_JWKS_MULTIPLE_MATCHING_KEYS: 'the token does not say which key signed it',
    ERR_JWS_INVALID: 'the token is malformed',
    ERR_JWT_INVALID: 'the token is malformed',
    ERR_JOSE_NOT_SUPPORTED: 'the token uses an unsupported algorithm or key type',
  };
  let reason = code === undefined ? undefined : reasons[code];
  // jose's words for a `crit` parameter it does not know (`Extension Header Parameter "x" is not recognized`): the algorithm was fine.
  if (code === 'ERR_JOSE_NOT_SUPPORTED' && (err as Error).message.startsWith('Extension Header Parameter'))
    reason = 'the token has a critical header parameter ("crit") the gateway does not understand';
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
    const e = err as { claim?: string; reason?: string; payload?: JWTPayload };
    reason = `the token's "${e.claim}" claim ${e.reason === 'check_failed' ? 'is not acceptable' : e.reason === 'missing' ? 'is missing' : 'is not valid'}`;
    // Not valid yet: how far ahead tells a client (and its operator) that the issuer's clock runs ahead of the gateway's.
    if (e.claim === 'nbf' && e.reason === 'check_failed' && typeof e.payload?.nbf === 'number') {
      reason = `the token is not valid yet: its "nbf" claim is ${Math.max(1, Math.ceil(e.payload.nbf - Date.now() / 1000))} s ahead of the gateway's clock`;
    }
  }
  if (reason === undefined) {
    // Not a verdict on the token: the key set could not be fetched or read.
    if (remote) {
      // The client learns only that it may retry; the log says why (the URL's answer is the operator's business).
      const why = remote() || (err as Error).message;
      return { ok: false, failed: true, problem: problem('EG_AUTH_UNAVAILABLE', 'the signing keys could not be fetched; try again later', { logDetail: `jwksUrl could not be fetched: ${why}` }) };
    }
    reason = 'the token could not be verified';
  }
  return invalidToken(reason);
}

/** A 401 for a token that does not pass, saying why (RFC 6750 §3.1 `invalid_token`). */
function invalidToken(reason: string): Verdict {
  return refuse('EG_UNAUTHORIZED', reason, { 'www-authenticate': `Bearer realm="eventgate", error="invalid_token", error_description="${reason.replace(/"/g, "'")}"` });
}

/** A claim as the values it holds: arrays element-wise, OAuth `scope` as its space-separated words. */
function claimValues(name: string, v: unknown): unknown[] {
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  if (name === 'scope' && typeof v === 'string') return v.split(' ').filter(Boolean);
  return [v];
}

function algorithmsFor(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      return [curve === 'secp384r1' ? 'ES384' : curve === 'secp521r1' ? 'ES512' : 'ES256'];
    }
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    default:
      return ASYMMETRIC_ALGORITHMS;
  }
}

// ---- shared --------------------------------------------------------------------------------

function stripCredential(msg: Message, ctx: MessageContext, header: string | undefined, param: string | undefined): Message {
  if (param !== undefined && ctx.query && param in ctx.query) {
    const query: Record<string, string | string[]> = Object.create(null);
    for (const [k, v] of Object.entries(ctx.query)) if (k !== param) query[k] = v;
    ctx.query = query;
  }
  if (header === undefined || msg.headers[header] === undefined) return msg;
  const headers = { ...msg.headers };
  delete headers[header];
  return { ...msg, headers };
}

/**
 * A challenge parameter's value as an RFC 9110 quoted-string: `"` and `\` escaped, and what a
 * header may not carry (a query parameter's name may be any text) percent-encoded as UTF-8, as it
 * is in a URL.
 */
function quoted(value: string): string {
  const visible = /^[\x20-\x7e]*$/.test(value)
    ? value
    : [...Buffer.from(value, 'utf8')].map((b) => (b >= 0x20 && b <= 0x7e ? String.fromCharCode(b) : `%${b.toString(16).toUpperCase().padStart(2, '0')}`)).join('');
  return `"${visible.replace(/["\\]/g, '\\$&')}"`;
}

function refuse(code: 'EG_UNAUTHORIZED' | 'EG_FORBIDDEN' | 'EG_AUTH_UNAVAILABLE', detail: string, headers?: Record<string, string>): Verdict {
  return { ok: false, problem: problem(code, detail, headers ? { headers } : {}) };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

let joseModule: typeof import('jose') | undefined;
/** jose, loaded when a config first uses a `jwt` step (require of its ES module, Node >= 20.19): other gateways do not pay for it. */
function jose(): typeof import('jose') {
  return (joseModule ??= createRequire(import.meta.url)('jose') as typeof import('jose'));
}
