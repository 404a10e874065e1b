#!/usr/bin/env node
// Keeps src/ layered and free of import cycles (docs/architecture.md, "Layers"). Reads every
// relative import of src/**/*.ts and fails, naming the files, on an import that points up a
// layer (type-only imports included: a type that points up is a layer leak all the same) or on a
// cycle of imports that load code (`import type` is erased by tsc, so it cannot make one).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(new URL('..', import.meta.url).pathname);
const src = join(root, 'src');

/** folder → folders of src/ it may not import. */
const FORBIDDEN = {
  core: ['config', 'plan', 'expr', 'kinds', 'codecs', 'runtime', 'telemetry', 'admin', 'cli', 'testing', 'asyncapi'],
  codecs: ['plan', 'kinds', 'runtime', 'telemetry', 'admin', 'cli', 'testing'],
  expr: ['plan', 'kinds', 'runtime', 'telemetry', 'admin', 'cli', 'testing'],
  config: ['plan', 'runtime', 'telemetry', 'admin', 'cli', 'testing'],
  asyncapi: ['plan', 'kinds', 'runtime', 'telemetry', 'admin', 'cli', 'testing'],
  kinds: ['plan', 'runtime', 'telemetry', 'admin', 'cli', 'testing'],
  plan: ['runtime', 'telemetry', 'admin', 'cli', 'testing'],
  telemetry: ['runtime', 'admin', 'cli', 'testing'],
  runtime: ['admin', 'cli', 'testing'],
  admin: ['cli', 'testing'],
  testing: ['cli'],
};

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return files(p);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [p] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(import|export)(\s+type)?\s[^'"]*?from\s+'(\.{1,2}\/[^']+)'|import\(\s*'(\.{1,2}\/[^']+)'\s*\)/g;
/** file → every file it imports; `code`: only the imports that load code at run time. */
const graph = new Map();
const code = new Map();
for (const file of files(src)) {
  const text = readFileSync(file, 'utf8');
  const all = new Set();
  const loads = new Set();
  for (const m of text.matchAll(IMPORT)) {
    const dep = resolve(dirname(file), (m[3] ?? m[4]).replace(/\.js$/, '.ts'));
    all.add(dep);
    if (!m[2]) loads.add(dep);
  }
  graph.set(file, [...all]);
  code.set(file, [...loads]);
}

const name = (f) => relative(root, f);
const layer = (f) => relative(src, f).split('/')[0].replace(/\.ts$/, '');
const problems = [];
for (const [file, deps] of graph) {
  for (const dep of deps) {
    if ((FORBIDDEN[layer(file)] ?? []).includes(layer(dep))) problems.push(`layer: ${name(file)} imports ${name(dep)} (${layer(file)}/ may not depend on ${layer(dep)}/)`);
  }
}

// Cycles: depth-first search, reporting each cycle once (by its set of files).
const state = new Map();
const stack = [];
const seen = new Set();
function visit(f) {
  state.set(f, 'open');
  stack.push(f);
  for (const d of code.get(f) ?? []) {
    if (!code.has(d)) continue;
    if (state.get(d) === 'open') {
      const cycle = stack.slice(stack.indexOf(d));
      const key = [...cycle].sort().join(' ');
      if (!seen.has(key)) {
        seen.add(key);
        problems.push(`cycle: ${[...cycle, d].map(name).join(' → ')}`);
      }
    } else if (!state.has(d)) visit(d);
  }
  stack.pop();
  state.set(f, 'done');
}
for (const f of graph.keys()) if (!state.has(f)) visit(f);

if (problems.length > 0) {
  for (const p of problems) console.error(p);
  console.error(`check-imports: ${problems.length} problem(s) in ${graph.size} files`);
  process.exit(1);
}
console.log(`check-imports: ${graph.size} files, no cycles, layers respected`);
