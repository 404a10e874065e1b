import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

describe('chains: composition', () => {
  const gw = useGateway(`version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  push: {kind: websocket, port: 0}
chains:
  shape:
    - validate: {schema: {type: object, required: [id]}, onInvalid: tag}
  first: [{headers: {set: {x-steps: '"first"'}}}]
  second: [{headers: {set: {x-steps: '$headers."x-steps" & ",second"'}}}]
  nothing: []
routes:
  - name: two-contracts
    from: {listener: api, path: /two}
    through:
      - shape
      - validate: {schema: {type: object, properties: {qty: {type: integer, minimum: 1}}}, onInvalid: tag}
    to: {broker: local, topic: out}
  - name: contracts-then-deadletter
    from: {listener: api, path: /strict}
    through:
      - shape
      - validate: {schema: {type: object, required: [qty]}, onInvalid: deadletter}
    to: {broker: local, topic: out}
    deadletter: {broker: local, topic: out}
  - name: order
    from: {listener: api, path: /order}
    through: [second, first, nothing, second, {headers: {set: {x-steps: '$headers."x-steps" & ",inline"'}}}, second]
    to: {broker: local, topic: out}
  - name: watch
    from: {broker: local, topic: out}
    to: {listener: push, path: /ws/out, format: envelope}
`);

  it('keeps the errors of every validate step that tagged the message in the one header', async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const r = await post(gw.url('api', '/two'), { qty: 0 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.tagged, true);
    const header = JSON.parse((await ws.next()).headers._asyncapi_eg_validation_error);
    assert.deepEqual(header.errors, [": must have required property 'id'", '/qty: must be >= 1']);
    // A later step that dead-letters the message keeps the earlier step's errors as well.
    const d = await post(gw.url('api', '/strict'), { n: 1 });
    assert.equal(d.body.deadlettered, true, d.text);
    assert.deepEqual(d.body.errors, [": must have required property 'id'", ": must have required property 'qty'"]);
    const dead = JSON.parse((await ws.next()).headers._asyncapi_eg_validation_error);
    assert.deepEqual(dead.errors, d.body.errors);
    ws.close();
  });

  it("judges each event of an HTTP CloudEvents batch by itself: a tag lists its own event's errors, and a valid event after a tagged one goes on untagged", async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    const event = (n: number, data: unknown) => ({ specversion: '1.0', id: `e-${n}`, source: '/walk', type: 'walk.batch', data });
    const batch = [event(1, { qty: 0 }), event(2, { id: 2, qty: 1 }), event(3, { id: 3, qty: 0 })];
    const r = await post(gw.url('api', '/two'), JSON.stringify(batch), { 'content-type': 'application/cloudevents-batch+json' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.tagged, true);
    const tags = [];
    for (let i = 0; i < 3; i++) {
      const got = await ws.next();
      const tag = got.headers._asyncapi_eg_validation_error;
      tags.push([got.headers.ce_id, tag === undefined ? undefined : JSON.parse(tag).errors]);
    }
    assert.deepEqual(tags, [
      ['e-1', [": must have required property 'id'", '/qty: must be >= 1']],
      ['e-2', undefined],
      ['e-3', ['/qty: must be >= 1']],
    ]);
    ws.close();
  });

  it('runs the steps of chains and inline steps in the order through lists them, a chain as often as it is named', async () => {
    const ws = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
    assert.equal((await post(gw.url('api', '/order'), {})).status, 200);
    assert.equal((await ws.next()).headers['x-steps'], 'first,second,inline,second');
    ws.close();
  });
});
