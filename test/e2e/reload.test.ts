import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { eventually } from '../helpers/gateway.js';
import { pipelineConfig, pipelineFixture, reloaded } from '../helpers/pipeline.js';
import { fetch } from '../helpers/http.js';

describe('hot reload (spec §6): config changes', () => {
  const f = pipelineFixture();
  const connect = f.connect;
  const roundTrip = f.roundTrip;

  it('applies a changed transform, and a websocket client stays connected and keeps receiving', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1, "n": n}'));
    const client = await connect();
    assert.deepEqual(await roundTrip(client, 1), { v: 1, n: 1 });
    const line = await gw.reconfigure(pipelineConfig('{"v": 2, "n": n}'));
    assert.equal(line.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 2), { v: 2, n: 2 });
    assert.equal(client.closed, undefined, 'the client was not disconnected');
    const status = await gw.status();
    assert.equal(status.listeners.find((l: { name: string }) => l.name === 'push').clients, 1);
  });

  it('keeps the old config when the new file is broken, logs file:line:col and reports it in /admin/status; a fix recovers', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    const versionBefore = (await gw.status()).version;
    const broken = pipelineConfig('{"v": 2').replace('routes:', 'routes:\n  - name: [oops');
    const line = await gw.reconfigure(broken);
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), new RegExp(`^${gw.configFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: YAML syntax error`));
    // Still the old pipeline, and the client is still there.
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    const status = await gw.status();
    assert.equal(status.version, versionBefore);
    assert.equal(status.lastReloadError.diagnostics[0].code, 'EG_CONFIG_SYNTAX');
    assert.equal(status.lastReloadError.diagnostics[0].file, gw.configFile);
    assert.equal(typeof status.lastReloadError.diagnostics[0].line, 'number');
    assert.equal(typeof status.lastReloadError.diagnostics[0].column, 'number');

    // A `${VAR}` quoted inside a flow map is fine YAML: the error on its line is another, and the
    // log does not tell the operator to quote what is quoted (it did, for any `${` after a `{`).
    const quoted = await gw.reconfigure(pipelineConfig('{"v": 2}').replace('routes:', 'routes:\n  - {name: "${R:-r}", from: ]}'));
    assert.equal(quoted.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(quoted.diagnostic), /gateway\.yaml:8:29: YAML syntax error: [^(]*$/);

    const fixed = await gw.reconfigure(pipelineConfig('{"v": 3}'));
    assert.equal(fixed.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 2), { v: 3 });
    const after = await gw.status();
    assert.equal(after.lastReloadError, null);
    assert.notEqual(after.version, versionBefore);
  });

  it('rejects a new config with a list as a key, or lists nested past the parser, at their line, with no process warning; the old one keeps serving', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    const keyed = await gw.reconfigure(`${pipelineConfig('{"v": 2}')}? [a]\n: 1\n`);
    assert.equal(keyed.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(keyed.diagnostic), /gateway\.yaml:(?!1:1:)\d+:3: YAML error: this key is a list, not a name/);
    const deep = await gw.reconfigure(`${pipelineConfig('{"v": 3}')}x: ${'['.repeat(5000)}${']'.repeat(5000)}\n`);
    assert.equal(deep.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(deep.diagnostic), /gateway\.yaml:\d+:\d+: YAML error: the lists and maps here nest too deeply to be read/);
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    assert.doesNotMatch(gw.stderr(), /Warning|mapAsMap/);
  });

  it('rejects a new config whose JSON Schema has a `$schema` that is not a string, at it (the reload used to end in an unhandled rejection), and a fix applies', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    const line = await gw.reconfigure(pipelineConfig('{"v": 2}', { schema: '{ $schema: 1, type: object }' }));
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), /gateway\.yaml:\d+:\d+: invalid JSON Schema at \$schema: '\$schema' must be a string/);
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    assert.equal((await gw.reconfigure(pipelineConfig('{"v": 3}', { schema: '{ type: object }' }))).msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 2), { v: 3 });
    assert.equal(gw.logs.filter((l) => /unhandled|uncaught/.test(l.msg)).length, 0);
  });

  it('rejects a new config whose YAML alias sits inside its own anchor (a cycle), and reports it in /admin/status', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    // `*in` inside the route `&in` names: before, the reload died with an unhandled stack overflow and status said nothing.
    const cyclic = pipelineConfig('{"v": 2}').replace('  - name: in', '  - &in\n    name: in\n    again: *in');
    const line = await gw.reconfigure(cyclic);
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), /gateway\.yaml:\d+:\d+: YAML error: alias \*in is inside the node its anchor &in names/);
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    assert.equal((await gw.status()).lastReloadError.diagnostics[0].code, 'EG_CONFIG_SYNTAX');
  });

  it('keeps the old config when the new one is valid YAML but wrong, pointing at the mistake', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    const line = await gw.reconfigure(pipelineConfig('{"v": 2'));
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    // Line 11 is `      - transform: '{"v": 2'`; the expression ends unclosed at its last character.
    assert.match(String(line.diagnostic), /gateway\.yaml:11:27: JSONata expression does not compile: Expected "}" before end of expression/);
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });

    // POST /admin/reload refuses it as every eventgate error is answered, with the diagnostics.
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    assert.equal(res.status, 422);
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    const body = (await res.json()) as { type: string; code: string; status: number; result: string; errors: string[]; diagnostics: { line: number; column: number }[] };
    assert.equal(body.type, 'urn:eventgate:problem:EG_RELOAD_REJECTED');
    assert.equal(body.status, 422);
    assert.equal(body.result, 'rejected');
    assert.match(body.errors[0]!, /gateway\.yaml:11:27: JSONata expression does not compile/);
    assert.deepEqual([body.diagnostics[0]!.line, body.diagnostics[0]!.column], [11, 27]);
    assert.match((await gw.status()).lastReloadError.diagnostics[0].message, /JSONata/);
  });

  it('settles on the last of rapid successive edits', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 0}'));
    const client = await connect();
    for (let v = 1; v <= 12; v++) gw.write('gateway.yaml', pipelineConfig(`{"v": ${v}}`));
    await eventually(async () => assert.deepEqual(await roundTrip(client, 0), { v: 12 }), 5000);
    // And it stays there: no late reload of an intermediate version.
    await gw.waitForLog(reloaded);
    assert.deepEqual(await roundTrip(client, 0), { v: 12 });
    assert.equal((await gw.status()).lastReloadError, null);
  });

  it('reloads during a stream of edits, not only once it stops, and serves the last edit', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 0}'));
    const client = await connect();
    const from = gw.logs.length;
    // An edit every 40 ms for 4 s, each renamed over the config (a write in place could be read
    // half done, and that reload rejected): the debounce alone would wait until the stream stops.
    let v = 0;
    const started = Date.now();
    while (Date.now() - started < 4000) {
      v++;
      gw.write('.gateway.yaml.tmp', pipelineConfig(`{"v": ${v}}`));
      renameSync(join(gw.dir, '.gateway.yaml.tmp'), gw.configFile);
      await delay(40);
    }
    const during = gw.logs.slice(from).filter(reloaded);
    assert.ok(during.length >= 2, `reloads applied while edits kept coming: ${during.length}`);
    assert.ok(
      gw.logs.slice(from).every((l) => !l.msg.startsWith('reload rejected')),
      'every reload read a whole file',
    );
    await eventually(async () => assert.deepEqual(await roundTrip(client, 0), { v }), 5000);
    assert.equal((await gw.status()).lastReloadError, null);
  });

  it('reloads on SIGHUP and on POST /admin/reload', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    let from = gw.logs.length;
    gw.process.kill('SIGHUP');
    const hup = await gw.waitForLog((l) => l.reason === 'SIGHUP' && (l.msg === 'config unchanged' || l.msg === 'config reloaded'), 10000, from);
    assert.equal(hup.msg, 'config unchanged');
    from = gw.logs.length;
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { result: string }).result, 'unchanged');
    await gw.waitForLog((l) => l.reason === 'admin API' && l.msg === 'config unchanged', 10000, from);
  });

  it('refuses POST /admin/reload with query parameters (a dry run it would not make), reloading nothing', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const from = gw.logs.length;
    const res = await fetch(`${gw.adminUrl}/admin/reload?dryRun=true&dryRun=1`, { method: 'POST' });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { code: string; detail: string };
    assert.equal(body.code, 'EG_BAD_REQUEST');
    assert.match(body.detail, /takes no query parameters \(\?dryRun=\): it always reloads; `eventgate plan -c FILE --admin URL`/);
    // The next reload is the first the admin API made.
    assert.equal((await fetch(`${gw.adminUrl}/admin/reload?`, { method: 'POST' })).status, 200);
    await gw.waitForLog((l) => l.reason === 'admin API' && l.msg === 'config unchanged', 10000, from);
    assert.equal(gw.logs.slice(from).filter((l) => l.reason === 'admin API').length, 1);
  });
});
