import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCliInProcess } from '../helpers/cli.js';
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

  it('says why on stdout too, as a JSON error line, whatever made the first load fail', async () => {
    const holder = createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const taken = (holder.address() as { port: number }).port;
    const config = (listener: string) =>
      `version: 1\nbrokers:\n  mem: { kind: memory }\nlisteners:\n  api:\n${listener}\nroutes:\n  - name: r\n    from: { listener: api, path: /p }\n    through: [ { validate: { schema: schema.json } } ]\n    to: { broker: mem, topic: t }\n`;
    const cases = [
      { name: 'YAML syntax', file: config('    kind: http\n    port: [0'), reason: /gateway\.yaml:\d+:\d+: YAML syntax error/ },
      { name: 'schema', file: config('    kind: htp\n    port: 0'), reason: /gateway\.yaml:6:11: unknown listener kind "htp"/ },
      { name: 'missing referenced file', file: config('    kind: http\n    port: 0').replace('schema.json', 'missing.json'), reason: /gateway\.yaml:11:38: cannot read 'missing\.json'/ },
      { name: 'unknown ${VAR}', file: config('    kind: http\n    port: ${NO_SUCH_PORT}'), reason: /gateway\.yaml:7:11: environment variable 'NO_SUCH_PORT' is not set/ },
      // A socket that cannot bind: at the key to change, its `port:`, or its `host:` when that is not this machine's.
      {
        name: 'port in use',
        file: config(`    kind: http\n    host: 127.0.0.1\n    port: ${taken}`),
        reason: new RegExp(`gateway\\.yaml:8:5: could not start listener 'api': cannot bind 127\\.0\\.0\\.1:${taken}: the port is already in use`),
        started: true,
      },
      {
        name: 'websocket port in use',
        file: config(`    kind: websocket\n    host: 127.0.0.1\n    port: ${taken}`),
        reason: new RegExp(`gateway\\.yaml:8:5: could not start listener 'api': cannot bind 127\\.0\\.0\\.1:${taken}: the port is already in use`),
        started: true,
      },
      {
        name: 'host not of this machine',
        file: config('    kind: http\n    host: 192.0.2.1\n    port: 0'),
        reason: /gateway\.yaml:7:5: could not start listener 'api': cannot bind 192\.0\.2\.1:0: the host is not an address of this machine \(EADDRNOTAVAIL\)/,
        started: true,
      },
    ];
    try {
      for (const c of cases) {
        const dir = tempFiles({ 'gateway.yaml': c.file, 'schema.json': '{"type":"object"}' });
        const r = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
        assert.equal(r.code, 1, c.name);
        assert.match(r.stderr, c.reason, c.name);
        assert.doesNotMatch(r.stderr, /\n\s+at /, `${c.name}: no stack trace`);
        // An operator reads the JSON log (stdout), not stderr: it must say the same.
        const lines = r.stdout
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as { level: string; msg: string; diagnostic?: string; error?: string });
        const errors = lines.filter((l) => l.level === 'error');
        assert.ok(
          errors.some((l) => c.reason.test(l.diagnostic ?? l.error ?? '')),
          `${c.name}: the log says why the gateway did not start:\n${r.stdout}`,
        );
        // An invalid config started nothing: no drain (of drainTimeoutMs) to announce.
        if (!c.started) assert.ok(!lines.some((l) => l.msg === 'shutting down: draining'), `${c.name}: nothing to drain:\n${r.stdout}`);
      }
    } finally {
      holder.close();
    }
  });

  it("names the config file whole in the log's `could not start FILE` where its directory is named like a variable's value", async () => {
    const holder = createServer().listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const taken = (holder.address() as { port: number }).port;
    try {
      const dir = tempFiles({
        'production/gateway.yaml': `version: 1\nbrokers:\n  mem: { kind: memory }\nlisteners:\n  api: { kind: http, host: 127.0.0.1, port: ${taken} }\nroutes:\n  - name: r\n    from: { listener: api, path: /p }\n    to: { broker: mem, topic: "\${STAGE}" }\n`,
      });
      const r = await runCli(['run', '-c', 'production/gateway.yaml'], { cwd: dir, env: { STAGE: 'production' } });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const failed = r.stdout
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as { msg: string; error?: string })
        .find((l) => l.msg === 'gateway could not start');
      assert.equal(
        failed?.error,
        `could not start production/gateway.yaml: listener 'api': cannot bind 127.0.0.1:${taken}: the port is already in use (another process, or another eventgate) (EADDRINUSE)`,
        r.stdout,
      );
    } finally {
      holder.close();
    }
  });

  it('exits 1 when the config file does not exist', async () => {
    const dir = tempFiles({});
    const r = await runCli(['run', '-c', 'missing.yaml'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /missing\.yaml:1:1: cannot read config file: no such file \(ENOENT\)/);
    // Logged as what it is, as `validate` and `test` say it: a file that cannot be read, not an invalid config (2108).
    const logged = r.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: string; msg: string; diagnostic?: string });
    assert.deepEqual(
      logged.filter((l) => l.level === 'error').map((l) => [l.msg, l.diagnostic]),
      [['cannot read the config file', 'missing.yaml:1:1: cannot read config file: no such file (ENOENT)']],
    );
    // Without -c, in a directory without ./gateway.yaml (a newcomer's `npx eventgate run`): how to name one.
    const unnamed = await runCli(['validate'], { cwd: dir });
    assert.equal(unnamed.code, 1);
    assert.match(unnamed.stdout + unnamed.stderr, /gateway\.yaml:1:1: cannot read config file: no such file \(ENOENT\) \(no gateway\.yaml in .*: name the config with -c FILE\)$/m);
  });

  it('exits 1 when a --vars-file cannot be read: the config cannot load without its variables', async () => {
    const dir = tempFiles({ 'gateway.yaml': 'version: 1\n' });
    const r = await runCli(['run', '-c', 'gateway.yaml', '--vars-file', 'nope.env'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "eventgate: cannot read --vars-file 'nope.env': no such file (ENOENT)\n");
  });
});

describe('eventgate: other commands', () => {
  it('--version prints the package version', async () => {
    const { version } = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const r = await runCli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `eventgate ${version}\n`);
  });

  it("COMMAND --help, -h and help COMMAND print the command's own usage and exit 0; --help stays the general one", async () => {
    for (const command of ['run', 'validate', 'test', 'plan', 'export', 'schema']) {
      const [help, short, named] = await Promise.all(
        [
          [command, '--help'],
          [command, '-h'],
          ['help', command],
        ].map((args) => runCliInProcess(args)),
      );
      for (const r of [help!, short!, named!]) {
        assert.equal(r.code, 0, command);
        assert.equal(r.stderr, '', command);
        assert.equal(r.stdout, help!.stdout, `${command}: the same help by each spelling`);
      }
      assert.match(help!.stdout, new RegExp(`^usage: eventgate ${command}\\b`), command);
      assert.match(help!.stdout, /\noptions:\n[\s\S]*\n {2}-h, --help +this help\n\nexample:\n {2}eventgate \S/, command);
      // The options it lists, one line each, are those the parser lets it take.
      const listed = [...help!.stdout.matchAll(/^ {2}(?:-[a-z], )?--([a-z-]+)\b.* {2}\S/gm)].map((m) => m[1]).filter((o) => o !== 'help');
      const bogus = await runCliInProcess([command, '--bogus']);
      const takes = /'[a-z]+' takes (.*)$/m
        .exec(bogus.stderr)?.[1]
        ?.split(', ')
        .map((o) => o.slice(2));
      assert.deepEqual(listed, takes, command);
    }
    const general = await runCliInProcess(['--help']);
    assert.equal(general.code, 0);
    assert.match(general.stdout, /^usage:\n {2}eventgate run [\s\S]*\n {2}eventgate schema /);
    assert.equal((await runCliInProcess(['help'])).stdout, general.stdout);
    const unknown = await runCliInProcess(['help', 'valdiate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command 'valdiate' \(did you mean 'validate'\?\)/);
    // From the shell too: help on stdout, exit 0.
    const shell = await runCli(['export', '--help']);
    assert.equal(shell.code, 0);
    assert.match(shell.stdout, /^usage: eventgate export asyncapi \[-c FILE\]\n/);
  });

  it('an unknown command or option exits 2 with the usage', async () => {
    const unknown = await runCli(['serve']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command 'serve'[\s\S]*usage:/);
    // A typo of a command is told the command it is nearest to.
    const typo = await runCli(['valdiate', '-c', 'gateway.yaml']);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /unknown command 'valdiate' \(did you mean 'validate'\?\)\n[\s\S]*usage:/);
    const option = await runCli(['validate', '--bogus']);
    assert.equal(option.code, 2);
    assert.match(option.stderr, /usage:/);
    const format = await runCli(['validate', '--format', 'xml']);
    assert.equal(format.code, 2);
  });

  it('refuses an argument a command does not take, rather than checking ./gateway.yaml instead', async () => {
    // A CI job that writes `eventgate validate broken.yaml` must not get "ok" for the gateway.yaml beside it.
    const dir = tempFiles({ 'gateway.yaml': 'version: 1\n', 'broken.yaml': 'version: 1\nbrokers: { local: { kind: memroy } }\n' });
    const validate = await runCli(['validate', 'broken.yaml'], { cwd: dir });
    assert.equal(validate.code, 2);
    assert.doesNotMatch(validate.stdout, /ok/);
    assert.match(validate.stderr, /unexpected argument 'broken\.yaml' \(the config is given with -c: eventgate validate -c broken\.yaml\)/);
    const exported = await runCli(['export', 'asyncapi', 'broken.yaml'], { cwd: dir });
    assert.equal(exported.code, 2);
    assert.match(exported.stderr, /unexpected argument 'broken\.yaml' \(the config is given with -c: eventgate export asyncapi -c broken\.yaml\)/);
    const schema = await runCli(['schema', 'extra'], { cwd: dir });
    assert.equal(schema.code, 2);
    assert.equal(schema.stdout, '');
    // An option of another command is no option of this one.
    const from = await runCli(['validate', '-c', 'gateway.yaml', '--from', 'broken.yaml'], { cwd: dir });
    assert.equal(from.code, 2);
    assert.match(from.stderr, /'validate' does not take --from/);
  });

  it('refuses an empty file name (`-c "$CONFIG"` with CONFIG unset) as a usage error, never as a problem at ":1:1"', async () => {
    const dir = tempFiles({ 'gateway.yaml': 'version: 1\n' });
    // One process, for the exit code a shell sees; the rest in-process.
    const run = await runCli(['run', '-c', ''], { cwd: dir });
    assert.equal(run.code, 2);
    assert.equal(run.stdout, '', 'nothing started, nothing logged');
    assert.match(run.stderr, /^eventgate: -c was given an empty value \(is the variable that should hold it unset\?\)\nusage: eventgate run/);
    const cases: [string[], number, RegExp][] = [
      [['validate', '-c', ''], 2, /-c was given an empty value/],
      [['validate', '--config='], 2, /--config was given an empty value/],
      [['validate', '--vars-file', ''], 2, /--vars-file was given an empty value/],
      [['export', 'asyncapi', '-c', ''], 2, /-c was given an empty value/],
      [['test', '-c', 'gateway.yaml', ''], 2, /an argument is an empty string/],
      // plan exits 1 for a plan not made: 2 would say the reload changes something.
      [['plan', '-c', 'gateway.yaml', '--from', ''], 1, /--from was given an empty value/],
    ];
    for (const [args, code, message] of cases) {
      const r = await runCliInProcess(args, { cwd: dir });
      assert.equal(r.code, code, args.join(' '));
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stdout + r.stderr, /^:1:1:|\s:1:1:/m, `${args.join(' ')}: no problem without its FILE`);
    }
  });
});
