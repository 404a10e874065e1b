import { existsSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { formatDiagnostic, type Diagnostic } from '../config/diagnostics.js';
import type { Env } from '../config/source.js';
import { defaultRegistry } from '../kinds/index.js';
import { loadPlan } from '../plan/compile.js';
import { junitReport, textReport } from '../testing/report.js';
import { runTest, type TestResult } from '../testing/run-tests.js';
import { readTestFile, type TestFile } from '../testing/test-file.js';

/** The tests of `gateway.yaml` live beside it in `gateway.tests.yaml`. */
export function testFileBeside(config: string): string {
  return join(dirname(config), `${basename(config, extname(config))}.tests${extname(config) || '.yaml'}`);
}

/**
 * `eventgate test [-c FILE] [TESTFILE...] [--format text|junit]`: exit 0 when every test passes,
 * 1 when any fails, 2 when the tests cannot run (usage, unreadable test file, invalid config).
 */
export async function testCommand(config: string | undefined, testFiles: string[], format: string, env: Env): Promise<number> {
  if (format !== 'text' && format !== 'junit') {
    process.stderr.write(`eventgate: --format must be text or junit, got '${format}'\n`);
    return 2;
  }
  const files = testFiles.length > 0 ? testFiles : [testFileBeside(config ?? 'gateway.yaml')];
  if (testFiles.length === 0 && !existsSync(files[0]!)) {
    process.stderr.write(`eventgate: no tests: name test files, or put them in ${files[0]} (beside the config)\n`);
    return 2;
  }
  const problems: Diagnostic[] = [];
  const loaded: TestFile[] = [];
  for (const f of files) {
    const t = readTestFile(f, problems);
    if (t) loaded.push(t);
  }
  if (problems.length > 0) return usageError(problems);

  // Each test file runs against -c, else the config it names, else ./gateway.yaml.
  const configOf = (t: TestFile) => config ?? (t.config !== undefined ? join(dirname(t.file), t.config) : 'gateway.yaml');
  const results: TestResult[] = [];
  const plans = new Map<string, Awaited<ReturnType<typeof loadPlan>>>();
  for (const t of loaded) {
    const file = configOf(t);
    let load = plans.get(resolve(file));
    if (!load) {
      load = await loadPlan(file, { registry: defaultRegistry(), env });
      plans.set(resolve(file), load);
      if (!load.plan) {
        process.stderr.write(`eventgate: the config ${file} is invalid, so its tests cannot run:\n`);
        return usageError(load.diagnostics);
      }
    }
    for (const test of t.tests) results.push(await runTest(load.plan!, test));
  }
  if (results.length === 0) {
    process.stderr.write(`eventgate: no tests in ${files.join(', ')}\n`);
    return 2;
  }
  process.stdout.write(format === 'junit' ? junitReport(results) : textReport(results));
  return results.every((r) => r.passed) ? 0 : 1;
}

function usageError(diagnostics: Diagnostic[]): number {
  for (const d of diagnostics) process.stderr.write(`${formatDiagnostic(d)}\n`);
  return 2;
}
