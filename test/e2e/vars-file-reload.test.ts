import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

/**
 * `eventgate run --vars-file FILE`: the file was read once, at start. An edit of it (a rotated
 * secret, a topic moved) was neither noticed nor read by a reload: SIGHUP and `POST /admin/reload`
 * said "config unchanged", and only a restart took it. Spec §1 has `run` watch the files its
 * config comes from and SIGHUP reload them; the vars files are now read at every reload and watched.
 */
describe('run --vars-file: the file is read at every reload and watched', () => {
  const gw = useGateway(
    `version: 1
admin: { port: 0 }
brokers: { local: { kind: memory } }
listeners: { api: { kind: http, port: 0, host: 127.0.0.1 } }
routes:
  - name: in
    from: { listener: api, path: "\${IN_PATH:-/default}" }
    to: { broker: local, topic: t }
`,
    { files: { 'vars.env': 'IN_PATH=/one\n' }, args: ['--vars-file', 'vars.env'] },
  );

  it('an edit is live, an unreadable or emptied file is a rejected reload that says why, and the fix is live again', async () => {
    assert.equal((await post(gw.url('api', '/one'), { n: 1 })).status, 200);

    const edited = await gw.reconfigure('IN_PATH=/two\n', 'vars.env', { whole: true });
    assert.equal(edited.msg, 'config reloaded', JSON.stringify(edited));
    assert.equal((await post(gw.url('api', '/two'), { n: 2 })).status, 200);
    assert.equal((await post(gw.url('api', '/one'), { n: 3 })).status, 404);

    const from = gw.logs.length;
    rmSync(join(gw.dir, 'vars.env'));
    const rejected = await gw.waitForLog((l) => l.msg === 'reload rejected; the running config keeps serving', 10000, from);
    assert.equal(rejected.diagnostic, "vars.env:1:1: cannot read --vars-file 'vars.env': no such file (ENOENT)");
    assert.equal((await gw.status()).lastReloadError.diagnostics[0].code, 'EG_CONFIG_FILE');
    assert.equal((await post(gw.url('api', '/two'), { n: 4 })).status, 200, 'the running config serves on');

    // A line that is no NAME=value is reported where it is (it was at vars.env:1:1, followed by its own place).
    const broken = await gw.reconfigure('# set by CI\nIN_PATH=/two\nRETAIN 10\n', 'vars.env', { whole: true });
    assert.equal(broken.diagnostic, 'vars.env:3:1: expected NAME=value (or a # comment); a value with spaces is written NAME="a value"');
    const [at] = (await gw.status()).lastReloadError.diagnostics;
    assert.deepEqual([at.line, at.column], [3, 1]);

    const fixed = await gw.reconfigure('IN_PATH=/three\n', 'vars.env', { whole: true });
    assert.equal(fixed.msg, 'config reloaded', JSON.stringify(fixed));
    assert.equal((await post(gw.url('api', '/three'), { n: 5 })).status, 200);

    // Emptied, as a write in place does before it writes: it was read as a file without variables,
    // and the reload moved the route to the default path until the write came.
    const emptied = await gw.reconfigure('', 'vars.env');
    assert.equal(emptied.diagnostic, 'vars.env:1:1: the file is empty; give one with no variables yet a # comment line');
    assert.equal((await post(gw.url('api', '/three'), { n: 6 })).status, 200);
    assert.equal((await post(gw.url('api', '/default'), { n: 7 })).status, 404);
    assert.equal((await gw.reconfigure('# nothing to set here\n', 'vars.env')).msg, 'config reloaded');
    assert.equal((await post(gw.url('api', '/default'), { n: 8 })).status, 200);
  });
});
