#!/usr/bin/env node
// Bundles the CLI's commands (dist/src/cli/app.js and every module of dist/src it reaches) into one
// CommonJS file, dist/src/cli/app.cjs, with esbuild, and lists its inputs with their sizes and
// modification times beside it: src/cli/app-bundle.ts loads it while none of them changed.
// Packages stay outside (resolved from node_modules as before; the big ones are bundled on their
// own by scripts/bundle-vendor.js). Run after tsc; `npm run build` and `npm test` do.
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const cli = join(root, 'dist', 'src', 'cli');
const outfile = join(cli, 'app.cjs');

// bin/eventgate.js imports these two before the bundle loads, and they keep state the commands
// read (signals caught while loading, the V8 flags held while starting): the bundle requires the
// same module instances rather than carrying copies of its own.
const SHARED_WITH_BIN = new Set([join(cli, 'early-signals.js'), join(cli, 'startup-hold.js')]);

/** `./x.js`-style path from the bundle's directory to `file`. */
const fromBundle = (file) => {
  const rel = relative(cli, file);
  return rel.startsWith('.') ? rel : `./${rel}`;
};

/**
 * What an ES module of dist/src says about itself, said so that it holds in the bundle:
 * - `whenUsed(import.meta.url, './x.js')` (a kind's runtime, loaded on first use) becomes a lazy
 *   require that esbuild bundles: the module of the file would be a second copy, beside the
 *   bundle's, of everything it imports;
 * - `createRequire(import.meta.url)('./x.js')` likewise (packages stay outside either way);
 * - any other `import.meta.url` is the URL of the module's own file, so paths made from it
 *   (vendor bundles, generated validators, the parser thread's module, package.json) stay right.
 */
const selfReferences = {
  name: 'self-references',
  setup(b) {
    b.onResolve({ filter: /\.js$/ }, async (args) => {
      if (args.kind === 'entry-point') return undefined;
      const file = join(args.resolveDir, args.path);
      return SHARED_WITH_BIN.has(file) ? { path: fromBundle(file), external: true } : undefined;
    });
    b.onLoad({ filter: /\/dist\/src\/.*\.js$/ }, (args) => {
      const self = JSON.stringify(fromBundle(args.path));
      const contents = readFileSync(args.path, 'utf8')
        .replace(/\bwhenUsed\(import\.meta\.url, ('[^']+')\)/g, '__egLazy(() => require($1))')
        .replace(/\bcreateRequire\(import\.meta\.url\)\(/g, 'require(')
        .replace(/\bimport\.meta\.url\b/g, `__egUrl(${self})`);
      if (/\bimport\.meta\b/.test(contents)) throw new Error(`${args.path}: an import.meta the bundle cannot carry`);
      return { contents, loader: 'js' };
    });
  },
};

const result = await build({
  entryPoints: [join(cli, 'app.js')],
  outfile,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  // A package loaded when used (`await import('amqplib')`) is required: a script run from V8's code
  // cache has no loader for import() (vm's USE_MAIN_CONTEXT_DEFAULT_LOADER is not kept in the cache).
  // Those packages are CommonJS or load the same file either way, but chokidar (its CommonJS build).
  supported: { 'dynamic-import': false },
  // Class and function names as in the modules (errors and logs may name them).
  keepNames: true,
  charset: 'ascii',
  write: false,
  metafile: true,
  logLevel: 'error',
  absWorkingDir: root,
  plugins: [selfReferences],
  banner: {
    js: [
      '"use strict";',
      `const __egUrl = (p) => require('node:url').pathToFileURL(require('node:path').join(__dirname, p)).href;`,
      'const __egLazy = (load) => { let loaded; return () => (loaded ??= load()); };',
    ].join('\n'),
  },
});

const code = result.outputFiles[0].contents;
if (/\bimport\(/.test(Buffer.from(code).toString('latin1'))) throw new Error('bundle-app: an import() is left in the bundle, which fails when run from its code cache');
const changed = !existsSync(outfile) || !readFileSync(outfile).equals(code);
if (changed) {
  writeFileSync(outfile, code);
  // V8 checks a code cache against its source's length only: a cache of the previous bundle
  // could pass for this one. scripts/write-bundle-code-caches.js writes it again.
  rmSync(`${outfile}.v8-cache`, { force: true });
}
const inputs = Object.keys(result.metafile.inputs)
  .map((p) => join(root, p))
  .sort()
  .map((file) => {
    const { size, mtimeMs } = statSync(file);
    return [relative(dirname(outfile), file), size, mtimeMs];
  });
writeFileSync(`${outfile}.inputs.json`, `${JSON.stringify(inputs)}\n`);
console.log(`bundle-app: ${relative(root, outfile)} from ${inputs.length} modules${changed ? '' : ' (unchanged)'}`);
