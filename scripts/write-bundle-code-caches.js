#!/usr/bin/env node
// Writes V8's code cache of each bundle next to it (the dependencies', src/core/bundled.ts; the CLI's own,
// src/cli/app-bundle.ts), under the flags of `eventgate run` starting (V8 takes a cache only under the flags
// it was made with), after compiling the examples' configs, so that the functions a start runs are in it compiled.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { holdWhileStarting } from '../dist/src/cli/startup-hold.js';

holdWhileStarting(['run']);
const bundled = await import('../dist/src/core/bundled.js');
// The commands from their bundle when it is current (src/cli/app-bundle.ts), as the CLI loads them:
// the vendor bundles are then loaded, and their caches written, by the app bundle's own copy of
// src/core/bundled.ts, and the app bundle's by this module's copy.
const { appBundle } = await import('../dist/src/cli/app-bundle.js');
const app = appBundle() ?? (await import('../dist/src/cli/app.js'));
// What only `run` loads (the metrics registry's bundle among them), which a config's compile does not.
await app.loadRunModules();
const examples = new URL('../examples/', import.meta.url).pathname;
// Without the examples (the image's build stage copies none), the caches hold what loading runs.
const configs = existsSync(examples) ? readdirSync(examples).filter((n) => n.endsWith('.yaml') && !n.endsWith('.tests.yaml')) : [];
// Not the configs with AsyncAPI documents: starting the parser's thread changes the flags V8 checks
// a cache against (the caches written after it were all rejected).
for (const name of configs) {
  const file = join(examples, name);
  if (!/^asyncapi:/m.test(readFileSync(file, 'utf8'))) await app.loadPlan(file, { registry: app.defaultRegistry(), env: {} });
}
app.writeBundleCodeCaches();
bundled.writeBundleCodeCaches();

// The AsyncAPI parser's bundle loads in the parser thread, whose V8 flags differ from this
// thread's (a cache written here was rejected there, and the reverse): its cache is written by a
// thread started as a parser thread is, after parsing the examples' AsyncAPI documents.
const { parserThreadOptions } = await import('../dist/src/asyncapi/parser-thread.js');
const documents = existsSync(examples)
  ? readdirSync(examples, { recursive: true })
      .map(String)
      .filter((n) => /(^|\/)asyncapi-[^/]*\/[^/]*\.yaml$/.test(n) && /^asyncapi:/m.test(readFileSync(join(examples, n), 'utf8')))
      .map((n) => join(examples, n))
  : [];
const parserCache = new Worker(
  `
  const { workerData } = await import('node:worker_threads');
  const { readFileSync } = await import('node:fs');
  const { dirname } = await import('node:path');
  const { parseDocument, parserModules } = await import(${JSON.stringify(new URL('../dist/src/asyncapi/parse.js', import.meta.url).href)});
  const { writeBundleCodeCaches } = await import(${JSON.stringify(new URL('../dist/src/core/bundled.js', import.meta.url).href)});
  parserModules();
  for (const file of workerData) await parseDocument(file, readFileSync(file, 'utf8'), async (p) => readFileSync(p, 'utf8'), { root: dirname(file) });
  writeBundleCodeCaches(['asyncapi-parser']);`,
  { ...parserThreadOptions(), eval: true, workerData: documents },
);
const [code] = await once(parserCache, 'exit');
if (code !== 0) throw new Error(`the parser bundle's code cache was not written (thread exit code ${code})`);
// A config's compile may leave a thread or a timer behind; the caches are written.
process.exit(0);
