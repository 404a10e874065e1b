import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { repoRoot, runCli, tempFiles } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

/**
 * Every CLI call is a Node process that loads the CLI's modules, and most of its CPU is that
 * loading: the short commands (validate, test, plan, export) must not load what only `run` uses
 * (the runtime, the admin server, the logger), and only `test` the test runner. The suite spawns
 * them hundreds of times (docs/testing.md, "Time budget"); CI jobs that validate configs too.
 */
const RUN_ONLY = ['runtime/gateway.js', 'admin/index.js', 'log.js'];
const TEST_ONLY = ['testing/run-tests.js'];

/** Runs the CLI with an ESM loader hook that writes down every module of dist/src it loads. */
async function modulesLoaded(args: string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string; loaded: string[] }> {
  const dir = tempDir('eventgate-modules');
  const list = join(dir, 'loaded.txt');
  writeFileSync(list, '');
  writeFileSync(
    join(dir, 'hooks.mjs'),
    `import { appendFileSync } from 'node:fs';\nexport async function load(url, context, next) {\n  appendFileSync(${JSON.stringify(list)}, url + '\\n');\n  return next(url, context);\n}\n`,
  );
  writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hooks.mjs')).href)});\n`);
  const r = await runCli(args, { cwd, env: { NODE_OPTIONS: `--import=${pathToFileURL(join(dir, 'register.mjs')).href}` } });
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
});
