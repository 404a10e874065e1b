import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { post } from '../helpers/clients.js';
import { eventually, tempFiles } from '../helpers/gateway.js';
import { pipelineConfig, pipelineFixture, reloaded } from '../helpers/pipeline.js';

describe('hot reload (spec §6): following files', () => {
  const f = pipelineFixture();
  const connect = f.connect;
  const roundTrip = f.roundTrip;
  /** A schema that allows n up to `max`. */
  const schema = (max: number) => JSON.stringify({ type: 'object', properties: { n: { type: 'integer', maximum: max } } });
  /** For `gw` and its `client`: does `act`, waits for the reload it causes, and checks that `max` is the limit in force. */
  const limitApplied =
    (gw: Awaited<ReturnType<typeof f.gw.start>>, client: Awaited<ReturnType<typeof connect>>) =>
    async (max: number, act: () => void): Promise<void> => {
      const from = gw.logs.length;
      act();
      await gw.waitForLog(reloaded, 10000, from);
      assert.equal((await post(gw.url('api', '/in'), { n: max + 1 })).status, 400, `limit ${max}`);
      assert.deepEqual(await roundTrip(client, max), { n: max });
    };

  it('follows a file renamed over the config (as mv, sed -i and some editors write it), again and again', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    for (const v of [2, 3]) {
      const from = gw.logs.length;
      writeFileSync(join(gw.dir, '.gateway.yaml.tmp'), pipelineConfig(`{"v": ${v}}`));
      renameSync(join(gw.dir, '.gateway.yaml.tmp'), gw.configFile);
      await gw.waitForLog(reloaded, 10000, from);
      assert.deepEqual(await roundTrip(client, v), { v });
    }
  });

  it('follows a Kubernetes ConfigMap update (the ..data symlink swap), again and again', async () => {
    let generation = 1;
    const publish = (dir: string, yaml: string | undefined) => {
      // What the kubelet does: write a new timestamped directory, point ..data at it atomically, drop the old one.
      const name = `..2026_11_23_${generation}`;
      mkdirSync(join(dir, name));
      if (yaml !== undefined) writeFileSync(join(dir, name, 'gateway.yaml'), yaml);
      symlinkSync(name, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      if (generation > 1) rmSync(join(dir, `..2026_11_23_${generation - 1}`), { recursive: true });
      generation++;
    };
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'), {
      setup: (dir) => {
        publish(dir, undefined);
        symlinkSync('..data/gateway.yaml', join(dir, 'gateway.yaml'));
      },
      // Named as a pod's command names it, relative to its working directory (the last -c counts).
      args: ['-c', 'gateway.yaml'],
    });
    const client = await connect();
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    for (const v of [2, 3]) {
      const from = gw.logs.length;
      publish(gw.dir, pipelineConfig(`{"v": ${v}}`));
      await gw.waitForLog(reloaded, 10000, from);
      assert.deepEqual(await roundTrip(client, v), { v });
    }
    // A ConfigMap that no longer has the key: the link dangles. Said as the edit it is, without
    // the first start's advice to name the config with -c, which it was.
    const from = gw.logs.length;
    publish(gw.dir, undefined);
    const rejected = await gw.waitForLog((l) => l.msg === 'reload rejected; the running config keeps serving', 10000, from);
    assert.equal(rejected.diagnostic, 'gateway.yaml:1:1: cannot read config file: no such file (ENOENT)');
    assert.deepEqual(await roundTrip(client, 4), { v: 3 });
    const fixed = gw.logs.length;
    publish(gw.dir, pipelineConfig('{"v": 5}'));
    await gw.waitForLog(reloaded, 10000, fixed);
    assert.deepEqual(await roundTrip(client, 5), { v: 5 });
  });

  it('applies each edit on its own while another file in the config directory is written all the time (a log beside it)', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 0}'));
    const client = await connect();
    // As busy as a log the gateway's output is redirected to: its events are no change to the config.
    const busy = setInterval(() => appendFileSync(join(gw.dir, 'gateway.log'), 'a line\n'), 5);
    try {
      const from = gw.logs.length;
      // An edit every 600 ms, far apart for the debounce. While the neighbour's events restarted
      // the debounce, only its 1 s ceiling fired, and two of these edits were applied as one.
      for (let v = 1; v <= 4; v++) {
        gw.write('gateway.yaml', pipelineConfig(`{"v": ${v}}`));
        await delay(600);
      }
      await eventually(async () => assert.deepEqual(await roundTrip(client, 0), { v: 4 }));
      const reloads = gw.logs.slice(from).filter(reloaded);
      assert.equal(reloads.length, 4, `one reload per edit; got: ${JSON.stringify(reloads)}`);
    } finally {
      clearInterval(busy);
    }
  });

  it('reloads when a referenced schema file changes', async () => {
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    assert.equal((await post(gw.url('api', '/in'), { n: 50 })).status, 400);
    const line = await gw.reconfigure(schema(100), 'schemas/n.json');
    assert.equal(line.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
    assert.equal(client.closed, undefined);
  });

  // A directory of referenced files replaced as a whole (a deploy that syncs it, `git checkout`
  // of a branch that moved it, a symlink to the current release): the old watch sees nothing
  // more. Edits in the new directory used to go unnoticed until the gateway restarted. In the
  // config's own directory, and in one whose parent nothing else watches.
  for (const schemas of ['schemas', 'lib/schemas']) {
    it(`follows the directory ${schemas}/ of a referenced file when it is replaced, and edits inside it afterwards`, async () => {
      const gw = await f.gw.start(pipelineConfig('$', { schema: `${schemas}/n.json` }), { files: { [`${schemas}/n.json`]: schema(10) } });
      const client = await connect();
      const dir = join(gw.dir, schemas);
      const parent = dirname(dir);
      const applied = limitApplied(gw, client);
      const edit = (max: number) => applied(max, () => writeFileSync(join(dir, 'n.json'), schema(max)));
      await applied(20, () => {
        mkdirSync(join(parent, 'next'));
        writeFileSync(join(parent, 'next', 'n.json'), schema(20));
        renameSync(dir, join(parent, 'old'));
        renameSync(join(parent, 'next'), dir);
      });
      await edit(30);
      await applied(40, () => {
        rmSync(dir, { recursive: true });
        mkdirSync(dir);
        writeFileSync(join(dir, 'n.json'), schema(40));
      });
      await edit(50);
      // A symlink to a release directory, pointed at the next release.
      for (const [release, max] of [
        ['r1', 60],
        ['r2', 70],
      ] as const) {
        await applied(max, () => {
          mkdirSync(join(parent, release));
          writeFileSync(join(parent, release, 'n.json'), schema(max));
          symlinkSync(release, join(parent, 'link.tmp'));
          rmSync(dir, { recursive: true, force: true });
          renameSync(join(parent, 'link.tmp'), dir);
        });
        await applied(max + 5, () => writeFileSync(join(parent, release, 'n.json'), schema(max + 5)));
      }
      assert.equal(client.closed, undefined);
    });
  }

  // A config or schema that is a symlink into another directory (a schema shared between configs,
  // a config kept elsewhere and linked into place): edits of the target, in place or renamed over,
  // sent no event in the link's directory and went unnoticed until the gateway restarted.
  it('follows a config and a schema file that are symlinks into other directories: their targets edited in place, renamed over, and the link pointed elsewhere', async () => {
    const shared = tempFiles({ 'n.json': schema(10), 'gateway.yaml': '' });
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), {
      setup: (dir) => {
        mkdirSync(join(dir, 'schemas'));
        symlinkSync(join(shared, 'n.json'), join(dir, 'schemas', 'n.json'));
        // The config written by start() goes through this link into `shared`.
        symlinkSync(join(shared, 'gateway.yaml'), join(dir, 'gateway.yaml'));
      },
    });
    const client = await connect();
    const applied = limitApplied(gw, client);
    await applied(20, () => writeFileSync(join(shared, 'n.json'), schema(20)));
    await applied(30, () => {
      writeFileSync(join(shared, '.n.json.tmp'), schema(30));
      renameSync(join(shared, '.n.json.tmp'), join(shared, 'n.json'));
    });
    const elsewhere = tempFiles({ 'n.json': schema(40) });
    await applied(40, () => {
      symlinkSync(join(elsewhere, 'n.json'), join(gw.dir, 'schemas', 'link.tmp'));
      renameSync(join(gw.dir, 'schemas', 'link.tmp'), join(gw.dir, 'schemas', 'n.json'));
    });
    await applied(50, () => writeFileSync(join(elsewhere, 'n.json'), schema(50)));
    // The config's own target, edited in place: a transform that adds a field.
    const from = gw.logs.length;
    writeFileSync(join(shared, 'gateway.yaml'), pipelineConfig('$merge([$, {"edited": true}])', { schema: 'schemas/n.json' }));
    await gw.waitForLog(reloaded, 10000, from);
    assert.deepEqual(await roundTrip(client, 5), { n: 5, edited: true });
    assert.equal(client.closed, undefined);
  });

  // A deploy that deletes the file before writing its new version, or one that forgets it.
  it('rejects the reload a deleted schema file causes, naming it at the line that references it, keeps validating with the schema it had, and applies the file once it is back', async () => {
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    let from = gw.logs.length;
    rmSync(join(gw.dir, 'schemas/n.json'));
    const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10000, from);
    assert.equal(rejected.msg, 'reload rejected; the running config keeps serving');
    // The gateway runs on an absolute config path (-c /tmp/.../gateway.yaml): the file is named as written and where that led.
    assert.match(String(rejected.diagnostic), /gateway\.yaml:11:29: cannot read 'schemas\/n\.json' \(\/.*\/schemas\/n\.json\): no such file \(ENOENT\)$/);
    assert.equal((await post(gw.url('api', '/in'), { n: 11 })).status, 400, 'the schema in force still applies');
    assert.deepEqual(await roundTrip(client, 10), { n: 10 });
    const status = await gw.status();
    assert.match(JSON.stringify(status), /cannot read 'schemas\/n\.json'/);

    from = gw.logs.length;
    writeFileSync(join(gw.dir, 'schemas/n.json'), schema(100));
    await gw.waitForLog(reloaded, 10000, from);
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
    assert.equal(client.closed, undefined);
  });

  // A named pipe nobody writes (or a device) in place of a file the config names: reading it would
  // hold the gateway's thread for good, its /healthz and every route with it.
  it('refuses the reload of a schema file replaced by a named pipe, without reading the pipe, and keeps serving', async () => {
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    let from = gw.logs.length;
    execFileSync('mkfifo', [join(gw.dir, 'schemas/pipe')]);
    renameSync(join(gw.dir, 'schemas/pipe'), join(gw.dir, 'schemas/n.json'));
    const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10000, from);
    assert.match(
      String(rejected.diagnostic),
      /gateway\.yaml:11:29: cannot read 'schemas\/n\.json' \(\/.*\/schemas\/n\.json\): 'n\.json' is not a regular file \(a named pipe: reading it could block or never end\)$/,
    );
    assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200);
    assert.equal((await post(gw.url('api', '/in'), { n: 11 })).status, 400, 'the schema in force still applies');
    assert.deepEqual(await roundTrip(client, 10), { n: 10 });

    from = gw.logs.length;
    rmSync(join(gw.dir, 'schemas/n.json'));
    writeFileSync(join(gw.dir, 'schemas/n.json'), schema(100));
    await gw.waitForLog(reloaded, 10000, from);
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
  });

  // The watcher reads a file as the reload does (one descriptor, at most 16 MiB): grown past that,
  // it is told apart by its stat, never read whole on the thread that serves traffic.
  it('refuses the reload of a schema file grown past 16 MiB, says why, and keeps serving', async () => {
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    let from = gw.logs.length;
    const text = schema(100);
    appendFileSync(join(gw.dir, 'schemas/n.json'), ' '.repeat(16 * 1024 * 1024 + 1 - schema(10).length));
    const rejected = await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 10000, from);
    // The watcher may fire while the 16 MiB append is still being written: the size the read's
    // fstat saw was then under the limit, and the read itself stops at the first byte past it.
    assert.match(
      String(rejected.diagnostic),
      /gateway\.yaml:11:29: cannot read 'schemas\/n\.json' \(\/.*\/schemas\/n\.json\): 'n\.json' has (16777217|more than 16777216) bytes; at most 16777216 are accepted$/,
    );
    assert.equal((await fetch(`${gw.adminUrl}/healthz`)).status, 200);
    assert.equal((await post(gw.url('api', '/in'), { n: 11 })).status, 400, 'the schema in force still applies');
    assert.deepEqual(await roundTrip(client, 10), { n: 10 });

    from = gw.logs.length;
    writeFileSync(join(gw.dir, 'schemas/n.json.next'), text);
    renameSync(join(gw.dir, 'schemas/n.json.next'), join(gw.dir, 'schemas/n.json'));
    await gw.waitForLog(reloaded, 10000, from);
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
  });

  it('reports a broken schema file with its own file:line:col and keeps serving', async () => {
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': '{"type": "object"}' } });
    const client = await connect();
    const line = await gw.reconfigure('{"type": "object",\n "properties": {"n": {"type": "number", "minimum": "0"}}}', 'schemas/n.json');
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), /schemas\/n\.json:2:52: invalid JSON Schema at properties\.n\.minimum/);
    assert.deepEqual(await roundTrip(client, 1), { n: 1 });
  });
});
