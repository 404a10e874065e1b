import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/gateway.js';

/**
 * V8 takes the config validator's code cache (written by `npm run build`) only under the flags it
 * was made with, those `run` holds while starting (src/cli/startup-hold.ts). The short commands
 * hold them too: without the cache each call compiles ~700 KB of source (~0.15 s of CPU). Checked
 * in a process of its own, as bin/eventgate.js starts one, since holding changes V8's flags.
 */
function cacheTaken(command: string): string {
  const dist = join(repoRoot, 'dist', 'src');
  const script = `
    import { readFileSync } from 'node:fs';
    import { Script } from 'node:vm';
    const { holdWhileStarting } = await import(${JSON.stringify(join(dist, 'cli', 'startup-hold.js'))});
    holdWhileStarting([${JSON.stringify(command)}]);
    const file = ${JSON.stringify(join(dist, 'config', 'config-validator.generated.cjs'))};
    const source = '(function (exports, require, module, __filename, __dirname) {' + readFileSync(file, 'utf8') + '\\n})';
    const script = new Script(source, { filename: file, cachedData: readFileSync(file + '.v8-cache') });
    process.stdout.write(script.cachedDataRejected ? 'rejected' : 'taken');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

describe("the config validator's code cache", () => {
  for (const command of ['run', 'validate', 'test', 'plan', 'export']) {
    it(`is taken by ${command}`, () => {
      assert.equal(cacheTaken(command), 'taken');
    });
  }

  it('is rejected without the held flags (so the check above can tell)', () => {
    assert.equal(cacheTaken('schema'), 'rejected');
  });
});
