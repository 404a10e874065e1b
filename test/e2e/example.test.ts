import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { repoRoot, useGateway } from '../helpers/gateway.js';

describe('examples/gateway.yaml (the README walkthrough)', () => {
  const yaml = readFileSync(join(repoRoot, 'examples/gateway.yaml'), 'utf8');
  const schema = readFileSync(join(repoRoot, 'examples/schemas/light-measured.json'), 'utf8');
  const gw = useGateway(yaml, { files: { 'schemas/light-measured.json': schema }, env: { HTTP_PORT: '0', WS_PORT: '0', ADMIN_PORT: '0' } });

  it('delivers a posted lightMeasured event, transformed, to a websocket client', async () => {
    const client = await WsClient.connect(gw.url('push', '/ws/light', 'ws'));
    const reply = await post(gw.url('api', '/light'), { id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.deliveries.length, 1);
    assert.deepEqual({ ...reply.body.deliveries[0], offset: undefined }, { broker: 'local', topic: 'light-measured', partition: 0, offset: undefined });
    assert.deepEqual(await client.next(), { streetlightId: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z', bright: true });
    client.close();
  });

  it('rejects an invalid event with 400 and the validation errors', async () => {
    const reply = await post(gw.url('api', '/light'), { id: 7, lumens: -1, sentAt: 'yesterday' });
    assert.equal(reply.status, 400);
    assert.equal(reply.headers.get('content-type'), 'application/problem+json');
    assert.deepEqual(reply.body.errors, ['/lumens: must be >= 0', '/sentAt: must match format "date-time"']);
  });
});
