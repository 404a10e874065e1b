import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

/**
 * `Retry-After` comes as delay-seconds or as an HTTP-date (RFC 9110 §10.2.3). The endpoint below
 * answers the first try 503 with a date a couple of seconds ahead (a whole second, so the header
 * states it exactly); the route's own backoff is 10 ms, so only a gateway that reads the date
 * waits until then. The check is a lower bound on the clock both share: the second try cannot
 * arrive before the date when the header is honoured.
 */
describe('webhook Retry-After as an HTTP-date', () => {
  let server: Server;
  let port = 0;
  const tries: { at: number; retryAfter?: number }[] = [];

  before(async () => {
    server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        if (tries.length === 0) {
          const date = Math.ceil(Date.now() / 1000) * 1000 + 2000;
          tries.push({ at: Date.now(), retryAfter: date });
          res.writeHead(503, { 'retry-after': new Date(date).toUTCString() });
          res.end('busy');
          return;
        }
        tries.push({ at: Date.now() });
        res.end('ok');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as AddressInfo).port;
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: dated
    from: { listener: api, path: /dated }
    to: { http: { url: "http://127.0.0.1:${port}/hook", retry: { attempts: 3, backoffMs: 10, maxBackoffMs: 10000 } } }
`,
  );
  after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('waits until the date a 503 names before the next try', async () => {
    const res = await fetch(gw.url('api', '/dated'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { deliveries: { attempts: number }[] };
    assert.equal(body.deliveries[0]!.attempts, 2);
    assert.equal(tries.length, 2);
    const asked = tries[0]!.retryAfter!;
    assert.ok(tries[1]!.at >= asked, `second try came ${asked - tries[1]!.at} ms before the Retry-After date`);
  });
});
