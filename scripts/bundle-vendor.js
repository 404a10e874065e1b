#!/usr/bin/env node
// Bundles the packages below with esbuild, each into one CommonJS file in dist/src/vendor/, which
// src/core/bundled.ts loads instead of the package. Node spends ~12 KB of resident memory on every
// module file it loads (reading, compiling and caching it), and these are many files: TypeBox
// 200, ajv with ajv-formats 95, yaml 73, prom-client 40, find-my-way with its dependencies 29,
// ws 22 (docs/performance.md, "Round 2, third pass"); each file also costs start-up CPU (ajv and
// prom-client: ~50 ms of a gateway's start, docs/testing.md "Time budget"). Each bundle is written
// ASCII-only (asciiOnly below), so V8 keeps its source a one-byte string.
// Not for packages that find files by __dirname when the gateway uses them or whose state other copies of
// them must share (@opentelemetry/api: an SDK registered after the gateway loaded would reach only
// the package's copy; prom-client reaches it as the package, left outside its bundle, and only
// when it reads it: lazyOtelApiForPromClient below).
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { build } from 'esbuild';
import { spectralFiles } from '../dist/src/asyncapi/structure-validators.js';

const spectral = spectralFiles();

/**
 * Bundle name → what it exports. The name is what src/core/bundled.ts looks for; its fallback
 * (no bundle: a build that only ran tsc) must give the same shape.
 */
export const VENDORED = {
  '@sinclair/typebox': `module.exports = require('@sinclair/typebox');`,
  yaml: `module.exports = require('yaml');`,
  ws: `module.exports = require('ws');`,
  'find-my-way': `module.exports = require('find-my-way');`,
  // One bundle: ajv-formats' keywords build code with ajv's code generator, whose classes are
  // checked with instanceof, so they must share ajv's one copy (src/plan/ajv-modules.ts).
  ajv: `module.exports = {
    Ajv: require('ajv').Ajv,
    AjvDraft04: require('ajv-draft-04').default,
    Ajv2019: require('ajv/dist/2019').Ajv2019,
    Ajv2020: require('ajv/dist/2020').Ajv2020,
    addFormats: require('ajv-formats'),
    fullFormats: require('ajv-formats/dist/formats').fullFormats,
  };`,
  'prom-client': `module.exports = require('prom-client');`,
  // What a start loaded from node_modules file by file, without a code cache: pino with its 30
  // module files (~21 ms of CPU to require, ~7 ms from a bundle and its cache), jsonata (~9 → ~3.5
  // ms, with a config's first expression) and chokidar with readdirp (~8 → ~4.5 ms, `run` only).
  // pino's transports, which find their worker's file by __dirname, are never used: the gateway
  // logs through pino.destination (src/log.ts).
  pino: `module.exports = require('pino');`,
  jsonata: `module.exports = require('jsonata');`,
  chokidar: `module.exports = require('chokidar');`,
  // @asyncapi/parser with Spectral (~800 module files, ~0.25 s of loading in each process that
  // parses a document), loaded in the parser's thread (src/asyncapi/parse.ts). With it what the
  // build's AsyncAPI validators need (src/asyncapi/structure-validators.ts): Spectral's ajv
  // module, whose function they replace; what they require, as Spectral's ajv resolves it; the
  // versions they must have been made from. All taken from where the parser resolves them.
  'asyncapi-parser': `const requires = { ${Object.entries(spectral.requires)
    .map(([id, file]) => `${JSON.stringify(id)}: () => require(${JSON.stringify(file)})`)
    .join(', ')} };
  module.exports = {
    Parser: require('@asyncapi/parser').Parser,
    AvroSchemaParser: require('@asyncapi/avro-schema-parser').AvroSchemaParser,
    spectralAjv: require(${JSON.stringify(spectral.spectralAjv)}),
    validatorRequire: (id) => {
      if (!Object.hasOwn(requires, id)) throw new Error('not in the bundle: ' + id);
      return requires[id]();
    },
    versions: ${JSON.stringify(spectral.versions)},
  };`,
};

/**
 * jsonc-parser's `main` is a UMD module whose factory gets `require` as a parameter, so esbuild
 * sees none of its four `require`s (an earlier trial's bundle failed at run time on
 * `./impl/format`): its ES module build, which imports them, goes in instead. (Plugins need
 * esbuild's asynchronous `build`.)
 */
const jsoncParserAsEsm = {
  name: 'jsonc-parser-esm',
  setup(build) {
    build.onResolve({ filter: /^jsonc-parser$/ }, (args) => ({ path: createRequire(`${args.resolveDir}/`).resolve('jsonc-parser/lib/esm/main.js') }));
  },
};

/**
 * prom-client requires `@opentelemetry/api` when it loads (lib/metrics/processCpuTotal.js), and
 * reads it only for exemplars, which the gateway never enables: every gateway with an admin server
 * loaded the API's 45 module files, where src/runtime/trace.ts loads them only once an SDK is
 * registered. prom-client gets a stand-in that requires the package (outside the bundle, the one
 * copy an SDK registers with) on its first property read.
 */
const lazyOtelApiForPromClient = {
  name: 'lazy-otel-api',
  setup(build) {
    build.onResolve({ filter: /^@opentelemetry\/api$/ }, (args) => (/[\\/]prom-client[\\/]/.test(args.importer) ? { path: 'lazy-otel-api', namespace: 'lazy-otel-api' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'lazy-otel-api' }, () => ({
      contents: `let api; module.exports = new Proxy({}, { get: (_, key) => (api ??= require('@opentelemetry/api'))[key] });`,
      loader: 'js',
    }));
  },
};

/**
 * The bundle with each non-ASCII character (UTF-16 unit) written as a `\uXXXX` escape. esbuild escapes them in
 * strings and identifiers but leaves regular expression literals as they are (the parser's bundle
 * had 15 such characters, dashes and quotes in two URI regexes), and one such character makes V8
 * keep the whole source as a two-byte string: 6.3 MB rather than 3.2 MB of the parser thread's
 * heap (docs/performance.md). In a regex, a string or an identifier the escape means the same
 * character (only a template's `String.raw` would see it; none of the bundles has one with such a
 * character); after a backslash it would not, so that stops the build.
 */
function asciiOnly(file) {
  const text = readFileSync(file, 'utf8');
  if (!/[^\0-\x7f]/.test(text)) return;
  const escaped = text.replace(/(\\?)([^\0-\x7f])/g, (_, backslash, c) => {
    if (backslash) throw new Error(`${file}: a non-ASCII character after a backslash (${JSON.stringify(_)}); escape it another way`);
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
  writeFileSync(file, escaped);
}

// `node scripts/bundle-vendor.js [name ...]`: the bundles named, or all.
const names = process.argv.slice(2);
for (const name of names) if (!Object.hasOwn(VENDORED, name)) throw new Error(`bundle-vendor: no bundle named ${name}`);
for (const [name, contents] of Object.entries(VENDORED)) {
  if (names.length > 0 && !names.includes(name)) continue;
  const outfile = `dist/src/vendor/${name.replace(/^@/, '').replace(/\//g, '-')}.cjs`;
  const before = existsSync(outfile) ? readFileSync(outfile) : undefined;
  await build({
    stdin: { contents, resolveDir: process.cwd() },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // V8 keeps each module's source text in the heap: whitespace and syntax minified, the four are
    // 0.56 instead of 0.87 MB (names are kept, so stack traces still name functions).
    minifyWhitespace: true,
    minifySyntax: true,
    // ws's optional native helpers: required inside try/catch, left to Node as before.
    // @opentelemetry/api: shared state (above).
    external: ['bufferutil', 'utf-8-validate', '@opentelemetry/api'],
    outfile,
    logLevel: 'warning',
    plugins: [jsoncParserAsEsm, lazyOtelApiForPromClient],
  });
  asciiOnly(outfile);
  // V8 checks a code cache against its source's length only: the previous bundle's cache, taken for
  // a changed bundle of the same length, ran the previous code (a constant of a patch release, a
  // version string) until scripts/write-bundle-code-caches.js wrote it again, and forever for a
  // bundle that script does not load. Without a cache the bundle compiles from its source.
  if (!before?.equals(readFileSync(outfile))) rmSync(`${outfile}.v8-cache`, { force: true });
}
