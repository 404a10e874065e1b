import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { precompiledValidator } from '../../src/config/precompiled-validator.js';
import { buildConfigSchema } from '../../src/config/schema.js';
import { renderConfigReference } from '../../src/config/reference.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot } from '../helpers/gateway.js';

describe('files generated from the kind registry', () => {
  it('gateway.schema.json is the schema the gateway enforces (run `npm run generate` if this fails)', () => {
    const onDisk = JSON.parse(readFileSync(join(repoRoot, 'gateway.schema.json'), 'utf8'));
    assert.deepEqual(onDisk, buildConfigSchema(defaultRegistry()));
  });

  it('docs/config.md documents every kind the gateway knows (run `npm run generate` if this fails)', () => {
    const onDisk = readFileSync(join(repoRoot, 'docs/config.md'), 'utf8');
    assert.equal(onDisk, renderConfigReference(defaultRegistry()));
  });

  it('`eventgate schema` prints gateway.schema.json', async () => {
    const { code, stdout } = await runCliInProcess(['schema']);
    assert.equal(code, 0);
    assert.deepEqual(JSON.parse(stdout), JSON.parse(readFileSync(join(repoRoot, 'gateway.schema.json'), 'utf8')));
  });

  it('the build-time config validator loads without keeping its ~1 MB code cache in memory until a GC', () => {
    const before = process.memoryUsage().arrayBuffers;
    const validate = precompiledValidator(buildConfigSchema(defaultRegistry(), { acceptVariables: false }));
    const kept = process.memoryUsage().arrayBuffers - before;
    assert.equal(typeof validate, 'function', 'the build wrote a validator for this schema (run `npm run build`)');
    assert.ok(kept < 64 * 1024, `${kept} bytes of array buffers still held after loading the validator`);
  });
});
