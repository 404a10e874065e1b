import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Script } from 'node:vm';
import { bundled, runBundle } from '../../src/core/bundled.js';
import { repoRoot } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

const vendor = join(repoRoot, 'dist', 'src', 'vendor');
const all = readdirSync(vendor).filter((name) => name.endsWith('.cjs'));
/** The AsyncAPI parser's bundle loads in the parser thread, whose V8 flags differ (checked below). */
const PARSER = 'asyncapi-parser.cjs';
/**
 * The vendor bundles of the gateway's thread, the CLI's own (src/cli/app-bundle.ts), and the
 * build-time config validator (src/config/check-schema.ts; without its cache each command compiles
 * ~700 KB of source, ~0.15 s of CPU), by file.
 */
const validator = join(repoRoot, 'dist', 'src', 'config', 'config-validator.generated.cjs');
const files = [...all.filter((name) => name !== PARSER).map((name) => join(vendor, name)), join(repoRoot, 'dist', 'src', 'cli', 'app.cjs'), validator];
const bundles = files.map((file) => file.slice(file.lastIndexOf('/') + 1));

/**
 * Whether V8 takes each bundle's code cache (src/core/bundled.ts, written by `npm run build`) in a
 * process holding `command`'s start-up flags, as bin/eventgate.js starts one (holding changes V8's
 * flags, hence a process of its own); the parser's bundle in a thread started as a parser thread.
 */
function cachesTaken(command: string, inParserThread = false, of = files): Record<string, string> {
  const check = (paths: string[]) => `
    const { readFileSync } = await import('node:fs');
    const { Script } = await import('node:vm');
    const seen = {};
    for (const file of ${JSON.stringify(paths)}) {
      const name = file.slice(file.lastIndexOf('/') + 1);
      const source = '(function (exports, require, module, __filename, __dirname) {' + readFileSync(file, 'utf8') + '\\n})';
      seen[name] = new Script(source, { filename: file, cachedData: readFileSync(file + '.v8-cache') }).cachedDataRejected ? 'rejected' : 'taken';
    }
    process.stdout.write(JSON.stringify(seen));`;
  const script = `
    const { holdWhileStarting } = await import(${JSON.stringify(join(repoRoot, 'dist', 'src', 'cli', 'startup-hold.js'))});
    holdWhileStarting([${JSON.stringify(command)}]);
    ${
      inParserThread
        ? `const { Worker } = await import('node:worker_threads');
           const { parserThreadOptions } = await import(${JSON.stringify(join(repoRoot, 'dist', 'src', 'asyncapi', 'parser-thread.js'))});
           new Worker(${JSON.stringify(check([join(vendor, PARSER)]))}, { ...parserThreadOptions(), eval: true });`
        : check(of)
    }`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('the code caches of the bundled dependencies, the CLI bundle and the config validator', () => {
  it('exist for the ten bundles', () => {
    assert.deepEqual(all, ['ajv.cjs', 'asyncapi-parser.cjs', 'chokidar.cjs', 'find-my-way.cjs', 'jsonata.cjs', 'pino.cjs', 'prom-client.cjs', 'sinclair-typebox.cjs', 'ws.cjs', 'yaml.cjs']);
  });

  it("are taken for the AsyncAPI parser's bundle in a parser thread of a command that parses, and rejected without the held flags", () => {
    for (const command of ['validate', 'run']) assert.deepEqual(cachesTaken(command, true), { [PARSER]: 'taken' }, command);
    assert.deepEqual(cachesTaken('schema', true), { [PARSER]: 'rejected' });
  });

  for (const command of ['run', 'validate']) {
    it(`are taken by ${command}`, () => {
      assert.deepEqual(cachesTaken(command), Object.fromEntries(bundles.map((name) => [name, 'taken'])));
    });
  }

  it("the config validator's is taken by the other commands that read a config too", () => {
    for (const command of ['test', 'plan', 'export']) assert.deepEqual(cachesTaken(command, false, [validator]), { 'config-validator.generated.cjs': 'taken' }, command);
  });

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

  it("are removed by the build for a bundle it changed, which would run the previous bundle's code from it (V8 checks only the length)", async () => {
    // The build's bundling of two dependencies, in a directory of its own (it writes dist/src/vendor/ under its working directory).
    const dir = tempDir('eventgate-bundle-vendor');
    symlinkSync(join(repoRoot, 'node_modules'), join(dir, 'node_modules'));
    mkdirSync(join(dir, 'dist', 'src', 'vendor'), { recursive: true });
    const bundleVendor = () => {
      const r = spawnSync(process.execPath, [join(repoRoot, 'scripts', 'bundle-vendor.js'), 'jsonata', 'pino'], { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    };
    bundleVendor();
    const jsonata = join(dir, 'dist', 'src', 'vendor', 'jsonata.cjs');
    const pinoCache = join(dir, 'dist', 'src', 'vendor', 'pino.cjs.v8-cache');
    // A previous build's jsonata bundle: one message spelled otherwise, the same length, with the code cache of it that build wrote.
    const built = readFileSync(jsonata, 'utf8');
    const previous = built.replace('Unable to cast value to a number', 'UNABLE TO CAST VALUE TO A NUMBER');
    assert.ok(previous !== built && previous.length === built.length);
    writeFileSync(jsonata, previous);
    const script = new Script(`(function (exports, require, module, __filename, __dirname) {${previous}\n})`, { filename: jsonata });
    const module = { exports: {} as unknown };
    script.runInThisContext().call(module.exports, module.exports, createRequire(jsonata), module, jsonata, dir);
    const number = async (load: () => unknown) => {
      const compile = load() as (source: string) => { evaluate(input: unknown): Promise<unknown> };
      return compile('$number("x")')
        .evaluate({})
        .then(String, (err: Error) => err.message);
    };
    assert.equal(await number(() => module.exports), 'UNABLE TO CAST VALUE TO A NUMBER: "x"');
    writeFileSync(`${jsonata}.v8-cache`, script.createCachedData());
    writeFileSync(pinoCache, 'the cache of an unchanged bundle');

    bundleVendor();
    assert.equal(readFileSync(jsonata, 'utf8'), built);
    assert.equal(await number(() => runBundle(jsonata)), 'Unable to cast value to a number: "x"');
    assert.ok(!existsSync(`${jsonata}.v8-cache`), "the previous bundle's cache is gone");
    assert.equal(readFileSync(pinoCache, 'utf8'), 'the cache of an unchanged bundle');
  });
});
