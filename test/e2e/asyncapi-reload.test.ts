import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { lightMeasuredPayload, streetlights26 } from '../helpers/asyncapi-fixtures.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch, type Reply } from '../helpers/http.js';

// 16 characters or more: a shorter admin token is a config warning, which an upload's answer would carry.
const TOKEN = 'admin-secret-of-the-asyncapi-tests';
const auth = { authorization: `Bearer ${TOKEN}` };

const alerts = `asyncapi: 3.0.0
info: {title: Alerts, version: '1.0.0'}
channels:
  alerts:
    messages:
      alert:
        payload:
          type: object
          required: [level]
          properties:
            level: {type: string, enum: [info, warning]}
`;

const config = `version: 1
asyncapi:
  - streetlights.yaml
  - alerts.yaml
admin: {port: 0, token: ${TOKEN}}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: light
    from: {listener: api, path: /light}
    through:
      - validate: {message: lightMeasured}
    to: {broker: local, topic: light}
  - name: alert
    from: {listener: api, path: /alert}
    through:
      - validate: {channel: alerts}
    to: {broker: local, topic: alerts}
`;

const json = (res: Reply): Promise<any> => res.json();

/** Threads of a process (/proc/PID/status): a running parser thread is one of them. */
const threads = (pid: number) => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);

const dim = { id: 1, lumens: 5, sentAt: '2026-11-23T10:00:00Z' };

/** The streetlights document with the lightMeasured payload inline, needing at least `min` lumens. */
function streetlightsWithMinimum(min: number): string {
  return streetlights26.replace(
    "        $ref: 'schemas/light-measured.yaml'",
    `        type: object\n        required: [id, lumens]\n        properties:\n          lumens: {type: integer, minimum: ${min}}`,
  );
}

// The parser thread's case waits out the thread's idle stop (30 s, parser-thread.ts) on gateways of
// its own: the two suites run side by side, each one's cases one after another.
describe('AsyncAPI documents live in a running gateway', { concurrency: true }, () => {
  describe('AsyncAPI documents change validation live: edits on disk and uploads', { concurrency: 1 }, () => {
    const gw = useGateway(config, { files: { 'streetlights.yaml': streetlights26, 'schemas/light-measured.yaml': lightMeasuredPayload, 'alerts.yaml': alerts } });
    const put = (body: string, query = '', headers: Record<string, string> = auth) =>
      fetch(`${gw.adminUrl}/admin/asyncapi${query}`, { method: 'PUT', body, headers: { 'content-type': 'application/yaml', ...headers } });
    const onDisk = (name: string) => readFileSync(join(gw.dir, name), 'utf8');
    const version = async () => (await json(await fetch(`${gw.adminUrl}/admin/status`, { headers: auth }))).version as string;

    it('reloads when a file the document $refs changes, and validates with the new payload schema', async () => {
      assert.equal((await post(gw.url('api', '/light'), dim)).status, 200);
      const reload = await gw.reconfigure(lightMeasuredPayload.replace('lumens: {type: integer, minimum: 0}', 'lumens: {type: integer, minimum: 10}'), 'schemas/light-measured.yaml');
      assert.equal(reload.msg, 'config reloaded');
      const refused = await post(gw.url('api', '/light'), dim);
      assert.equal(refused.status, 400);
      assert.deepEqual(refused.body.errors, ['/lumens: must be >= 10']);
    });

    it('reloads when the document changes on disk, and validates with the new contract', async () => {
      const reload = await gw.reconfigure(streetlightsWithMinimum(2), 'streetlights.yaml');
      assert.equal(reload.msg, 'config reloaded');
      assert.equal((await post(gw.url('api', '/light'), dim)).status, 200);
      assert.deepEqual((await post(gw.url('api', '/light'), { ...dim, lumens: 1 })).body.errors, ['/lumens: must be >= 2']);
    });

    it('keeps the running contract when the document on disk breaks, and reports where', async () => {
      const before = await version();
      const reload = await gw.reconfigure(streetlightsWithMinimum(2).replace("  version: '1.0.0'\n", ''), 'streetlights.yaml');
      assert.equal(reload.msg, 'reload rejected; the running config keeps serving');
      assert.match(String(reload.diagnostic), /streetlights\.yaml:2:6: AsyncAPI: "info" property must have required property "version"$/);
      assert.equal(await version(), before);
      assert.deepEqual((await post(gw.url('api', '/light'), { ...dim, lumens: 1 })).body.errors, ['/lumens: must be >= 2']);
      // a fix (here: a new contract; the old one again would be 'unchanged', with no reload to log) is live again
      assert.equal((await gw.reconfigure(streetlightsWithMinimum(3), 'streetlights.yaml')).msg, 'config reloaded');
      assert.deepEqual((await post(gw.url('api', '/light'), { ...dim, lumens: 2 })).body.errors, ['/lumens: must be >= 3']);
    });

    it('GET /admin/asyncapi lists the documents in force, and ?file= returns one as it is', async () => {
      const res = await fetch(`${gw.adminUrl}/admin/asyncapi`, { headers: auth });
      assert.equal(res.status, 200);
      const body = await json(res);
      assert.equal(body.version, await version());
      assert.deepEqual(
        body.documents.map((d: any) => [d.file, d.asyncapi, d.title, d.content]),
        [
          ['streetlights.yaml', '2.6.0', 'Streetlights', streetlightsWithMinimum(3)],
          ['alerts.yaml', '3.0.0', 'Alerts', alerts],
        ],
      );
      assert.deepEqual(body.documents[1].messages, ['alert']);
      assert.deepEqual(body.documents[1].channels, ['alerts']);
      const one = await fetch(`${gw.adminUrl}/admin/asyncapi?file=alerts.yaml`, { headers: auth });
      assert.equal(one.headers.get('content-type'), 'application/yaml');
      assert.equal(await one.text(), alerts);
    });

    it("PUT needs the admin token, says which document when there are several, and knows only the config's documents", async () => {
      assert.equal((await put(alerts, '?file=alerts.yaml', {})).status, 401);
      const which = await put(alerts);
      assert.equal(which.status, 400);
      assert.equal((await json(which)).code, 'EG_ASYNCAPI_FILE_REQUIRED');
      const unknown = await put(alerts, '?file=other.yaml');
      assert.equal(unknown.status, 404);
      assert.match((await json(unknown)).detail, /'other\.yaml' is not one of the config's AsyncAPI documents: streetlights\.yaml, alerts\.yaml/);
      // ?file= twice (a script that appended it rather than replaced it) says two things: which one
      // is replaced is not for the gateway to guess. Nothing is written; the same name twice is one.
      const twice = await put(alerts.replace('Alerts', 'Alerts twice'), '?file=streetlights.yaml&file=alerts.yaml');
      assert.equal(twice.status, 400);
      assert.equal(twice.headers.get('content-type'), 'application/problem+json');
      assert.deepEqual([(await json(twice)).code, onDisk('streetlights.yaml'), onDisk('alerts.yaml')], ['EG_BAD_REQUEST', streetlightsWithMinimum(3), alerts]);
      assert.equal((await fetch(`${gw.adminUrl}/admin/asyncapi?file=alerts.yaml&file=streetlights.yaml`, { headers: auth })).status, 400);
      assert.equal(await (await fetch(`${gw.adminUrl}/admin/asyncapi?file=alerts.yaml&file=alerts.yaml`, { headers: auth })).text(), alerts);
    });

    it('PUT refuses a document that does not parse with 422 and its diagnostics, changing nothing', async () => {
      const before = await version();
      const res = await put('asyncapi: 3.0.0\ninfo: {title: Alerts}\nchannels: {alerts: [\n', '?file=alerts.yaml');
      assert.equal(res.status, 422);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      const body = await json(res);
      assert.equal(body.code, 'EG_ASYNCAPI_INVALID');
      assert.ok(body.diagnostics.length > 0);
      for (const d of body.diagnostics) assert.deepEqual([d.file, d.code], ['alerts.yaml', 'EG_CONFIG_ASYNCAPI']);
      assert.match(body.errors[0], /^alerts\.yaml:\d+:\d+: AsyncAPI: /);
      assert.equal(onDisk('alerts.yaml'), alerts);
      assert.equal(await version(), before);
      assert.equal((await post(gw.url('api', '/alert'), { level: 'info' })).status, 200);
    });

    it('PUT refuses with 409 a document that drops a message the config validates with, naming it at its line, changing nothing', async () => {
      const before = await version();
      const res = await put(streetlightsWithMinimum(3).replace(/lightMeasured/g, 'lightSeen'), '?file=streetlights.yaml');
      assert.equal(res.status, 409);
      const body = await json(res);
      assert.equal(body.code, 'EG_ASYNCAPI_CONFLICT');
      assert.deepEqual(
        body.diagnostics.map((d: any) => [d.file, d.line, d.code]),
        [['gateway.yaml', 14, 'EG_CONFIG_ASYNCAPI_REF']],
      );
      assert.match(body.errors[0], /^gateway\.yaml:14:29: AsyncAPI message 'lightMeasured' is not defined in the AsyncAPI documents/);
      assert.equal(onDisk('streetlights.yaml'), streetlightsWithMinimum(3));
      assert.equal(await version(), before);
      assert.equal((await post(gw.url('api', '/light'), dim)).status, 200);
    });

    it('PUT refuses a document over the size limit with 413', async () => {
      const res = await put(`${alerts}#${'x'.repeat(4 * 1024 * 1024)}\n`, '?file=alerts.yaml');
      assert.equal(res.status, 413);
      assert.equal(onDisk('alerts.yaml'), alerts);
    });

    it('PUT writes a valid document to its file, reloads, and answers the new config version', async () => {
      const before = await version();
      const from = gw.logs.length;
      const next = alerts.replace('enum: [info, warning]', 'enum: [info, warning, critical]');
      const res = await put(next, '?file=alerts.yaml');
      assert.equal(res.status, 200);
      const body = await json(res);
      assert.equal(body.result, 'applied');
      assert.equal(body.file, 'alerts.yaml');
      assert.notEqual(body.version, before);
      assert.equal(await version(), body.version);
      assert.equal(onDisk('alerts.yaml'), next);
      await gw.waitForLog((l) => l.msg === 'config reloaded', 5000, from);
      assert.equal((await post(gw.url('api', '/alert'), { level: 'critical' })).status, 200);
      // the same document again changes nothing
      const again = await put(next, '?file=alerts.yaml');
      assert.deepEqual(await json(again), { result: 'unchanged', version: body.version, file: 'alerts.yaml' });
    });
  });

  describe('the AsyncAPI parser thread of a running gateway', { concurrency: 1 }, () => {
    const alertRoute = (validate: string) => `version: 1
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: alert
    from: {listener: api, path: /alert}
    through:
      - validate: ${validate}
    to: {broker: local, topic: alerts}
`;
    const naming = `asyncapi: alerts.yaml\n${alertRoute('{channel: alerts}')}`;
    const kept = useGateway(naming, { files: { 'alerts.yaml': alerts } });
    const dropped = useGateway(naming, { files: { 'alerts.yaml': alerts } });

    it('stays while the config names a document, so its next edit parses warm (spec §6: live within 500 ms); goes once idle when a reload names none', async () => {
      // A thread's first parse takes about a second (loading the parser): one stopped after its idle
      // time (30 s, parser-thread.ts) made the next edit of a document live a second late.
      const reloaded = await dropped.reconfigure(alertRoute('{schema: {type: object, required: [level]}}'), 'gateway.yaml', { whole: true });
      assert.equal(reloaded.msg, 'config reloaded');
      const before = { kept: threads(kept.process.pid!), dropped: threads(dropped.process.pid!) };
      // Until the idle stop (30 s after this reload; the bound is for one that never comes): by then
      // the kept gateway's thread, idle since that gateway's start, before this reload, is past its idle time too.
      await eventually(() => assert.equal(threads(dropped.process.pid!), before.dropped - 1, 'the thread of a config that names no document stopped once idle'), 90_000, 250);
      assert.equal(threads(kept.process.pid!), before.kept, 'the thread of a config that names a document is still there');
      assert.equal((await kept.reconfigure(alerts.replace('enum: [info, warning]', 'enum: [info]'), 'alerts.yaml', { whole: true })).msg, 'config reloaded');
      assert.equal((await post(kept.url('api', '/alert'), { level: 'warning' })).status, 400);
    });
  });
});
