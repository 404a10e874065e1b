import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { parseEvents } from '../helpers/sse.js';

/**
 * An event stream on a guarded forward path is a subscriber like a WebSocket client on one
 * (docs/security.md): it ends when the JWT it was opened with expires, and when a reload stops
 * accepting its key. Before, only WebSocket subscribers were cut off; a stream kept receiving.
 */
const SECRET = 'an-sse-jwt-secret-of-at-least-32-bytes!!';
const key = new TextEncoder().encode(SECRET);
const token = (expiresInSec: number) =>
  new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject('alice')
    .setExpirationTime(Math.floor(Date.now() / 1000) + expiresInSec)
    .sign(key);

const BOB = 'bob-key-0123456789abcdef';
const CAROL = 'carol-key-0123456789abcdef';

const config = `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
routes:
  - name: in
    from: {listener: api, path: /in}
    to:
      - {listener: api, path: /by-token, auth: {jwt: {secret: "${SECRET}"}}}
      - {listener: api, path: /by-key, auth: {apiKey: {query: key, keysFile: keys.yaml}}}
`;

/** An event stream read to its end: `text()` so far, `ended` once the gateway ends it. */
async function stream(url: string, headers: Record<string, string> = {}) {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: controller.signal });
  assert.equal(res.status, 200, `the stream opens: ${res.status}`);
  let text = '';
  const decoder = new TextDecoder();
  const ended = (async () => {
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) text += decoder.decode(chunk, { stream: true });
      return 'ended by the gateway';
    } catch {
      return 'aborted';
    }
  })();
  const events = () => parseEvents(text);
  return {
    values: () =>
      events()
        .filter((e) => e.event === undefined)
        .map((e) => JSON.parse(e.data) as unknown),
    /** The `eventgate.end` notices: why the gateway ended the stream. */
    ends: () =>
      events()
        .filter((e) => e.event === 'eventgate.end')
        .map((e) => JSON.parse(e.data) as { status: number; reason: string }),
    ended,
    close: () => controller.abort(),
  };
}

describe('event streams on guarded paths end with their credentials', () => {
  const gw = useGateway(config, { files: { 'keys.yaml': `bob: ${BOB}\ncarol: ${CAROL}\n` } });

  it('ends a stream when the JWT it was opened with expires; it receives nothing after', { timeout: 30_000 }, async () => {
    // `exp` is in whole seconds: 6 leaves 5 to 6 s for the stream to open and get n 1 before it
    // ends. With 3 (2 to 3 s), a loaded machine (load average 20) ended it first, and n 1 never came.
    const expiring = await stream(gw.url('api', '/by-token'), { authorization: `Bearer ${await token(6)}` });
    const lasting = await stream(gw.url('api', '/by-token'), { authorization: `Bearer ${await token(3600)}` });
    assert.equal((await post(gw.url('api', '/in'), { n: 1 })).status, 200);
    await eventually(() => assert.deepEqual([expiring.values(), lasting.values()], [[{ n: 1 }], [{ n: 1 }]]));
    assert.equal(await expiring.ended, 'ended by the gateway');
    assert.equal((await post(gw.url('api', '/in'), { n: 2 })).status, 200);
    await eventually(() => assert.deepEqual(lasting.values(), [{ n: 1 }, { n: 2 }]));
    assert.deepEqual(expiring.values(), [{ n: 1 }], 'nothing reached the expired stream');
    // Its last event says why, which a page's EventSource cannot learn from the refused reconnect.
    assert.deepEqual(expiring.ends(), [{ status: 401, reason: 'credential expired; open a new stream with a fresh one' }]);
    assert.deepEqual(lasting.ends(), []);
    const log = await gw.waitForLog((l) => l.msg === 'event stream client credential expired; ending its stream');
    assert.equal(log.path, '/by-token');
    lasting.close();
  });

  it('ends the streams of a key a reload revokes, and keeps the others', { timeout: 30_000 }, async () => {
    const revoked = await stream(gw.url('api', `/by-key?key=${BOB}`));
    const kept = await stream(gw.url('api', `/by-key?key=${CAROL}`));
    gw.write('keys.yaml', `carol: ${CAROL}\n`);
    assert.equal(await revoked.ended, 'ended by the gateway');
    assert.equal((await post(gw.url('api', '/in'), { n: 3 })).status, 200);
    await eventually(() => assert.deepEqual(kept.values(), [{ n: 3 }]));
    assert.deepEqual(revoked.values(), []);
    assert.equal(revoked.ends().length, 1);
    assert.equal(revoked.ends()[0]!.status, 401);
    assert.match(revoked.ends()[0]!.reason, /^credential no longer accepted \(.+\); open a new stream with a valid one$/);
    assert.deepEqual(kept.ends(), []);
    const r = await fetch(gw.url('api', `/by-key?key=${BOB}`), { headers: { accept: 'text/event-stream' } });
    assert.equal(r.status, 401, 'the revoked key cannot open a new stream either');
    kept.close();
  });
});
