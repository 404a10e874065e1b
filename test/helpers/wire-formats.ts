import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { repoRoot } from './gateway.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const ajv = addFormats(new Ajv2020({ allErrors: true, strict: true }));

/** Asserts that `value` matches the wire format `schemas/<schemaFile>` documents for users. */
export function conforms(schemaFile: string, value: unknown): void {
  const check = ajv.getSchema(schemaFile) ?? (ajv.addSchema(JSON.parse(readFileSync(join(repoRoot, 'schemas', schemaFile), 'utf8')), schemaFile), ajv.getSchema(schemaFile)!);
  assert.ok(check(value), `${schemaFile}: ${JSON.stringify(check.errors)} for ${JSON.stringify(value)}`);
}
