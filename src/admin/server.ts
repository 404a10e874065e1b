import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, timingSafeEqual } from 'node:crypto';
import { problem } from '../errors.js';
import { sendJson, sendProblem } from '../runtime/http-reply.js';
import type { AdminPlan } from '../plan/types.js';
import type { Gateway } from '../runtime/gateway.js';
import { addAsyncApiEndpoints } from './asyncapi.js';

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** Endpoints that orchestrators probe without credentials. */
const OPEN = new Set(['/healthz', '/readyz']);

/** The admin API (spec §7): health, readiness, status, reload. Bound to 127.0.0.1 unless configured. */
export class AdminServer {
  private readonly server: Server;
  private readonly routes = new Map<string, Handler>();
  private token: string | undefined;

  constructor(private readonly gateway: Gateway, private plan: AdminPlan) {
    this.token = plan.token;
    this.server = createServer((req, res) => {
      this.serve(req, res).catch((err) => {
        gateway.logger.error({ err: (err as Error).message, path: req.url }, 'admin request failed');
        if (!res.headersSent) sendProblem(res, problem('EG_INTERNAL', 'admin request failed'));
      });
    });
    this.route('GET /healthz', (_req, res) => sendJson(res, 200, { status: 'ok' }));
    this.route('GET /readyz', (_req, res) => {
      const r = gateway.readiness();
      sendJson(res, r.ready ? 200 : 503, r.ready ? { status: 'ready' } : { status: 'not ready', reasons: r.reasons });
    });
    this.route('GET /admin/status', (_req, res) => sendJson(res, 200, gateway.status()));
    this.route('POST /admin/reload', async (_req, res) => {
      const result = await gateway.reload('admin API');
      sendJson(res, result.result === 'rejected' ? 422 : 200, result);
    });
    addAsyncApiEndpoints(this, gateway);
  }

  /** Other admin modules (metrics, tap, dashboard) add their endpoints here. */
  route(key: string, handler: Handler): void {
    this.routes.set(key, handler);
  }

  configure(plan: AdminPlan): void {
    this.plan = plan;
    this.token = plan.token;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.plan.port, this.plan.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    const closed = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeAllConnections();
    await closed;
  }

  address() {
    const a = this.server.address() as AddressInfo | null;
    return a ? { host: a.address, port: a.port } : undefined;
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0]!;
    if (this.token && !OPEN.has(path) && !this.authorized(req)) {
      res.setHeader('www-authenticate', 'Bearer realm="eventgate-admin"');
      return sendProblem(res, problem('EG_UNAUTHORIZED', 'the admin API needs Authorization: Bearer <admin.token>'));
    }
    const handler = this.routes.get(`${req.method} ${path}`);
    if (handler) return handler(req, res);
    const other = [...this.routes.keys()].filter((k) => k.endsWith(` ${path}`));
    if (other.length > 0) {
      res.setHeader('allow', other.map((k) => k.split(' ')[0]).join(', '));
      return sendProblem(res, problem('EG_METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${path}`));
    }
    sendProblem(res, problem('EG_NOT_FOUND', `no admin endpoint at ${path}`));
  }

  /** Compares digests, so neither the token's content nor its length shows in the time taken. */
  private authorized(req: IncomingMessage): boolean {
    const header = req.headers.authorization ?? '';
    const given = createHash('sha256').update(header.startsWith('Bearer ') ? header.slice(7) : '').digest();
    const expected = createHash('sha256').update(this.token!).digest();
    return timingSafeEqual(given, expected);
  }
}
