import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

describe('headers step: header names regardless of case', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  push: {kind: websocket, port: 0}
routes:
  - name: edit
    from: {listener: api, path: /edit}
    through:
      - headers:
          remove: [X-Debug, X-Not-There]
          set: {X-Request-Id: '"fixed-" & $headers."x-request-id"', X-Absent: 'nothing'}
    to: {broker: local, topic: edited}
  - name: watch
    from: {broker: local, topic: edited}
    to: {listener: push, path: /ws/edited, format: envelope}
`);

  it('removes and replaces an HTTP header whatever case the config spells it in', async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws/edited', 'ws'));
    const r = await post(gw.url('api', '/edit'), { n: 1 }, { 'X-Debug': 'on', 'X-Request-Id': 'r1', 'X-Absent': 'kept' });
    assert.equal(r.status, 200, r.text);
    const { headers } = await ws.next();
    assert.equal(headers['x-debug'], undefined);
    // One header, spelled as in the config: not beside the client's lower-case one.
    assert.equal(headers['X-Request-Id'], 'fixed-r1');
    assert.equal(headers['x-request-id'], undefined);
    // An expression with no result leaves the header as it was.
    assert.equal(headers['x-absent'], 'kept');
    assert.equal(headers['X-Absent'], undefined);
    ws.close();
  });
});
