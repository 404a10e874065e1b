import type { IncomingMessage, ServerResponse } from 'node:http';
import { problem, type Problem } from '../../core/errors.js';
import { FLOOD_LOG_INTERVAL_MS, RateLimitedWarning } from '../../core/rate-limited-warning.js';
import { closest } from '../../config/suggest.js';
import type { Logger } from '../../log.js';
import type { ListenerCompileContext } from '../contracts.js';
import { oneOf, stringMatching, Type, type Static } from '../define.js';

const DEFAULTS = {
  methods: ['POST'],
  headers: ['content-type', 'authorization'],
  // The answers' headers a page acts on: when to try again, the RateLimit fields of a ratelimit
  // step, and why a token was refused (an OAuth client refreshes on `error="invalid_token"`, RFC 6750 §3.1).
  exposeHeaders: ['retry-after', 'ratelimit-policy', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'www-authenticate'],
  maxAge: 600,
};

/** A CloudEvents attribute as an HTTP header (binary mode): `ce-` and a name of lower-case letters and digits. */
const CLOUDEVENT_HEADER = /^ce-[a-z0-9]{1,64}$/;

/**
 * A list of origins; `"*"` in it means any origin, as `["*"]` does in KrakenD's and gin's CORS settings.
 * Any scheme (RFC 3986's letters), in any case: an app's web view sends `capacitor://localhost`, a
 * browser extension `chrome-extension://<id>`; what no browser sends is notAnOrigin's to say.
 */
export const originList = Type.Array(stringMatching('^([a-zA-Z][a-zA-Z0-9+.-]*://[^/]+|\\*)$', 'an origin, scheme://host[:port] as browsers send it (no path), or "*"'), { minItems: 1 });

/** `"*"` alone; one origin written without its list is told to write the list (src/config/check-schema.ts reads `x-otherwise`). */
export const anyOriginLiteral = Type.Literal('*', { 'x-otherwise': 'a list of origins, even of one' });

/** `"*"`, or a list holding it: any origin. */
export function anyOrigin(origins: '*' | readonly string[]): boolean {
  return origins === '*' || origins.includes('*');
}

/**
 * Schemes whose pages browsers send as `Origin: null` (an opaque origin, RFC 6454 §7.3): a file, a
 * `data:` or `about:` document, a script URL. Not `blob:`: its page has its creator's origin
 * (blobOriginHint).
 */
const OPAQUE_SCHEMES = new Set(['file:', 'data:', 'about:', 'javascript:']);

/** Why `null` cannot be an entry: it is not one site's. */
const ANY_PAGE_SENDS_NULL = 'any page can send it, from a sandboxed frame of its own, so allowing it would let in every page; give such clients a credential, with an auth step, instead';

/**
 * The origin a browser sends for a page at `url` (RFC 6454 §6.1, scheme "://" host [":" port]), or
 * undefined when it sends `null` or the URL has no host. For a scheme URLs know (http, https) that
 * is WHATWG URL's serialisation: host in lower case, an internationalised name in punycode, no
 * default port (`https://app.example.com:443` is sent as `https://app.example.com`). WHATWG URL
 * gives any other scheme's origin as an opaque `null`, though browsers and web views send theirs
 * (`capacitor://localhost`, `chrome-extension://<id>`): scheme and host in lower case (RFC 6454 §4;
 * WebKit's SecurityOrigin lower-cases both, so an app whose page is `capacitor://MyApp/` sends
 * `capacitor://myapp`), the port as written (no default port: URLs know none for such a scheme),
 * a letter beyond ASCII percent-encoded as the URL holds it.
 */
export function urlOrigin(url: URL): string | undefined {
  if (url.origin !== 'null') return url.origin;
  if (url.host === '' || OPAQUE_SCHEMES.has(url.protocol)) return undefined;
  return `${url.protocol}//${url.host.toLowerCase()}`;
}

/**
 * An origin as a browser writes it in `Origin` (urlOrigin). A configured origin compared as written
 * would never match `HTTPS://App.Example.com:443`. What is no origin with a host (`null`, from a
 * sandboxed frame or a file; a header with a path) is only lower-cased.
 */
export function originKey(origin: string): string {
  try {
    const url = new URL(origin);
    const serialised = url.origin;
    if (serialised !== 'null') return serialised;
    // A scheme URLs do not know keeps what follows its host (no browser sends it, and no entry has it).
    const bare = url.pathname === '' && url.search === '' && url.hash === '' && url.username === '' && url.password === '';
    const own = bare ? urlOrigin(url) : undefined;
    if (own !== undefined) return own;
  } catch {
    // not a URL: compared as written
  }
  return origin.toLowerCase();
}

/** Why `value` (an `origins` entry the schema refused) can never be allowed, when it is `null` or a page that sends it; else undefined. */
export function opaqueOriginWhy(value: string): string | undefined {
  if (value.toLowerCase() === 'null') return `browsers send "null" from sandboxed frames, file:// pages and data: URLs, and ${ANY_PAGE_SENDS_NULL}`;
  const scheme = /^([a-z][a-z0-9+.-]*:)/i.exec(value)?.[1]?.toLowerCase();
  return scheme !== undefined && OPAQUE_SCHEMES.has(scheme) ? `pages of ${scheme} URLs send Origin "null", and ${ANY_PAGE_SENDS_NULL}` : undefined;
}

/** `blob:https://app.example.com/<uuid>` (an entry the schema refused): its page sends its creator's origin, which to write instead; else undefined. */
export function blobOriginHint(value: string): string | undefined {
  if (!/^blob:/i.test(value) || !URL.canParse(value)) return undefined;
  const origin = urlOrigin(new URL(value));
  return origin === undefined ? undefined : `a blob: URL's page sends the origin of the page that made it: write "${origin}"`;
}

/**
 * Why an `origins` entry is no origin a browser could send, or undefined when it is one (or `*`).
 * The schema's pattern lets through what has no `/` after the scheme: a user (`https://u@host`, whose
 * URL's origin is `https://host`, so the entry let a page in that it does not name), a query or
 * fragment, a path after a backslash (which URLs read as `/`), a host no URL has (`https://a b`,
 * which matched no page, silently), a wildcard (`https://*.example.com`, as rs/cors and
 * gin-contrib/cors take it: a host of that very text, which no page has), a scheme whose pages send
 * `null` (`file://`), a WebSocket's own address (`wss://`: the handshake carries its page's origin),
 * or a scheme one letter from http(s) (`htps://`, which the schema took once any scheme was).
 */
export function notAnOrigin(entry: string): string | undefined {
  if (entry === '*') return undefined;
  // What comes before a query or fragment: the scheme, the host and port, and what should not be there.
  const authority = entry.split(/[?#]/, 1)[0]!;
  if (authority.includes('*'))
    return `"${entry}" is no origin: entries are not patterns, and a browser sends its page's own scheme://host[:port], which a wildcard matches none of; list each origin, or "*" for any`;
  let url: URL;
  try {
    url = new URL(entry);
  } catch {
    return `"${entry}" is no origin: its host or port is not valid in a URL, so no browser would send it`;
  }
  const opaque = opaqueOriginWhy(entry);
  if (opaque !== undefined) return `"${entry}" is no origin: ${opaque}`;
  const origin = urlOrigin(url);
  if (origin === undefined) return `"${entry}" is no origin: it has no host, so no browser would send it`;
  // Any scheme is taken (an app's, an extension's), so `htps://` no longer fails the schema, and would match no page.
  const scheme = url.protocol.slice(0, -1);
  const meant = scheme === 'http' || scheme === 'https' ? undefined : closest(scheme, ['http', 'https'], 1);
  if (meant !== undefined) return `"${entry}" is no origin a browser sends: its scheme ${scheme} is one letter from ${meant}; write "${meant}${entry.slice(scheme.length)}"`;
  if (url.protocol === 'ws:' || url.protocol === 'wss:') {
    const page = `${url.protocol === 'ws:' ? 'http' : 'https'}${origin.slice(url.protocol.length - 1)}`;
    return `"${entry}" is no origin: a WebSocket handshake carries the origin of the page that opened it, not the socket's address: write the page's, such as "${page}"`;
  }
  const extra = [
    url.username || url.password || authority.includes('@') ? 'a user' : '',
    authority.includes('\\') ? 'a path' : '',
    url.search || entry.includes('?') ? 'a query' : '',
    url.hash || entry.includes('#') ? 'a fragment' : '',
  ].filter(Boolean);
  if (extra.length > 0) return `"${entry}" is no origin: it has ${extra.join(' and ')}; an origin is scheme://host[:port], as browsers send it in Origin: write "${origin}"`;
  return undefined;
}

/** Reports each entry of an `origins` list at `at` that is no origin; false when any is not. */
export function checkOriginList(origins: '*' | readonly string[] | undefined, at: readonly string[], ctx: ListenerCompileContext): boolean {
  if (origins === undefined || origins === '*') return true;
  let ok = true;
  origins.forEach((entry, i) => {
    const why = notAnOrigin(entry);
    if (why === undefined) return;
    ctx.report([...at, i], 'EG_CONFIG_SCHEMA', why);
    ok = false;
  });
  return ok;
}

/**
 * Each list's entries as originKey writes them, made once per list (the config's, until a reload
 * replaces it): a handshake, and a reload's check of every open connection, parsed each entry as a
 * URL again.
 */
const listKeys = new WeakMap<readonly string[], ReadonlySet<string>>();

/** Whether a browser's `Origin` is one of `origins` (both as browsers write them: originKey), or `origins` allows any. */
export function allowsOrigin(origins: '*' | readonly string[], origin: string): boolean {
  if (origins === '*' || anyOrigin(origins)) return true;
  let keys = listKeys.get(origins);
  if (keys === undefined) listKeys.set(origins, (keys = new Set(origins.map(originKey))));
  return keys.has(originKey(origin));
}

/** Origins with a log window of their own at once: any page can send any origin, so past it new ones share one. */
const ORIGIN_LOG_MAX_WINDOWS = 64;

/**
 * Says the browser requests and handshakes refused for their origin, at info: the page learns
 * nothing it can act on (a WebSocket gets 1006, a fetch `Failed to fetch`), and a list entry that
 * matches no browser refuses every page of a site the operator meant to let in. One line per
 * origin each FLOOD_LOG_INTERVAL_MS at most, with the count.
 */
export class ForeignOriginLog {
  private readonly lines: RateLimitedWarning<{ origin: string; path: string; remote: string | undefined }>;

  constructor(logger: Logger, listener: string, setting: 'origins' | 'cors.origins') {
    this.lines = new RateLimitedWarning(
      FLOOD_LOG_INTERVAL_MS,
      (last, refused) => logger.info({ listener, ...last, refused, intervalMs: FLOOD_LOG_INTERVAL_MS }, `refused a page of an origin not in ${setting} (403)`),
      ORIGIN_LOG_MAX_WINDOWS,
    );
  }

  refused(origin: string, path: string, remote: string | undefined): void {
    const shown = origin.slice(0, 200);
    this.lines.occurred({ origin: shown, path: path.slice(0, 200), remote }, shown);
  }

  /** The listener stops: what was counted is said now. */
  close(): void {
    this.lines.close();
  }
}

/** `cors:` on an http listener. */
export const corsOptions = Type.Object(
  {
    origins: oneOf([anyOriginLiteral, originList], {
      description:
        'Allowed origins (scheme://host[:port]; compared as browsers send them: any case, a default port or none, a Unicode host name or its punycode; an app\'s web view or a browser extension by its own scheme, `capacitor://localhost`, `chrome-extension://<id>`, in any case, its port as written (such a scheme has no default port); `null`, which any page can send, cannot be listed; an entry with a user, path, query or fragment, or no valid host, is a config error, and so is a wildcard such as `https://*.example.com`: list each origin, even one alone `[https://app.example.com]`), or "*" for any (not with credentials; `["*"]` is read as "*"). A reload that takes an origin off the list ends its open event streams (`eventgate.end` 403).',
    }),
    methods: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: DEFAULTS.methods, description: 'Methods a cross-origin request may use.' })),
    headers: Type.Optional(
      Type.Array(Type.String({ minLength: 1 }), {
        default: DEFAULTS.headers,
        description:
          'Request headers browsers may send (add the header an `apiKey` auth step reads, e.g. `x-api-key`: browsers send no header the preflight answer does not list). Preflights also allow the `ce-*` headers of a binary-mode CloudEvent that a page asks to send, and, for an event-stream path, `Last-Event-ID`.',
      }),
    ),
    exposeHeaders: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { default: DEFAULTS.exposeHeaders, description: 'Response headers scripts may read.' })),
    credentials: Type.Optional(Type.Boolean({ default: false, description: 'Allow cookies and HTTP authentication (needs a list of origins).' })),
    maxAge: Type.Optional(Type.Integer({ minimum: 0, default: DEFAULTS.maxAge, description: 'Seconds browsers may cache a preflight answer.' })),
  },
  { additionalProperties: false, description: 'Cross-origin requests from browsers (see docs/security.md); preflight OPTIONS requests are answered 204.' },
);
export type CorsOptions = Static<typeof corsOptions>;

/** Both checks, each reported: one run of `validate` names every mistake. */
export function checkCors(o: CorsOptions, ctx: ListenerCompileContext): boolean {
  const originsOk = checkOriginList(o.origins, ['cors', 'origins'], ctx);
  const credentialsOk = !(anyOrigin(o.origins) && o.credentials);
  if (!credentialsOk) ctx.report(['cors', 'credentials'], 'EG_CONFIG_SCHEMA', 'credentials: true needs a list of origins; with "*" any site could send credentialed requests');
  return originsOk && credentialsOk;
}

/**
 * CORS decided once per request: requests without an Origin header (non-browser clients) pass
 * untouched; a browser request from an origin not on the list is refused with 403, so a page on
 * another site cannot make a user's browser publish, even with a "simple" request that needs no
 * preflight.
 */
export class CorsPolicy {
  private readonly origins: ReadonlySet<string> | '*';
  private readonly preflightHeaders: Record<string, string>;
  /** The same for an event stream's path: its clients may also send Last-Event-ID. */
  private readonly streamPreflightHeaders: Record<string, string>;
  private readonly exposed: string;

  constructor(private readonly o: CorsOptions) {
    this.origins = anyOrigin(o.origins) ? '*' : new Set((o.origins as string[]).map(originKey));
    this.preflightHeaders = {
      'access-control-allow-methods': (o.methods ?? DEFAULTS.methods).join(', '),
      'access-control-allow-headers': (o.headers ?? DEFAULTS.headers).join(', '),
      'access-control-max-age': String(o.maxAge ?? DEFAULTS.maxAge),
    };
    this.exposed = (o.exposeHeaders ?? DEFAULTS.exposeHeaders).join(', ');
    // A fetch-based event-stream client (one that sends a header EventSource cannot, such as an API
    // key) resumes by sending Last-Event-ID itself; the browser sends it only if the preflight lists it.
    const headers = o.headers ?? DEFAULTS.headers;
    const streamHeaders = headers.some((h) => h.toLowerCase() === 'last-event-id') ? headers : [...headers, 'last-event-id'];
    this.streamPreflightHeaders = { ...this.preflightHeaders, 'access-control-allow-headers': streamHeaders.join(', ') };
  }

  /** Whether a page of `origin` may call the listener. */
  allows(origin: string): boolean {
    return this.origins === '*' || this.origins.has(originKey(origin));
  }

  static isPreflight(req: IncomingMessage): boolean {
    return req.method === 'OPTIONS' && req.headers.origin !== undefined && req.headers['access-control-request-method'] !== undefined;
  }

  /** Sets the CORS response headers; a problem when the origin is not allowed. */
  apply(req: IncomingMessage, res: ServerResponse): Problem | undefined {
    const origin = req.headers.origin;
    if (origin === undefined) return undefined;
    res.setHeader('vary', 'Origin');
    if (!this.allows(origin)) {
      return problem('EG_ORIGIN_NOT_ALLOWED', `origin ${origin} may not call this listener`);
    }
    res.setHeader('access-control-allow-origin', this.origins === '*' ? '*' : origin);
    if (this.o.credentials) res.setHeader('access-control-allow-credentials', 'true');
    if (this.exposed !== '') res.setHeader('access-control-expose-headers', this.exposed);
    return undefined;
  }

  /**
   * Answers a preflight (204 with what is allowed), on any path of the listener; `stream`: the
   * path is an event stream's. The `ce-*` headers a page asks to send are allowed too: they are the
   * attributes of a binary-mode CloudEvent (the CloudEvents HTTP binding), which every http
   * listener takes, and no list of them could name every extension a page may set.
   */
  preflight(req: IncomingMessage, res: ServerResponse, stream = false): void {
    for (const [k, v] of Object.entries(stream ? this.streamPreflightHeaders : this.preflightHeaders)) res.setHeader(k, v);
    const asked = req.headers['access-control-request-headers'];
    const attributes =
      asked === undefined
        ? []
        : asked
            .split(',')
            .map((h) => h.trim().toLowerCase())
            .filter((h) => CLOUDEVENT_HEADER.test(h));
    if (attributes.length > 0) {
      const allowed = res.getHeader('access-control-allow-headers') as string;
      const listed = new Set(allowed.split(', ').map((h) => h.toLowerCase()));
      const more = attributes.filter((h) => !listed.has(h));
      if (more.length > 0) res.setHeader('access-control-allow-headers', [allowed, ...more].join(', '));
    }
    // The answer depends on the headers asked for: a cache in between must not give it for others.
    res.setHeader('vary', 'Origin, Access-Control-Request-Headers');
    res.writeHead(204, { 'content-length': '0' });
    res.end();
  }
}
