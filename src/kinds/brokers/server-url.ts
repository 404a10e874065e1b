import type { BrokerCompileContext } from '../contracts.js';

/**
 * What a server URL (`scheme://user:password@host:port/path`, or nats's bare `host:port`) must be
 * for the client libraries to connect where it says, checked at load. Before, validate took any
 * text after the scheme: a port past 65535 made mqtt.js throw at start (`run` exited naming no
 * broker or line) and nats.js and amqplib retry an invalid URL for ever; mqtt.js took port 0, and a
 * host it could not read (`%zz`), for its defaults (127.0.0.1:1883), and stopped a host at a space.
 */
export function serverUrlProblem(url: string): string | undefined {
  const text = url.includes('://') ? url : `nats://${url}`;
  const authority = text.slice(text.indexOf('://') + 3).split(/[/?#]/, 1)[0]!;
  const hostPort = authority.slice(authority.lastIndexOf('@') + 1);
  const port = /^(\[[^\]]*\]|[^:[\]]*):(\d+)$/.exec(hostPort)?.[2];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) return `names port ${port}, but a port is a number from 1 to 65535`;
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    return 'is not a URL: scheme://user:password@host:port/path, with @ # / : and spaces in the user and password percent-encoded';
  }
  if (parsed.hostname === '') return 'names no host';
  if (!/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)$/.test(parsed.hostname)) return `names host '${parsed.hostname}', which is not a host name or IP address`;
  return undefined;
}

/**
 * Why a server URL that serverUrlProblem takes most likely names another host than meant, or
 * undefined: its authority holds no `@` but the rest of it does. A password with an unencoded `/`,
 * `?` or `#` ends the authority before its `@` (`amqp://gateway:12/ab@rabbitmq` reads, for WHATWG
 * URL and so for amqplib, mqtt.js and nats.js, as host `gateway`, port 12), and the gateway dials
 * the user's name. A warning, not an error: an `@` in an AMQP vhost or a ws URL's path or query is
 * legal. Quoted with the password masked (shownServerUrl). (A NATS server URL has no path: nats.ts
 * refuses any '@'.)
 */
export function hostEndsEarly(url: string): string | undefined {
  const text = url.includes('://') ? url : `nats://${url}`;
  const rest = text.slice(text.indexOf('://') + 3);
  const authority = rest.split(/[/?#]/, 1)[0]!;
  if (authority.includes('@') || !rest.includes('@')) return undefined;
  let host: string;
  try {
    host = new URL(text).hostname;
  } catch {
    return undefined;
  }
  return `'${shownServerUrl(url)}' has an '@' after its host '${host}': a password holding '/', '?' or '#' ends the host early, and the gateway would connect to '${host}'; percent-encode them (%2F, %3F, %23), or ignore this if the '@' belongs to the path`;
}

/**
 * A server URL as a config error may quote it: the password masked (`user:***@`), or the whole
 * user part when it has no `:` (a NATS token). validate's output lands in CI logs, and the
 * password is often a `${VAR}` the gateway never shows elsewhere.
 */
export function shownServerUrl(url: string): string {
  return url.replace(/^((?:[a-z][a-z0-9+.-]*:\/\/)?)(.*)@/i, (_match, scheme: string, userinfo: string) => {
    const colon = userinfo.indexOf(':');
    return `${scheme}${colon === -1 ? '***' : `${userinfo.slice(0, colon)}:***`}@`;
  });
}

/**
 * A broker's `url`: of the kind's scheme (`scheme`; `expected` says what such a URL looks like),
 * then a server URL the client libraries read as written (serverUrlProblem). Reported at `url`,
 * quoted with its password masked; false when it is not one. One whose host most likely ends early
 * (hostEndsEarly) is a warning there.
 */
export function checkServerUrl(url: string, scheme: RegExp, expected: string, ctx: BrokerCompileContext): boolean {
  const why = scheme.test(url) ? serverUrlProblem(url) : `is not ${expected}`;
  if (why === undefined) {
    const early = hostEndsEarly(url);
    if (early) ctx.warn(['url'], 'EG_CONFIG_SERVER_URL', early);
    return true;
  }
  ctx.report(['url'], 'EG_CONFIG_SCHEMA', `'${shownServerUrl(url)}' ${why}`);
  return false;
}

/**
 * `server.address` and `server.port` of a server the config names (a URL, or a bare `host[:port]`):
 * the host in lower case without an IPv6 literal's brackets, and the port written or the scheme's default
 * (`defaultPorts`, by scheme; `tcp` for a bare address). Undefined when it cannot be read.
 */
export function serverAddressOf(server: string, defaultPorts: Readonly<Record<string, number>>): { address: string; port: number | undefined } | undefined {
  let u: URL;
  try {
    u = new URL(server.includes('://') ? server : `tcp://${server}`);
  } catch {
    return undefined;
  }
  // Lower case whatever the scheme (WHATWG URL folds only special schemes' hosts): one host, one value.
  const host = u.hostname.toLowerCase();
  if (host === '') return undefined;
  // An `@` the URL read no user part before: a password with an unencoded `/`, `?` or `#` ended the
  // authority early (`amqp://user:12?x@host` reads as host `user`, port 12), so the host is the user's name.
  if (server.includes('@') && u.username === '' && u.password === '') return undefined;
  // WHATWG URL drops a special scheme's default port (ws:80, wss:443): the table gives it back.
  return { address: host.startsWith('[') ? host.slice(1, -1) : host, port: u.port !== '' ? Number(u.port) : defaultPorts[u.protocol.slice(0, -1)] };
}

/** The ports each kind's client library connects to when the server names none, by scheme (serverAddressOf). */
export const KAFKA_PORTS = { tcp: 9092 };
export const MQTT_PORTS = { mqtt: 1883, tcp: 1883, mqtts: 8883, tls: 8883, ssl: 8883, ws: 80, wss: 443 };
export const AMQP_PORTS = { amqp: 5672, amqps: 5671 };
export const NATS_PORTS = { tcp: 4222, nats: 4222, tls: 4222, ws: 80, wss: 443 };
