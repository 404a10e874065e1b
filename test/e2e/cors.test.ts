import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post, RawWsClient, WsClient } from '../helpers/clients.js';
import { eventually, runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { memoryRoutesCaughtUp } from '../helpers/prometheus.js';
import { openStream } from '../helpers/sse.js';

const APP = 'https://app.example.com';

describe('CORS and origins', () => {
  // The admin port is there for memoryRoutesCaughtUp(): the last test reads its streams' first events.
  const config = `version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api:
    kind: http
    port: 0
    cors: {origins: ["${APP}"], headers: [content-type, x-api-key], credentials: true, maxAge: 120}
  open:
    kind: http
    port: 0
    cors: {origins: "*"}
  plain: {kind: http, port: 0}
  push: {kind: websocket, port: 0, origins: ["${APP}"]}
  anyList: {kind: http, port: 0, cors: {origins: ["*"]}}
  pushAny: {kind: websocket, port: 0, origins: ["*"]}
  app: {kind: http, port: 0, cors: {origins: ["capacitor://localhost", "Ionic://LocalHost:8100"]}}
  appPush: {kind: websocket, port: 0, origins: ["capacitor://localhost"]}
routes:
  - name: api
    from: {listener: api, path: /in}
    through: [{ratelimit: {rate: 1, per: hour}}]
    to: {broker: local, topic: t}
  - name: api-stream
    from: {broker: local, topic: t}
    to: {listener: api, path: /events}
  - name: open
    from: {listener: open, path: /in}
    to: {broker: local, topic: t}
  - name: plain
    from: {listener: plain, path: /in}
    to: {broker: local, topic: t}
  - name: ws
    from: {listener: push, path: /ws}
    to: {broker: local, topic: t}
  - name: any-list
    from: {listener: anyList, path: /in}
    to: {broker: local, topic: t}
  - name: ws-any
    from: {listener: pushAny, path: /ws}
    to: {broker: local, topic: t}
  - name: app
    from: {listener: app, path: /in}
    to: {broker: local, topic: t}
  - name: app-ws
    from: {listener: appPush, path: /ws}
    to: {broker: local, topic: t}
`;
  const gw = useGateway(config);

  it('answers a preflight from an allowed origin with 204 and what it may send', async () => {
    const res = await fetch(gw.url('api', '/in'), { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), APP);
    assert.equal(res.headers.get('access-control-allow-methods'), 'POST');
    assert.equal(res.headers.get('access-control-allow-headers'), 'content-type, x-api-key');
    assert.equal(res.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(res.headers.get('access-control-max-age'), '120');
    assert.equal(res.headers.get('vary'), 'Origin, Access-Control-Request-Headers');
  });

  it('answers a preflight for an event stream (a fetch-based client sending a key and Last-Event-ID), then streams to that origin', async () => {
    const pre = await fetch(gw.url('api', '/events'), {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'GET', 'access-control-request-headers': 'last-event-id,x-api-key' },
    });
    assert.equal(pre.status, 204, await pre.text());
    assert.equal(pre.headers.get('access-control-allow-origin'), APP);
    assert.equal(pre.headers.get('access-control-allow-headers'), 'content-type, x-api-key, last-event-id');
    const controller = new AbortController();
    const res = await fetch(gw.url('api', '/events'), { headers: { origin: APP, accept: 'text/event-stream', 'x-api-key': 'k', 'last-event-id': '0:0' }, signal: controller.signal });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), APP);
    assert.match(res.headers.get('content-type')!, /^text\/event-stream/);
    controller.abort();
    // A path that is not an event stream still lists only the configured headers.
    const publish = await fetch(gw.url('api', '/in'), { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST' } });
    assert.equal(publish.headers.get('access-control-allow-headers'), 'content-type, x-api-key');
    // A binary-mode CloudEvent's attributes are allowed as asked; other headers only as listed.
    const event = await fetch(gw.url('api', '/in'), {
      method: 'OPTIONS',
      headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'ce-id,ce-source,ce-specversion,ce-type,ce-tenant,content-type,x-other' },
    });
    assert.equal(event.headers.get('access-control-allow-headers'), 'content-type, x-api-key, ce-id, ce-source, ce-specversion, ce-type, ce-tenant');
  });

  it('refuses a preflight and a request from another origin with 403', async () => {
    const pre = await fetch(gw.url('api', '/in'), { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    assert.equal(pre.status, 403);
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
    const simple = await post(gw.url('api', '/in'), 'hello', { origin: 'https://evil.example', 'content-type': 'text/plain' });
    assert.equal(simple.status, 403);
    assert.equal(simple.body.code, 'EG_ORIGIN_NOT_ALLOWED');
  });

  it('adds CORS headers to answers for allowed origins, exposing Retry-After and the RateLimit fields', async () => {
    const ok = await post(gw.url('api', '/in'), {}, { origin: APP });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get('access-control-allow-origin'), APP);
    const limited = await post(gw.url('api', '/in'), {}, { origin: APP });
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('access-control-allow-origin'), APP);
    assert.equal(limited.headers.get('access-control-expose-headers'), 'retry-after, ratelimit-policy, ratelimit-limit, ratelimit-remaining, ratelimit-reset, www-authenticate');
  });

  it('leaves requests without an Origin (non-browser clients) alone', async () => {
    const r = await post(gw.url('open', '/in'), {});
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), null);
  });

  it('allows any origin with "*"; a preflight to an unknown path is answered, so the page reads the 404 that follows', async () => {
    const r = await post(gw.url('open', '/in'), {}, { origin: 'https://anyone.example' });
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    // As Express's app.use(cors()) and KrakenD answer it: a 404 preflight would leave the page 'Failed to fetch'.
    const pre = await fetch(gw.url('open', '/nope'), { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), '*');
    assert.equal(pre.headers.get('access-control-allow-methods'), 'POST');
    assert.equal(pre.headers.get('access-control-allow-headers'), 'content-type, authorization');
    const missing = await fetch(gw.url('open', '/nope'), { method: 'POST', headers: { origin: APP, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(missing.status, 404);
    assert.equal(missing.headers.get('access-control-allow-origin'), '*');
    assert.equal(((await missing.json()) as { code: string }).code, 'EG_NOT_FOUND');
    // From an origin not on a listener's list, an unknown path's preflight is refused as a known one's is.
    const foreign = await fetch(gw.url('api', '/nope'), { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.headers.get('access-control-allow-origin'), null);
  });

  it('reads origins ["*"] (as KrakenD and gin write it) as "*", on http and websocket listeners', async () => {
    const r = await post(gw.url('anyList', '/in'), {}, { origin: 'https://anyone.example' });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('access-control-allow-origin'), '*');
    (await WsClient.connect(gw.url('pushAny', '/ws', 'ws'), { origin: 'https://anyone.example' })).close();
  });

  it('does not answer preflights on a listener without cors', async () => {
    const pre = await fetch(gw.url('plain', '/in'), { method: 'OPTIONS', headers: { origin: APP, 'access-control-request-method': 'POST' } });
    assert.equal(pre.status, 405);
  });

  it('refuses a WebSocket handshake from a foreign origin with 403, and accepts listed and absent origins', async () => {
    await assert.rejects(WsClient.connect(gw.url('push', '/ws', 'ws'), { origin: 'https://evil.example' }), (err: { statusCode?: number }) => err.statusCode === 403);
    (await WsClient.connect(gw.url('push', '/ws', 'ws'), { origin: APP })).close();
    (await WsClient.connect(gw.url('push', '/ws', 'ws'))).close();
  });

  it("takes the origin of an app's web view (capacitor://localhost), its scheme and host in any case and its port as written, on http and websocket listeners", async () => {
    // Capacitor's and Ionic's iOS web views send these; the schema took http(s) origins only.
    const allowed = await post(gw.url('app', '/in'), 'hello', { origin: 'capacitor://localhost', 'content-type': 'text/plain' });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'capacitor://localhost');
    const ionic = await post(gw.url('app', '/in'), 'hello', { origin: 'ionic://localhost:8100', 'content-type': 'text/plain' });
    assert.equal(ionic.status, 200);
    // The host in any case, as WebKit sends it in lower case (an entry written `Ionic://LocalHost` refused the app's own origin).
    const upper = await post(gw.url('app', '/in'), 'hello', { origin: 'capacitor://LOCALHOST', 'content-type': 'text/plain' });
    assert.equal(upper.status, 200);
    // No default port for a scheme URLs do not know: another port or host is another origin.
    for (const origin of ['ionic://localhost', 'capacitor://localhost:80', 'capacitor://127.0.0.1', 'null']) {
      const refused = await post(gw.url('app', '/in'), 'hello', { origin, 'content-type': 'text/plain' });
      assert.equal(refused.status, 403, origin);
    }
    (await WsClient.connect(gw.url('appPush', '/ws', 'ws'), { origin: 'capacitor://localhost' })).close();
    await assert.rejects(WsClient.connect(gw.url('appPush', '/ws', 'ws'), { origin: 'ionic://localhost' }), (err: { statusCode?: number }) => err.statusCode === 403);
  });

  it('says the pages refused for their origin in the log, which they cannot read themselves (1006, a failed fetch)', async () => {
    await assert.rejects(WsClient.connect(gw.url('push', '/ws?token=t', 'ws'), { origin: 'https://stranger.example' }), (err: { statusCode?: number }) => err.statusCode === 403);
    const ws = await gw.waitForLog((l) => l.msg === 'refused a page of an origin not in origins (403)' && l.origin === 'https://stranger.example');
    assert.equal(ws.listener, 'push');
    assert.equal(ws.path, '/ws');
    assert.equal(ws.refused, 1);
    const simple = await post(gw.url('api', '/in'), 'hello', { origin: 'https://stranger.example', 'content-type': 'text/plain' });
    assert.equal(simple.status, 403);
    const http = await gw.waitForLog((l) => l.msg === 'refused a page of an origin not in cors.origins (403)' && l.origin === 'https://stranger.example');
    assert.equal(http.listener, 'api');
    assert.equal(http.path, '/in');
  });

  it('rejects credentials with origins "*" as a config error, and http2 without tls', async () => {
    const dir = tempFiles({
      'gateway.yaml': 'version: 1\nlisteners:\n  api:\n    kind: http\n    port: 0\n    cors: {origins: "*", credentials: true}\n  plain:\n    kind: http\n    port: 0\n    http2: true\n',
    });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /gateway\.yaml:6:\d+: credentials: true needs a list of origins/);
    // Browsers speak HTTP/2 only over TLS: without it the key would do nothing.
    assert.match(r.stdout, /gateway\.yaml:10:12: http2 needs tls: browsers speak HTTP\/2 only over TLS/);
    const list = tempFiles({ 'gateway.yaml': 'version: 1\nlisteners:\n  api:\n    kind: http\n    port: 0\n    cors: {origins: ["*"], credentials: true}\n' });
    const l = await runCli(['validate', '-c', `${list}/gateway.yaml`]);
    assert.equal(l.code, 1);
    assert.match(l.stdout, /gateway\.yaml:6:\d+: credentials: true needs a list of origins/);
    // An entry that is no origin beside it: both said in one run.
    const both = tempFiles({ 'gateway.yaml': 'version: 1\nlisteners:\n  api:\n    kind: http\n    port: 0\n    cors: {origins: ["*", "https://ops@app.example.com"], credentials: true}\n' });
    const b = await runCli(['validate', '-c', `${both}/gateway.yaml`]);
    assert.equal(b.code, 1);
    assert.match(b.stdout, /gateway\.yaml:6:\d+: "https:\/\/ops@app\.example\.com" is no origin/);
    assert.match(b.stdout, /gateway\.yaml:6:\d+: credentials: true needs a list of origins/);
  });

  /**
   * `validate`'s lines (without the file's path) for an http listener's `cors.origins` written as
   * the flow list `api` on line 7, and a websocket listener's `origins` as the block list `live`
   * from line 12; asserts it refused the file.
   */
  const originErrors = async (api: string, live: string[]): Promise<string[]> => {
    const yaml = [
      'version: 1',
      'listeners:',
      '  api:',
      '    kind: http',
      '    port: 0',
      '    cors:',
      `      origins: ${api}`,
      '  live:',
      '    kind: websocket',
      '    port: 0',
      '    origins:',
      ...live.map((o) => `      - ${o}`),
      '',
    ];
    const dir = tempFiles({ 'gateway.yaml': yaml.join('\n') });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    return r.stdout
      .trim()
      .split('\n')
      .map((l) => l.replace(/^.*gateway\.yaml:/, ''));
  };

  it('rejects origins entries that are no origin a browser sends (a user, a query, a fragment, no valid host) at file:line:col, on http and websocket listeners', async () => {
    // `https://ops@app.example.com` let in https://app.example.com (its URL's origin), a page it does
    // not name; `https://a b` matched no page at all. Entries a browser does send still load.
    assert.deepEqual(
      await originErrors('["https://app.example.com:443", "https://ops@app.example.com", "https://café.example", "https://a b"]', [
        'https://app.example.com?tab=1',
        'https://app.example.com#top',
        'http://localhost:80',
      ]),
      [
        '7:48: "https://ops@app.example.com" is no origin: it has a user; an origin is scheme://host[:port], as browsers send it in Origin: write "https://app.example.com"',
        '7:103: "https://a b" is no origin: its host or port is not valid in a URL, so no browser would send it',
        '12:9: "https://app.example.com?tab=1" is no origin: it has a query; an origin is scheme://host[:port], as browsers send it in Origin: write "https://app.example.com"',
        '13:9: "https://app.example.com#top" is no origin: it has a fragment; an origin is scheme://host[:port], as browsers send it in Origin: write "https://app.example.com"',
      ],
    );
  });
  it("tells an origin written as a page's address, without its scheme, with a wildcard or without its list what to write, once each", async () => {
    // `[localhost:5173]` got `origins must be "*", got a list` beside a regular expression; `*.` entries
    // validated and let no page in (no browser sends that origin); a bare string was told only `"*"`.
    const dir = tempFiles({
      'gateway.yaml': [
        'version: 1',
        'listeners:',
        '  api:',
        '    kind: http',
        '    port: 0',
        '    cors:',
        '      origins: [localhost:5173, "https://app.example.com/", "https://*.example.com"]',
        '  live:',
        '    kind: websocket',
        '    port: 0',
        '    origins: https://app.example.com',
        '  back:',
        '    kind: http',
        '    port: 0',
        '    cors: {origins: ["http://localhost:*"]}',
        '',
      ].join('\n'),
    });
    const r = await runCli(['validate', '-c', `${dir}/gateway.yaml`]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const wildcard = 'is no origin: entries are not patterns, and a browser sends its page\'s own scheme://host[:port], which a wildcard matches none of; list each origin, or "*" for any';
    const shape = 'must be an origin, scheme://host[:port] as browsers send it (no path), or "*", got string';
    assert.deepEqual(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => l.replace(/^.*gateway\.yaml:/, '')),
      [
        `7:17: listeners.api.cors.origins[0] ${shape} "localhost:5173" (a URL starts with its scheme: write http:// before it)`,
        `7:33: listeners.api.cors.origins[1] ${shape} "https://app.example.com/" (an origin has no path: write "https://app.example.com")`,
        `11:14: listeners.live.origins must be "*" or a list of origins, even of one, got string "https://app.example.com" (write [https://app.example.com])`,
        `15:22: "http://localhost:*" ${wildcard}`,
      ],
    );
    // The schema's errors come first; the wildcard of a list the schema took is the compile check's.
    const fixed = tempFiles({
      'gateway.yaml': ['version: 1', 'listeners:', '  api:', '    kind: http', '    port: 0', '    cors:', '      origins: ["https://app.example.com", "https://*.example.com"]', ''].join('\n'),
    });
    const w = await runCli(['validate', '-c', `${fixed}/gateway.yaml`]);
    assert.equal(w.code, 1, w.stdout + w.stderr);
    assert.equal(w.stdout.trim().replace(/^.*gateway\.yaml:/, ''), `7:44: "https://*.example.com" ${wildcard}`);
  });

  it('rejects a wildcard, a path after a backslash and an empty user; takes an upper-case scheme, IPv6, localhost and a trailing dot', async () => {
    // rs/cors and gin-contrib/cors read `https://*.example.com` as a pattern; here it was a host of
    // that very text, which no page has: every subdomain's page refused, silently. `\\admin` is
    // read as the path `/admin`, `@` as an empty user. Browsers do send the last five (a scheme in
    // any case is compared as they write it, as the host is).
    assert.deepEqual(
      await originErrors('["https://*.example.com", "HTTPS://App.Example.com", "http://[::1]:8080", "http://localhost"]', [
        'http://localhost:*',
        'https://app.example.com\\admin',
        'https://@app.example.com',
        'https://app.example.com.',
        'Http://127.0.0.1:3000',
      ]),
      [
        `7:17: "https://*.example.com" is no origin: entries are not patterns, and a browser sends its page's own scheme://host[:port], which a wildcard matches none of; list each origin, or "*" for any`,
        `12:9: "http://localhost:*" is no origin: entries are not patterns, and a browser sends its page's own scheme://host[:port], which a wildcard matches none of; list each origin, or "*" for any`,
        '13:9: "https://app.example.com\\admin" is no origin: it has a path; an origin is scheme://host[:port], as browsers send it in Origin: write "https://app.example.com"',
        '14:9: "https://@app.example.com" is no origin: it has a user; an origin is scheme://host[:port], as browsers send it in Origin: write "https://app.example.com"',
      ],
    );
  });

  it("takes any scheme's origin (an app's web view, a browser extension) and refuses null, a file:// page and a WebSocket's own address, saying why", async () => {
    const anyPage = 'any page can send it, from a sandboxed frame of its own, so allowing it would let in every page; give such clients a credential, with an auth step, instead';
    const shape = 'must be an origin, scheme://host[:port] as browsers send it (no path), or "*", got string';
    assert.deepEqual(
      await originErrors('["capacitor://localhost", "Ionic://localhost", "null", null, "chrome-extension://abcdefgh/", "file:///home/me/app.html", "blob:https://app.example.com/0b4d"]', [
        'chrome-extension://abcdefghijklmnopabcdefghijklmnop',
        'moz-extension://0b4d3c2a-1111-2222-3333-444455556666',
        'tauri://localhost:1430',
        'wss://app.example.com',
        'capacitor://u@localhost',
        'file://host',
        'htps://app.example.com',
        'HTTPX://app.example.com:8443',
      ]),
      [
        `7:63: listeners.api.cors.origins[2] ${shape} "null" (browsers send "null" from sandboxed frames, file:// pages and data: URLs, and ${anyPage})`,
        `7:71: listeners.api.cors.origins[3] must be a string, got null (if the origin "null" was meant: browsers send "null" from sandboxed frames, file:// pages and data: URLs, and ${anyPage})`,
        `7:77: listeners.api.cors.origins[4] ${shape} "chrome-extension://abcdefgh/" (an origin has no path: write "chrome-extension://abcdefgh")`,
        `7:109: listeners.api.cors.origins[5] ${shape} "file:///home/me/app.html" (pages of file: URLs send Origin "null", and ${anyPage})`,
        // A blob: URL's page has the origin of the page that made it (it was said to send "null").
        `7:137: listeners.api.cors.origins[6] ${shape} "blob:https://app.example.com/0b4d" (a blob: URL's page sends the origin of the page that made it: write "https://app.example.com")`,
        `15:9: "wss://app.example.com" is no origin: a WebSocket handshake carries the origin of the page that opened it, not the socket's address: write the page's, such as "https://app.example.com"`,
        '16:9: "capacitor://u@localhost" is no origin: it has a user; an origin is scheme://host[:port], as browsers send it in Origin: write "capacitor://localhost"',
        `17:9: "file://host" is no origin: pages of file: URLs send Origin "null", and ${anyPage}`,
        // Misspelt http(s), which the schema refused while it took http(s) alone, and which would match no page.
        '18:9: "htps://app.example.com" is no origin a browser sends: its scheme htps is one letter from https; write "https://app.example.com"',
        '19:9: "HTTPX://app.example.com:8443" is no origin a browser sends: its scheme httpx is one letter from http; write "http://app.example.com:8443"',
      ],
    );
  });

  it('cuts off the open WebSockets and event streams of an origin a reload takes off the list (1008; eventgate.end 403), keeping those of origins still listed and of non-browsers', async () => {
    const OTHER = 'https://other.example.com';
    const lists = (api: string, push: string) => config.replace(`cors: {origins: ["${APP}"], headers`, `cors: {origins: ${api}, headers`).replace(`origins: ["${APP}"]}`, `origins: ${push}}`);
    assert.equal((await gw.reconfigure(lists(`["${APP}", "${OTHER}"]`, `["${APP}", "${OTHER}"]`), 'gateway.yaml', { whole: true })).msg, 'config reloaded');
    const app = await WsClient.connect(gw.url('push', '/ws', 'ws'), { origin: APP });
    // A page of the site that sends one more frame after the reload's close frame reached it.
    const late = await RawWsClient.connect(gw.url('push', '/ws', 'ws'), { Origin: APP });
    const other = await WsClient.connect(gw.url('push', '/ws', 'ws'), { origin: OTHER });
    const script = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    // The tests before published to topic t: once route api-stream is through it, none of that can reach the streams opened here.
    await memoryRoutesCaughtUp(gw.adminUrl);
    const appStream = await openStream(gw.url('api', '/events'), { origin: APP });
    const otherStream = await openStream(gw.url('api', '/events'), { origin: OTHER });
    try {
      // The site is taken off both lists; the listeners stay (only their origins changed).
      assert.equal((await gw.reconfigure(lists(`["${OTHER}"]`, `["${OTHER}"]`), 'gateway.yaml', { whole: true })).msg, 'config reloaded');
      assert.deepEqual(await app.waitClose(), { code: 1008, reason: 'origin no longer allowed (a reload changed origins)' });
      // What it sends once it is cut off is not taken (it was published, unanswered).
      assert.deepEqual(await late.waitCloseFrame(), { code: 1008, reason: 'origin no longer allowed (a reload changed origins)' });
      late.socket.write(Buffer.concat([RawWsClient.textFrame('{"late":true}'), RawWsClient.closeFrame(1008)]));
      await late.waitEnd();
      const open = new Promise((_, reject) => setTimeout(() => reject(new Error(`the stream of ${APP} is still open: ${appStream.text()}`)), 15000).unref());
      await Promise.race([appStream.ended, open]);
      assert.deepEqual(
        appStream.events().map((e) => [e.event, JSON.parse(e.data)]),
        [['eventgate.end', { status: 403, reason: `origin ${APP} no longer allowed (a reload changed cors.origins)` }]],
      );
      // The others stay connected: a frame from the script reaches the listed origin's stream.
      script.send({ n: 1 });
      await eventually(() => assert.notEqual(otherStream.events().length, 0), 15000);
      assert.deepEqual(
        otherStream.events().map((e) => JSON.parse(e.data)),
        [{ n: 1 }],
      );
      assert.equal(other.closed, undefined);
      assert.equal(script.closed, undefined);
    } finally {
      for (const c of [app, other, script]) c.close();
      late.destroy();
      appStream.close();
      otherStream.close();
      await gw.reconfigure(config, 'gateway.yaml', { whole: true });
    }
  });
});
