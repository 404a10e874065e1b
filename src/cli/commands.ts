import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import { configUnreadable, formatDiagnostic, formatWarning, reported, type Diagnostic, type ReportedDiagnostic } from '../config/diagnostics.js';
import { buildConfigSchema } from '../config/schema.js';
import { redactAround, redactDiagnostics } from '../config/secrets.js';
import { didYouMean } from '../config/suggest.js';
import { defaultRegistry } from '../kinds/index.js';
import { loadPlan } from '../plan/compile.js';
import { DEFAULT_CONFIG_FILE, type Env } from '../config/source.js';
import { loadEnv } from './env.js';
import { type CliIo, processIo } from './io.js';
import { takeEarlySignals } from './early-signals.js';
import { releaseAfterStart } from './startup-hold.js';
import { COMMAND_NAMES, commandArgs, commandOptions, commandUsage, USAGE } from './usage.js';
import { instanceId, instanceIdProblem } from '../config/instance-id.js';

/** A second SIGINT sooner than this after the first is the same Ctrl-C, delivered twice. */
const REPEATED_CTRL_C_MS = 500;

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  format: { type: 'string', default: 'text' },
  warnings: { type: 'boolean' },
  'vars-file': { type: 'string', multiple: true, default: [] as string[] },
  from: { type: 'string' },
  admin: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} satisfies ParseArgsConfig['options'];

/**
 * A usage error exits 2, except for `plan`, where 2 means "the reload changes something": CI jobs
 * accept that code (`|| [ $? -eq 2 ]`), so a plan that could not be made must not exit with it.
 */
async function usageError(io: CliIo, command: string | undefined, message: string, values: Record<string, unknown>): Promise<number> {
  // A command's own usage says what it takes; the general one, what there is.
  io.stderr(`eventgate: ${message}\n${(command && commandUsage(command)) || USAGE}\n`);
  if (command !== 'plan') return 2;
  await planNotMade(io, values, message);
  return 1;
}

/** `--format json` promises a document on stdout, also when no plan could be made (`errors`: why, where a file says it). */
async function planNotMade(io: CliIo, values: Record<string, unknown>, message: string, errors?: ReportedDiagnostic[]): Promise<void> {
  const text = (v: unknown) => (typeof v === 'string' ? v : undefined);
  if (values.format !== 'json') return;
  (await import('./plan.js')).writeNotMade({ config: text(values.config) ?? DEFAULT_CONFIG_FILE, from: text(values.from), admin: text(values.admin), format: 'json', io }, message, errors);
}

/** Runs the command `argv` names (without node and the script); resolves to the exit code. */
export async function main(argv: string[], io: CliIo = processIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, tokens: true, options: OPTIONS });
  } catch (err) {
    // Which command was meant, to choose the exit code: the same parse, leniently.
    const lenient = parseArgs({ args: argv, allowPositionals: true, strict: false, options: OPTIONS });
    const command = lenient.positionals[0];
    // Node's own text ends in an unbalanced quote and says nothing of the options there are.
    const unknown = /^Unknown option '(-{1,2})([^']*)'/.exec((err as Error).message);
    const commandTakes = command ? commandOptions(command) : undefined;
    const takes = commandTakes ?? Object.keys(OPTIONS);
    const message = unknown
      ? `unknown option '${unknown[1]}${unknown[2]}'${didYouMean(unknown[2]!, takes).replace(/'([^']+)'/, "'--$1'")}${commandTakes ? `; '${command}' takes ${takes.map((o) => `--${o}`).join(', ')}` : ''}`
      : (err as Error).message;
    return await usageError(io, command, message, lenient.values);
  }
  const { values, positionals } = parsed;
  if (values.version) {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    io.stdout(`eventgate ${pkg.version}\n`);
    return 0;
  }
  const command = positionals[0];
  // Help needs no config and no variables: `eventgate validate --help`, `eventgate help validate`.
  if (values.help || command === 'help') return help(io, command === 'help' ? positionals[1] : command);
  if (command === undefined) {
    io.stdout(`${USAGE}\n`);
    return 2;
  }
  // Before the vars files are read: `--vars-file ''` is the same mistake as `-c ''`.
  const empty = commandOptions(command) ? emptyArgument(parsed.tokens ?? []) : undefined;
  if (empty !== undefined) return await usageError(io, command, empty, values);
  const loaded = loadEnv(values['vars-file'] ?? [], io.env);
  if ('error' in loaded) {
    io.stderr(`eventgate: ${loaded.error}\n`);
    // A report a CI job reads is written all the same (validate's and plan's JSON, test's JUnit),
    // with the problem at its place in the vars file, as a rejected reload reports it.
    const problem: Diagnostic = { file: loaded.file, line: loaded.line, column: loaded.column, code: 'EG_CONFIG_FILE', path: '', message: loaded.message };
    if (command === 'validate' && values.format === 'json') io.stdout(`${JSON.stringify([reported(problem, 'error')], null, 2)}\n`);
    if (command === 'test' && values.format === 'junit') io.stdout((await import('../testing/report.js')).junitCannotRun([`eventgate: ${loaded.error}`]));
    // The config cannot be loaded without its variables: for run, validate and export that is a config that
    // does not load (1, spec §1), for test a config error (2); for plan 2 would say "the reload
    // changes something", so a plan not made is 1.
    if (command === 'plan') await planNotMade(io, values, loaded.error, [reported(problem, 'error')]);
    return command === 'run' || command === 'validate' || command === 'plan' || command === 'export' ? 1 : 2;
  }
  const { env } = loaded;
  const takes = commandOptions(command);
  if (takes) {
    // `eventgate validate broken.yaml` must not check ./gateway.yaml and print ok.
    const extra = positionals[commandArgs(command)];
    if (extra !== undefined) {
      const hint =
        command !== 'schema' && /\.(ya?ml|json)$/i.test(extra) && values.config === undefined
          ? ` (the config is given with -c: eventgate ${positionals.slice(0, commandArgs(command)).join(' ')} -c ${extra})`
          : '';
      return await usageError(io, command, `unexpected argument '${extra}'${hint}`, values);
    }
    const given = parsed.tokens?.filter((t) => t.kind === 'option').map((t) => t.name) ?? [];
    const foreign = given.find((name) => !takes.includes(name));
    if (foreign !== undefined) return await usageError(io, command, `'${command}' does not take --${foreign}`, values);
  }
  switch (command) {
    case 'run': {
      const problem = instanceIdProblem(env);
      if (problem !== undefined) {
        io.stderr(`eventgate: ${problem}\n`);
        return 1;
      }
      return run(values.config ?? DEFAULT_CONFIG_FILE, env, values['vars-file'] ?? []);
    }
    case 'validate':
      if (values.format !== 'text' && values.format !== 'json') {
        io.stderr(`eventgate: --format must be text or json, got '${values.format}'\n`);
        return 2;
      }
      // Text prints the warnings on stderr whatever is asked: --warnings there did nothing, where
      // its asker meant them in the report (a usage error, exit 2, as for test's).
      if (values.warnings === true && values.format !== 'json')
        return await usageError(io, command, "--warnings adds the warnings to --format json's array (text prints them on stderr without it): add --format json, or leave --warnings out", values);
      return await validate(values.config ?? DEFAULT_CONFIG_FILE, values.format, values.warnings === true, env, io);
    // The other commands are loaded when used, so `run` does not carry their code.
    case 'test':
      return await (await import('./test.js')).testCommand(values.config, positionals.slice(1), values.format!, env, io);
    case 'plan':
      return await (await import('./plan.js')).planCommand({
        config: values.config ?? DEFAULT_CONFIG_FILE,
        from: values.from,
        admin: values.admin,
        token: values.token,
        format: values.format!,
        env,
        varsFiles: loaded.files,
        io,
      });
    case 'export':
      return await (await import('./export.js')).exportCommand(positionals[1], values.config ?? DEFAULT_CONFIG_FILE, env, io);
    case 'schema':
      io.stdout(`${JSON.stringify(buildConfigSchema(defaultRegistry()), null, 2)}\n`);
      return 0;
    default:
      return unknownCommand(io, command);
  }
}

/** `eventgate --help` (no command) or a command's own help; exit 0, or 2 for no such command. */
function help(io: CliIo, command: string | undefined): number {
  if (command === undefined) {
    io.stdout(`${USAGE}\n`);
    return 0;
  }
  const usage = commandUsage(command);
  if (usage === undefined) return unknownCommand(io, command);
  io.stdout(`${usage}\n`);
  return 0;
}

/**
 * An option or argument given as an empty string: what `-c "$CONFIG"` passes with CONFIG unset.
 * Read as a file name it printed `:1:1: cannot read config file` (no FILE in FILE:LINE:COL);
 * `-c` with no value at all is already a usage error, and this is the same mistake.
 */
function emptyArgument(tokens: NonNullable<ReturnType<typeof parseArgs>['tokens']>): string | undefined {
  for (const t of tokens) {
    if (t.kind === 'option' && t.value === '') return `${t.rawName} was given an empty value (is the variable that should hold it unset?)`;
    if (t.kind === 'positional' && t.value === '') return 'an argument is an empty string (is the variable that should hold it unset?)';
  }
  return undefined;
}

function unknownCommand(io: CliIo, command: string): number {
  io.stderr(`eventgate: unknown command '${command}'${didYouMean(command, COMMAND_NAMES)}\n${USAGE}\n`);
  return 2;
}

/**
 * `withWarnings` (`--warnings`) puts the warnings in the JSON array after the errors: by default it
 * is the contract's array of problems (spec §1), which a config that is valid leaves empty.
 */
async function validate(file: string, format: 'text' | 'json', withWarnings: boolean, env: Env, io: CliIo): Promise<number> {
  const tests = await import('./test.js');
  const loaded = tests.isTestFileName(file) ? { diagnostics: await tests.checkTestFile(file, env), warnings: [] } : await loadPlan(file, { registry: defaultRegistry(), env });
  // Redacted as run's are: a problem may quote a value the environment gave (JSONata's `Syntax
  // error: "<token>"` for `authorization: "Bearer ${TOKEN}"`), and validate's output is a CI job's log.
  const secrets = ('secrets' in loaded ? loaded.secrets : undefined) ?? new Set<string>();
  const diagnostics = redactDiagnostics(loaded.diagnostics, secrets);
  const warnings = redactDiagnostics(loaded.warnings ?? [], secrets);
  // Warnings leave the config valid: stdout stays `ok` / the problems and they go to stderr,
  // whatever the format (an invalid config's too, those of its parts sound enough to compile:
  // spec-checklist 2016). With --warnings the JSON array has them as well, after the errors.
  for (const w of warnings) io.stderr(`${formatWarning(w)}\n`);
  if (format === 'json') {
    const listed = withWarnings ? warnings.map((w) => reported(w, 'warning')) : [];
    io.stdout(`${JSON.stringify([...diagnostics.map((d) => reported(d, 'error')), ...listed], null, 2)}\n`);
  } else if (diagnostics.length === 0) {
    io.stdout('ok\n');
  } else {
    for (const d of diagnostics) io.stdout(`${formatDiagnostic(d)}\n`);
  }
  return diagnostics.length === 0 ? 0 : 1;
}

async function run(file: string, env: Env, varsFiles: readonly string[]): Promise<number> {
  // Loaded here, not at the top: validate, test, plan and export never use the runtime, the admin
  // server or the logger, and every module file is start-up time of each call (docs/testing.md).
  const [{ createLogger }, { createAdminServer }, { Gateway }] = await Promise.all([import('../log.js'), import('../admin/index.js'), import('../runtime/gateway.js')]);
  const logger = createLogger('info', instanceId(env));
  process.on('uncaughtException', (err) => logger.error({ err: { message: err.message, stack: err.stack } }, 'uncaught exception (please report this bug)'));
  process.on('unhandledRejection', (err) => logger.error({ err: { message: (err as Error)?.message ?? String(err) } }, 'unhandled rejection (please report this bug)'));
  // --vars-file values are read again at every reload (and the files watched), as the config's own files are.
  const readEnv = varsFiles.length > 0 ? () => loadEnv(varsFiles, process.env, { reload: true }) : undefined;
  const gateway = new Gateway({ configFile: file, registry: defaultRegistry(), env, readEnv, logger, admin: createAdminServer });
  // Signals are handled from the first moment: a SIGHUP or SIGTERM that arrives while the first
  // config loads must not kill the process with the default action (and lose in-flight work).
  let started = false;
  let hupWhileStarting = false;
  let signalled: { signal: string; at: number } | undefined;
  let exit: (code: number) => void = () => undefined;
  const exited = new Promise<number>((resolve) => (exit = resolve));
  process.on('SIGHUP', () => {
    // Once a shutdown began (maybe before the first load had ended), the gateway says it reloads nothing.
    if (started || signalled) void gateway.reload('SIGHUP');
    else hupWhileStarting = true;
  });
  const stop = (signal: string) => {
    if (signalled) {
      // Only an operator's second Ctrl-C cuts the drain short. A repeated SIGTERM is what
      // supervisors send while they wait (and Kubernetes follows with SIGKILL anyway), and a
      // SIGINT that comes twice at once is one Ctrl-C delivered by the terminal and again by a
      // wrapper that forwards it (npm under a shell that execs its command).
      const forced = signal === 'SIGINT' && signalled.signal === 'SIGINT' && performance.now() - signalled.at >= REPEATED_CTRL_C_MS;
      if (!forced) {
        // Not "draining": admin.shutdownDelayMs may still be serving. The Ctrl-C hint only after a
        // Ctrl-C: after a SIGTERM no Ctrl-C cuts the shutdown short.
        logger.info({ signal }, `signal received again: still shutting down${signalled.signal === 'SIGINT' ? ' (a second Ctrl-C exits at once)' : ''}`);
        return;
      }
      logger.warn({ signal }, 'second Ctrl-C: exiting without waiting for the drain');
      // At once, not through `exited`: a drain that completes in the same moment (its exit(0)
      // already on its way) must not win over the operator's forced exit. The log is written
      // synchronously, so nothing is left to flush.
      process.exit(1);
    }
    signalled = { signal, at: performance.now() };
    logger.info({ signal }, 'signal received');
    gateway.shutdown().then(
      () => exit(0),
      (err) => {
        logger.error({ err: (err as Error).message }, 'shutdown failed');
        exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // node answers SIGUSR1 by opening its inspector on 127.0.0.1:9229, which runs any code a local
  // process sends it, as this one; log rotation scripts send it to servers that reopen their logs
  // on it (nginx). A handler of our own keeps the inspector closed (`node --inspect` opens it on purpose).
  process.on('SIGUSR1', () => logger.warn({ signal: 'SIGUSR1' }, 'signal ignored: eventgate reloads on SIGHUP and drains on SIGTERM or SIGINT (the node inspector SIGUSR1 would open stays closed)'));
  // The signals that came while the modules loaded, now that they have their handlers.
  for (const signal of takeEarlySignals()) process.emit(signal, signal);

  const loaded = await gateway.start();
  releaseAfterStart();
  if (!loaded.plan) {
    loaded.diagnostics = redactDiagnostics(loaded.diagnostics, loaded.secrets ?? new Set());
    const problem = configUnreadable(loaded.diagnostics) ? 'cannot read the config file' : 'config is invalid';
    for (const d of loaded.diagnostics) logger.error({ diagnostic: formatDiagnostic(d), code: d.code }, problem);
    for (const d of loaded.diagnostics) process.stderr.write(`${formatDiagnostic(d)}\n`);
    if (loaded.diagnostics.length === 0) {
      // A valid config that could not be put in place (a port taken): the log says why, as stderr does.
      const secrets = loaded.secrets ?? new Set<string>();
      // `could not start FILE: ...`: the file named as it is, as the diagnostics name it.
      const error = redactAround(gateway.lastError?.message ?? 'the gateway could not start', file, secrets);
      const where = redactDiagnostics(gateway.lastError?.diagnostics ?? [], secrets)[0];
      logger.error({ error, ...(where && { diagnostic: formatDiagnostic(where), code: where.code }) }, 'gateway could not start');
      process.stderr.write(where ? `${formatDiagnostic(where)}\n` : `eventgate: ${error}\n`);
    }
    await gateway.shutdown();
    return 1;
  }
  // A SIGINT or SIGTERM while the config loaded: nothing was started, the shutdown ends the run.
  if (signalled) return exited;
  started = true;
  if (gateway.listeners.size === 0 && !gateway.adminAddress()) logger.warn('the config has no listeners and no admin server');
  if (hupWhileStarting && !signalled) void gateway.reload('SIGHUP');
  return exited;
}
