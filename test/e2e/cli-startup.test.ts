import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, cpSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { repoRoot, runCli, startGateway, tempFiles } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

/**
 * Every CLI call is a Node process that loads the CLI's modules, and most of its CPU is that
 * loading: the short commands (validate, test, plan, export) must not load what only `run` uses
 * (the runtime, the admin server, the logger), and only `test` the test runner. The suite spawns
 * them hundreds of times (docs/testing.md, "Time budget"); CI jobs that validate configs too.
 */
const RUN_ONLY = ['runtime/gateway.js', 'admin/index.js', 'log.js'];
const TEST_ONLY = ['testing/run-tests.js'];

/**
 * Runs the CLI with an ESM loader hook that writes down every module of dist/src it loads. By
 * default the commands' modules, which the CLI runs from their bundle (src/cli/app-bundle.ts), are
 * loaded as modules, so the hook sees which: the bundle keeps what each command loads when used,
 * as esbuild keeps a module reached only by `import()` uninitialised until then.
 */
async function modulesLoaded(args: string[], cwd: string, options: { bundle?: boolean } = {}): Promise<{ code: number | null; stdout: string; stderr: string; loaded: string[] }> {
  const dir = tempDir('eventgate-modules');
  const list = join(dir, 'loaded.txt');
  writeFileSync(list, '');
  writeFileSync(
    join(dir, 'hooks.mjs'),
    `import { appendFileSync } from 'node:fs';\nexport async function load(url, context, next) {\n  appendFileSync(${JSON.stringify(list)}, url + '\\n');\n  return next(url, context);\n}\n`,
  );
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
  const r = await runCli(args, {
    cwd,
    env: { NODE_OPTIONS: `--import=${pathToFileURL(join(dir, 'register.mjs')).href}`, ...(options.bundle ? {} : { EVENTGATE_APP_BUNDLE: '0' }) },
  });
  const src = pathToFileURL(join(repoRoot, 'dist', 'src')).href;
  const loaded = readFileSync(list, 'utf8')
    .split('\n')
    .filter((u) => u.startsWith(`${src}/`))
    .map((u) => u.slice(src.length + 1));
  return { ...r, loaded };
}

const config = `version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: t }
`;
const tests = `tests:
  - name: takes a message
    route: in
    input: { path: /in, value: { a: 1 } }
    expect:
      outcome: delivered
      to: [{ broker: local, topic: t, value: { a: 1 } }]
`;

describe('CLI start-up: each command loads only the modules it uses', { concurrency: 3 }, () => {
  const cwd = tempFiles({ 'gateway.yaml': config, 'gateway.tests.yaml': tests, 'broken.yaml': 'version: 1\nlisteners:\n  api: { kind: http, prot: 0 }\n' });

  it('run loads the runtime, the admin server and the logger (so the hook sees them when they load)', async () => {
    const r = await modulesLoaded(['run', '-c', 'broken.yaml'], cwd);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /unknown key 'prot'/);
    for (const m of RUN_ONLY) assert.ok(r.loaded.includes(m), `run loads ${m}; loaded:\n${r.loaded.join('\n')}`);
  });

  for (const [args, stdout] of [
    [['validate', '-c', 'gateway.yaml'], /^ok\n$/],
    [['validate', '-c', 'gateway.tests.yaml'], /^ok\n$/],
    [['plan', '-c', 'gateway.yaml', '--from', 'gateway.yaml'], /^no changes/m],
    [['export', 'asyncapi', '-c', 'gateway.yaml'], /^asyncapi: 3\.0\.0$/m],
  ] as const) {
    it(`${args.join(' ')} does not load the runtime, the admin server, the logger or the test runner`, async () => {
      const r = await modulesLoaded([...args], cwd);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, stdout);
      assert.ok(r.loaded.includes('cli/main.js'), `the hook saw the CLI load; loaded:\n${r.loaded.join('\n')}`);
      for (const m of [...RUN_ONLY, ...TEST_ONLY]) assert.ok(!r.loaded.includes(m), `${args[0]} loads ${m}`);
    });
  }

  it('test loads the test runner, not the runtime, the admin server or the logger', async () => {
    const r = await modulesLoaded(['test', '-c', 'gateway.yaml'], cwd);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^1 tests? passed$/m);
    for (const m of TEST_ONLY) assert.ok(r.loaded.includes(m), `test loads ${m}`);
    for (const m of RUN_ONLY) assert.ok(!r.loaded.includes(m), `test loads ${m}`);
  });

  // The launcher, the bundle's loader and the two modules bin/eventgate.js shares with it.
  const LAUNCH = ['cli/app-bundle.js', 'cli/early-signals.js', 'cli/main.js', 'cli/startup-hold.js', 'core/bundled.js', 'core/code-cache.js'];

  for (const args of [
    ['validate', '-c', 'gateway.yaml'],
    ['run', '-c', 'broken.yaml'],
  ]) {
    it(`${args[0]} runs the commands from the app bundle the build wrote, not from their ~130 module files`, async () => {
      const r = await modulesLoaded(args, cwd, { bundle: true });
      assert.equal(r.code, args[0] === 'validate' ? 0 : 1, r.stdout + r.stderr);
      assert.match(args[0] === 'validate' ? r.stdout : r.stderr, args[0] === 'validate' ? /^ok\n$/ : /unknown key 'prot'/);
      assert.deepEqual([...r.loaded].sort(), LAUNCH, `modules loaded:\n${r.loaded.join('\n')}`);
    });
  }

  it('run loads the logger, JSONata and the config watcher from their bundles, not file by file from node_modules, and node:http2 only for an HTTP/2 listener', async () => {
    // What a process required and which of Node's own modules it loaded, written at its exit: a
    // bundle is loaded by src/core/bundled.ts, not require.
    const dir = tempDir('eventgate-required');
    const list = join(dir, 'required.json');
    writeFileSync(
      join(dir, 'preload.cjs'),
      `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, JSON.stringify({ required: Object.keys(require.cache), builtins: process.moduleLoadList })));\n`,
    );
    const yaml = `${config}    through:\n      - filter: a > 0\n`;
    const gw = await startGateway(yaml, { env: { NODE_OPTIONS: `--require=${join(dir, 'preload.cjs')}` } });
    assert.equal((await gw.stop()).code, 0, gw.stderr());
    const { required, builtins } = JSON.parse(readFileSync(list, 'utf8')) as { required: string[]; builtins: string[] };
    const packages = [...new Set(required.map((file) => /[\\/]node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(file)?.[1]).filter((name) => name !== undefined))];
    // pino's 30 files (with sonic-boom, thread-stream, ...), jsonata's and chokidar's with readdirp's: ~38 ms of CPU of each start.
    for (const name of ['pino', 'sonic-boom', 'thread-stream', 'jsonata', 'chokidar', 'readdirp'])
      assert.ok(!packages.includes(name), `${name} loaded from node_modules; packages:\n${packages.join('\n')}`);
    assert.ok(packages.includes('secure-json-parse'), `the preload saw the gateway's requires; packages:\n${packages.join('\n')}`);
    // ~3 ms of CPU of every process that loaded the http listener's module, validate's too.
    assert.ok(builtins.includes('NativeModule http') && !builtins.includes('NativeModule http2'), builtins.filter((m) => m.startsWith('NativeModule http')).join('\n'));
  });

  it('refuses at start an EVENTGATE_INSTANCE_ID that brokers would not all take in client ids and group names, naming the variable', async () => {
    const yaml = 'version: 1\nadmin: { port: 0 }\nbrokers:\n  local: { kind: memory }\nroutes: []\n';
    const allowed = "it names this instance in per-instance consumer groups, queue names and MQTT client ids, so it takes 1 to 64 letters (A-Z, a-z), digits, '.', '_' and '-'";
    const refused: [string, string][] = [
      ['web 0', 'EVENTGATE_INSTANCE_ID "web 0" has " " at character 4'],
      ['web-0\n', 'EVENTGATE_INSTANCE_ID "web-0\\n" has "\\n" at character 6'],
      ['x'.repeat(5000), 'EVENTGATE_INSTANCE_ID is 5000 characters long'],
      ['web/0', 'EVENTGATE_INSTANCE_ID "web/0" has "/" at character 4'],
      ['wéb', 'EVENTGATE_INSTANCE_ID "wéb" has "é" at character 2'],
    ];
    for (const [id, said] of refused) {
      // It used to start, the id going as it was into client ids, consumer groups and queue names.
      const gw = await startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: id }, waitReady: false });
      const outcome = await gw
        .waitForLog((l) => l.msg === 'gateway ready')
        .then(
          () => 'started',
          () => 'exited',
        );
      const { code } = await gw.stop();
      assert.equal(outcome, 'exited', `${JSON.stringify(id.slice(0, 20))} was taken`);
      assert.equal(code, 1);
      assert.equal(gw.stderr(), `eventgate: ${said}: ${allowed}\n`);
    }
    // A pod or host name is taken, and shown in /admin/status; an empty one is unset (`<hostname>-<pid>`).
    for (const [id, shown] of [
      ['web-0.eu_1', /^web-0\.eu_1$/],
      ['', /-\d+$/],
    ] as const) {
      const gw = await startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: id } });
      try {
        const { instanceId } = await gw.status();
        assert.match(instanceId, shown);
        // Every log line names it, so the logs of several instances gathered in one place tell whose each line is.
        assert.ok(gw.logs.length > 0 && gw.logs.every((l) => l.instance === instanceId), JSON.stringify(gw.logs.find((l) => l.instance !== instanceId)));
      } finally {
        await gw.stop();
      }
    }
  });

  it('shows its instance id in /admin/status and the log when the config names it through ${EVENTGATE_INSTANCE_ID}: a per-instance value is no secret', async () => {
    // As an MQTT clientId must differ between instances, configs put the instance's name in one;
    // it was then redacted as a value from the environment: `"instanceId": "[redacted]"`.
    const yaml = `version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    through:
      - headers: { set: { x-instance: '"by-\${EVENTGATE_INSTANCE_ID}"' } }
    to: { broker: local, topic: t }
`;
    const gw = await startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: 'web-0.eu_1' } });
    try {
      assert.equal((await gw.status()).instanceId, 'web-0.eu_1');
      assert.ok(gw.logs.every((l) => l.instance === 'web-0.eu_1'));
    } finally {
      await gw.stop();
    }
  });

  it('loads the modules themselves once an input of the bundle changed after it was written (a tsc without npm run build)', () => {
    // A copy of dist/ (the real one is left alone: the suite's other CLI calls use it meanwhile).
    const dist = join(tempDir('eventgate-bundle'), 'dist');
    cpSync(join(repoRoot, 'dist', 'src'), join(dist, 'src'), { recursive: true });
    const cli = join(dist, 'src', 'cli');
    const listed = join(cli, 'app.cjs.inputs.json');
    // The inputs as a build in that checkout lists them.
    const inputs = (JSON.parse(readFileSync(listed, 'utf8')) as [string][]).map(([file]) => {
      const { size, mtimeMs } = statSync(join(cli, file));
      return [file, size, mtimeMs];
    });
    writeFileSync(listed, JSON.stringify(inputs));
    writeFileSync(join(dist, '.tsbuildinfo'), '{}');
    const current = () =>
      execFileSync(
        process.execPath,
        ['--input-type=module', '-e', `import { appBundleCurrent } from ${JSON.stringify(pathToFileURL(join(cli, 'app-bundle.js')).href)}; process.stdout.write(String(appBundleCurrent()));`],
        { encoding: 'utf8' },
      );
    assert.equal(current(), 'true', 'a checkout, as built');
    const input = join(dist, 'src', 'plan', 'compile.js');
    const { atime, mtime } = statSync(input);
    utimesSync(input, atime, new Date(mtime.getTime() + 1000));
    assert.equal(current(), 'false', 'a checkout, one input rewritten since');
    // An installed package has no tsc state, and npm writes each file at a time of its own: its sizes are checked.
    rmSync(join(dist, '.tsbuildinfo'));
    assert.equal(current(), 'true', 'an installed package');
    appendFileSync(input, '\n');
    assert.equal(current(), 'false', 'an installed package, one input edited');
    // A list of inputs that is JSON but not a list: not current, and no TypeError.
    writeFileSync(listed, '{}');
    assert.equal(current(), 'false', 'a list of inputs that is not one');
  });
});
