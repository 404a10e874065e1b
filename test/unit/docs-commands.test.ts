import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot, runCli } from '../helpers/gateway.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

describe('the README documents the command line', () => {
  it('has every command of `eventgate --help` in its command table', async () => {
    const { stdout } = await runCli(['--help']);
    const commands = [...stdout.matchAll(/^ {2}eventgate ([a-z]+(?: asyncapi)?)/gm)].map((m) => m[1]!);
    assert.deepEqual(commands, ['run', 'validate', 'test', 'plan', 'export asyncapi', 'schema']);
    for (const c of commands) assert.match(readme, new RegExp(`^\\| \`eventgate ${c}\\b`, 'm'), `README command table row for ${c}`);
  });

  it('mentions the port and log level overrides of the examples and the AsyncAPI examples', () => {
    for (const v of ['HTTP_PORT', 'WS_PORT', 'ADMIN_PORT', 'LOG_LEVEL']) assert.match(readme, new RegExp(v));
    assert.match(readme, /examples\/asyncapi-3\.0\/gateway\.yaml/);
    assert.match(readme, /docs\/gitops\.md/);
  });

  it('docs/errors.md names only config keys that exist', () => {
    assert.doesNotMatch(readFileSync(join(repoRoot, 'docs/errors.md'), 'utf8'), /allowedOrigins/);
  });
});
