import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { repoRoot } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

const run = promisify(execFile);

/** Runs a command to completion; resolves with its exit code and output whatever the code. */
async function sh(cmd: string, args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(cmd, args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

describe('installable outside the repository', () => {
  it('npm pack makes a tarball that `npm install -g` installs, and eventgate then runs from any directory', async () => {
    const work = tempDir('eventgate-install');
    // The tests run from the compiled dist/, so the tarball packs that (no rebuild under the running suite).
    const pack = await sh('npm', ['pack', '--ignore-scripts', '--pack-destination', work], repoRoot);
    assert.equal(pack.code, 0, pack.stderr);
    const tarball = readdirSync(work).find((f) => /^eventgate-.*\.tgz$/.test(f));
    assert.ok(tarball, 'a tarball eventgate-<version>.tgz');
    const prefix = join(work, 'prefix');
    const install = await sh('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', join(work, tarball)], work);
    assert.equal(install.code, 0, install.stderr);
    const bin = join(prefix, 'bin', 'eventgate');
    // The installed CLI loads its commands from the bundle (src/cli/app-bundle.ts): npm writes each
    // file at install time, and an installed package is checked by its files' sizes.
    const appBundle = pathToFileURL(join(prefix, 'lib', 'node_modules', 'eventgate', 'dist', 'src', 'cli', 'app-bundle.js')).href;
    const bundled = await sh(process.execPath, ['--input-type=module', '-e', `import { appBundleCurrent } from ${JSON.stringify(appBundle)}; process.stdout.write(String(appBundleCurrent()));`], work);
    assert.equal(bundled.stdout, 'true', bundled.stderr);
    // npm 11 lists the package's `prepare` among install scripts not yet allowed; allowed (or in an
    // install from an unpacked folder, which runs it), it must not try to build without src/ or tsc.
    const installed = join(prefix, 'lib', 'node_modules', 'eventgate');
    const prepare = await sh('npm', ['run', 'prepare'], installed);
    assert.equal(prepare.code, 0, prepare.stdout + prepare.stderr);
    assert.match(prepare.stderr, /eventgate: prepare: an installed package \(no src\/ here\), already built: nothing to do/);

    // Somewhere that is not the repository: a copy of the examples.
    const elsewhere = join(work, 'configs');
    cpSync(join(repoRoot, 'examples'), elsewhere, { recursive: true });
    const version = await sh(bin, ['--version'], elsewhere);
    assert.match(version.stdout, /^eventgate \d+\.\d+\.\d+/);
    const validate = await sh(bin, ['validate', '-c', 'gateway.yaml'], elsewhere);
    assert.equal(validate.stdout, 'ok\n', validate.stderr);
    const test = await sh(bin, ['test', '-c', 'gateway.yaml', '--format', 'junit'], elsewhere);
    assert.equal(test.code, 0, test.stdout + test.stderr);
    assert.match(test.stdout, /<testsuites name="eventgate" tests="5" failures="0"/);
    const plan = await sh(bin, ['plan', '-c', 'gateway.yaml', '--from', 'asyncapi-3.0/gateway.yaml'], elsewhere);
    assert.equal(plan.code, 2, plan.stderr);
    const exported = await sh(bin, ['export', 'asyncapi', '-c', 'asyncapi-3.0/gateway.yaml'], elsewhere);
    assert.match(exported.stdout, /^asyncapi: 3\.0\.0$/m);
    const schema = await sh(bin, ['schema'], elsewhere);
    assert.equal(JSON.parse(schema.stdout).$id, 'https://eventgate.dev/gateway.schema.json');
  });

  it('`npx eventgate` in a checkout that npm ci built runs it as it is, with no second build', async () => {
    // npx links the checkout into its cache and runs `prepare` for the link: before, a whole
    // build, minutes without output on the first `npx eventgate` of every checkout. A checkout
    // that stands for this one: its own bin, prepare.js, package.json and tsconfig.json, with
    // src/, dist/ and node_modules/ of this build, and a `build` script that leaves a mark.
    const work = tempDir('eventgate-npx');
    const checkout = join(work, 'checkout');
    mkdirSync(join(checkout, 'scripts'), { recursive: true });
    cpSync(join(repoRoot, 'bin'), join(checkout, 'bin'), { recursive: true });
    copyFileSync(join(repoRoot, 'scripts', 'prepare.js'), join(checkout, 'scripts', 'prepare.js'));
    copyFileSync(join(repoRoot, 'tsconfig.json'), join(checkout, 'tsconfig.json'));
    for (const dir of ['src', 'dist', 'node_modules']) symlinkSync(join(repoRoot, dir), join(checkout, dir));
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'));
    pkg.scripts.build = 'touch build-ran';
    writeFileSync(join(checkout, 'package.json'), JSON.stringify(pkg, null, 2));

    // A cache of its own, so the checkout is not linked yet, as on a fresh machine; offline: the
    // checkout is all npx needs.
    const env = { ...process.env, npm_config_cache: join(work, 'npm-cache'), npm_config_offline: 'true', npm_config_update_notifier: 'false' };
    const { stdout } = await run('npx', ['eventgate', '--version'], { cwd: checkout, env, maxBuffer: 64 * 1024 * 1024 });
    assert.match(stdout, /^eventgate \d+\.\d+\.\d+/);
    assert.ok(existsSync(join(work, 'npm-cache', '_npx')), 'npx linked the checkout into its cache');
    assert.equal(existsSync(join(checkout, 'build-ran')), false, '`prepare` built the checkout again');
  });
});
