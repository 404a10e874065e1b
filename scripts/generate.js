#!/usr/bin/env node
// Writes the files derived from the kind registry: gateway.schema.json and docs/config.md.
// Run after changing a kind's schema or docs (`npm run generate`); a test fails when they are stale.
import { writeFileSync } from 'node:fs';
import { buildConfigSchema } from '../dist/src/config/schema.js';
import { renderConfigReference } from '../dist/src/config/reference.js';
import { defaultRegistry } from '../dist/src/kinds/index.js';

const root = new URL('../', import.meta.url);
const registry = defaultRegistry();
writeFileSync(new URL('gateway.schema.json', root), `${JSON.stringify(buildConfigSchema(registry), null, 2)}\n`);
writeFileSync(new URL('docs/config.md', root), renderConfigReference(registry));
console.log('wrote gateway.schema.json and docs/config.md');
