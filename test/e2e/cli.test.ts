import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot, runCli, tempFiles, useGateway } from '../helpers/gateway.js';

async function exitCode(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const [code] = (await once(child, 'exit')) as [number | null];
  return code;
}

describe('eventgate run: a first load that fails (spec §1)', () => {
  const gw = useGateway();

  it('exits 1 and prints every problem as FILE:LINE:COL on stderr', async () => {
    await gw.start('version: 1\nlisteners:\n  api: { kind: http, prot: 0 }\n', { waitReady: false });
    assert.equal(await exitCode(gw.process), 1);
    assert.match(gw.stderr(), /gateway\.yaml:3:22: unknown key 'prot' in listeners\.api \(did you mean 'port'\?\)/);
    assert.doesNotMatch(gw.stderr(), /\n\s+at /, 'no stack trace');
  });

  it('exits 1 with the reason when a port is taken', async () => {
    const holder = createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const port = (holder.address() as { port: number }).port;
    try {
      await gw.start(`version: 1\nlisteners:\n  api: { kind: http, port: ${port}, host: 127.0.0.1 }\n`, { waitReady: false });
      assert.equal(await exitCode(gw.process), 1);
      assert.match(gw.stderr(), /EADDRINUSE/);
    } finally {
      holder.close();
    }
  });

  it('exits 1 when the config file does not exist', async () => {
    const dir = tempFiles({});
    const r = await runCli(['run', '-c', 'missing.yaml'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.yaml:1:1: cannot read config file: no such file \(ENOENT\)/);
  });
});

describe('eventgate: other commands', () => {
  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `eventgate ${version}\n`);
  });

  it('an unknown command or option exits 2 with the usage', async () => {
    const unknown = await runCli(['serve']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command 'serve'[\s\S]*usage:/);
    const option = await runCli(['validate', '--bogus']);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /usage:/);
    const format = await runCli(['validate', '--format', 'xml']);
    assert.equal(format.code, 2);
  });
});
