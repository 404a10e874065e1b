import { existsSync } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { configUnreadable, formatDiagnostic, formatPath, type Diagnostic } from '../config/diagnostics.js';
import { DEFAULT_CONFIG_FILE, readSource, type Env } from '../config/source.js';
import { didYouMean } from '../config/suggest.js';
import { defaultRegistry } from '../kinds/index.js';
import { loadPlan } from '../plan/compile.js';
import type { Plan } from '../plan/types.js';
import type { TestResult } from '../testing/run-tests.js';
import { readTestFile, type TestFile } from '../testing/test-file.js';
import type { CliIo } from './io.js';
import { releaseAfterStart } from './startup-hold.js';

/** The tests of `gateway.yaml` live beside it in `gateway.tests.yaml`. */
export function testFileBeside(config: string): string {
  return join(dirname(config), `${basename(config, extname(config))}.tests${extname(config) || '.yaml'}`);
}

/** Whether `file` is named as a config test file (`*.tests.yaml`), not as a config. */
export function isTestFileName(file: string): boolean {
  return /\.tests\.ya?ml$/.test(file);
}

/**
 * The config a test file without `config:` tests, for `test` and `validate` alike: the one it sits
 * beside by name (`orders.tests.yaml` → `orders.yaml`), else a gateway.yaml beside it, else
 * ./gateway.yaml (a tests/ directory next to the config).
 */
function configOfTestFile(file: string): string {
  const beside = isTestFileName(file) ? file.replace(/\.tests(\.ya?ml)$/, '$1') : undefined;
  if (beside !== undefined && existsSync(beside)) return beside;
  const there = join(dirname(file), 'gateway.yaml');
  return existsSync(there) ? there : 'gateway.yaml';
}

/**
 * What `eventgate validate` checks of a config test file: the file itself, the config it tests
 * (its `config:`, else the config it sits beside), and that every route it names exists. So a CI
 * job that validates every YAML file of a config directory passes over the tests beside them.
 */
export async function checkTestFile(file: string, env: Env): Promise<Diagnostic[]> {
  const problems: Diagnostic[] = [];
  const t = readTestFile(file, problems);
  if (!t) return problems;
  // The routes its tests name are checked too when the file has problems: one run says them all.
  // As `eventgate test` finds them: the file's `config:`, else configOfTestFile.
  const config = t.config ?? configOfTestFile(file);
  const { plan, diagnostics } = await loadPlan(config, { registry: defaultRegistry(), env });
  problems.push(...diagnostics);
  if (plan) problems.push(...planProblems(t, plan, config));
  return problems;
}

/**
 * What makes a test of the file one that cannot run against the config, for `validate` and `test`
 * alike: a route the config lacks, or headers given to a consume route whose broker's messages
 * carry none (BrokerKind.headerless: MQTT 3.1.1), which would test what never happens.
 */
function planProblems(t: TestFile, plan: Plan, config: string): Diagnostic[] {
  const registry = defaultRegistry();
  const problems: Diagnostic[] = [];
  for (const { index, name, route, at } of t.routes) {
    if (plan.routes.has(route)) continue;
    const message = `test '${name}' names route '${route}', which ${config} does not define${didYouMean(route, plan.routes.keys())}; defined routes: ${[...plan.routes.keys()].join(', ')}`;
    problems.push({ file: t.file, ...at, code: 'EG_TEST_FILE', path: formatPath(['tests', index, 'route']), message });
  }
  // t.tests holds every test of the file, in its order (a file with a problem yields none), so i is the test's index there.
  t.tests.forEach((test, i) => {
    const route = plan.routes.get(test.route);
    if (route?.from.type !== 'broker' || Object.keys(test.input.headers).length === 0) return;
    const broker = plan.brokers.get(route.from.broker);
    const why = broker && registry.brokers.get(broker.kind)?.headerless?.(broker.options);
    if (why === undefined) return;
    const message = `route '${test.route}' reads broker '${route.from.broker}', whose messages carry no headers (${why}): the running route never gets input.headers (leave them out)`;
    problems.push({ file: t.file, ...test.input.place('headers'), code: 'EG_TEST_FILE', path: formatPath(['tests', i, 'input', 'headers']), message });
  });
  return problems;
}

/**
 * `eventgate test [-c FILE] [TESTFILE...] [--format text|junit]`: exit 0 when every test passes,
 * 1 when any fails, 2 when the tests cannot run (usage, unreadable test file, invalid config).
 */
export async function testCommand(config: string | undefined, testFiles: string[], format: string, env: Env, io: CliIo): Promise<number> {
  if (format !== 'text' && format !== 'junit') {
    io.stderr(`eventgate: --format must be text or junit, got '${format}'\n`);
    return 2;
  }
  /** Exit 2 (the tests cannot run): the problems on stderr, and with junit a report saying so. */
  const cannotRun = async (problems: readonly string[]): Promise<number> => {
    for (const p of problems) io.stderr(`${p}\n`);
    if (format === 'junit') io.stdout((await import('../testing/report.js')).junitCannotRun(problems));
    return 2;
  };
  const usageError = (diagnostics: readonly Diagnostic[], head: string[] = []) => cannotRun([...head, ...diagnostics.map(formatDiagnostic)]);
  const files = testFiles.length > 0 ? testFiles : [testFileBeside(config ?? DEFAULT_CONFIG_FILE)];
  if (testFiles.length === 0 && !existsSync(files[0]!)) {
    // A config that is not there (a mistyped -c) has no tests beside it either: say what is missing, as a named test file's run does.
    const configFile = config ?? DEFAULT_CONFIG_FILE;
    const unreadable: Diagnostic[] = [];
    if (!existsSync(configFile)) readSource(configFile, env, unreadable);
    if (unreadable.length > 0) return usageError(unreadable);
    return cannotRun([`eventgate: no tests: name test files, or put them in ${files[0]} (beside the config)`]);
  }
  const problems: Diagnostic[] = [];
  const loaded: TestFile[] = [];
  for (const f of files) {
    const t = readTestFile(f, problems);
    if (t) loaded.push(t);
  }
  // A test file's problems are said with those its tests meet in the config (routes it lacks) below, in one run.
  const fileProblems = problems.map(formatDiagnostic);

  // Each test file runs against -c, else the config it names, else the one `validate` checks it
  // against (`examples/kafka.tests.yaml` tests `examples/kafka.yaml`).
  const configOf = (t: TestFile) => config ?? t.config ?? configOfTestFile(t.file);
  // Loaded only to run tests: `validate` reads a test file through this module too (checkTestFile).
  const [{ runTest }, { junitReport, textReport }] = await Promise.all([import('../testing/run-tests.js'), import('../testing/report.js')]);
  const plans = new Map<string, Awaited<ReturnType<typeof loadPlan>>>();
  const registry = defaultRegistry();
  // Every test file's problems in one pass (each invalid config once, every unknown route and headerless input of every
  // file), as `validate` reports a file's, before any test runs: a CI run shows them all at once.
  const cannot: string[] = [];
  const runnable: { t: TestFile; plan: Plan }[] = [];
  for (const t of loaded) {
    const file = configOf(t);
    let load = plans.get(resolve(file));
    if (!load) {
      load = await loadPlan(file, { registry, env });
      // The config validator is loaded: the tests' expressions may run long enough to want TurboFan.
      releaseAfterStart();
      plans.set(resolve(file), load);
      // A file that cannot be read is said alone, as `validate` and `run` say it: nothing in it is invalid.
      if (!load.plan && !configUnreadable(load.diagnostics)) cannot.push(`eventgate: the config ${file} is invalid, so its tests cannot run:`);
      if (!load.plan) cannot.push(...load.diagnostics.map(formatDiagnostic));
    }
    if (!load.plan) continue;
    const unrunnable = planProblems(t, load.plan, file);
    if (unrunnable.length > 0) cannot.push(...unrunnable.map(formatDiagnostic));
    else runnable.push({ t, plan: load.plan });
  }
  if (fileProblems.length > 0 || cannot.length > 0) return cannotRun([...fileProblems, ...cannot]);
  const results: TestResult[] = [];
  for (const { t, plan } of runnable) for (const test of t.tests) results.push(await runTest(plan, test, registry));
  if (results.length === 0) return cannotRun([`eventgate: no tests in ${files.join(', ')}`]);
  io.stdout(format === 'junit' ? junitReport(results) : textReport(results));
  return results.every((r) => r.passed) ? 0 : 1;
}
