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
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  await eventually(() => assert.ok(existsSync(held), 'the CLI reached its main module'), 20000);
  const logs = () =>
    stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; reason?: string; signal?: string; listeners?: Record<string, number> });
  return { child, exited, logs, stderr: () => stderr, release: () => writeFileSync(go, '') };
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

  it('keeps the node inspector closed on SIGUSR1, while it loads and once it runs, and goes on serving', async () => {
    const g = await startHeld(tempFiles({ 'gateway.yaml': config }), 'usr1');
    g.child.kill('SIGUSR1');
    g.release();
    const ready = await eventually(() => {
      const line = g.logs().find((l) => l.msg === 'gateway ready');
      assert.ok(line, JSON.stringify(g.logs()));
      return line;
    }, 20000);
    g.child.kill('SIGUSR1');
    const ignored = (l: { msg: string; signal?: string }) => l.signal === 'SIGUSR1' && l.msg.startsWith('signal ignored');
    await eventually(() => assert.equal(g.logs().filter(ignored).length, 2, JSON.stringify(g.logs())), 20000);
    // Before: node's own answer, "Debugger listening on ws://127.0.0.1:9229/..." on stderr and
    // that port open to any local process.
    assert.doesNotMatch(g.stderr(), /Debugger listening/);
    const res = await fetch(`http://127.0.0.1:${ready.listeners!.api}/in`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"a":1}' });
    assert.equal(res.status, 200);
    g.child.kill('SIGTERM');
    assert.deepEqual(await g.exited, [0, null]);
  });
});
