import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { eventually, repoRoot, tempFiles } from '../helpers/gateway.js';
import { killOnExit } from '../helpers/reaper.js';

/** The processes under `pid`, its children first, from the kernel's process table. */
function descendants(pid: number): number[] {
  let children: number[];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return children.flatMap((c) => [c, ...descendants(c)]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * `npm start` as the README has it, in a copy of the repository's package.json beside a copy of
 * the example config (its ports set to 0 through the variables it reads); `bin` links to the
 * repository's, whose launcher finds the build there.
 */
async function npmStart() {
  const dir = tempFiles({ 'package.json': readFileSync(join(repoRoot, 'package.json'), 'utf8') });
  cpSync(join(repoRoot, 'examples', 'gateway.yaml'), join(dir, 'examples', 'gateway.yaml'));
  cpSync(join(repoRoot, 'examples', 'schemas'), join(dir, 'examples', 'schemas'), { recursive: true });
  symlinkSync(join(repoRoot, 'bin'), join(dir, 'bin'));
  const npm = spawn('npm', ['start'], {
    cwd: dir,
    env: { ...process.env, ADMIN_PORT: '0', HTTP_PORT: '0', WS_PORT: '0', npm_config_update_notifier: 'false' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  npm.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  npm.stderr.resume();
  const exited = once(npm, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const logs = () =>
    stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
  await eventually(() => assert.ok(logs().includes('gateway ready'), stdout), 30000);
  const gateway = descendants(npm.pid!).find((pid) => /eventgate\.js\0run/.test(readFileSync(`/proc/${pid}/cmdline`, 'utf8')));
  assert.ok(gateway, 'the gateway runs under npm');
  killOnExit(() => process.kill(gateway, 'SIGKILL'));
  return { npm, gateway, exited, logs };
}

describe('npm start (README)', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`ends the gateway, drained, on a ${signal} to npm's own process`, async () => {
      const { npm, gateway, exited, logs } = await npmStart();
      const started = [npm.pid!, ...descendants(npm.pid!)];
      try {
        npm.kill(signal);
        // A bound on a hang, not on speed: a signal that never reached the gateway left npm waiting for it.
        // Unref'd: a held timer kept this file's process 30 s past its tests (npm's child keeps it alive while waiting).
        const [code] = await Promise.race([exited, delay(30000, undefined, { ref: false }).then(() => assert.fail(`npm start did not exit within 30 s of ${signal}: ${logs().join(' | ')}`))]);
        // npm exits once its child did: the gateway is gone by then. Before, npm passed the signal to
        // the shell running the script, which died of it and left the gateway running, orphaned.
        assert.equal(alive(gateway), false, `the gateway (pid ${gateway}) still runs after npm exited`);
        assert.equal(code, 0);
        assert.deepEqual(logs().slice(-3), ['signal received', 'shutting down: draining', 'shutdown complete']);
      } finally {
        // What is left of a failed run: an orphaned gateway holds npm's stdout pipe open, which would keep this file running.
        for (const pid of started) if (alive(pid)) process.kill(pid, 'SIGKILL');
      }
    });
  }
});
