import assert from 'node:assert/strict';
import { WsClient } from './clients.js';
import type { RunningGateway } from './gateway.js';
import { fetch } from './http.js';

/**
 * The `_eventgate_error` of a consume route's dead-letter copy of `body`, in a gateway whose
 * http listener `api` parks a POST to `/enqueue/<to>` on the topic the route `to` reads, and
 * whose websocket listener `ws` forwards the dead-letter topic at `/dlq` (`format: envelope`).
 */
export async function deadletterReason(gw: RunningGateway, to: string, body: unknown): Promise<Record<string, unknown>> {
  const dlq = await WsClient.connect(gw.url('ws', '/dlq', 'ws'));
  try {
    const res = await fetch(gw.url('api', `/enqueue/${to}`), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    assert.equal(res.status, 200);
    const frame = (await dlq.next()) as { value: unknown; headers: Record<string, string> };
    assert.deepEqual(frame.value, body);
    return JSON.parse(frame.headers._eventgate_error!) as Record<string, unknown>;
  } finally {
    dlq.close();
  }
}
