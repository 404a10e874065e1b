import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import { readCodeCache, releaseCodeCache } from './code-cache.js';

/**
 * A dependency loaded from the one file `npm run build` bundles it into (scripts/bundle-vendor.js, esbuild):
 * as the package's many module files it cost every gateway more resident memory and start-up time
 * (docs/performance.md, docs/testing.md). Without that file (a build that only ran tsc), `fallback`
 * loads the same thing from the packages: by default the package named `name`.
 *
 * The build also writes V8's code cache of each bundle (`writeBundleCodeCaches`), made after a
 * config was compiled, so the functions a start runs come compiled: V8 then neither parses the
 * ~0.85 MB of bundles nor compiles those functions again in every process (~30-60 ms of CPU of
 * each `run`, `validate`, …; docs/testing.md "Time budget"). As for the config validator's cache
 * (src/config/precompiled-validator.ts) V8 takes it only under the flags it was made with, those
 * the commands hold while starting (src/cli/startup-hold.ts); elsewhere (a test's own process,
 * another Node) it is rejected and the bundle compiles from its source as before.
 */
export function bundled<T>(name: string, fallback: (require: NodeJS.Require) => T = (require) => require(name) as T): T {
  const file = bundleFile(name);
  if (!existsSync(file)) return fallback(createRequire(import.meta.url));
  return runBundle(file) as T;
}

function bundleFile(name: string): string {
  return fileURLToPath(new URL(`../vendor/${name.replace(/^@/, '').replace(/\//g, '-')}.cjs`, import.meta.url));
}

/** Each bundle loaded, with its compiled script, once per process (as `require` caches a module). */
const loaded = new Map<string, { exports: unknown; script: Script }>();

/**
 * Runs a bundle as CommonJS would (exports, require, module, __filename, __dirname), from its code
 * cache (`${file}.v8-cache`) when V8 takes it: the vendor bundles, and the CLI's own (src/cli/app-bundle.ts).
 */
export function runBundle(file: string): unknown {
  const known = loaded.get(file);
  if (known) return known.exports;
  const cachedData = readCodeCache(`${file}.v8-cache`);
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(file, 'utf8')}\n})`, { filename: file, cachedData });
  releaseCodeCache(cachedData);
  const module = { exports: {} as unknown };
  // `this` is the exports object at a CommonJS module's top level.
  script.runInThisContext().call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
  loaded.set(file, { exports: module.exports, script });
  return module.exports;
}

/** The bundles this thread has loaded, by name of file (`asyncapi-parser.cjs`): tests check where a bundle loads. */
export function loadedBundles(): string[] {
  return [...loaded.keys()].map((file) => file.slice(file.lastIndexOf('/') + 1));
}

/**
 * Writes the code cache of every bundle this process (this thread) loaded, or of those named in
 * `only`, with the functions it has compiled so far (scripts/write-bundle-code-caches.js: under the
 * held flags, after compiling a config; the parser's bundle from a parser thread, after parses).
 */
export function writeBundleCodeCaches(only?: readonly string[]): string[] {
  const wanted = only?.map(bundleFile);
  return [...loaded]
    .filter(([file]) => !wanted || wanted.includes(file))
    .map(([file, { script }]) => {
      writeFileSync(`${file}.v8-cache`, script.createCachedData());
      return `${file}.v8-cache`;
    });
}
