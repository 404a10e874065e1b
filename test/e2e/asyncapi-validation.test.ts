import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { channelsOf, documentOf, lightMeasuredPayload } from '../helpers/asyncapi-fixtures.js';
import { useGateway } from '../helpers/gateway.js';

const HEADER = '_asyncapi_eg_validation_error';
const valid = { id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' };
const invalid = { id: 7, lumens: -1, sentAt: 'yesterday' };
const invalidErrors = ['/lumens: must be >= 0', '/sentAt: must match format "date-time"'];
/**
 * A schema recursive across files (point 314): the payload's file refers to schemas/more/node.yaml,
 * which refers back to it. The parser leaves that `$ref` as written, relative to node.yaml.
 */
const recursivePayload = `${lightMeasuredPayload}  tree: {$ref: 'more/node.yaml#/node'}\n`;
const nodeSchema = (required = '') => `node:\n  type: object\n${required}  properties:\n    up: {$ref: '../light-measured.yaml'}\n`;

function config(commands: string): string {
  const validate = (onInvalid: string, extra = '') => `{validate: {message: lightMeasured, onInvalid: ${onInvalid}${extra}}}`;
  return `version: 1
asyncapi: streetlights.yaml
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  ws: {kind: websocket, port: 0}
chains:
  meta:
    - headers: {set: {x-message: $message, x-channel: $channel}}
routes:
  - {name: http-reject, from: {listener: api, path: /reject}, through: [${validate('reject')}, meta], to: {broker: local, topic: accepted}}
  - {name: http-tag, from: {listener: api, path: /tag}, through: [${validate('tag')}, meta], to: {broker: local, topic: tagged}}
  - {name: http-deadletter, from: {listener: api, path: /deadletter}, through: [${validate('deadletter', ', deadletter: {broker: local, topic: dead}')}], to: {broker: local, topic: accepted}}
  - {name: http-commands, from: {listener: api, path: /commands}, through: [{validate: {channel: '${commands}'}}, meta], to: {broker: local, topic: accepted}}
  - {name: ws-reject, from: {listener: ws, path: /in/reject}, ack: true, through: [${validate('reject')}], to: {broker: local, topic: accepted}}
  - {name: ws-tag, from: {listener: ws, path: /in/tag}, ack: true, through: [${validate('tag')}, meta], to: {broker: local, topic: tagged}}
  - {name: ws-deadletter, from: {listener: ws, path: /in/deadletter}, ack: true, through: [${validate('deadletter')}], to: {broker: local, topic: accepted}, deadletter: {broker: local, topic: dead}}
  - {name: see-accepted, from: {broker: local, topic: accepted}, to: {listener: ws, path: /see/accepted, format: envelope}}
  - {name: see-tagged, from: {broker: local, topic: tagged}, to: {listener: ws, path: /see/tagged, format: envelope}}
  - {name: see-dead, from: {broker: local, topic: dead}, to: {listener: ws, path: /see/dead, format: envelope}}
`;
}

/** The header exactly as the AsyncAPI Event Gateway wrote it: compact JSON, `ts` then `errors`. */
function assertValidationHeader(value: unknown, errors: string[]): void {
  assert.equal(typeof value, 'string');
  const header = value as string;
  const parsed = JSON.parse(header) as { ts: string; errors: string[] };
  assert.deepEqual(Object.keys(parsed), ['ts', 'errors']);
  assert.equal(new Date(parsed.ts).toISOString(), parsed.ts, 'ts is an ISO-8601 UTC timestamp');
  assert.ok(Math.abs(Date.parse(parsed.ts) - Date.now()) < 60_000, 'ts is the time of validation');
  assert.equal(header, `{"ts":"${parsed.ts}","errors":${JSON.stringify(errors)}}`);
}

for (const version of ['2.6', '3.0'] as const) {
  const ch = channelsOf[version];

  describe(`onInvalid with an AsyncAPI ${version} message, over HTTP and WebSocket`, () => {
    const see: Record<'accepted' | 'tagged' | 'dead', WsClient> = {} as never;
    after(() => {
      for (const c of Object.values(see)) c.close();
    });
    const gw = useGateway(config(ch.commands), {
      files: { 'streetlights.yaml': documentOf[version], 'schemas/light-measured.yaml': recursivePayload, 'schemas/more/node.yaml': nodeSchema() },
    });
    before(async () => {
      for (const topic of ['accepted', 'tagged', 'dead'] as const) see[topic] = await WsClient.connect(gw.url('ws', `/see/${topic}`, 'ws'));
    });

    it('reject: answers an invalid HTTP message 400 with the errors and publishes nothing; a valid one passes with $message and $channel', async () => {
      const refused = await post(gw.url('api', '/reject'), invalid);
      assert.equal(refused.status, 400);
      assert.equal(refused.headers.get('content-type'), 'application/problem+json');
      assert.equal(refused.body.code, 'EG_INVALID_MESSAGE');
      assert.deepEqual(refused.body.errors, invalidErrors);
      const ok = await post(gw.url('api', '/reject'), valid);
      assert.equal(ok.status, 200);
      const seen = await see.accepted.next();
      assert.deepEqual(seen.value, valid, 'the first message on the topic is the valid one');
      assert.equal(seen.headers['x-message'], 'lightMeasured');
      assert.equal(seen.headers['x-channel'], ch.measured);
      assert.equal(seen.headers[HEADER], undefined);
    });

    it('tag: forwards an invalid HTTP message with the _asyncapi_eg_validation_error header', async () => {
      const reply = await post(gw.url('api', '/tag'), invalid);
      assert.equal(reply.status, 200);
      assert.equal(reply.body.tagged, true);
      const seen = await see.tagged.next();
      assert.deepEqual(seen.value, invalid);
      assertValidationHeader(seen.headers[HEADER], invalidErrors);
      assert.equal(seen.headers['x-message'], 'lightMeasured');
      const clean = await post(gw.url('api', '/tag'), valid);
      assert.equal(clean.body.tagged, undefined);
      assert.equal((await see.tagged.next()).headers[HEADER], undefined);
    });

    it('deadletter: sends an invalid HTTP message, with the header and its own headers, to the dead-letter topic only', async () => {
      const reply = await post(gw.url('api', '/deadletter'), invalid, { 'x-trace': 'abc-1' });
      assert.equal(reply.status, 200);
      assert.equal(reply.body.deadlettered, true);
      assert.deepEqual(reply.body.errors, invalidErrors);
      const dead = await see.dead.next();
      assert.deepEqual(dead.value, invalid);
      assert.equal(dead.headers['x-trace'], 'abc-1');
      assertValidationHeader(dead.headers[HEADER], invalidErrors);
      assert.equal((await post(gw.url('api', '/deadletter'), valid)).status, 200);
      assert.deepEqual((await see.accepted.next()).value, valid, 'the invalid message never reached the route target');
    });

    it('reject: answers an invalid WebSocket frame with an error frame and keeps the connection open', async () => {
      const client = await WsClient.connect(gw.url('ws', '/in/reject', 'ws'));
      client.send(invalid);
      const error = await client.next();
      assert.deepEqual({ type: error.type, status: error.status, code: error.code, errors: error.errors }, { type: 'error', status: 400, code: 'EG_INVALID_MESSAGE', errors: invalidErrors });
      client.send(valid);
      assert.equal((await client.next()).type, 'ack');
      assert.deepEqual((await see.accepted.next()).value, valid);
      client.close();
    });

    it('tag: forwards an invalid WebSocket frame with the header', async () => {
      const client = await WsClient.connect(gw.url('ws', '/in/tag', 'ws'));
      client.send(invalid);
      const ack = await client.next();
      assert.equal(ack.type, 'ack');
      assert.equal(ack.tagged, true);
      const seen = await see.tagged.next();
      assert.deepEqual(seen.value, invalid);
      assertValidationHeader(seen.headers[HEADER], invalidErrors);
      client.close();
    });

    it("deadletter: sends an invalid WebSocket frame to the route's dead-letter topic", async () => {
      const client = await WsClient.connect(gw.url('ws', '/in/deadletter', 'ws'));
      client.send(invalid);
      const ack = await client.next();
      assert.deepEqual({ type: ack.type, deadlettered: ack.deadlettered }, { type: 'ack', deadlettered: true });
      const dead = await see.dead.next();
      assert.deepEqual(dead.value, invalid);
      assertValidationHeader(dead.headers[HEADER], invalidErrors);
      client.send(valid);
      await client.next();
      assert.deepEqual((await see.accepted.next()).value, valid, 'the invalid frame never reached the route target');
      client.close();
    });

    it('channel: accepts any message of the channel and tells expressions which one it is', async () => {
      assert.equal((await post(gw.url('api', '/commands'), { command: 'on' })).status, 200);
      let seen = await see.accepted.next();
      assert.deepEqual([seen.headers['x-message'], seen.headers['x-channel']], ['turnOn', ch.commands]);
      assert.equal((await post(gw.url('api', '/commands'), { percentage: 30 })).status, 200);
      seen = await see.accepted.next();
      assert.deepEqual([seen.headers['x-message'], seen.headers['x-channel']], ['dimLight', ch.commands]);
      const refused = await post(gw.url('api', '/commands'), { percentage: 300 });
      assert.equal(refused.status, 400);
      assert.deepEqual(refused.body.errors, [": must have required property 'command' (message turnOn)", '/percentage: must be <= 100 (message dimLight)']);
    });

    it(`a payload recursive across files validates by the whole schema${version === '3.0' ? ', and follows an edit of the file it refers back through' : ''} (point 314)`, async () => {
      const deep = { ...valid, tree: { up: { ...valid, tree: { up: { ...valid, tree: {} } } } } };
      assert.equal((await post(gw.url('api', '/reject'), deep)).status, 200);
      assert.deepEqual((await see.accepted.next()).value, deep);
      const refused = await post(gw.url('api', '/reject'), { ...valid, tree: { up: { ...valid, tree: { up: invalid } } } });
      assert.equal(refused.status, 400);
      assert.deepEqual(
        refused.body.errors,
        invalidErrors.map((e) => `/tree/up/tree/up${e}`),
      );
      if (version !== '3.0') return; // the reload is the same in both versions: one is enough
      const reload = await gw.reconfigure(nodeSchema('  required: [up]\n'), 'schemas/more/node.yaml');
      assert.equal(reload.msg, 'config reloaded');
      const now = await post(gw.url('api', '/reject'), deep);
      assert.equal(now.status, 400);
      assert.deepEqual(now.body.errors, ["/tree/up/tree/up/tree: must have required property 'up'"]);
    });
  });
}
