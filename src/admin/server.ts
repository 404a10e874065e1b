import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type FindMyWayModule from 'find-my-way';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createHash, timingSafeEqual } from 'node:crypto';
import { problem, problemBody, type Problem } from '../core/errors.js';
import { formatDiagnostic } from '../config/diagnostics.js';
import { sendJson, sendProblem } from '../kinds/listeners/http-reply.js';
import type { AdminPlan } from '../plan/types.js';
import type { Logger } from '../log.js';
import type { LoadResult } from '../plan/compile.js';
import type { PlanFingerprint } from '../plan/fingerprint.js';
import type { Plan } from '../plan/types.js';
import { RELOAD_WHILE_STOPPING, type ReloadResult } from '../runtime/gateway.js';
import { addAsyncApiEndpoints } from './asyncapi.js';
import { boundAddress, listen } from '../kinds/listeners/bind.js';
import { createTransport, rawResponse } from '../kinds/listeners/transport.js';
import { answerAndCloseLingering } from '../kinds/listeners/lingering-close.js';
import { mediaTypeOf } from '../core/message.js';
import { RateLimitedWarning } from '../core/rate-limited-warning.js';
import { clientKey, TokenFailures } from './token-failures.js';
import { bundled } from '../core/bundled.js';

const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');

/** The query parameters of an admin request, as its endpoint reads them (queryParameter). */
export type AdminQuery = (name: string) => string | null;
type Handler = (req: IncomingMessage, res: ServerResponse, query: AdminQuery) => void | Promise<void>;
/** Takes over an authorized upgrade request's socket (WebSocket endpoints such as the tap). */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer, query: AdminQuery) => void;

/** A request an endpoint refused while reading it (a parameter given twice with different values): answered with its problem. */
class RefusedRequest extends Error {
  constructor(readonly problem: Problem) {
    super(problem.detail);
  }
}

/**
 * A reload that did not apply, as every eventgate error is answered (RFC 9457 problem+json), with the
 * reload's own fields (`result`, `reason`, `diagnostics`) beside the problem's so scripts that read
 * them keep working. A reload asked for during a shutdown is the shutdown's 503.
 */
function sendReloadRefusal(res: ServerResponse, result: Exclude<ReloadResult, { result: 'applied' | 'unchanged' }>): void {
  const errors = result.diagnostics.map(formatDiagnostic);
  const p =
    result.result === 'rolled_back'
      ? problem('EG_RELOAD_ROLLED_BACK', result.reason, { errors })
      : result.reason === RELOAD_WHILE_STOPPING
        ? problem('EG_SHUTTING_DOWN', 'the gateway is shutting down: no reload now')
        : problem('EG_RELOAD_REJECTED', result.reason, { errors });
  sendJson(res, p.status, { ...problemBody(p), ...result }, 'application/problem+json');
}

/** Endpoints that orchestrators probe without credentials. */
const OPEN = ['/healthz', '/readyz'];
/** Probes come with whatever Host the orchestrator uses (a pod address); they reveal nothing, so any Host may ask. */
const PROBES = ['/healthz', '/readyz'];
/** Body types an HTML form can send cross-site without a preflight. */
const FORM_TYPES = ['application/x-www-form-urlencoded', 'multipart/form-data', 'text/plain'];

/**
 * What the admin server needs of the running gateway: an interface, so the admin server depends
 * on what it reads and asks for, not on the Gateway class (src/runtime/gateway.ts implements it).
 */
export interface AdminSource {
  readonly logger: Logger;
  readonly plan: Plan | undefined;
  readiness(): { ready: boolean; reasons: string[] };
  status(): Record<string, unknown>;
  reload(reason: string): Promise<ReloadResult>;
  /** Loads the config as a reload would, with some files' contents replaced (an upload being checked). */
  load(overrides?: ReadonlyMap<string, string>): Promise<LoadResult>;
  /** The running plan as `eventgate plan --admin` compares against it. */
  planFingerprint(): PlanFingerprint | null;
}

/** The admin API (spec §7): health, readiness, status, reload. Bound to 127.0.0.1 unless configured. */
export class AdminServer {
  private readonly server: Server;
  private readonly routes = new Map<string, Handler>();
  private readonly upgrades = new Map<string, UpgradeHandler>();
  /**
   * Every endpoint's path, for requestPath(): the listeners' router, so a path is read as a
   * listener reads it (`/%68ealthz` is `/healthz`; an encoded `/` or a malformed `%` matches nothing).
   */
  private readonly paths = FindMyWay();
  private readonly open = new Set(OPEN);
  private readonly stopHooks: (() => Promise<void>)[] = [];
  private token: string | undefined;
  /** Wrong tokens per client address: 429 for an address that sent too many (token-failures.ts). */
  private readonly failures = new TokenFailures();
  private readonly lockouts: RateLimitedWarning<{ client: string; retryAfterS: number }>;
  private readonly logger: Logger;

  constructor(
    gateway: AdminSource,
    private plan: AdminPlan,
  ) {
    this.token = plan.token;
    this.logger = gateway.logger;
    this.lockouts = new RateLimitedWarning(60_000, (last, count) =>
      gateway.logger.warn(
        { client: last.client, retryAfterS: last.retryAfterS, lockedOut: count, failures: this.failures.limit, windowS: this.failures.windowMs / 1000 },
        'admin API: a client sent too many wrong tokens; its admin requests are answered 429 until its window ends',
      ),
    );
    // The listeners' transport, with their default bounds: node's own let a client that connects
    // and sends nothing hold an admin connection for over a minute, and any number of them.
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.serve(req, res).catch((err) => {
        if (err instanceof RefusedRequest) return sendProblem(res, err.problem);
        // The path without its query: anyone can put a token there (`?token=` is the tap's), and it must not reach the log.
        gateway.logger.error({ err: (err as Error).message, method: req.method, path: (req.url ?? '/').split('?')[0] }, 'admin request failed');
        if (!res.headersSent) sendProblem(res, problem('EG_INTERNAL', 'admin request failed'));
      });
    };
    this.server = createTransport('admin', { port: plan.port, maxConnections: plan.maxConnections }, handler, gateway.logger, 'GET, POST, PUT');
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket, head));
    this.route('GET /healthz', (_req, res) => sendJson(res, 200, { status: 'ok' }));
    // Probes need no token, so /readyz is open, token or not: the contract's 503 comes "with the
    // reasons", which an orchestrator shows in its probe events. A reason names the component and
    // its state ("broker kafka: unreachable"), never the error behind it (an address, a DNS name:
    // those are in /admin/status, behind the token).
    this.route('GET /readyz', (_req, res) => {
      const r = gateway.readiness();
      if (r.ready) return sendJson(res, 200, { status: 'ready' });
      sendJson(res, 503, { status: 'not ready', reasons: r.reasons.map(summary) });
    });
    this.route('GET /admin/status', (_req, res) => sendJson(res, 200, gateway.status()));
    // What `eventgate plan --admin` diffs a new config against: hashes of the running components, no config values.
    this.route('GET /admin/plan', (_req, res) => sendJson(res, 200, gateway.planFingerprint()));
    this.route('POST /admin/reload', async (req, res) => {
      // It always reloads: a parameter a script adds (`?dryRun=true`) would be ignored, and the
      // reload it did not mean applied. `eventgate plan --admin` is the dry run.
      const query = (req.url ?? '').indexOf('?');
      if (query >= 0 && query < (req.url ?? '').length - 1) {
        const names = [...new Set(new URLSearchParams(req.url!.slice(query + 1)).keys())].map((n) => `?${n}=`).join(', ');
        return sendProblem(
          res,
          problem(
            'EG_BAD_REQUEST',
            `POST /admin/reload takes no query parameters (${names}): it always reloads; \`eventgate plan -c FILE --admin URL\` says what a reload would change without applying it`,
          ),
        );
      }
      const result = await gateway.reload('admin API');
      if (result.result === 'applied' || result.result === 'unchanged') return sendJson(res, 200, result);
      sendReloadRefusal(res, result);
    });
    addAsyncApiEndpoints(this, gateway);
  }

  /**
   * Other admin modules (metrics, tap, dashboard) add their endpoints here. `open` endpoints need
   * no token (probes, and the dashboard page, which holds no data and asks for the token itself).
   */
  route(key: string, handler: Handler, options: { open?: boolean } = {}): void {
    this.routes.set(key, handler);
    const path = key.slice(key.indexOf(' ') + 1);
    this.addPath(path);
    if (options.open) this.open.add(path);
  }

  /**
   * A WebSocket endpoint at `path`, behind the same token. Browsers cannot set an Authorization
   * header on a WebSocket, so upgrades also accept the token as `?token=`.
   */
  upgrade(path: string, handler: UpgradeHandler): void {
    this.upgrades.set(path, handler);
    this.addPath(path);
  }

  private addPath(path: string): void {
    if (!this.paths.hasRoute('GET', path)) this.paths.on('GET', path, () => undefined, { path });
  }

  /** The endpoint path a request's path names, decoded as the listeners decode theirs; a path that names none as it came. */
  private requestPath(url: string): string {
    const pathname = url.split('?')[0]!;
    return (this.paths.find('GET', pathname)?.store as { path: string } | undefined)?.path ?? pathname;
  }

  /** Told of each new connection closed at once at maxConnections (also logged: createTransport's `connection limit reached`). */
  onConnectionDropped(listener: () => void): void {
    this.server.on('drop', listener);
  }

  /** Runs before the server closes: upgraded sockets are not closed by the HTTP server, their owner closes them. */
  onStop(hook: () => Promise<void>): void {
    this.stopHooks.push(hook);
  }

  configure(plan: AdminPlan): void {
    this.plan = plan;
    // A changed token clears the wrong tokens counted against the old one: the operator rotates it
    // because of the guesses, or to let a locked-out client with the new one back in, and a guess
    // at the old token tells nothing about the new. A reload that keeps the token keeps them.
    if (plan.token !== this.token) {
      const lockedOut = this.failures.clear();
      if (lockedOut > 0) this.logger.info({ lockedOut }, 'admin API: admin.token changed; the addresses locked out for wrong tokens are let in again');
    }
    this.token = plan.token;
    this.server.maxConnections = plan.maxConnections;
  }

  async start(): Promise<void> {
    await listen(this.server, this.plan.port, this.plan.host);
  }

  async stop(): Promise<void> {
    this.lockouts.close();
    await Promise.allSettled(this.stopHooks.map((h) => h()));
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    await closed;
  }

  address() {
    return boundAddress(this.server);
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Every check below sees the endpoint's own path, so `/admin/%73tatus` needs the token as `/admin/status` does.
    const path = this.requestPath(req.url ?? '/');
    // Probes are never refused, and never judge a token (so no failure counts there).
    const probe = PROBES.includes(path);
    const refused = probe ? undefined : this.refusedClient(req);
    if (refused) return sendProblem(res, refused);
    const verdict = probe ? 'none' : this.tokenVerdict(req);
    const browser = this.browserCheck(req, !probe && verdict !== 'bearer');
    if (browser) return sendProblem(res, browser);
    if (this.token && !this.open.has(path) && verdict !== 'bearer') {
      res.setHeader('www-authenticate', 'Bearer realm="eventgate-admin"');
      return sendProblem(res, problem('EG_UNAUTHORIZED', 'the admin API needs Authorization: Bearer <admin.token>'));
    }
    // HEAD is GET without the body (node leaves it out), as RFC 9110 asks of every server:
    // uptime monitors and load balancers probe with HEAD.
    const handler = this.routes.get(`${req.method === 'HEAD' ? 'GET' : req.method} ${path}`);
    if (handler) return handler(req, res, queryParameters(req.url ?? '/'));
    const other = [...this.routes.keys()].filter((k) => k.endsWith(` ${path}`));
    if (other.length > 0) {
      const methods = other.map((k) => k.split(' ')[0]!);
      res.setHeader('allow', (methods.includes('GET') ? [...methods, 'HEAD'] : methods).join(', '));
      return sendProblem(res, problem('EG_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`));
    }
    sendProblem(res, problem('EG_NOT_FOUND', `no admin endpoint at ${path}`));
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const path = this.requestPath(req.url ?? '/');
    const query = queryParameters(req.url ?? '/');
    const refused = this.refusedClient(req);
    if (refused) return refuseUpgrade(socket, refused);
    try {
      // `?token=` is read here, before the endpoint's own parameters: the same rule for repeats.
      const verdict = this.tokenVerdict(req, query('token'));
      const browser = this.browserCheck(req, verdict !== 'bearer');
      if (browser) return refuseUpgrade(socket, browser);
      const handler = this.upgrades.get(path);
      if (!handler) return refuseUpgrade(socket, problem('EG_NOT_FOUND', `no admin WebSocket endpoint at ${path}`));
      if (this.token && verdict === 'none') {
        return refuseUpgrade(socket, problem('EG_UNAUTHORIZED', 'the admin API needs Authorization: Bearer <admin.token> (or ?token=<admin.token> on WebSocket endpoints)'));
      }
      handler(req, socket, head, query);
    } catch (err) {
      if (!(err instanceof RefusedRequest)) throw err;
      refuseUpgrade(socket, err.problem);
    }
  }

  /**
   * What keeps a web page the operator opens from using the admin API through their browser:
   * - `Host` must name this server (loopback names, `admin.host` when it is an address, and
   *   `admin.allowedHosts`), so a DNS-rebound name pointing at 127.0.0.1 is refused. Exempt: the
   *   probes (orchestrators send the pod's address as Host, and they show nothing), and requests
   *   bearing the admin token in `Authorization` (a browser never adds it by itself, so a
   *   rebinding page cannot; Prometheus scraping a pod by its address can);
   * - an `Origin` (which browsers send on cross-site requests, WebSocket handshakes and every POST)
   *   must be this server's own, so another site's script or form is refused, tap included;
   * - a state-changing request may not have a body type an HTML form can send
   *   (`application/x-www-form-urlencoded`, `multipart/form-data`, `text/plain`).
   */
  private browserCheck(req: IncomingMessage, checkHost: boolean): Problem | undefined {
    const host = (req.headers.host ?? '').toLowerCase();
    if (checkHost && !this.hostAllowed(host))
      return problem(
        'EG_FORBIDDEN',
        `the admin API does not answer to Host '${host}' (allowed: loopback names${this.plan.allowedHosts?.length ? `, ${this.plan.allowedHosts.join(', ')}` : ''}; add others under admin.allowedHosts)`,
      );
    const origin = req.headers.origin;
    if (origin !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
      return problem('EG_ORIGIN_NOT_ALLOWED', `the admin API answers its own pages only, not requests from origin ${origin}`);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD' && req.headers.upgrade === undefined) {
      const type = mediaTypeOf(req.headers['content-type'] ?? '');
      if (FORM_TYPES.includes(type))
        return problem('EG_UNSUPPORTED_MEDIA_TYPE', `state-changing admin requests may not be sent as ${type} (what any web page's form can send); send no body, or the endpoint's own type`);
    }
    return undefined;
  }

  private hostAllowed(hostHeader: string): boolean {
    const name = hostHeader.startsWith('[') ? hostHeader.slice(0, hostHeader.indexOf(']') + 1) : hostHeader.split(':')[0]!;
    if (name === '') return false;
    if (name === 'localhost' || name.endsWith('.localhost') || name === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(name)) return true;
    const bound = this.plan.host.toLowerCase();
    if (bound !== '0.0.0.0' && bound !== '::' && (name === bound || name === `[${bound}]`)) return true;
    return (this.plan.allowedHosts ?? []).some((h) => h.toLowerCase() === name);
  }

  /** The 429 for a client address that sent too many wrong tokens lately, if it did. */
  private refusedClient(req: IncomingMessage): Problem | undefined {
    const ms = this.failures.refusedFor(req.socket.remoteAddress ?? '');
    if (ms === 0) return undefined;
    const seconds = String(Math.ceil(ms / 1000));
    return problem('EG_RATE_LIMITED', `too many wrong admin tokens from this address: try again in ${seconds} s`, { headers: { 'retry-after': seconds } });
  }

  /**
   * Judges the token a request presents, once: `bearer` when the admin token is in Authorization
   * (what lets a request skip the Host check: never `?token=`, which a page can put in a URL),
   * `query` when it is `?token=` (`queryToken`, accepted on WebSocket endpoints only), `none`
   * otherwise. A wrong token presented (either way) counts against the client's address.
   * Compares digests, so neither the token's content nor its length shows in the time taken.
   */
  private tokenVerdict(req: IncomingMessage, queryToken: string | null = null): 'bearer' | 'query' | 'none' {
    if (this.token === undefined) return 'none';
    const header = req.headers.authorization ?? '';
    // The scheme is case-insensitive and may be followed by more than one space (RFC 9110 §11.1,
    // §11.4): `bearer <token>` (Prometheus' `authorization: {type: bearer}`) is the token, not a wrong one.
    const scheme = /^Bearer[ \t]+/i.exec(header);
    const bearer = scheme !== null;
    if (!bearer && queryToken === null) return 'none';
    const given = createHash('sha256')
      .update(bearer ? header.slice(scheme[0].length) : queryToken!)
      .digest();
    const expected = createHash('sha256').update(this.token).digest();
    if (timingSafeEqual(given, expected)) return bearer ? 'bearer' : 'query';
    const address = req.socket.remoteAddress ?? '';
    const lockedMs = this.failures.failed(address);
    if (lockedMs > 0) this.lockouts.occurred({ client: clientKey(address), retryAfterS: Math.ceil(lockedMs / 1000) });
    return 'none';
  }
}

/**
 * The reader of a request's query parameters that every admin endpoint is handed: a parameter it
 * reads given twice with different values (`?file=a.yaml&file=b.yaml`, a script that appended
 * rather than replaced) is refused as it is read (RefusedRequest, a 400), since reading the first
 * would tap, show or replace what the caller may not have meant, as the listeners refuse
 * Content-Type lines that disagree. The same value twice says one thing and passes. Parameters no
 * endpoint reads are ignored.
 */
function queryParameters(url: string): AdminQuery {
  const start = url.indexOf('?');
  const params = new URLSearchParams(start < 0 ? '' : url.slice(start + 1));
  return (name) => {
    const values = params.getAll(name);
    if (new Set(values).size > 1) throw new RefusedRequest(problem('EG_BAD_REQUEST', `?${name}= is given ${values.length} times with different values; give it once`));
    return values[0] ?? null;
  };
}

/** `broker kafka: unreachable: getaddrinfo ENOTFOUND kafka-0.internal` → `broker kafka: unreachable`. */
function summary(reason: string): string {
  const parts = reason.split(': ');
  return parts.slice(0, 2).join(': ');
}

/** Answers an upgrade request that will not be upgraded with a problem+json response, then closes, lingering (lingering-close.ts). */
export function refuseUpgrade(socket: Duplex, p: Problem): void {
  answerAndCloseLingering(socket as Socket, rawResponse(p, p.status === 401 ? { 'www-authenticate': 'Bearer realm="eventgate-admin"' } : {}));
}
