import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { post } from '../helpers/clients.js';
import { eventually } from '../helpers/gateway.js';
import { pipelineConfig, pipelineFixture, reloaded } from '../helpers/pipeline.js';

describe('hot reload (spec §6): following files', () => {
  const f = pipelineFixture();
  const connect = f.connect;
  const roundTrip = f.roundTrip;

  it('follows a file renamed over the config (as editors and git checkout write it), again and again', async () => {
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
    });
    const client = await connect();
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    for (const v of [2, 3]) {
      const from = gw.logs.length;
      publish(gw.dir, pipelineConfig(`{"v": ${v}}`));
      await gw.waitForLog(reloaded, 10000, from);
      assert.deepEqual(await roundTrip(client, v), { v });
    }
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
    const schema = (max: number) => JSON.stringify({ type: 'object', properties: { n: { type: 'integer', maximum: max } } });
    const gw = await f.gw.start(pipelineConfig('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    assert.equal((await post(gw.url('api', '/in'), { n: 50 })).status, 400);
    const line = await gw.reconfigure(schema(100), 'schemas/n.json');
    assert.equal(line.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
    assert.equal(client.closed, undefined);
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
