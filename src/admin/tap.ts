import type { IncomingMessage, ServerResponse } from 'node:http';
import { problem } from '../core/errors.js';
import { sendProblem } from '../kinds/listeners/http-reply.js';
import { malformedHandshake } from '../kinds/listeners/ws-handshake.js';
import type { TapHub } from '../telemetry/tap.js';
import { refuseUpgrade, type AdminServer } from './server.js';

/** `GET /admin/tap?route=<name>` (WebSocket) on the admin server. */
export function mountTap(admin: AdminServer, hub: TapHub, hasRoute: (name: string) => boolean): void {
  admin.upgrade('/admin/tap', (req, socket, head, query) => {
    // What ws would refuse in text/html is refused here as problem+json, as the WebSocket listener does.
    const malformed = malformedHandshake(req);
    if (malformed) return refuseUpgrade(socket, malformed);
    const route = query('route');
    if (!route) return refuseUpgrade(socket, problem('EG_NOT_FOUND', 'name the route to tap: /admin/tap?route=<name>'));
    if (!hasRoute(route)) return refuseUpgrade(socket, problem('EG_NOT_FOUND', `no route named '${route}'`));
    hub.accept(req, socket, head, route);
  });
  // Without an upgrade this is a plain GET: say what the endpoint wants, as the WebSocket listener does.
  admin.route('GET /admin/tap', (_req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('upgrade', 'websocket');
    sendProblem(res, problem('EG_UPGRADE_REQUIRED', 'the tap is a WebSocket: connect to ws://<admin>/admin/tap?route=<name>'));
  });
  admin.onStop(() => hub.closeAll('admin server stopping'));
}
