import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { conforms } from '../helpers/wire-formats.js';

const config = `version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  push: { kind: websocket, port: 0 }
chains:
  reading:
    - validate:
        schema: { type: object, required: [celsius], properties: { celsius: { type: number } } }
        onInvalid: tag
routes:
  - name: strict-in
    from: { listener: api, path: /strict }
    through: [{ validate: { schema: { type: object, required: [celsius] } } }]
    to: { broker: local, topic: readings }
  - name: tagged-in
    from: { listener: api, path: /readings }
    through: reading
    to: { broker: local, topic: readings }
  - name: ws-in
    from: { listener: push, path: /publish }
    through: reading
    to: { broker: local, topic: readings }
    ack: true
  - name: out
    from: { broker: local, topic: readings }
    to: { listener: push, path: /readings, format: envelope }
`;

describe('wire formats in schemas/ match what the gateway sends', () => {
  const gw = useGateway(config);

  it('HTTP error bodies match problem.json', async () => {
    const invalid = await post(gw.url('api', '/strict'), { kelvin: 3 });
    assert.equal(invalid.status, 400);
    conforms('problem.json', invalid.body);
    const notFound = await post(gw.url('api', '/nowhere'), {});
    assert.equal(notFound.status, 404);
    conforms('problem.json', notFound.body);
    const badJson = await post(gw.url('api', '/strict'), '{"celsius":');
    assert.equal(badJson.status, 400);
    conforms('problem.json', badJson.body);
  });

  it('publish answers and ack frames match publish-response.json; error frames match ws-error-frame.json', async () => {
    const ok = await post(gw.url('api', '/strict'), { celsius: 21 });
    assert.equal(ok.status, 200);
    conforms('publish-response.json', ok.body);
    const ws = await WsClient.connect(gw.url('push', '/publish', 'ws'));
    ws.send({ celsius: 20 });
    const ack = await ws.next();
    assert.equal(ack.type, 'ack');
    conforms('publish-response.json', ack);
    ws.send('{not json');
    const error = await ws.next();
    assert.equal(error.type, 'error');
    conforms('ws-error-frame.json', error);
    ws.close();
  });

  it('envelopes match envelope.json and a tagged message carries a header matching validation-error-header.json', async () => {
    const sub = await WsClient.connect(gw.url('push', '/readings', 'ws'));
    const reply = await post(gw.url('api', '/readings'), { celsius: 'warm' });
    assert.equal(reply.status, 200);
    assert.equal(reply.body.tagged, true);
    const env = await sub.next();
    conforms('envelope.json', env);
    const header = JSON.parse(env.headers._asyncapi_eg_validation_error);
    conforms('validation-error-header.json', header);
    assert.deepEqual(header.errors, ['/celsius: must be number']);
    sub.close();
  });
});
