import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

/** Sessions end with their tokens (issue #13, docs/security.md): a WebSocket client is closed with 4401 when its JWT expires. */
const SECRET = 'a-jwt-secret-of-at-least-thirty-two-bytes!';
const key = new TextEncoder().encode(SECRET);
const token = (claims: Record<string, unknown>, expiresInSec?: number) => {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuedAt();
  if (expiresInSec !== undefined) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSec);
  return jwt.sign(key);
};

const config = `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
  push: {kind: websocket, port: 0, host: 127.0.0.1}
routes:
  - name: in
    from: {listener: api, path: /in}
    to:
      - {listener: push, path: /feed, auth: {jwt: {secret: "${SECRET}", query: access_token}}}
  - name: frames
    from: {listener: push, path: /publish}
    ack: true
    through:
      - auth: {jwt: {secret: "${SECRET}", query: access_token}}
    to: {broker: local, topic: frames}
  - name: strict
    from: {listener: api, path: /strict}
    through:
      - auth: {jwt: {secret: "${SECRET}", requireExp: true}}
    to: {broker: local, topic: strict}
`;

describe('sessions end with their tokens', () => {
  const gw = useGateway(config);

  it('closes a forward subscriber with 4401 when its JWT expires; it receives nothing after', async () => {
    const short = await token({}, 3);
    const long = await token({}, 3600);
    const expiring = await WsClient.connect(gw.url('push', `/feed?access_token=${short}`, 'ws'));
    const lasting = await WsClient.connect(gw.url('push', '/feed', 'ws'), { headers: { authorization: `Bearer ${long}` } });
    assert.equal((await post(gw.url('api', '/in'), { n: 1 })).status, 200);
    assert.deepEqual(await expiring.next(), { n: 1 });
    assert.deepEqual(await lasting.next(), { n: 1 });
    const closed = await expiring.waitClose(20000);
    assert.deepEqual(closed, { code: 4401, reason: 'credential expired' });
    assert.equal((await post(gw.url('api', '/in'), { n: 2 })).status, 200);
    assert.deepEqual(await lasting.next(), { n: 2 });
    assert.equal(expiring.frames.length, 0, 'nothing reached the expired subscriber');
    lasting.close();
  });

  it('closes a publishing client with 4401 when its JWT expires', async () => {
    const c = await WsClient.connect(gw.url('push', `/publish?access_token=${await token({}, 3)}`, 'ws'));
    c.send({ n: 1 });
    assert.equal((await c.next()).type, 'ack');
    assert.equal((await c.waitClose(20000)).code, 4401);
  });

  it('requireExp: true refuses a token without exp (accepted for ever otherwise)', async () => {
    const forever = await token({});
    const r = await post(gw.url('api', '/strict'), { n: 1 }, { authorization: `Bearer ${forever}` });
    assert.equal(r.status, 401);
    assert.match(r.body.detail, /"exp" claim is missing/);
    assert.equal((await post(gw.url('api', '/strict'), { n: 1 }, { authorization: `Bearer ${await token({}, 60)}` })).status, 200);
  });
});
