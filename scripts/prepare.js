#!/usr/bin/env node
// npm's `prepare`: runs `npm run build` in a checkout (after `npm ci`/`npm install` there, and
// before `npm pack`), and does nothing in an installed package. The package ships built and holds
// neither src/ nor the devDependencies the build needs (tsc, esbuild), so when npm 11 lists this
// script as an install script not yet allowed and a user allows it (`--allow-scripts=eventgate`,
// or an install from an unpacked folder, which runs `prepare`), it must not fail there.
// This file ships in the package (package.json `files`) so that npm finds it in both places.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

if (!existsSync(join(root, 'src')) || !existsSync(join(root, 'tsconfig.json'))) {
  console.error('eventgate: prepare: an installed package (no src/ here), already built: nothing to do');
  process.exit(0);
}
try {
  createRequire(join(root, 'package.json')).resolve('typescript');
} catch {
  // A checkout installed without devDependencies (`npm ci --omit=dev`): say so rather than fail
  // the install on `tsc: not found`; the CLI needs `npm run build` before it runs.
  console.error('eventgate: prepare: the build needs the devDependencies (typescript, esbuild), which are not installed: skipped; run `npm install` then `npm run build`');
  process.exit(0);
}
// `npx eventgate` in a checkout links the checkout into npm's npx cache, and npm runs `prepare`
// for that link once per checkout (later runs find the link): a whole build, minutes without a
// line of output, of what `npm ci` built already. The link runs this checkout's own dist/, so a
// built checkout needs nothing here; one never built (no dist/) is built as before.
if (process.env.npm_command === 'exec' && existsSync(join(root, 'dist', 'src', 'cli', 'main.js'))) {
  console.error('eventgate: prepare: run by npx in a checkout that is already built: nothing to do (`npm run build` rebuilds it)');
  process.exit(0);
}
// One list of build steps: package.json's `build` script, run as npm runs scripts (a shell, with
// node_modules/.bin on the PATH npm gave this process).
const { build } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts;
// An install (`npm ci`, `npm install`) compiles src alone (tsconfig.src.json): what `npm start`
// runs. test/ and bench/ were two thirds of tsc's files and a third of the install's time;
// `npm test` and `npm run bench` compile them (pretest, build). A pack builds everything.
const TSC = 'tsc -p tsconfig.json && ';
const installing = process.env.npm_command === 'ci' || process.env.npm_command === 'install';
const steps = installing && build.startsWith(TSC) ? `tsc -p tsconfig.src.json && ${build.slice(TSC.length)}` : build;
const res = spawnSync(steps, { cwd: root, shell: true, stdio: 'inherit' });
process.exit(res.status ?? 1);
