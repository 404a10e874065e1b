import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { afterGateways, useGateway } from '../helpers/gateway.js';
import { type MessageServer, startNats } from '../helpers/servers.js';
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

describe('a publish answer whose broker names no position matches publish-response.json', () => {
  // AMQP, core NATS and Kafka with acks: none store a message at no offset they tell the client:
  // the delivery says "-1" (docs/config.md), and the schema users check answers with must allow it.
  let nats: MessageServer;
  before(async () => {
    nats = await startNats();
  });
  afterGateways(() => nats.stop());
  const gw = useGateway(
    () => `version: 1
brokers:
  nats: { kind: nats, servers: "${nats.url}" }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: presence
    from: { listener: api, path: /presence }
    to: { broker: nats, topic: presence.online }
`,
  );

  it('a core NATS publish: offset "-1"', async () => {
    await gw.waitForLog((l) => l.msg === 'nats connected', 15000);
    const res = await post(gw.url('api', '/presence'), { user: 'ada' });
    assert.equal(res.status, 200);
    assert.equal(res.body.deliveries[0].offset, '-1');
    conforms('publish-response.json', res.body);
  });
});
