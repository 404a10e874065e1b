import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';
import { fetch } from '../helpers/http.js';
import { FETCH_BLOCKED_PORTS, listenOnFirstFree } from '../helpers/ports.js';

/**
 * Uploaded AsyncAPI documents are untrusted (issue #13, docs/security.md): each attack is a
 * `PUT /admin/asyncapi` as an outsider holding the admin token (or a page the operator opened) would send it.
 */
const TOKEN = 'admin-secret-token';
const auth = { authorization: `Bearer ${TOKEN}` };

/** An AsyncAPI 3.0 document whose one message's payload is `payload` (YAML, indented for its place). */
const documentWith = (payload: string) => `asyncapi: 3.0.0
info: {title: Alerts, version: '1.0.0'}
channels:
  alerts:
    messages:
      alert:
        payload:
          ${payload}
`;
const plain = documentWith('type: object');
/**
 * The gateway parses its AsyncAPI document before it is ready: 20 s and more on two cores shared
 * with other test runs (measured 18-29 s while two CPU burners ran).
 */
const READY_TIMEOUT_MS = 120_000;
/**
 * asyncapiRemoteRefs.timeoutMs: long enough for a server that answers at once, also under load
 * (a gateway's first fetch there reached the server 0.8 s after it began, and 500 ms failed it; the
 * first fetch of a new thread took 1.7-2.5 s beside eight busy processes, 0.1-0.4 s on an idle
 * machine, and CI's machine is slower), and what the upload of a document whose server never
 * answers waits for: only that case is meant to reach it.
 */
const FETCH_TIMEOUT_MS = 15_000;

function config(extra = ''): string {
  return `version: 1
asyncapi: contracts/alerts.yaml
admin: {port: 0, token: ${TOKEN}}
${extra}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1}
routes:
  - name: alert
    from: {listener: api, path: /alert}
    through:
      - validate: {channel: alerts}
    to: {broker: local, topic: alerts}
  - name: other
    from: {listener: api, path: /other}
    to: {broker: local, topic: other}
  - name: levels
    from: {listener: api, path: /levels}
    through:
      - validate: {channel: alerts}
      - filter: level > 1
    to: {broker: local, topic: levels}
`;
}

/** A real HTTP server on a free port that records the requests it gets and answers with `handler`. */
async function server(handler: (path: string, res: import('node:http').ServerResponse) => void, ports?: readonly number[]): Promise<{ url: string; hits: string[]; srv: Server }> {
  const hits: string[] = [];
  const srv = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler(req.url ?? '', res);
  });
  if (ports) return { url: `http://127.0.0.1:${await listenOnFirstFree(srv, ports)}`, hits, srv };
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, hits, srv };
}

// The two suites have gateways, directories and servers of their own: they run side by side (the
// remote one mostly waits out its fetch timeout), each one's cases one after another.
describe('AsyncAPI uploads', { concurrency: true }, () => {
  describe('uploaded AsyncAPI documents cannot read files or reach the network', { concurrency: 1 }, () => {
    const gw = useGateway(config(), { files: { 'contracts/alerts.yaml': plain, 'contracts/schemas/ok.yaml': 'type: object\n' }, readyTimeoutMs: READY_TIMEOUT_MS });
    let outside: string;
    const put = (body: string) => fetch(`${gw.adminUrl}/admin/asyncapi`, { method: 'PUT', body, headers: { 'content-type': 'application/yaml', ...auth } });
    const current = async () => ((await (await fetch(`${gw.adminUrl}/admin/asyncapi`, { headers: auth })).json()) as { documents: { content: string }[] }).documents[0]!.content;
    /** The upload is refused with 422, says why, and shows nothing of the host: no absolute path, no secret, no network error. */
    async function refused(body: string, why: RegExp): Promise<any> {
      const res = await put(body);
      const text = await res.text();
      assert.equal(res.status, 422, text);
      assert.match(text, why);
      assert.ok(!text.includes(gw.dir), `the answer names no absolute path: ${text}`);
      assert.ok(!text.includes('hunter2'), 'the secret is not shown');
      assert.doesNotMatch(text, /ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|getaddrinfo/);
      assert.equal(await current(), plain, 'the document in force is unchanged');
      return JSON.parse(text);
    }

    before(() => {
      // A secret next to the config's directory, and a link inside the directory pointing at it.
      outside = join(tempDir('eventgate-secrets'), 'secret.yaml');
      writeFileSync(outside, 'db:\n  password: hunter2\n');
      symlinkSync(outside, join(gw.dir, 'contracts', 'innocent.yaml'));
    });
    after(() => {
      if (outside) rmSync(dirname(outside), { recursive: true, force: true });
    });

    it('applies a document that makes a field the config reads undeclared, and says the warning in its answer as `eventgate validate` does (1652)', async () => {
      const closed = documentWith('{type: object, additionalProperties: false, properties: {lvl: {type: integer}}}');
      try {
        const res = await put(closed);
        const body = (await res.json()) as { result: string; warnings?: string[] };
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.equal(body.result, 'applied');
        assert.deepEqual(body.warnings, [
          "gateway.yaml:22:17: warning: 'level' is not a field of the message: no message the validate step at gateway.yaml:21:9 lets through has it (its schema allows no other properties), so this reads no value [EG_CONFIG_UNDECLARED_FIELD]",
        ]);
      } finally {
        const back = await put(plain);
        const body = (await back.json()) as { result: string; warnings?: string[] };
        assert.equal(back.status, 200, JSON.stringify(body));
        assert.equal(body.warnings, undefined, 'no warning, no field');
      }
    });

    it("answers applied for each upload that changes the document, while reloads run beside it (a reload under way may read the new document before the upload's own)", async () => {
      let stop = false;
      const reloads = (async () => {
        while (!stop) await (await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST', headers: auth })).text();
      })();
      const answers: string[] = [];
      try {
        for (let i = 0; i < 8; i++) {
          const res = await put(documentWith(`{type: object, maxProperties: ${100 + i}}`));
          const body = (await res.json()) as { result: string };
          assert.equal(res.status, 200, JSON.stringify(body));
          answers.push(body.result);
        }
      } finally {
        stop = true;
        await reloads;
        assert.equal((await put(plain)).status, 200);
      }
      assert.deepEqual(answers, Array(8).fill('applied'));
      assert.equal((await put(plain)).status, 200, 'the same document again');
      assert.equal(((await (await put(plain)).json()) as { result: string }).result, 'unchanged', 'an upload of the document in force changes nothing');
    });

    it('answers unchanged for an upload of the document in force, while reloads of another edit run beside it (the version changes, the document does not)', async () => {
      assert.equal((await put(plain)).status, 200);
      let stop = false;
      const reloads = (async () => {
        // gateway.yaml edited and reloaded over and over: each reload, the upload's own too, may apply a new version.
        for (let i = 0; !stop; i++) {
          writeFileSync(join(gw.dir, 'edit.yaml'), config().replace('path: /other', `path: /other${i}`));
          renameSync(join(gw.dir, 'edit.yaml'), gw.configFile);
          await (await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST', headers: auth })).text();
        }
      })();
      const answers: string[] = [];
      const versions = new Set<string>();
      try {
        for (let i = 0; i < 6; i++) {
          const res = await put(plain);
          const body = (await res.json()) as { result: string; version: string };
          assert.equal(res.status, 200, JSON.stringify(body));
          answers.push(body.result);
          versions.add(body.version);
        }
      } finally {
        stop = true;
        await reloads;
        writeFileSync(join(gw.dir, 'edit.yaml'), config());
        renameSync(join(gw.dir, 'edit.yaml'), gw.configFile);
        await (await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST', headers: auth })).text();
      }
      assert.ok(versions.size > 1, `the edits beside the uploads changed the version: ${[...versions].join(', ')}`);
      assert.deepEqual(answers, Array(6).fill('unchanged'));
    });

    it("refuses a $ref leading out of the config's directory with ..", async () => {
      const body = await refused(documentWith(`$ref: '${relative(join(gw.dir, 'contracts'), outside)}#/db/password'`), /leads outside the config's directory/);
      // Positioned in the uploaded document, named relative to the config's directory.
      assert.deepEqual(
        body.diagnostics.map((d: any) => [d.file, d.line]),
        [['contracts/alerts.yaml', 8]],
      );
      assert.equal((await post(gw.url('api', '/alert'), { any: 'thing' })).status, 200);
    });

    it('refuses an absolute $ref, also as a file: URL', async () => {
      await refused(documentWith(`$ref: '${outside}#/db/password'`), /absolute path/);
      await refused(documentWith(`$ref: 'file://${outside}#/db/password'`), /'file:' scheme/);
    });

    it('refuses a $ref that is no path or no URL, at its line, rather than failing somewhere in the parser', async () => {
      const badPath = await refused(documentWith(`$ref: 'schemas/%zz.yaml'`), /\$ref 'schemas\/%zz\.yaml' is not a valid path/);
      assert.deepEqual(
        badPath.diagnostics.map((d: any) => [d.file, d.line, d.column]),
        [['contracts/alerts.yaml', 8, 17]],
      );
      await refused(documentWith(`$ref: 'http://[::1/schema.yaml'`), /\$ref 'http:\/\/\[::1\/schema\.yaml' is not a valid URL/);
    });

    it("refuses a $ref through a symlink that leads out of the config's directory", async () => {
      await refused(documentWith(`$ref: 'innocent.yaml#/db/password'`), /innocent\.yaml' is a link leading outside the config's directory/);
    });

    it('still follows a relative $ref inside the directory', async () => {
      const doc = documentWith(`$ref: 'schemas/ok.yaml'`);
      const res = await put(doc);
      assert.equal(res.status, 200, await res.text());
      assert.equal(await current(), doc);
      assert.equal((await put(plain)).status, 200);
    });

    it('never fetches a remote $ref while remote references are off, and answers the same for an open and a closed port', async () => {
      const internal = await server((_p, res) => res.end('type: object\n'));
      try {
        const open = await refused(documentWith(`$ref: '${internal.url}/internal/schema.yaml'`), /remote references are off/);
        const closed = await refused(documentWith(`$ref: 'http://127.0.0.1:1/internal/schema.yaml'`), /remote references are off/);
        assert.deepEqual(internal.hits, [], 'the internal server was never asked');
        const strip = (b: any) => JSON.stringify(b).replace(/http:\/\/127\.0\.0\.1:\d+/g, 'URL');
        assert.equal(strip(open), strip(closed), 'no port-scanning oracle');
      } finally {
        internal.srv.close();
      }
    });

    it('refuses a 431-byte YAML alias bomb at once, and the data plane keeps answering', async () => {
      const bomb = [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]',
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]',
        'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]',
        'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]',
        'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]',
        'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]',
        'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]',
        'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]',
        '',
      ].join('\n');
      assert.ok(Buffer.byteLength(bomb) <= 440);
      const upload = refused(bomb, /alias/i);
      assert.equal((await post(gw.url('api', '/other'), { during: 'the bomb' })).status, 200);
      await upload;
    });

    it('refuses an alias bomb in a file a $ref reads, and a document nested beyond the limit', async () => {
      gw.write('contracts/schemas/bomb.yaml', 'a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n');
      await refused(documentWith(`$ref: 'schemas/bomb.yaml'`), /alias/i);
      await refused(`asyncapi: 3.0.0\nx: ${'['.repeat(5000)}${']'.repeat(5000)}\n`, /nested/);
    });

    it('an upload whose client goes away mid-body is logged as failed with the path only, never a token someone put in the query', async () => {
      const from = gw.logs.length;
      const leaked = 'query-token-never-logged-5d2e';
      const socket = connect(Number(new URL(gw.adminUrl).port), '127.0.0.1');
      socket.on('error', () => {});
      await once(socket, 'connect');
      // Expect: 100-continue: node answers 100 as it hands the request to the admin server, which is then reading the body when the client leaves.
      socket.write(
        `PUT /admin/asyncapi?file=contracts/alerts.yaml&token=${leaked} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${TOKEN}\r\nexpect: 100-continue\r\ncontent-length: 1000\r\n\r\n`,
      );
      const [continued] = (await once(socket, 'data')) as [Buffer];
      assert.match(continued.toString(), /^HTTP\/1\.1 100 Continue/);
      socket.write('asyncapi: 3.0.0\n');
      socket.destroy();
      const line = await gw.waitForLog((l) => l.msg === 'admin request failed', 10_000, from);
      assert.equal(line.path, '/admin/asyncapi');
      assert.equal(line.method, 'PUT');
      assert.ok(!JSON.stringify(gw.logs.slice(from)).includes(leaked), 'no log line has the query');
      assert.equal(await current(), plain, 'the document in force is unchanged');
    });
  });

  describe('an upload refused where a secret holds the config’s directory', () => {
    // A channel from ${CHANNEL} whose value holds `<config dir>/` (`site/app/levels` with the
    // config in /app): made relative before redaction, the 422 cut the directory out of the
    // quoted value, which was then no secret redaction knew (`lvlkey-7c1e9b`).
    const env: Record<string, string> = {};
    const staged = config().replace('validate: {channel: alerts}', 'validate: {channel: "${CHANNEL}"}');
    const gw = useGateway(staged, {
      env,
      setup: (dir) => {
        env.CHANNEL = `lvl${dir}/key-7c1e9b`;
        writeFileSync(join(dir, 'contracts/alerts.yaml'), `${plain}  ${JSON.stringify(env.CHANNEL)}:\n    messages:\n      level:\n        payload: {type: object}\n`);
      },
      files: { 'contracts/alerts.yaml': plain },
      readyTimeoutMs: READY_TIMEOUT_MS,
    });

    it('quotes the channel the document would no longer provide as [redacted], no part of it', async () => {
      const res = await fetch(`${gw.adminUrl}/admin/asyncapi`, { method: 'PUT', body: plain, headers: { 'content-type': 'application/yaml', ...auth } });
      const text = await res.text();
      assert.equal(res.status, 409, text);
      assert.equal(text.includes('key-7c1e9b'), false, text);
      assert.match(JSON.parse(text).diagnostics[0].message, /AsyncAPI channel '\[redacted\]' is not defined in /);
    });
  });

  describe('an upload refused in a directory named like a variable’s value', () => {
    // STAGE is the config directory's name (set once the helper made it): a value of the config,
    // so a secret. Redacted before the files were made relative, the answer named
    // `../[redacted]/contracts/alerts.yaml`.
    const LEVELS_TOPIC = 'levels-topic-from-env-3f9a';
    const env: Record<string, string> = { LEVELS_TOPIC };
    const staged = config().replace('topic: other', 'topic: "${STAGE}"').replace('topic: levels', 'topic: "${LEVELS_TOPIC}"');
    const gw = useGateway(staged, { env, setup: (dir) => (env.STAGE = basename(dir)), files: { 'contracts/alerts.yaml': plain }, readyTimeoutMs: READY_TIMEOUT_MS });

    it("names the document's file relative to the config's directory in the 422, and still redacts the secret its problem quotes", async () => {
      const res = await fetch(`${gw.adminUrl}/admin/asyncapi`, { method: 'PUT', body: documentWith(`$ref: 'schemas/${LEVELS_TOPIC}.yaml'`), headers: { 'content-type': 'application/yaml', ...auth } });
      const text = await res.text();
      assert.equal(res.status, 422, text);
      assert.ok(env.STAGE!.length >= 6, 'long enough to be redacted inside a text');
      assert.equal(text.includes(LEVELS_TOPIC), false, text);
      const body = JSON.parse(text);
      assert.deepEqual(
        body.diagnostics.map((d: any) => [d.file, d.line]),
        [['contracts/alerts.yaml', 8]],
      );
      assert.deepEqual(body.errors, [`contracts/alerts.yaml:8:17: ${body.diagnostics[0].message}`]);
      assert.match(body.diagnostics[0].message, /schemas\/\[redacted\]\.yaml/);
    });

    it('names the files of the warnings an applied upload answers with relative to the config’s directory too', async () => {
      const put = (body: string) => fetch(`${gw.adminUrl}/admin/asyncapi`, { method: 'PUT', body, headers: { 'content-type': 'application/yaml', ...auth } });
      try {
        const res = await put(documentWith('{type: object, additionalProperties: false, properties: {lvl: {type: integer}}}'));
        const body = (await res.json()) as { result: string; warnings?: string[] };
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.deepEqual(body.warnings, [
          "gateway.yaml:22:17: warning: 'level' is not a field of the message: no message the validate step at gateway.yaml:21:9 lets through has it (its schema allows no other properties), so this reads no value [EG_CONFIG_UNDECLARED_FIELD]",
        ]);
      } finally {
        assert.equal((await put(plain)).status, 200);
      }
    });
  });

  describe('remote $refs allowed by origin: fetched with a timeout and a size cap', { concurrency: 1 }, () => {
    let schemas: Awaited<ReturnType<typeof server>>;
    let other: Awaited<ReturnType<typeof server>>;
    /** A schema server on a port the Fetch standard blocks for browsers (10080, 6665, ...), which fetch refused: `bad port`. */
    let blocked: Awaited<ReturnType<typeof server>>;
    const held: import('node:http').ServerResponse[] = [];
    const put = (body: string) => fetch(`${gw.adminUrl}/admin/asyncapi`, { method: 'PUT', body, headers: { 'content-type': 'application/yaml', ...auth } });

    before(async () => {
      schemas = await server((path, res) => {
        if (path === '/hang.yaml') return; // never answers
        if (path === '/held.yaml') return held.push(res); // answered when the test says
        if (path === '/huge.yaml') return res.end(`type: object\ndescription: ${'x'.repeat(200_000)}\n`);
        if (path === '/redirect.yaml') return res.writeHead(302, { location: `${other.url}/schema.yaml` }).end();
        if (path === '/missing.yaml') return res.writeHead(404).end('not here');
        res.end('type: object\nrequired: [level]\n');
      });
      other = await server((_p, res) => res.end('type: object\n'));
      blocked = await server((_p, res) => res.end('type: object\nrequired: [level]\n'), FETCH_BLOCKED_PORTS);
    });
    // Started once the schema server is listening: the config allows its origin.
    const gw = useGateway(() => config(`asyncapiRemoteRefs: {origins: ['${schemas.url}', '${blocked.url}'], timeoutMs: ${FETCH_TIMEOUT_MS}, maxBytes: 65536}`), {
      files: { 'contracts/alerts.yaml': plain },
      readyTimeoutMs: READY_TIMEOUT_MS,
    });
    after(() => {
      schemas.srv.closeAllConnections();
      schemas.srv.close();
      other.srv.close();
      blocked.srv.close();
    });

    it('fetches a $ref to an allowed origin', async () => {
      const res = await put(documentWith(`$ref: '${schemas.url}/alert.yaml'`));
      assert.equal(res.status, 200, await res.text());
      assert.equal((await post(gw.url('api', '/alert'), {})).status, 400);
    });

    it('fetches a $ref to an allowed origin on a port the Fetch standard blocks for browsers (10080, 6665-6669, 6000, ...)', async () => {
      // Before: 422 `cannot fetch '...': the request failed` (node's fetch refuses those ports: `bad port`).
      const res = await put(documentWith(`$ref: '${blocked.url}/alert.yaml'`));
      assert.equal(res.status, 200, await res.text());
      assert.deepEqual(blocked.hits, ['/alert.yaml']);
      assert.equal((await post(gw.url('api', '/alert'), {})).status, 400);
      assert.equal((await put(plain)).status, 200, 'the document in force is plain again');
    });

    it('a fetch that never answers fails its upload after timeoutMs, and does not block the next upload', async () => {
      const hung = await put(documentWith(`$ref: '${schemas.url}/hang.yaml'`));
      const text = await hung.text();
      assert.equal(hung.status, 422);
      assert.match(text, new RegExp(`no answer within ${FETCH_TIMEOUT_MS} ms`));
      const next = await put(plain);
      assert.equal(next.status, 200);
    });

    it('refuses a $ref the allowed origin answers with an error status, naming it', async () => {
      const missing = await put(documentWith(`$ref: '${schemas.url}/missing.yaml'`));
      const text = await missing.text();
      assert.equal(missing.status, 422, text);
      assert.match(text, new RegExp(`cannot fetch '${schemas.url}/missing\\.yaml': HTTP 404`));
      assert.equal((await put(plain)).status, 200, 'the next upload goes through');
    });

    it('refuses a remote document over maxBytes, a redirect, and an origin not on the list', async () => {
      const huge = await put(documentWith(`$ref: '${schemas.url}/huge.yaml'`));
      assert.equal(huge.status, 422);
      assert.match(await huge.text(), /larger than 65536 bytes/);
      const redirect = await put(documentWith(`$ref: '${schemas.url}/redirect.yaml'`));
      assert.equal(redirect.status, 422);
      assert.match(await redirect.text(), /redirects are not followed/);
      const foreign = await put(documentWith(`$ref: '${other.url}/schema.yaml'`));
      assert.equal(foreign.status, 422);
      assert.match(await foreign.text(), /not listed in asyncapiRemoteRefs.origins/);
      assert.deepEqual(other.hits, []);
    });

    it('an edit of the file on disk while an upload is checked is newer, and stays: the upload is refused with 409 (point 656)', async () => {
      // The upload's check waits on its $ref until the file has been edited (as a Git sync would).
      const upload = put(documentWith(`$ref: '${schemas.url}/held.yaml'`));
      while (held.length === 0) await new Promise((r) => setTimeout(r, 20));
      const edited = documentWith('{type: object, required: [fromDisk]}');
      const file = join(gw.dir, 'contracts/alerts.yaml');
      writeFileSync(`${file}.next`, edited);
      renameSync(`${file}.next`, file);
      held.shift()!.end('type: object\nrequired: [fromUpload]\n');
      const res = await upload;
      const text = await res.text();
      assert.equal(res.status, 409, text);
      assert.equal(JSON.parse(text).code, 'EG_ASYNCAPI_CHANGED_ON_DISK');
      assert.equal(readFileSync(file, 'utf8'), edited, 'the edit on disk was not written over');
      await gw.waitForLog((l) => l.msg === 'config reloaded' && l.reason === 'file change');
      const refused = await post(gw.url('api', '/alert'), {});
      assert.deepEqual(refused.body.errors, [": must have required property 'fromDisk'"]);
      assert.equal((await put(plain)).status, 200);
    });
  });
});
