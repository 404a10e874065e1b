import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { bundled } from '../../src/core/bundled.js';
import { repoRoot } from '../helpers/gateway.js';

const vendor = join(repoRoot, 'dist', 'src', 'vendor');
const bundles = readdirSync(vendor).filter((name) => name.endsWith('.cjs'));

/**
 * Whether V8 takes each bundle's code cache (src/core/bundled.ts, written by `npm run build`) in a
 * process holding `command`'s start-up flags, as bin/eventgate.js starts one (holding changes V8's
 * flags, hence a process of its own).
 */
function cachesTaken(command: string): Record<string, string> {
  const script = `
    import { readFileSync } from 'node:fs';
    import { Script } from 'node:vm';
    const { holdWhileStarting } = await import(${JSON.stringify(join(repoRoot, 'dist', 'src', 'cli', 'startup-hold.js'))});
    holdWhileStarting([${JSON.stringify(command)}]);
    const seen = {};
    for (const name of ${JSON.stringify(bundles)}) {
      const file = ${JSON.stringify(vendor)} + '/' + name;
      const source = '(function (exports, require, module, __filename, __dirname) {' + readFileSync(file, 'utf8') + '\\n})';
      seen[name] = new Script(source, { filename: file, cachedData: readFileSync(file + '.v8-cache') }).cachedDataRejected ? 'rejected' : 'taken';
    }
    process.stdout.write(JSON.stringify(seen));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe("the bundled dependencies' code caches", () => {
  it('exist for the six bundles', () => {
    assert.deepEqual(bundles, ['ajv.cjs', 'find-my-way.cjs', 'prom-client.cjs', 'sinclair-typebox.cjs', 'ws.cjs', 'yaml.cjs']);
  });

  for (const command of ['run', 'validate']) {
    it(`are taken by ${command}`, () => {
      assert.deepEqual(cachesTaken(command), Object.fromEntries(bundles.map((name) => [name, 'taken'])));
    });
  }

  it('are rejected without the held flags (so the check above can tell)', () => {
    assert.deepEqual(cachesTaken('schema'), Object.fromEntries(bundles.map((name) => [name, 'rejected'])));
  });

  it('are not kept in memory once a bundle is loaded', () => {
    const before = process.memoryUsage().arrayBuffers;
    const { Ajv } = bundled<{ Ajv: unknown }>('ajv');
    const kept = process.memoryUsage().arrayBuffers - before;
    assert.equal(typeof Ajv, 'function');
    assert.ok(kept < 64 * 1024, `${kept} bytes of array buffers still held after loading ajv's bundle (its cache has ~320 KB)`);
  });
});
