import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { HeldTarget } from '../helpers/held-target.js';

/** Sessions end with their tokens (issue #13, docs/security.md): a WebSocket client is closed with 4401 when its JWT expires. */
const SECRET = 'a-jwt-secret-of-at-least-thirty-two-bytes!';
const key = new TextEncoder().encode(SECRET);
const token = (claims: Record<string, unknown>, expiresInSec?: number) => {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setIssuedAt();
  if (expiresInSec !== undefined) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSec);
  return jwt.sign(key);
};

const config = (held: string) => `version: 1
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
  - name: held
    from: {listener: push, path: /held}
    ack: true
    through:
      - auth: {jwt: {secret: "${SECRET}", query: access_token}}
    to: {http: {url: "${held}"}}
`;

describe('sessions end with their tokens', () => {
  // A webhook that answers nothing until released: a frame on /held stays in hand.
  let held: HeldTarget;
  before(async () => {
    held = await HeldTarget.start();
  });
  after(() => held.stop());
  const gw = useGateway(() => config(held.url));

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

  it('closes a publishing client with 4401 when its JWT expires, once the frames it sent before are answered', async () => {
    const c = await WsClient.connect(gw.url('push', `/publish?access_token=${await token({}, 3)}`, 'ws'));
    c.send({ n: 1 });
    assert.equal((await c.next()).type, 'ack');
    // One whose first frame is in hand (the webhook holds it) when its token expires, a second behind it.
    const holding = await WsClient.connect(gw.url('push', `/held?access_token=${await token({}, 3)}`, 'ws'));
    holding.send({ n: 1 });
    holding.send({ n: 2 });
    await eventually(() => held.bodies.length === 1);
    assert.equal((await c.waitClose(20000)).code, 4401);
    await gw.waitForLog((l) => l.msg === 'client credential expired; disconnecting with 4401' && l.path === '/held', 20000);
    held.release();
    // (It was closed at the expiry, its answers lost: it could not tell that frame 1 was delivered.)
    const answers = [await holding.next(), await holding.next()];
    assert.deepEqual(
      answers.map((a) => [a.frame, a.type, a.status]),
      [
        [1, 'ack', undefined],
        [2, 'error', 401],
      ],
    );
    assert.deepEqual(await holding.waitClose(), { code: 4401, reason: 'credential expired' });
    assert.deepEqual(held.bodies, ['{"n":1}']);
  });

  it('requireExp: true refuses a token without exp (accepted for ever otherwise)', async () => {
    const forever = await token({});
    const r = await post(gw.url('api', '/strict'), { n: 1 }, { authorization: `Bearer ${forever}` });
    assert.equal(r.status, 401);
    assert.match(r.body.detail, /"exp" claim is missing/);
    assert.equal((await post(gw.url('api', '/strict'), { n: 1 }, { authorization: `Bearer ${await token({}, 60)}` })).status, 200);
  });
});
