import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';
import type { Diagnostic } from '../../src/config/diagnostics.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { textReport } from '../../src/testing/report.js';
import { runTest } from '../../src/testing/run-tests.js';
import { readTestFile } from '../../src/testing/test-file.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

describe('the README documents the command line', () => {
  it('has every command of `eventgate --help` in its command table', async () => {
    const { stdout } = await runCliInProcess(['--help']);
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

/** README.md and every page under docs/, as paths from the repository's root. */
function userPages(): string[] {
  return [
    'README.md',
    ...readdirSync(join(repoRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
}

describe('the pages a user reads', () => {
  // They are read by people who never saw docs/spec-checklist.md or the sessions that wrote it:
  // "(spec-checklist 758)" or "before the fortieth session" told them nothing.
  it('cite no checklist point and no session of the project', () => {
    const forContributors = new Set(['docs/spec-checklist.md', 'docs/testing.md', 'docs/performance.md', 'docs/architecture.md']);
    const problems: string[] = [];
    for (const page of userPages().filter((p) => !forContributors.has(p))) {
      const lines = readFileSync(join(repoRoot, page), 'utf8').split('\n');
      lines.forEach((line, i) => {
        // With the next line's first word: a citation wrapped at "forty-fifth\nsession" is one too.
        const withNext = `${line} ${lines[i + 1]?.trimStart().split(' ')[0] ?? ''}`;
        const cited = /spec-checklist|\(points? \d+|\b[a-z]+-?(?:first|second|third|[a-z]+th) session\b/i.exec(withNext);
        if (cited && cited.index < line.length) problems.push(`${page}:${i + 1}: ${cited[0]}`);
      });
    }
    assert.deepEqual(problems, []);
  });
});

describe('the YAML examples of README.md and docs/', () => {
  // Readers paste these into gateway.yaml: one that is not even YAML fails before eventgate sees it
  // (an unquoted ${VAR} inside {...} is the usual slip: YAML reads the { as a nested map).
  it('all parse as YAML, without duplicate keys', () => {
    const problems: string[] = [];
    for (const page of userPages()) {
      const text = readFileSync(join(repoRoot, page), 'utf8');
      for (const block of text.matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)) {
        const line = text.slice(0, block.index).split('\n').length;
        for (const doc of parseAllDocuments(block[1]!)) for (const e of doc.errors) problems.push(`${page}:${line}: ${e.message.split('\n')[0]}`);
      }
    }
    assert.deepEqual(problems, []);
  });
});

describe("docs/gitops.md's walkthrough", () => {
  // The page edits examples/gateway.yaml and tests the edit: the diff must apply to that file, its
  // tests must pass on the edited config and fail on the one before (else they test nothing), and
  // its failure report is what `eventgate test` prints. In-process, as `eventgate test` runs them.
  it('edits examples/gateway.yaml as its diff says; its config tests pass on the edit, fail before it, and fail as the page shows', async () => {
    const page = readFileSync(join(repoRoot, 'docs', 'gitops.md'), 'utf8');
    const diff = /^```diff\n([\s\S]*?)^```/m
      .exec(page)![1]!
      .split('\n')
      .filter((l) => l !== '');
    const side = (drop: string) =>
      diff
        .filter((l) => !l.startsWith(drop))
        .map((l) => l.slice(1))
        .join('\n');
    const tests = /^```yaml\n(tests:\n[\s\S]*?)^```/m.exec(page)![1]!;
    const dir = tempDir('docs-gitops');
    cpSync(join(repoRoot, 'examples'), dir, { recursive: true });
    const config = readFileSync(join(dir, 'gateway.yaml'), 'utf8');
    assert.ok(config.includes(side('+')), `the diff's lines before the edit are not in examples/gateway.yaml:\n${side('+')}`);
    const registry = defaultRegistry();
    const run = async (configText: string, testText: string) => {
      writeFileSync(join(dir, 'gateway.yaml'), configText);
      writeFileSync(join(dir, 'gateway.tests.yaml'), testText);
      const problems: Diagnostic[] = [];
      const file = readTestFile(join(dir, 'gateway.tests.yaml'), problems);
      const { plan, diagnostics } = await loadPlan(join(dir, 'gateway.yaml'), { registry, env: {} });
      assert.deepEqual([...problems, ...diagnostics], []);
      const results = [];
      for (const test of file!.tests) results.push(await runTest(plan!, test, registry));
      return textReport(results).replaceAll(`${dir}/`, '');
    };
    assert.match(await run(config, tests), /^1 of 3 tests failed$/m, 'the tests pass on the config before the edit');
    const edited = config.replace(side('+'), side('-'));
    assert.match(await run(edited, tests), /^3 tests passed$/m);
    // "A failure names the test file and line ...": the page's report, for the expectation it changes.
    const shown = /^```\n(FAIL {2}[\s\S]*?)^```/m.exec(page)![1]!;
    assert.equal(await run(edited, tests.replace('bright: false }', 'bright: true }')), shown);
  });
});

describe('the tables of README.md and docs/', () => {
  // A blank line ends a Markdown table: the rows after it render as a paragraph of pipes
  // (errors.md lost nine rows of its config table that way), and a table needs its `|---|` line.
  it('each start with a header and a separator line', () => {
    const problems: string[] = [];
    for (const page of userPages()) {
      const lines = readFileSync(join(repoRoot, page), 'utf8').split('\n');
      let fence = false;
      lines.forEach((line, i) => {
        if (line.startsWith('```')) fence = !fence;
        if (fence || !line.startsWith('|') || lines[i - 1]?.startsWith('|')) return;
        if (!/^\|(?:\s*:?-+:?\s*\|)+\s*$/.test(lines[i + 1] ?? '')) problems.push(`${page}:${i + 1}: a table row with no header and separator line above it`);
      });
    }
    assert.deepEqual(problems, []);
  });
});

describe('docs/operations.md and docs/config.md document the admin API', () => {
  it('has a row in its endpoint table for every endpoint of src/admin, and config.md names each', () => {
    // The endpoints as the admin modules register them: route('METHOD /path', ...) and upgrade('/path', ...).
    const admin = join(repoRoot, 'src', 'admin');
    const endpoints = new Set<string>();
    for (const f of readdirSync(admin).filter((f) => f.endsWith('.ts'))) {
      const text = readFileSync(join(admin, f), 'utf8');
      for (const m of text.matchAll(/\broute\('([A-Z]+) (\/[^']*)'/g)) endpoints.add(`${m[1]} ${m[2]}`);
      for (const m of text.matchAll(/\bupgrade\('(\/[^']*)'/g)) endpoints.add(`GET ${m[1]}`);
    }
    assert.ok(endpoints.has('POST /admin/reload') && endpoints.has('GET /admin/tap'), `the admin modules' registrations were not found: ${[...endpoints]}`);
    // operations.md's endpoint table, and the admin section of docs/config.md (generated from src/config/reference.ts).
    const named = (page: string, pattern: RegExp) => new Set([...readFileSync(join(repoRoot, 'docs', page), 'utf8').matchAll(pattern)].map((m) => `${m[1]} ${m[2]}`));
    const table = named('operations.md', /^\| `([A-Z]+) (\/[^`?\s]*)/gm);
    const config = named('config.md', /`([A-Z]+) (\/[^`?\s]*)/g);
    assert.deepEqual(
      [...endpoints].filter((e) => !table.has(e)).map((e) => `operations.md: ${e}`),
      [],
    );
    assert.deepEqual(
      [...endpoints].filter((e) => !config.has(e)).map((e) => `config.md: ${e}`),
      [],
    );
  });
});

describe('docs/operations.md documents the metrics', () => {
  it('has a row in its metrics table for every series family of src/telemetry/prometheus.ts', () => {
    const source = readFileSync(join(repoRoot, 'src', 'telemetry', 'prometheus.ts'), 'utf8');
    const families = [
      ...[...source.matchAll(/\bname: '(eventgate_[a-z_]+)'/g)].map((m) => m[1]!),
      // Per broker kind: `${prefix}_consumer_lag` with prefix `eventgate_<kind>`.
      ...[...source.matchAll(/\bname: `\$\{prefix\}(_[a-z_]+)`/g)].map((m) => `eventgate_<kind>${m[1]}`),
    ];
    assert.ok(families.includes('eventgate_route_messages_total') && families.includes('eventgate_<kind>_consumer_lag'), `the metric names were not found: ${families}`);
    const rows = new Set([...readFileSync(join(repoRoot, 'docs', 'operations.md'), 'utf8').matchAll(/^\| `(eventgate_[a-z_<>]+)` \|/gm)].map((m) => m[1]!));
    assert.deepEqual(
      families.filter((f) => !rows.has(f)),
      [],
    );
  });
});
