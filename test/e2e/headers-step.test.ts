import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { runCliInProcess } from '../helpers/cli.js';
import { tempFiles, useGateway } from '../helpers/gateway.js';

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

describe('headers step: a header read in another case than a step before it sets it', () => {
  it('warns where a later step or a target reads the header in another case, not where it is read as set or before the step sets it', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: tenants
    from: {listener: api, path: /tenants}
    through:
      - filter: $exists($headers."x-tenant")
      - headers: {set: {X-Tenant: '$lowercase($headers."x-tenant")'}}
      - filter: $headers."x-tenant" = "acme"
      - filter: $headers."X-Tenant" = "acme"
    to: {broker: local, topic: t, key: '$headers."X-TENANT"'}
`,
    });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok\n');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 2, r.stderr);
    const said = (line: number, column: number, name: string) =>
      new RegExp(
        `^gateway\\.yaml:${line}:${column}: warning: header '${name}' is set as 'X-Tenant' by the headers step at gateway\\.yaml:11:9, which replaces it in any case with that spelling, so this reads no value wherever that step's expression has one; read \\$headers\\."X-Tenant"`,
      );
    assert.match(lines[0]!, said(12, 17, 'x-tenant'));
    assert.match(lines[1]!, said(14, 41, 'X-TENANT'));
  });
});
