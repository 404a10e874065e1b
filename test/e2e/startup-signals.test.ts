import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { cliPath, eventually, tempFiles } from '../helpers/gateway.js';

const config = `version: 1
admin: { port: 0 }
brokers: { local: { kind: memory } }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: t }
`;

/** `eventgate run` whose main module is held back (helpers/hold-cli-load.ts) until release(). */
async function startHeld(dir: string, name: string) {
  const held = join(dir, `${name}.held`);
  const go = join(dir, `${name}.go`);
  const child = spawn(process.execPath, ['--import', new URL('../helpers/hold-cli-load.js', import.meta.url).href, cliPath, 'run', '-c', 'gateway.yaml'], {
    cwd: dir,
    env: { ...process.env, EVENTGATE_TEST_HELD: held, EVENTGATE_TEST_RELEASE: go },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  await eventually(() => assert.ok(existsSync(held), 'the CLI reached its main module'), 20000);
  const logs = () =>
    stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; reason?: string });
  return { child, exited, logs, release: () => writeFileSync(go, '') };
}

describe('signals while eventgate run starts (spec §1)', () => {
  it('reloads on a SIGHUP that arrives while the CLI loads, instead of dying of it', async () => {
    const g = await startHeld(tempFiles({ 'gateway.yaml': config }), 'hup');
    g.child.kill('SIGHUP');
    g.release();
    // Before, SIGHUP's default action ended the process: exit by signal SIGHUP, no log.
    await eventually(
      () =>
        assert.ok(
          g.logs().some((l) => l.reason === 'SIGHUP' && l.msg === 'config unchanged'),
          JSON.stringify(g.logs()),
        ),
      20000,
    );
    g.child.kill('SIGTERM');
    assert.deepEqual(await g.exited, [0, null]);
  });

  it('drains and exits 0 on a SIGTERM that arrives while the CLI loads, starting nothing', async () => {
    const g = await startHeld(tempFiles({ 'gateway.yaml': config }), 'term');
    g.child.kill('SIGTERM');
    g.release();
    // Before: killed by the signal (143); then, once caught, the config was applied after the shutdown.
    assert.deepEqual(await g.exited, [0, null]);
    const msgs = g.logs().map((l) => l.msg);
    assert.ok(!msgs.includes('gateway ready'), `nothing was started: ${msgs.join(' | ')}`);
    assert.equal(msgs.at(-1), 'shutdown complete');
  });
});
