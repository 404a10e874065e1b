import { formatPath } from './diagnostics.js';

/**
 * Config keys whose values are credentials even when written literally in the file: admin
 * `token`, jwt `secret`, apiKey `keys` (every value below), Kafka SASL `password`, TLS `passphrase`.
 */
const SECRET_KEYS = new Set(['token', 'secret', 'password', 'passphrase', 'keys']);

export const REDACTED = '[redacted]';

/**
 * Whether a config path holds a name the gateway gives itself on a server, not a credential: a
 * broker's `clientId`. The server shows it to its operators (mosquitto's log, Kafka's group
 * listings) and the gateway builds names on it (`<clientId>-<route>`), so it is no secret even when
 * it comes from `${VAR}` (one per instance, as it must be on MQTT). Redacted, it was cut out of
 * every string holding it: `clientId: fleet-${INST}` made the group `fleet-alerts` `[redacted]lerts`.
 */
export function isIdentityPath(path: readonly (string | number)[]): boolean {
  return path.length === 3 && path[0] === 'brokers' && path[2] === 'clientId';
}

/** Whether a config path is at or under a secret key: a problem there names the value's type, never the value. */
export function isSecretPath(path: readonly (string | number)[]): boolean {
  return path.some((p) => typeof p === 'string' && SECRET_KEYS.has(p));
}

/**
 * Secrets shorter than this are redacted only where a whole string equals them: replacing
 * every occurrence of a two-letter value would shred the output without protecting anything.
 */
const MIN_SUBSTRING_SECRET = 6;

/**
 * The string values of a config that must never be shown: every value that came from the
 * environment (`${VAR}`, by the paths the parser recorded) and every value under a secret key.
 * Redaction goes by value rather than by path so it covers output of any shape — status,
 * diagnostics, log lines — wherever a secret might end up quoted.
 */
export function secretValues(config: unknown, fromEnv: ReadonlySet<string>, envValues: Iterable<string> = []): Set<string> {
  const out = new Set<string>();
  // A variable's value alone (a header set from "${VAR}" shows without the expression's quotes),
  // and the parts of a list of addresses (a DNS error names the host without its port).
  // Numbers, booleans, loopback names and the wildcard addresses are no secrets (a port from
  // ${PORT}, localhost:9092, `host: ${HOST:-0.0.0.0}`): hiding them hides nothing, and would blank
  // every listener address in /admin/status and every "127.0.0.1" in a message.
  const plain = (s: string) => /^(-?\d+(\.\d+)?|true|false|localhost|127\.0\.0\.1|::1|\[::1\]|0\.0\.0\.0|::|\[::\])$/i.test(s);
  for (const v of envValues) {
    if (!plain(v)) out.add(v);
    // A URL is shown without its credentials, query and fragment (a webhook's endpoint in answers
    // and logs): that form of it is as secret as the whole, whose path may be the token itself.
    const shown = shownUrl(v);
    if (shown !== undefined && !plain(shown)) out.add(shown);
    for (const part of v.split(/[,\s]+/)) {
      if (part === '' || plain(part)) continue;
      out.add(part);
      const host = /^(?:[a-z][a-z0-9+.-]*:\/\/)?([^/:]+):\d+$/i.exec(part)?.[1];
      if (host && !plain(host)) out.add(host);
    }
  }
  const walk = (v: unknown, path: (string | number)[], underSecretKey: boolean) => {
    if (typeof v === 'string') {
      if (v !== '' && (underSecretKey || (fromEnv.has(formatPath(path)) && !plain(v) && !isIdentityPath(path)))) out.add(v);
      // A webhook URL's `user:password@`, written in the file or not, is sent as Basic
      // credentials: an endpoint whose refusal echoes its Authorization header put them in the
      // client's 502, the log and the dead letter, which knew only the URL's own text.
      const url = /^https?:\/\/[^/?#]*@/i.test(v) ? parsedUrl(v) : undefined;
      if (url && (url.username !== '' || url.password !== '')) {
        const credentials = userinfoOf(url);
        out.add(credentials.base64);
        // The password; or the user alone, which is the key where a service takes one as the user (`https://sk_live_...@api...`).
        const secret = url.password !== '' ? credentials.password : credentials.user;
        if (secret !== '' && !plain(secret)) out.add(secret);
      }
      return;
    }
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, [...path, i], underSecretKey));
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, [...path, k], underSecretKey || SECRET_KEYS.has(k));
    }
  };
  walk(config, [], false);
  // `whsec_` alone is the Standard Webhooks prefix of every such secret, no key (a config error
  // that says so), written in the file or given by `${WEBHOOK_SECRET}`: redacted, it was cut out
  // of that error's words and of every `whsec_` shown.
  out.delete('whsec_');
  return out;
}

/**
 * A webhook's URL as the gateway shows it (answers, logs, /admin/status, the exported AsyncAPI
 * document): without a `user:password@` (sent as Basic authentication) or a query, which may hold
 * an API key. Anything that is not an http(s) URL (an expression's text) as it is.
 */
export function shownEndpoint(url: string): string {
  return shownUrl(url) ?? url;
}

/**
 * The user and password of a URL's `user:password@`, percent-decoded (as curl and node:http read
 * them), and the base64 of `user:password` that HTTP Basic authentication sends.
 */
export function userinfoOf(url: URL): { user: string; password: string; base64: string } {
  const decoded = (part: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  };
  const user = decoded(url.username);
  const password = decoded(url.password);
  return { user, password, base64: Buffer.from(`${user}:${password}`).toString('base64') };
}

function parsedUrl(v: string): URL | undefined {
  try {
    return new URL(v);
  } catch {
    return undefined;
  }
}

/** `scheme://host[:port]/path` of an http(s) URL, as the gateway names an endpoint; undefined for anything else. */
function shownUrl(v: string): string | undefined {
  if (!/^https?:\/\//i.test(v)) return undefined;
  try {
    const url = new URL(v);
    return `${url.origin}${url.pathname}`;
  } catch {
    return undefined;
  }
}

/**
 * Problems with the secrets they quote redacted, but not the name of the file they are in: that is
 * a place on disk, no config value, and redacted it broke `FILE:LINE:COL` (spec §1) wherever a
 * directory's name was also a value from the environment (`/srv/orders/gateway.yaml` with
 * `topic: ${TOPIC}` and TOPIC=orders: `/srv/[redacted]/gateway.yaml:9:5`), in the problem's `file`
 * and where its message names the file (`the validate step at FILE:14:7`).
 */
export function redactDiagnostics<T extends { file: string; message: string }>(diagnostics: readonly T[], secrets: ReadonlySet<string>, places: readonly string[] = []): T[] {
  return diagnostics.map((d) => ({ ...redact(d, secrets), message: redactAround(d.message, [d.file, ...places], secrets), file: d.file }));
}

/**
 * A reload's error or result as the log and the admin API show it: its reason redacted as a whole,
 * its problems by redactDiagnostics.
 */
export function redactProblems<T extends { diagnostics: readonly { file: string; message: string }[] }>(value: T, secrets: ReadonlySet<string>): T {
  return { ...redact(value, secrets), diagnostics: redactDiagnostics(value.diagnostics, secrets) };
}

/**
 * `text` with its secrets redacted but each place (a file's path, as `could not start
 * /srv/production/gateway.yaml: ...` names it) shown as it is. Put back after redacting, so a
 * secret that holds the place (`token-gateway.yaml-7f`) is still redacted whole.
 */
export function redactAround(text: string, places: string | readonly string[], secrets: ReadonlySet<string>): string {
  let shown = redact(text, secrets);
  // Longest first: a file's path before its directory's.
  for (const place of [places].flat().sort((a, b) => b.length - a.length)) {
    const redactedPlace = redact(place, secrets);
    // A place that is a secret and nothing else (`[redacted]`) cannot be told from other secrets.
    if (redactedPlace === place || redactedPlace.split(REDACTED).join('') === '') continue;
    shown = shown.split(redactedPlace).join(place);
  }
  return shown;
}

/** A copy of `value` with every secret replaced by `[redacted]`, in strings and object keys alike. */
export function redact<T>(value: T, secrets: ReadonlySet<string>): T {
  if (secrets.size === 0) return value;
  const long = [...secrets].filter((s) => s.length >= MIN_SUBSTRING_SECRET).sort((a, b) => b.length - a.length);
  const text = (s: string): string => {
    if (secrets.has(s)) return REDACTED;
    let out = s;
    for (const secret of long) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    return out;
  };
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return text(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === 'object' && !(v instanceof Date)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[text(k)] = walk(x);
      return out;
    }
    return v;
  };
  return walk(value) as T;
}
