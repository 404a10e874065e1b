import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { eventually, repoRoot, runCli, useGateway } from '../helpers/gateway.js';
import { freePort } from '../helpers/ports.js';
import { openStream } from '../helpers/sse.js';
import { fetch } from '../helpers/http.js';

describe('examples/http-edge.yaml (CloudEvents in, SSE and webhooks out)', () => {
  const yaml = readFileSync(join(repoRoot, 'examples/http-edge.yaml'), 'utf8');
  const schema = readFileSync(join(repoRoot, 'examples/schemas/order.json'), 'utf8');
  // The webhook calls the example's own receiver route, so it needs to know the port up front.
  let port: number;
  before(async () => {
    port = await freePort();
  });
  const gw = useGateway(yaml, () => ({ files: { 'schemas/order.json': schema }, env: { HTTP_PORT: String(port), ADMIN_PORT: '0', WEBHOOK_URL: `http://127.0.0.1:${port}/hooks/orders` } }));

  it('validates as it is', async () => {
    const r = await runCli(['validate', '-c', 'examples/http-edge.yaml']);
    assert.equal(r.stdout.trim(), 'ok', r.stdout + r.stderr);
  });

  it('streams CloudEvents and plain JSON orders, and delivers them to the webhook', async () => {
    const orders = await openStream(gw.url('api', '/orders/stream'));
    const received = await openStream(gw.url('api', '/hooks/orders/stream'));
    let res = await fetch(gw.url('api', '/orders'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'order-1', 'ce-source': '/shop', 'ce-type': 'com.example.order.placed' },
      body: JSON.stringify({ orderId: 1, total: 9.5 }),
    });
    assert.equal(res.status, 200, await res.clone().text());
    res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ orderId: 2, total: 20 }) });
    assert.equal(res.status, 200);
    res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ orderId: 'three' }) });
    assert.equal(res.status, 400);

    await eventually(() => assert.equal(orders.events().length, 2));
    const [first, second] = orders.events().map((e) => ({ event: e.event, ce: JSON.parse(e.data) }));
    assert.equal(first!.event, 'com.example.order.placed');
    assert.equal(first!.ce.id, 'order-1');
    assert.equal(first!.ce.subject, '1');
    assert.deepEqual(first!.ce.data, { orderId: 1, total: 9.5 });
    assert.equal(second!.ce.source, '/shop');
    assert.deepEqual(second!.ce.data, { orderId: 2, total: 20 });

    await eventually(() => assert.equal(received.events().length, 2), 10000);
    const hooks = received.events().map((e) => JSON.parse(e.data) as { headers: Record<string, string>; value: unknown; ce: Record<string, string> });
    assert.deepEqual(hooks.map((h) => h.ce.id).sort(), [first!.ce.id, second!.ce.id].sort());
    assert.ok(hooks.every((h) => h.headers['webhook-signature']?.startsWith('v1,')));
    orders.close();
    received.close();
  });
});
