import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect as connectH2 } from 'node:http2';
import { setTimeout as delay } from 'node:timers/promises';
import { type AddressInfo, connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { exportJWK, SignJWT } from 'jose';
import { post, WsClient } from '../helpers/clients.js';
import { parseReplies, rawHttp, rawHttpText } from '../helpers/raw-http.js';
import { eventually, runCli, type StartOptions, tempFiles, useGateway } from '../helpers/gateway.js';
import { makeCertificates } from '../helpers/certificates.js';
import { FETCH_BLOCKED_PORTS, listenOnFirstFree } from '../helpers/ports.js';

const ALICE_KEY = 'alice-key-5f1c2a9e7d3b';
const BOB_KEY = 'bob-key-0123456789abcdef';
const CAROL_KEY = 'carol-key-fedcba9876543210';
const JWT_SECRET = 'a-shared-hmac-secret-of-at-least-32-bytes!';
const ISSUER = 'https://issuer.test/';

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
/** In the JWKS file beside `ec`, under the same kid (an identity provider's rotation that reused it). */
const third = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const secretKey = new TextEncoder().encode(JWT_SECRET);

function hs(claims: Record<string, unknown>, opts: { exp?: string | number; iss?: string; aud?: string; key?: Uint8Array } = {}): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience(opts.aud ?? 'eventgate')
    .setIssuedAt()
    .setExpirationTime(opts.exp ?? '5m')
    .sign(opts.key ?? secretKey);
}

function es(claims: Record<string, unknown>, key = ec.privateKey, kid?: string): Promise<string> {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', ...(kid ? { kid } : {}) })
    .setIssuer(ISSUER)
    .setExpirationTime('5m')
    .sign(key);
}

function esExpired(key: typeof ec.privateKey, kid: string): Promise<string> {
  return new SignJWT({ sub: 'late' })
    .setProtectedHeader({ alg: 'ES256', kid })
    .setIssuer(ISSUER)
    .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
    .sign(key);
}

function rs(claims: Record<string, unknown>, kid: string): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).setIssuer(ISSUER).setExpirationTime('5m').sign(rsa.privateKey);
}

function keysFile(keys: Record<string, string>): string {
  return (
    Object.entries(keys)
      .map(([p, k]) => `${p}: ${k}`)
      .join('\n') + '\n'
  );
}

describe('auth step', () => {
  const certs = makeCertificates();
  let jwks: Server;
  /** Serves the key set on a port the Fetch standard blocks (10080, 6665, ...), which fetch refused: `bad port`. */
  let blockedJwks: Server;
  let blockedJwksPort = 0;
  /** /failing.json answers 500 while `failing`; when it was asked. */
  let failing = true;
  const failingFetches: number[] = [];
  /** /stale.json answers the key set while `staleUp`, 500 after; how often it was asked. */
  let staleUp = true;
  let staleFetches = 0;
  /** /stale-forward.json: the same, for a forward target's auth. */
  let forwardUp = true;
  let forwardFetches = 0;
  /** /held-forward.json: the key set, answered once `heldRelease` resolves; `onHeldAsked` is told of each request. */
  let heldRelease: Promise<void> = Promise.resolve();
  let onHeldAsked = (): unknown => undefined;
  /** /slow.json: the key set at once the first time, then held unanswered until `releaseSlow()`; `slowHeld` while a held fetch is open (jose not yet given up on it). */
  let slowFetches = 0;
  let slowHeld = false;
  const slowWaiting: (() => void)[] = [];
  const releaseSlow = () => {
    for (const answer of slowWaiting.splice(0)) answer();
  };
  let jwksBase = '';
  /** What the JWKS server took as a webhook endpoint (any POST): the route jwt-jwks-held's deliveries. */
  const hooked: { url: string; body: string }[] = [];
  let out: WsClient;
  let yaml: string;
  let options: StartOptions;

  before(async () => {
    const rsaJwk = { ...(await exportJWK(rsa.publicKey)), kid: 'remote-1', alg: 'RS256' };
    const sharedJwks = [
      { ...(await exportJWK(third.publicKey)), kid: 'shared-1', alg: 'ES256' },
      { ...(await exportJWK(ec.publicKey)), kid: 'shared-1', alg: 'ES256' },
    ];
    jwks = createServer((req, res) => {
      if (req.method === 'POST') {
        let body = '';
        req.setEncoding('utf8').on('data', (d: string) => (body += d));
        return void req.on('end', () => {
          hooked.push({ url: req.url ?? '', body });
          res.end();
        });
      }
      if (req.url === '/stale-forward.json') {
        forwardFetches++;
        if (!forwardUp) {
          res.writeHead(500);
          return res.end('identity provider down');
        }
      }
      if (req.url === '/held-forward.json') {
        onHeldAsked();
        void heldRelease.then(() => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ keys: [rsaJwk] }));
        });
        return;
      }
      if (req.url === '/slow.json') {
        const answer = () => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ keys: [rsaJwk] }));
        };
        if (++slowFetches === 1) return answer();
        slowHeld = true;
        res.on('close', () => (slowHeld = false));
        slowWaiting.push(answer);
        return;
      }
      if (req.url === '/huge.json') {
        // Another document than a key set: 2 MiB, streamed without a length.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"keys": [');
        for (let i = 0; i < 32; i++) res.write(' '.repeat(64 * 1024));
        return res.end(']}');
      }
      if (req.url === '/huge-404.json') {
        // A wrong path on a site whose error page is large: 2 MiB of it.
        res.writeHead(404, { 'content-type': 'text/html' });
        for (let i = 0; i < 32; i++) res.write(' '.repeat(64 * 1024));
        return res.end('</html>');
      }
      if (req.url === '/empty-204.json') {
        res.writeHead(204);
        return res.end();
      }
      if (req.url === '/stale-forward-down.json') {
        res.writeHead(500);
        return res.end('identity provider down');
      }
      if (req.url === '/stale.json') {
        staleFetches++;
        if (!staleUp) {
          res.writeHead(500);
          return res.end('identity provider down');
        }
        // Two ES256 keys under one kid beside the RSA key: while the URL fails, a token either could name is tried with each held.
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(JSON.stringify({ keys: [rsaJwk, sharedJwks[0], sharedJwks[1]] }));
      }
      if (req.url === '/failing.json') {
        failingFetches.push(Date.now());
        if (failing) {
          res.writeHead(500);
          return res.end('identity provider down');
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [rsaJwk] }));
    }).listen(0, '127.0.0.1');
    await once(jwks, 'listening');
    const jwksPort = (jwks.address() as AddressInfo).port;
    blockedJwks = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [rsaJwk] }));
    });
    blockedJwksPort = await listenOnFirstFree(blockedJwks, FETCH_BLOCKED_PORTS);
    jwksBase = `http://127.0.0.1:${jwksPort}`;
    const ecJwk = { ...(await exportJWK(ec.publicKey)), kid: 'file-1', alg: 'ES256' };
    const thirdJwk = { ...(await exportJWK(third.publicKey)), kid: 'file-1', alg: 'ES256' };
    const carolDigest = createHash('sha256').update(CAROL_KEY).digest('hex');
    yaml = `version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
  push: {kind: websocket, port: 0}
  h2: {kind: http, port: 0, http2: true, requestTimeoutMs: 300, headersTimeoutMs: 300, tls: {cert: certs/server.pem, key: certs/server-key.pem}}
chains:
  who:
    - transform: '{"who": $principal, "tenant": $claims.tenant, "body": $, "key": $query.key}'
  keyed:
    - auth: {apiKey: {keysFile: keys.yaml}}
routes:
  - name: api-key-header
    from: {listener: api, path: /key}
    through:
      - auth:
          apiKey:
            header: X-Api-Key
            keys: {alice: "\${ALICE_KEY}", bob: [${BOB_KEY}, "sha256:${carolDigest}"]}
      - who
    to: {broker: local, topic: out}
  - name: api-key-chain
    from: {listener: api, path: /key-chain}
    through: [keyed, who]
    to: {broker: local, topic: out}
  - name: api-key-late
    from: {listener: api, path: /key-late}
    through: [{transform: '$'}, {auth: {apiKey: {keysFile: keys.yaml}}}]
    to: {broker: local, topic: out}
  - name: api-key-query-file
    from: {listener: api, path: /key-file}
    through:
      - auth: {apiKey: {query: key, keysFile: keys.yaml}}
      - who
    to: {broker: local, topic: out}
  - name: api-key-odd-query
    from: {listener: api, path: /key-odd}
    through:
      - auth: {apiKey: {query: 'clé "1"', keysFile: keys.yaml}}
    to: {broker: local, topic: out}
  - name: jwt-secret
    from: {listener: api, path: /hs}
    through:
      - auth:
          jwt: {secret: "\${JWT_SECRET}", issuer: "${ISSUER}", audience: eventgate, requiredClaims: {scope: publish, tenant: [acme, globex]}}
      - who
    to: {broker: local, topic: out}
  - name: jwt-pem
    from: {listener: api, path: /pem}
    through: [{auth: {jwt: {publicKey: keys/ec.pem, issuer: "${ISSUER}"}}}, who]
    to: {broker: local, topic: out}
  - name: jwt-jwks-file
    from: {listener: api, path: /jwks-file}
    through: [{auth: {jwt: {jwksFile: keys/jwks.json, issuer: "${ISSUER}"}}}, who]
    to: {broker: local, topic: out}
  - name: jwt-jwks-url
    from: {listener: api, path: /jwks-url}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/jwks.json", issuer: "${ISSUER}"}}}, who]
    to: {broker: local, topic: out}
  - name: jwt-jwks-blocked-port
    from: {listener: api, path: /jwks-blocked-port}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${blockedJwksPort}/jwks.json", issuer: "${ISSUER}"}}}, who]
    to: {broker: local, topic: out}
  - name: jwt-jwks-failing
    from: {listener: api, path: /jwks-failing}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/failing.json"}}}]
    to: {broker: local, topic: failing}
  - name: jwt-jwks-stale
    from: {listener: api, path: /jwks-stale}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/stale.json", jwksCacheMaxAgeMs: 1000}}}]
    to: {broker: local, topic: failing}
  - name: jwt-jwks-slow
    from: {listener: api, path: /jwks-slow}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/slow.json", jwksCacheMaxAgeMs: 1000}}}]
    to: {broker: local, topic: failing}
  - name: jwt-jwks-held
    from: {listener: api, path: /jwks-held}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/held-forward.json"}}}]
    to: {http: {url: "http://127.0.0.1:${jwksPort}/hook", retry: {attempts: 1}}}
  - name: jwt-jwks-held-h2
    from: {listener: h2, path: /jwks-held}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/held-forward.json"}}}]
    to: {broker: local, topic: held-h2}
  - name: jwt-jwks-stale-forward
    from: {broker: local, topic: out}
    to: {listener: push, path: /ws/stale-feed, auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/stale-forward.json", jwksCacheMaxAgeMs: 1000, query: access_token}}}
  - name: jwt-jwks-down
    from: {listener: api, path: /jwks-down}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:9/jwks.json"}}}]
    to: {broker: local, topic: out}
  - name: jwt-jwks-huge
    from: {listener: api, path: /jwks-huge}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/huge.json"}}}]
    to: {broker: local, topic: out}
  - name: jwt-jwks-huge-404
    from: {listener: api, path: /jwks-huge-404}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/huge-404.json"}}}]
    to: {broker: local, topic: out}
  - name: jwt-jwks-204
    from: {listener: api, path: /jwks-204}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:${jwksPort}/empty-204.json"}}}]
    to: {broker: local, topic: out}
  - name: ws-jwks-down
    from: {listener: push, path: /ws/jwks-down}
    through: [{auth: {jwt: {jwksUrl: "http://127.0.0.1:9/jwks.json", query: access_token}}}]
    to: {broker: local, topic: out}
  - name: sse-jwks-down
    from: {broker: local, topic: failing}
    to: {listener: api, path: /jwks-down/events, auth: {jwt: {jwksUrl: "http://127.0.0.1:9/jwks.json", query: access_token}}}
  - name: ws-publish
    from: {listener: push, path: /ws/in}
    through:
      - auth: {jwt: {secret: "\${JWT_SECRET}", query: access_token, audience: eventgate}}
      - who
    to: {broker: local, topic: out}
    ack: true
  - name: out
    from: {broker: local, topic: out}
    to: {listener: push, path: /ws/out, format: envelope}
  - name: guarded-feed
    from: {broker: local, topic: out}
    to:
      listener: push
      path: /ws/feed
      auth: {apiKey: {query: key, keysFile: keys.yaml}}
`;
    options = {
      env: { ALICE_KEY, JWT_SECRET },
      files: {
        'keys.yaml': keysFile({ dave: 'dave-key-00112233445566' }),
        'keys/ec.pem': ec.publicKey.export({ type: 'spki', format: 'pem' }) as string,
        'keys/jwks.json': JSON.stringify({ keys: [thirdJwk, ecJwk] }),
        'certs/server.pem': certs.a.cert,
        'certs/server-key.pem': certs.a.key,
      },
    };
  });
  after(() => {
    out?.close();
  });
  // Started once the JWKS server above is listening: the config names its port.
  const gw = useGateway(
    () => yaml,
    () => options,
  );
  before(async () => {
    out = await WsClient.connect(gw.url('push', '/ws/out', 'ws'));
  });
  after(() => {
    releaseSlow();
    jwks?.close();
    blockedJwks?.close();
  });

  describe('apiKey', () => {
    it('accepts a listed key from the header and binds its principal as $principal', async () => {
      const reply = await post(gw.url('api', '/key'), { n: 1 }, { 'x-api-key': ALICE_KEY });
      assert.equal(reply.status, 200, reply.text);
      const frame = await out.next();
      assert.deepEqual(frame.value, { who: 'alice', body: { n: 1 } });
    });

    it("accepts any of a principal's keys, including one given as its sha256 digest", async () => {
      assert.equal((await post(gw.url('api', '/key'), { n: 2 }, { 'x-api-key': BOB_KEY })).status, 200);
      assert.equal((await out.next()).value.who, 'bob');
      assert.equal((await post(gw.url('api', '/key'), { n: 3 }, { 'x-api-key': CAROL_KEY })).status, 200);
      assert.equal((await out.next()).value.who, 'bob');
    });

    it('does not send the key on with the message', async () => {
      await post(gw.url('api', '/key'), { n: 4 }, { 'x-api-key': ALICE_KEY, 'x-trace': 't1' });
      const frame = await out.next();
      assert.equal(frame.headers['x-trace'], 't1');
      assert.equal(frame.headers['x-api-key'], undefined);
    });

    it('answers 401 without a key and 401 for an unknown key, and lets nothing through', async () => {
      const missing = await post(gw.url('api', '/key'), { n: 5 });
      assert.equal(missing.status, 401);
      assert.equal(missing.headers.get('content-type'), 'application/problem+json');
      assert.equal(missing.body.code, 'EG_UNAUTHORIZED');
      // RFC 9110 §15.5.2: a 401 carries a challenge, here naming the header the key goes in.
      assert.equal(missing.headers.get('www-authenticate'), 'ApiKey header="x-api-key"');
      const wrong = await post(gw.url('api', '/key'), { n: 6 }, { 'x-api-key': `${ALICE_KEY}x` });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.headers.get('www-authenticate'), 'ApiKey header="x-api-key"');
      assert.doesNotMatch(wrong.text, new RegExp(ALICE_KEY));
      // An accepted sentinel is the next thing out: neither refused message got through.
      assert.equal((await post(gw.url('api', '/key'), { n: 7 }, { 'x-api-key': ALICE_KEY })).status, 200);
      assert.deepEqual((await out.next()).value.body, { n: 7 });
    });

    it("judges the key from the request's head when the chain begins with auth: a body without credentials is never read or judged", async () => {
      const port = gw.port('api');
      const head = (path: string, headers: string) => `POST ${path} HTTP/1.1\r\nHost: x\r\n${headers}\r\n`;
      // Bad JSON, a form, a declared size over maxBodyBytes: each the 401, directly and through a shared chain.
      for (const path of ['/key', '/key-chain']) {
        const badJson = await post(gw.url('api', path), '{"n": ');
        assert.equal(badJson.status, 401, `${path}: ${badJson.text}`);
        assert.equal(badJson.headers.get('www-authenticate'), 'ApiKey header="x-api-key"');
        const form = await post(gw.url('api', path), 'n=1', { 'content-type': 'application/x-www-form-urlencoded' });
        assert.equal(form.status, 401, `${path}: ${form.text}`);
        // Only the head is sent, and the client waits: the answer comes without the body (old: 413).
        const huge = await rawHttp(port, head(path, 'Content-Type: application/json\r\nContent-Length: 100000000\r\n'));
        assert.equal(huge?.status, 401, `${path}: ${huge?.body}`);
        assert.equal(huge.headers.connection, 'close');
        // A body within bounds, announced and never sent: answered all the same (old: waited for it).
        const unsent = await rawHttp(port, head(path, 'Content-Type: application/json\r\nContent-Length: 50\r\n'));
        assert.equal(unsent?.status, 401, `${path}: ${unsent?.body}`);
      }
      // A body that came whole with its head is dropped, and the connection goes on: the request behind it is served.
      const pipelined = parseReplies(
        await rawHttpText(
          port,
          head('/key-chain', 'Content-Type: application/json\r\nContent-Length: 6\r\n') +
            '{"n": ' +
            head('/key-chain', `X-Api-Key: dave-key-00112233445566\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n`) +
            '{"n": 10}',
        ),
      );
      assert.deepEqual(
        pipelined.map((r) => r.status),
        [401, 200],
      );
      assert.deepEqual((await out.next()).value, { who: 'dave', body: { n: 10 } });
      // With the key, every answer is as before: the body is judged, $principal bound once.
      const key = { 'x-api-key': 'dave-key-00112233445566' };
      assert.equal((await post(gw.url('api', '/key-chain'), '{"n": ', key)).status, 400);
      assert.equal((await post(gw.url('api', '/key-chain'), 'n=1', { ...key, 'content-type': 'application/x-www-form-urlencoded' })).status, 415);
      assert.equal((await rawHttp(port, head('/key-chain', 'X-Api-Key: dave-key-00112233445566\r\nContent-Length: 100000000\r\n')))?.status, 413);
      // A chain whose auth comes after another step judges the message in order: the body first.
      assert.equal((await post(gw.url('api', '/key-late'), '{"n": ')).status, 400);
      assert.equal((await post(gw.url('api', '/key-late'), { n: 11 })).status, 401);
      assert.equal((await post(gw.url('api', '/key-late'), { n: 12 }, key)).status, 200);
      assert.deepEqual((await out.next()).value, { n: 12 });
    });

    it('reads the key from a query parameter and a keys file, and drops it from $query', async () => {
      const ok = await post(gw.url('api', '/key-file?key=dave-key-00112233445566'), { n: 7 });
      assert.equal(ok.status, 200, ok.text);
      const frame = await out.next();
      assert.equal(frame.value.who, 'dave');
      assert.equal(frame.value.key, undefined);
      const refused = await post(gw.url('api', '/key-file?key=nope-nope-nope-nope'), { n: 8 });
      assert.equal(refused.status, 401);
      assert.equal(refused.headers.get('www-authenticate'), 'ApiKey query="key"');
      // A parameter name a header cannot carry as it is: quoted and percent-encoded, not a crash.
      const odd = await post(gw.url('api', '/key-odd'), { n: 8 });
      assert.equal(odd.status, 401);
      assert.equal(odd.headers.get('www-authenticate'), 'ApiKey query="cl%C3%A9 \\"1\\""');
    });
  });

  describe('jwt', () => {
    /** An accepted message is the next thing out: none of the refused ones got through. */
    async function acceptedSentinel(): Promise<void> {
      const token = await hs({ sub: 'sentinel', scope: 'publish', tenant: 'acme' });
      assert.equal((await post(gw.url('api', '/hs'), { n: 'sentinel' }, { authorization: `Bearer ${token}` })).status, 200);
      assert.deepEqual((await out.next()).value.body, { n: 'sentinel' });
    }

    it('accepts an HS256 token from Authorization: Bearer and binds $principal and $claims', async () => {
      const token = await hs({ sub: 'svc-1', scope: 'read publish', tenant: 'acme' });
      const reply = await post(gw.url('api', '/hs'), { n: 1 }, { authorization: `Bearer ${token}` });
      assert.equal(reply.status, 200, reply.text);
      assert.deepEqual((await out.next()).value, { who: 'svc-1', tenant: 'acme', body: { n: 1 } });
    });

    it('answers 401 for a missing, expired, wrongly signed, wrong-issuer or wrong-audience token, or one with a critical header it does not understand', async () => {
      const claims = { sub: 'svc-1', scope: 'publish', tenant: 'acme' };
      const cases: [string, Record<string, string>][] = [
        ['missing', {}],
        ['not bearer', { authorization: 'Basic dXNlcjpwYXNz' }],
        ['malformed', { authorization: 'Bearer not.a.jwt' }],
        ['expired', { authorization: `Bearer ${await hs(claims, { exp: Math.floor(Date.now() / 1000) - 60 })}` }],
        ['bad signature', { authorization: `Bearer ${await hs(claims, { key: new TextEncoder().encode('another-secret-that-is-32-bytes-long!!') })}` }],
        ['wrong issuer', { authorization: `Bearer ${await hs(claims, { iss: 'https://evil.test/' })}` }],
        ['wrong audience', { authorization: `Bearer ${await hs(claims, { aud: 'someone-else' })}` }],
        // A principal claim that names no one: RFC 7519's `sub` is a string. It passed with no $principal.
        ['sub an object', { authorization: `Bearer ${await hs({ ...claims, sub: { evil: 1 } })}` }],
        ['sub an array', { authorization: `Bearer ${await hs({ ...claims, sub: ['a', 'b'] })}` }],
        [
          'unsigned (alg none)',
          { authorization: `Bearer ${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ ...claims, iss: ISSUER, aud: 'eventgate' })).toString('base64url')}.` },
        ],
      ];
      for (const [name, headers] of cases) {
        const reply = await post(gw.url('api', '/hs'), { n: 2 }, headers);
        assert.equal(reply.status, 401, `${name}: ${reply.text}`);
        assert.match(reply.headers.get('www-authenticate') ?? '', /^Bearer realm="eventgate"/, name);
        if (name.startsWith('sub ')) assert.match(reply.body.detail, /the token's "sub" claim is not a string/, name);
      }
      // A critical header parameter the gateway does not understand (RFC 7515 §4.1.11): refused, and said so, not "an unsupported algorithm".
      const critical = await new SignJWT({ ...claims, iss: ISSUER, aud: 'eventgate' })
        .setProtectedHeader({ alg: 'HS256', crit: ['x-bound'], 'x-bound': 'device-7' })
        .sign(secretKey, { crit: { 'x-bound': true } });
      const crit = await post(gw.url('api', '/hs'), { n: 2 }, { authorization: `Bearer ${critical}` });
      assert.equal(crit.status, 401, crit.text);
      assert.equal(crit.body.detail, 'the token has a critical header parameter ("crit") the gateway does not understand');
      await acceptedSentinel();
    });

    it("checks a token's exp and nbf against the clock but not its iat: an issuer's clock running ahead does not refuse its tokens", async () => {
      const hourAhead = Math.floor(Date.now() / 1000) + 3600;
      const signed = (set: (t: SignJWT) => SignJWT) =>
        set(new SignJWT({ sub: 'svc-1', scope: 'publish', tenant: 'acme' }).setProtectedHeader({ alg: 'HS256' }).setIssuer(ISSUER).setAudience('eventgate')).sign(secretKey);
      const issuedAhead = await signed((t) => t.setIssuedAt(hourAhead).setExpirationTime(hourAhead + 300));
      const accepted = await post(gw.url('api', '/hs'), { n: 'ahead' }, { authorization: `Bearer ${issuedAhead}` });
      assert.equal(accepted.status, 200, accepted.text);
      assert.deepEqual((await out.next()).value.body, { n: 'ahead' });
      const notYetValid = await signed((t) => t.setNotBefore(hourAhead).setExpirationTime(hourAhead + 300));
      const refused = await post(gw.url('api', '/hs'), { n: 'early' }, { authorization: `Bearer ${notYetValid}` });
      assert.equal(refused.status, 401, refused.text);
      assert.match(refused.body.detail, /^the token is not valid yet: its "nbf" claim is 3[56]\d\d s ahead of the gateway's clock$/);
      assert.match(refused.headers.get('www-authenticate') ?? '', /error_description="the token is not valid yet: its 'nbf' claim is 3[56]\d\d s ahead/);
    });

    it('answers 403 for a valid token that fails a required claim', async () => {
      const noScope = await post(gw.url('api', '/hs'), {}, { authorization: `Bearer ${await hs({ sub: 's', scope: 'read', tenant: 'acme' })}` });
      assert.equal(noScope.status, 403, noScope.text);
      assert.equal(noScope.body.code, 'EG_FORBIDDEN');
      assert.match(noScope.headers.get('www-authenticate') ?? '', /insufficient_scope/);
      const otherTenant = await post(gw.url('api', '/hs'), {}, { authorization: `Bearer ${await hs({ sub: 's', scope: 'publish', tenant: 'initech' })}` });
      assert.equal(otherTenant.status, 403);
      const noTenant = await post(gw.url('api', '/hs'), {}, { authorization: `Bearer ${await hs({ sub: 's', scope: 'publish' })}` });
      assert.equal(noTenant.status, 403);
      // Judged from the head: a body that is no JSON is not looked at (old: 400); with the claim, it is.
      const noScopeBadJson = await post(gw.url('api', '/hs'), '{"n": ', { authorization: `Bearer ${await hs({ sub: 's', scope: 'read', tenant: 'acme' })}` });
      assert.equal(noScopeBadJson.status, 403, noScopeBadJson.text);
      const badJson = await post(gw.url('api', '/hs'), '{"n": ', { authorization: `Bearer ${await hs({ sub: 's', scope: 'publish', tenant: 'acme' })}` });
      assert.equal(badJson.status, 400, badJson.text);
      await acceptedSentinel();
    });

    it('verifies with a PEM public key file, refusing tokens signed by another key', async () => {
      assert.equal((await post(gw.url('api', '/pem'), { n: 3 }, { authorization: `Bearer ${await es({ sub: 'pem-user' })}` })).status, 200);
      assert.equal((await out.next()).value.who, 'pem-user');
      assert.equal((await post(gw.url('api', '/pem'), {}, { authorization: `Bearer ${await es({ sub: 'x' }, other.privateKey)}` })).status, 401);
      // An HMAC token "signed" with the public key's PEM text must not pass (algorithm confusion).
      const pem = new TextEncoder().encode(ec.publicKey.export({ type: 'spki', format: 'pem' }) as string);
      assert.equal((await post(gw.url('api', '/pem'), {}, { authorization: `Bearer ${await hs({ sub: 'x' }, { key: pem })}` })).status, 401);
    });

    it('verifies with a JWKS file and with a JWKS URL', async () => {
      assert.equal((await post(gw.url('api', '/jwks-file'), {}, { authorization: `Bearer ${await es({ sub: 'file-user' }, ec.privateKey, 'file-1')}` })).status, 200);
      assert.equal((await out.next()).value.who, 'file-user');
      assert.equal((await post(gw.url('api', '/jwks-file'), {}, { authorization: `Bearer ${await es({ sub: 'x' }, other.privateKey, 'file-1')}` })).status, 401);
      const remote = await post(gw.url('api', '/jwks-url'), {}, { authorization: `Bearer ${await rs({ sub: 'url-user' }, 'remote-1')}` });
      assert.equal(remote.status, 200, remote.text);
      assert.equal((await out.next()).value.who, 'url-user');
      assert.equal((await post(gw.url('api', '/jwks-url'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'unknown-kid')}` })).status, 401);
    });

    it('fetches a JWKS served on a port the Fetch standard blocks for browsers (10080, 6665-6669, 6000, ...)', async () => {
      // Before: every token 503, `jwksUrl could not be fetched: it cannot be reached: bad port` (node's
      // fetch refuses those ports), from an identity provider that answered curl there.
      const res = await post(gw.url('api', '/jwks-blocked-port'), {}, { authorization: `Bearer ${await rs({ sub: 'blocked-port-user' }, 'remote-1')}` });
      assert.equal(res.status, 200, res.text);
      assert.equal((await out.next()).value.who, 'blocked-port-user');
      assert.equal((await post(gw.url('api', '/jwks-blocked-port'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'unknown-kid')}` })).status, 401);
    });

    it('tries each key of a JWKS that the token could name: a kid two keys share, or no kid at all', async () => {
      // Both keys in keys/jwks.json are 'file-1': jose names no one key, and the gateway tries each (as Envoy's jwt_authn does).
      for (const [key, kid, who] of [
        [ec.privateKey, 'file-1', 'second-key'],
        [third.privateKey, 'file-1', 'first-key'],
        [ec.privateKey, undefined, 'no-kid'],
      ] as const) {
        const res = await post(gw.url('api', '/jwks-file'), {}, { authorization: `Bearer ${await es({ sub: who }, key, kid)}` });
        assert.equal(res.status, 200, `${who}: ${res.text}`);
        assert.equal((await out.next()).value.who, who);
      }
      const forged = await post(gw.url('api', '/jwks-file'), {}, { authorization: `Bearer ${await es({ sub: 'x' }, other.privateKey)}` });
      assert.equal(forged.status, 401);
      assert.match(forged.text, /the token signature does not verify/);
      // A key matched whose claims fail: that is the verdict, not the other key's signature.
      const expired = await post(gw.url('api', '/jwks-file'), {}, { authorization: `Bearer ${await esExpired(ec.privateKey, 'file-1')}` });
      assert.equal(expired.status, 401);
      assert.match(expired.text, /the token has expired/);
    });

    /** A token posted to `path` is 503 (never judged), the client told only that it may retry; the route's warn line says why (`where`), returned. */
    const unjudged = async (path: string, route: string): Promise<string> => {
      const from = gw.logs.length;
      const reply = await post(gw.url('api', path), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'remote-1')}` });
      assert.equal(reply.status, 503, reply.text);
      assert.equal(reply.body.code, 'EG_AUTH_UNAVAILABLE');
      assert.doesNotMatch(reply.text, /ECONNREFUSED|127\.0\.0\.1|KiB/);
      return String((await gw.waitForLog((l) => l.route === route && l.level === 'warn', 10_000, from)).where);
    };

    it('answers 503 when the JWKS URL cannot be reached, since the token was never judged', async () => {
      const from = gw.logs.length;
      // The operator learns why, at warn level; the client only that it may retry.
      assert.match(await unjudged('/jwks-down', 'jwt-jwks-down'), /^jwksUrl could not be fetched: it cannot be reached: /);
      // A WebSocket handshake and an event stream refused for it are logged as well.
      const token = await rs({ sub: 'x' }, 'remote-1');
      await assert.rejects(WsClient.connect(gw.url('push', `/ws/jwks-down?access_token=${token}`, 'ws')), (err: { statusCode?: number }) => err.statusCode === 503);
      const ws = await gw.waitForLog((l) => l.msg === 'handshake refused', 10_000, from);
      assert.equal(ws.path, '/ws/jwks-down');
      assert.match(String(ws.where), /^jwksUrl could not be fetched: it cannot be reached: /);
      const stream = await fetch(gw.url('api', `/jwks-down/events?access_token=${token}`), { headers: { accept: 'text/event-stream' } });
      assert.equal(stream.status, 503, await stream.text());
      const sse = await gw.waitForLog((l) => l.msg === 'event stream refused', 10_000, from);
      assert.match(String(sse.where), /^jwksUrl could not be fetched: it cannot be reached: /);
    });

    it('reads no more than 1 MiB of a JWKS URL that answers with more (another document): 503, saying so', async () => {
      // It was read whole, as fast as it came, for the fetch's 5 s, and then called "did not answer".
      assert.equal(
        await unjudged('/jwks-huge', 'jwt-jwks-huge'),
        "jwksUrl could not be fetched: it answered with more than 1024 KiB, more than any key set holds (is jwksUrl the key set's own URL?); the rest was not read",
      );
    });

    it('names the status of a JWKS URL that does not answer 200, without reading its body: a large error page, a 204', async () => {
      // A 404's large page was said to be "more than 1024 KiB" (read first), and a 204 failed building its answer again.
      assert.equal(await unjudged('/jwks-huge-404', 'jwt-jwks-huge-404'), 'jwksUrl could not be fetched: it answered 404');
      assert.equal(await unjudged('/jwks-204', 'jwt-jwks-204'), 'jwksUrl could not be fetched: it answered 204');
    });

    it('does not ask a failing JWKS URL again for every token: fetches after a failure are 2 s apart, then it recovers', async () => {
      // Any client can make a token naming a key id nobody has; it need not be signed by anyone.
      for (let i = 0; i < 10; i++) {
        const reply = await post(gw.url('api', '/jwks-failing'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, `made-up-${i}`)}` });
        assert.equal(reply.status, 503, reply.text);
      }
      const gaps = failingFetches.slice(1).map((t, i) => t - failingFetches[i]!);
      assert.ok(failingFetches.length >= 1 && gaps.every((g) => g >= 1900), `10 tokens fetched the failing key set ${failingFetches.length} times, gaps ${gaps.join(', ')} ms`);
      assert.match(String(gw.logs.find((l) => l.route === 'jwt-jwks-failing' && l.level === 'warn')?.where), /it answered 500$/);
      failing = false;
      let reply = await post(gw.url('api', '/jwks-failing'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'remote-1')}` });
      for (let i = 0; i < 60 && reply.status === 503; i++) {
        await delay(100);
        reply = await post(gw.url('api', '/jwks-failing'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'remote-1')}` });
      }
      assert.equal(reply.status, 200, reply.text);
    });

    it('verifies with the keys it had while the JWKS URL fails once they are jwksCacheMaxAgeMs old (each of those a token could name), warning for each failed fetch; an unknown key id stays 503', async () => {
      const token = await rs({ sub: 'x' }, 'remote-1');
      const send = (t = token) => post(gw.url('api', '/jwks-stale'), {}, { authorization: `Bearer ${t}` });
      const first = await send();
      assert.equal(first.status, 200, first.text);
      assert.equal(staleFetches, 1);
      staleUp = false;
      const from = gw.logs.length;
      // Once the keys are 1 s old a token asks for them again; that fails, and it is judged with the keys held (as are those
      // right after it, which do not ask again for 2 s).
      const statuses: number[] = [];
      while (staleFetches < 2) {
        statuses.push((await send()).status);
        await delay(100);
      }
      for (let i = 0; i < 3; i++) statuses.push((await send()).status);
      assert.deepEqual(new Set(statuses), new Set([200]), `statuses while the JWKS URL answered 500: ${statuses.join(', ')}`);
      const warning = await gw.waitForLog((l) => l.route === 'jwt-jwks-stale' && l.level === 'warn', 10_000, from);
      assert.equal(warning.msg, 'signing keys could not be fetched; tokens are verified with the keys fetched before');
      assert.equal(warning.where, 'jwksUrl could not be fetched: it answered 500');
      assert.equal(warning.keys, 3);
      // A key id it never had may be one the identity provider published since: not judged, 503.
      const unknown = await send(await rs({ sub: 'x' }, 'rotated-2'));
      assert.equal(unknown.status, 503, unknown.text);
      assert.equal(unknown.body.code, 'EG_AUTH_UNAVAILABLE');
      // Held keys a token could name (a kid two share, no kid): each is tried; the one that verifies judges the token
      // (its claims too), and a token none verifies may be signed by a key published since: 503 as well.
      for (const [key, kid] of [
        [ec.privateKey, 'shared-1'],
        [third.privateKey, 'shared-1'],
        [ec.privateKey, undefined],
      ] as const) {
        const res = await send(await es({ sub: 'held' }, key, kid));
        assert.equal(res.status, 200, `${kid}: ${res.text}`);
      }
      const forged = await send(await es({ sub: 'x' }, other.privateKey, 'shared-1'));
      assert.equal(forged.status, 503, forged.text);
      assert.equal(forged.body.code, 'EG_AUTH_UNAVAILABLE');
      const expired = await send(await esExpired(third.privateKey, 'shared-1'));
      assert.equal(expired.status, 401, expired.text);
      assert.match(expired.text, /the token has expired/);
      // A reload that rebuilds the route (another topic) with the same auth step keeps the keys it had.
      const edited = yaml.replace('jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: failing}', 'jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: stale}');
      assert.notEqual(edited, yaml);
      assert.equal((await gw.reconfigure(edited)).msg, 'config reloaded');
      const after = await send();
      assert.equal(after.status, 200, after.text);
      staleUp = true;
    });

    it('does not hold a token its held keys verify while the JWKS URL is slow to answer the fetch their age asks for', async () => {
      const token = await rs({ sub: 'x' }, 'remote-1');
      const send = () => post(gw.url('api', '/jwks-slow'), {}, { authorization: `Bearer ${token}` });
      assert.equal((await send()).status, 200);
      assert.equal(slowFetches, 1);
      // Once the keys are 1 s old a token asks for them again, and the URL holds that fetch (up to the 5 s jose waits).
      const statuses: number[] = [];
      while (slowFetches < 2) {
        statuses.push((await send()).status);
        await delay(100);
      }
      const during = await send();
      statuses.push(during.status);
      assert.deepEqual(new Set(statuses), new Set([200]), statuses.join(', '));
      assert.ok(slowHeld, 'answered while the fetch was still open, not after jose gave up on it');
      // A key id the held set lacks may be in the set being fetched: that token waits for it, and the answer judges it.
      const other = post(gw.url('api', '/jwks-slow'), {}, { authorization: `Bearer ${await rs({ sub: 'x' }, 'rotated-3')}` });
      releaseSlow();
      assert.equal((await other).status, 401);
    });

    it('a request whose key set is fetched: its client gone leaves none in flight; a reload that replaced its route meanwhile hands it to the new route', async () => {
      let release!: () => void;
      heldRelease = new Promise<void>((r) => (release = r));
      const asked = new Promise<void>((r) => (onHeldAsked = r));
      const apiInFlight = async () => ((await gw.status()).listeners as { name: string; inFlight: number }[]).find((l) => l.name === 'api')!.inFlight;
      const token = await rs({ sub: 'x' }, 'remote-1');
      const head = (length: number) => `POST /jwks-held HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
      const staying = post(gw.url('api', '/jwks-held'), { n: 1 }, { authorization: `Bearer ${token}` });
      await asked;
      // A client whose head waits on the same fetch, and which leaves before it sends its body.
      const leaving = connect(gw.port('api'), '127.0.0.1');
      leaving.on('error', () => undefined);
      leaving.write(`${head(50)}{"n": `);
      await eventually(async () => assert.equal(await apiInFlight(), 2));
      leaving.destroy();
      await once(leaving, 'close');
      // The route rebuilt (its webhook's URL) while the verdict is awaited.
      assert.equal((await gw.reconfigure(yaml.replace(`${jwksBase}/hook"`, `${jwksBase}/hook?reloaded"`))).msg, 'config reloaded');
      release();
      // Old: the route the reload had replaced took it, to the old URL; the client that left stayed in flight for good.
      const answer = await staying;
      assert.equal(answer.status, 200, answer.text);
      assert.deepEqual(hooked, [{ url: '/hook?reloaded', body: '{"n":1}' }]);
      await eventually(async () => assert.equal(await apiInFlight(), 0));
      heldRelease = Promise.resolve();
      onHeldAsked = () => undefined;
    });

    it('an HTTP/2 request whose body is still arriving when requestTimeoutMs passes during its key-set fetch is answered 408 once admitted', async () => {
      let release!: () => void;
      heldRelease = new Promise<void>((r) => (release = r));
      const asked = new Promise<void>((r) => (onHeldAsked = r));
      const session = connectH2(`https://127.0.0.1:${gw.port('h2')}`, { ca: certs.a.cert });
      session.on('error', () => undefined);
      try {
        const stream = session.request({ ':method': 'POST', ':path': '/jwks-held', authorization: `Bearer ${await rs({ sub: 'x' }, 'remote-1')}`, 'content-type': 'application/json' });
        stream.write('{"n": ');
        await asked;
        // Past the listener's requestTimeoutMs (300 ms) with the body unfinished and the verdict awaited.
        await delay(900);
        release();
        stream.end('1}');
        const [head] = (await once(stream, 'response')) as [Record<string, unknown>];
        let text = '';
        stream.setEncoding('utf8').on('data', (c: string) => (text += c));
        await once(stream, 'close');
        // Old: no time bound once the verdict came; the body was taken (200), as late as the client liked.
        assert.equal(head[':status'], 408, text);
        assert.equal(JSON.parse(text).code, 'EG_REQUEST_TIMEOUT');
        // A request sent whole gets its 200 on the same connection, the keys in hand now.
        const whole = session.request({ ':method': 'POST', ':path': '/jwks-held', authorization: `Bearer ${await rs({ sub: 'y' }, 'remote-1')}`, 'content-type': 'application/json' });
        whole.end('{"n": 2}');
        const [wholeHead] = (await once(whole, 'response')) as [Record<string, unknown>];
        whole.resume();
        assert.equal(wholeHead[':status'], 200);
      } finally {
        session.close();
        heldRelease = Promise.resolve();
        onHeldAsked = () => undefined;
      }
    });

    it("a forward target's auth, too: keeps the keys it had while the JWKS URL fails, warns as its route, and keeps them through a reload that rebuilds the route", async () => {
      const token = await rs({ sub: 'x' }, 'remote-1');
      const connect = async () => (await WsClient.connect(gw.url('push', `/ws/stale-feed?access_token=${token}`, 'ws'))).close();
      await connect();
      assert.equal(forwardFetches, 1);
      forwardUp = false;
      const from = gw.logs.length;
      // Once the keys are 1 s old a handshake asks for them again; that fails, and it is judged with the keys held.
      while (forwardFetches < 2) {
        await connect();
        await delay(100);
      }
      await connect();
      const warning = await gw.waitForLog((l) => l.route === 'jwt-jwks-stale-forward' && l.level === 'warn', 10_000, from);
      assert.equal(warning.msg, 'signing keys could not be fetched; tokens are verified with the keys fetched before');
      assert.equal(warning.where, 'jwksUrl could not be fetched: it answered 500');
      // A reload that rebuilds the route (another source topic) with the same auth keeps the keys it had.
      const edited = yaml
        .replace('jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: failing}', 'jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: stale}')
        .replace('topic: out}\n    to: {listener: push, path: /ws/stale-feed', 'topic: failing}\n    to: {listener: push, path: /ws/stale-feed');
      assert.notEqual(edited, yaml);
      assert.equal((await gw.reconfigure(edited)).msg, 'config reloaded');
      await connect();
      forwardUp = true;
    });

    it("a forward target's auth changed by a reload: new handshakes and connected subscribers are judged by the new auth, the old one's keys do not carry over", async () => {
      const current = yaml
        .replace('jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: failing}', 'jwksCacheMaxAgeMs: 1000}}}]\n    to: {broker: local, topic: stale}')
        .replace('topic: out}\n    to: {listener: push, path: /ws/stale-feed', 'topic: failing}\n    to: {listener: push, path: /ws/stale-feed');
      const rsToken = await rs({ sub: 'x' }, 'remote-1');
      const handshake = (token: string) => WsClient.connect(gw.url('push', `/ws/stale-feed?access_token=${token}`, 'ws'));
      const refusedWith = (status: number) => (err: { statusCode?: number }) => err.statusCode === status;
      const subscriber = await handshake(rsToken);
      // Another key set URL, which fails: the keys the old URL gave are not the new auth's.
      const otherUrl = current.replace('/stale-forward.json", jwksCacheMaxAgeMs: 1000', '/stale-forward-down.json", jwksCacheMaxAgeMs: 1000');
      assert.notEqual(otherUrl, current);
      assert.equal((await gw.reconfigure(otherUrl)).msg, 'config reloaded');
      await assert.rejects(handshake(rsToken), refusedWith(503));
      // A key set URL that answers only when told: a handshake waits on it while a reload puts a
      // shared secret in its place. The handshake is judged again by the secret, which an RS256
      // token proves nothing to, and the subscriber that connected with one is disconnected.
      // An event stream's forward auth is the same: /jwks-down/events waits on it too.
      let release!: () => void;
      heldRelease = new Promise<void>((r) => (release = r));
      let askedTimes = 0;
      const asked = new Promise<void>((r) => (onHeldAsked = () => ++askedTimes === 2 && r()));
      const streamAuth = /(path: \/jwks-down\/events, )auth: \{jwt: \{jwksUrl: "[^"]*", query: access_token\}\}/;
      const held = otherUrl.replace('/stale-forward-down.json', '/held-forward.json').replace(streamAuth, `$1auth: {jwt: {jwksUrl: "${jwksBase}/held-forward.json", query: access_token}}`);
      assert.equal((await gw.reconfigure(held)).msg, 'config reloaded');
      const waiting = handshake(rsToken);
      const streamWaiting = globalThis.fetch(gw.url('api', `/jwks-down/events?access_token=${rsToken}`), { headers: { accept: 'text/event-stream' } });
      await asked;
      const secret = 'auth: {jwt: {secret: "${JWT_SECRET}", query: access_token}}';
      const bySecret = current.replace(/auth: \{jwt: \{jwksUrl: "[^"]*stale-forward\.json", jwksCacheMaxAgeMs: 1000, query: access_token\}\}/, secret).replace(streamAuth, `$1${secret}`);
      assert.equal(bySecret.split(secret).length, 3);
      assert.equal((await gw.reconfigure(bySecret)).msg, 'config reloaded');
      release();
      await assert.rejects(waiting, refusedWith(401));
      const stream = await streamWaiting;
      await stream.body?.cancel();
      assert.equal(stream.status, 401);
      assert.equal((await subscriber.waitClose()).code, 1008);
      await assert.rejects(handshake(rsToken), refusedWith(401));
      (await handshake(await hs({ sub: 'y' }))).close();
    });
  });

  describe('over WebSocket', () => {
    it('refuses a publish handshake without a token, or with a bad one, with 401 before the upgrade', async () => {
      await assert.rejects(WsClient.connect(gw.url('push', '/ws/in', 'ws')), (err: { statusCode?: number }) => err.statusCode === 401);
      await assert.rejects(WsClient.connect(gw.url('push', '/ws/in?access_token=garbage', 'ws')), (err: { statusCode?: number }) => err.statusCode === 401);
      const wrongAudience = await hs({ sub: 'x' }, { aud: 'other' });
      await assert.rejects(WsClient.connect(gw.url('push', `/ws/in?access_token=${wrongAudience}`, 'ws')), (err: { statusCode?: number }) => err.statusCode === 401);
    });

    it('accepts a publish handshake with a token in the query or the Authorization header, with $principal on every frame', async () => {
      const viaQuery = await WsClient.connect(gw.url('push', `/ws/in?access_token=${await hs({ sub: 'browser' })}`, 'ws'));
      viaQuery.send({ n: 1 });
      assert.equal((await viaQuery.next()).type, 'ack');
      assert.equal((await out.next()).value.who, 'browser');
      viaQuery.send({ n: 2 });
      assert.equal((await viaQuery.next()).type, 'ack');
      assert.equal((await out.next()).value.who, 'browser');
      viaQuery.close();
      const viaHeader = await WsClient.connect(gw.url('push', '/ws/in', 'ws'), { headers: { authorization: `Bearer ${await hs({ sub: 'native' })}` } });
      viaHeader.send({ n: 3 });
      assert.equal((await viaHeader.next()).type, 'ack');
      assert.equal((await out.next()).value.who, 'native');
      viaHeader.close();
      // A page on a site behind basic auth: the browser adds its Basic credentials by itself; the query's token is the one judged.
      const behindBasic = await WsClient.connect(gw.url('push', `/ws/in?access_token=${await hs({ sub: 'basic-site' })}`, 'ws'), {
        headers: { authorization: `Basic ${Buffer.from('staff:door').toString('base64')}` },
      });
      behindBasic.send({ n: 4 });
      assert.equal((await behindBasic.next()).type, 'ack');
      assert.equal((await out.next()).value.who, 'basic-site');
      behindBasic.close();
      // A malformed Bearer header is still refused, a query token beside it or not.
      await assert.rejects(
        WsClient.connect(gw.url('push', `/ws/in?access_token=${await hs({ sub: 'x' })}`, 'ws'), { headers: { authorization: 'Bearer two words' } }),
        (err: { statusCode?: number }) => err.statusCode === 401,
      );
    });

    it("guards a forward path: subscribers need the target's auth at the handshake", async () => {
      // Each 401 with its challenge, naming the query parameter the key goes in.
      const challenged = (err: { statusCode?: number; headers?: Record<string, unknown> }) => err.statusCode === 401 && err.headers?.['www-authenticate'] === 'ApiKey query="key"';
      await assert.rejects(WsClient.connect(gw.url('push', '/ws/feed', 'ws')), challenged);
      await assert.rejects(WsClient.connect(gw.url('push', '/ws/feed?key=wrong-wrong-wrong-wrong', 'ws')), challenged);
      const feed = await WsClient.connect(gw.url('push', '/ws/feed?key=dave-key-00112233445566', 'ws'));
      await post(gw.url('api', '/key'), { n: 9 }, { 'x-api-key': ALICE_KEY });
      assert.deepEqual((await feed.next()).body, { n: 9 });
      await out.next();
      feed.close();
    });

    it('keeps subscribers connected through a reload that leaves their path alone', async () => {
      const feed = await WsClient.connect(gw.url('push', '/ws/feed?key=dave-key-00112233445566', 'ws'));
      assert.equal((await gw.reconfigure(`${yaml}# an unrelated edit\n`)).msg, 'config reloaded');
      await post(gw.url('api', '/key'), { n: 10 }, { 'x-api-key': ALICE_KEY });
      assert.deepEqual((await feed.next()).body, { n: 10 });
      await out.next();
      assert.equal(feed.closed, undefined);
      feed.close();
    });

    it('applies an edited keys file on reload: the old key is refused and its subscribers are disconnected', async () => {
      const feed = await WsClient.connect(gw.url('push', '/ws/feed?key=dave-key-00112233445566', 'ws'));
      const from = gw.logs.length;
      gw.write('keys.yaml', keysFile({ erin: 'erin-key-99887766554433' }));
      await gw.waitForLog((l) => l.msg === 'config reloaded', 10000, from);
      assert.equal((await feed.waitClose()).code, 1008);
      assert.equal((await post(gw.url('api', '/key-file?key=dave-key-00112233445566'), {})).status, 401);
      assert.equal((await post(gw.url('api', '/key-file?key=erin-key-99887766554433'), {})).status, 200);
      assert.equal((await out.next()).value.who, 'erin');
      const erin = await WsClient.connect(gw.url('push', '/ws/feed?key=erin-key-99887766554433', 'ws'));
      erin.close();
    });
  });
});

describe('auth config errors', () => {
  it('are reported with their position by eventgate validate', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers: {local: {kind: memory}}
listeners: {api: {kind: http, port: 0}}
routes:
  - name: short-key
    from: {listener: api, path: /a}
    through: [{auth: {apiKey: {keys: {alice: short}}}}]
    to: {broker: local, topic: t}
  - name: fine
    from: {listener: api, path: /b}
    through: [{filter: "true"}]
    to: {broker: local, topic: t}
  - name: private-key
    from: {listener: api, path: /c}
    through: [{auth: {jwt: {publicKey: private.pem}}}]
    to: {broker: local, topic: t}
  - name: on-a-broker
    from: {broker: local, topic: t}
    through: [{auth: {apiKey: {keys: {alice: long-enough-key-123456}}}}]
    to: {broker: local, topic: u}
  - name: plain-jwks-url
    from: {listener: api, path: /d}
    through: [{auth: {jwt: {jwksUrl: "http://keys.example.com/jwks.json"}}}]
    to: {broker: local, topic: t}
`,
      'private.pem': generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`, '--format', 'json']);
    assert.equal(r.code, 1);
    const found = (JSON.parse(r.stdout) as { line: number; path: string; message: string }[]).map((d) => `${d.line} ${d.path}: ${d.message}`);
    assert.ok(
      found.some((d) => d.startsWith('7 routes[0].through[0].auth.apiKey.keys') && d.includes('shorter than 16')),
      found.join('\n'),
    );
    assert.ok(
      found.some((d) => d.startsWith('15 routes[2].through[0].auth.jwt.publicKey') && d.includes('private key')),
      found.join('\n'),
    );
    assert.ok(
      found.some((d) => d.startsWith('19 routes[3].through') && d.includes('consumes from a broker')),
      found.join('\n'),
    );
    assert.ok(
      found.some((d) => d.startsWith('23 routes[4].through[0].auth.jwt.jwksUrl') && d.includes('https')),
      found.join('\n'),
    );
  });

  it('point at key material that cannot be used: a keys file that is no YAML and a key set file that is no JSON (in that file), a key that is no string, an RSA algorithm for a secret, a public key or key set that holds none, algorithms no key verifies', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers: {local: {kind: memory}}
listeners: {api: {kind: http, port: 0}}
routes:
  - name: broken-keys-file
    from: {listener: api, path: /a}
    through: [{auth: {apiKey: {keysFile: keys.yaml}}}]
    to: {broker: local, topic: t}
  - name: numeric-key
    from: {listener: api, path: /b}
    through: [{auth: {apiKey: {keysFile: numbers.yaml}}}]
    to: {broker: local, topic: t}
  - name: secret-rsa
    from: {listener: api, path: /c}
    through: [{auth: {jwt: {secret: a-secret-long-enough-0123456789abcdef, algorithms: [HS256, RS256]}}}]
    to: {broker: local, topic: t}
  - name: not-pem
    from: {listener: api, path: /d}
    through: [{auth: {jwt: {publicKey: key.pem}}}]
    to: {broker: local, topic: t}
  - name: no-usable-key
    from: {listener: api, path: /e}
    through: [{auth: {jwt: {jwksFile: jwks.json}}}]
    to: {broker: local, topic: t}
  - name: hmac-with-a-public-key
    from: {listener: api, path: /f}
    through: [{auth: {jwt: {publicKey: rsa.pem, algorithms: [HS256, RS256]}}}]
    to: {broker: local, topic: t}
  - name: hmac-from-a-url
    from: {listener: api, path: /g}
    through: [{auth: {jwt: {jwksUrl: "https://idp.test/jwks.json", algorithms: [RS256, HS256]}}}]
    to: {broker: local, topic: t}
  - name: no-such-algorithm
    from: {listener: api, path: /h}
    through: [{auth: {jwt: {jwksUrl: "https://idp.test/jwks.json", algorithms: [RS265, none]}}}]
    to: {broker: local, topic: t}
  - name: cache-age-without-a-url
    from: {listener: api, path: /i}
    through: [{auth: {jwt: {secret: a-secret-long-enough-0123456789abcdef, jwksCacheMaxAgeMs: 60000}}}]
    to: {broker: local, topic: t}
  - name: encryption-keys-only
    from: {listener: api, path: /j}
    through: [{auth: {jwt: {jwksFile: jwks-enc.json}}}]
    to: {broker: local, topic: t}
  - name: credentials-in-the-url
    from: {listener: api, path: /k}
    through: [{auth: {jwt: {jwksUrl: "https://idp:s3cret-pass@idp.test/jwks.json"}}}]
    to: {broker: local, topic: t}
  - name: key-set-cut-short
    from: {listener: api, path: /l}
    through: [{auth: {jwt: {jwksFile: jwks-cut.json}}}]
    to: {broker: local, topic: t}
  - name: key-set-cut-short-named-otherwise
    from: {listener: api, path: /m}
    through: [{auth: {jwt: {jwksFile: keys.jwks}}}]
    to: {broker: local, topic: t}
`,
      'rsa.pem': rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string,
      'keys.yaml': 'alice: [unclosed\n',
      'numbers.yaml': 'alice: 1234567890123456789\n',
      'key.pem': '-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n',
      'jwks.json': '{"keys": [{"kty": "PGP", "kid": "k1"}]}\n',
      // Written half (an editor's save, or a reload that read the file while it was being written).
      'jwks-cut.json': '{"keys": [\n  {"kty": "EC", "crv": "P-256",\n',
      'keys.jwks': '{"keys": [\n  {"kty": "EC", "crv": "P-256",\n',
      // Keys of a known type that jose never picks to verify a token (an identity provider's encryption keys).
      'jwks-enc.json': `${JSON.stringify({
        keys: [
          { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'e1', use: 'enc' },
          { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'e2', key_ops: ['encrypt'] },
        ],
      })}\n`,
    });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`, '--format', 'json']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.includes('    at '), false, 'no stack trace');
    const found = (JSON.parse(r.stdout) as { file: string; line: number; column: number; message: string }[]).map((d) => `${d.file.slice(dir.length + 1)}:${d.line}:${d.column}: ${d.message}`);
    assert.deepEqual(found.sort(), [
      "gateway.yaml:11:42: keys file 'numbers.yaml': the key of 'alice' must be a string",
      'gateway.yaml:15:88: a secret verifies only HMAC algorithms (HS256, HS384, HS512), not RS256',
      "gateway.yaml:19:40: 'key.pem' is not a PEM public key or certificate: error:0680009B:asn1 encoding routines::too long",
      "gateway.yaml:23:39: 'jwks.json' holds no key to verify tokens with (a key whose kty is RSA, EC, OKP, oct)",
      // Each of these would have refused every token, with nothing said; HS256 with a public key is the algorithm confusion attack's setting.
      "gateway.yaml:27:61: the rsa key in 'rsa.pem' verifies RS256, RS384, RS512, PS256, PS384, PS512, not HS256",
      'gateway.yaml:31:80: a key set served at a URL is public: with HS256, a shared secret published in it would let anyone make tokens; list asymmetric algorithms, or use secret or jwksFile',
      "gateway.yaml:35:80: unknown signature algorithm 'RS265', 'none'; known: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519",
      'gateway.yaml:39:95: jwksCacheMaxAgeMs applies to keys fetched from a jwksUrl, and this jwt has none',
      'gateway.yaml:43:39: \'jwks-enc.json\' holds no key to verify tokens with: its keys are marked for another use (a "use" other than "sig", or "key_ops" without "verify")',
      'gateway.yaml:47:38: jwksUrl must not hold a user or password (user:password@): a key set is public, and the fetch would be refused, every token 503',
      // In the keys file itself, at the place it stops being YAML, without quoting its lines (they hold keys).
      // So is a key set's JSON (it was `gateway.yaml:51:39: 'jwks-cut.json' is not a JSON Web Key Set: ... at position 43`).
      'jwks-cut.json:3:1: JSON syntax error: Expected double-quoted property name',
      // Whatever its name (it was `gateway.yaml:55:39: 'keys.jwks' is not a JSON Web Key Set: ...`).
      'keys.jwks:3:1: JSON syntax error: Expected double-quoted property name',
      'keys.yaml:2:1: YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ]);
    assert.equal(r.stdout.includes('unclosed'), false);
    assert.equal(r.stdout.includes('s3cret-pass'), false);
  });

  it('need exactly one key source for a jwt (a rule of the schema, reported at the second source)', async () => {
    const dir = tempFiles({
      'gateway.yaml': `version: 1
brokers: {local: {kind: memory}}
listeners: {api: {kind: http, port: 0}}
routes:
  - name: two-sources
    from: {listener: api, path: /b}
    through: [{auth: {jwt: {jwksFile: jwks.json, jwksUrl: "https://x.test/jwks"}}}]
    to: {broker: local, topic: t}
`,
    });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`, '--format', 'json']);
    assert.equal(r.code, 1);
    const found = (JSON.parse(r.stdout) as { line: number; path: string; message: string }[]).map((d) => `${d.line} ${d.path}: ${d.message}`);
    assert.deepEqual(found, ["7 routes[0].through[0].auth.jwt.jwksUrl: routes[0].through[0].auth.jwt takes only one of 'secret', 'publicKey', 'jwksFile' or 'jwksUrl', not 'jwksFile' and 'jwksUrl'"]);
  });
});
