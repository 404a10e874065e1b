#!/usr/bin/env node
// Bundles the packages below with esbuild, each into one CommonJS file in dist/src/vendor/, which
// src/core/bundled.ts loads instead of the package. Node spends ~12 KB of resident memory on every
// module file it loads (reading, compiling and caching it), and these are many files: TypeBox
// 200, yaml 73, find-my-way with its dependencies 29, ws 22 (docs/performance.md, "Round 2, third
// pass"). esbuild writes non-ASCII characters as escapes, so V8 keeps each bundle a one-byte string.
// Not for packages that find files by __dirname (pino's transports) or whose state other copies of
// them must share (@opentelemetry/api: an SDK registered after the gateway loaded would reach only
// the package's copy).
import { buildSync } from 'esbuild';

/** package → the name src/core/bundled.ts looks for. */
export const VENDORED = ['@sinclair/typebox', 'yaml', 'ws', 'find-my-way'];

for (const pkg of VENDORED) {
  buildSync({
    stdin: { contents: `module.exports = require(${JSON.stringify(pkg)});`, resolveDir: process.cwd() },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    // V8 keeps each module's source text in the heap: whitespace and syntax minified, the four are
    // 0.56 instead of 0.87 MB (names are kept, so stack traces still name functions).
    minifyWhitespace: true,
    minifySyntax: true,
    // ws's optional native helpers: required inside try/catch, left to Node as before.
    external: ['bufferutil', 'utf-8-validate'],
    outfile: `dist/src/vendor/${pkg.replace(/^@/, '').replace(/\//g, '-')}.cjs`,
    logLevel: 'warning',
  });
}
