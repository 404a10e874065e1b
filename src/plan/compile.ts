import { hostname } from 'node:os';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { checkSchema } from '../config/check-schema.js';
import { instanceId } from '../config/instance-id.js';
import { formatPath, type Diagnostic } from '../config/diagnostics.js';
import { mergedPath, pathsInOwnFiles, resolveIncludes } from '../config/include.js';
import { pruneInvalid } from '../config/prune.js';
import { isSecretPath, secretValues } from '../config/secrets.js';
import { readSource, type Env, type PathPart, type SourceDocument } from '../config/source.js';
import { hash } from '../core/canonical.js';
import type { KindRegistry } from '../kinds/registry.js';
import { AsyncApiCatalog } from './asyncapi.js';
import { compileAdmin, compileBrokers, compileListeners } from './components.js';
import { findConflicts } from './conflicts.js';
import { feedbackLoops } from './feedback-loops.js';
import { CompileContext } from './context.js';
import { compileRoutes } from './routes.js';
import { StepCompiler } from './steps.js';
import { listed } from './variable-reads.js';
import type { Plan, RoutePlan } from './types.js';

/** Shorter admin tokens get a warning; as an apiKey step's keys must be. */
const MIN_ADMIN_TOKEN_CHARS = 16;

// The compile stage, one module per part: context.ts (what every part shares: problems, files
// read, expressions, JSON Schemas), asyncapi.ts (the AsyncAPI documents), components.ts (brokers,
// listeners, admin), steps.ts (chains and steps), routes.ts (routes and their sources) and
// targets.ts (targets, webhooks); this module runs them in order and assembles the plan.

export interface LoadOptions {
  registry: KindRegistry;
  env: Env;
  /**
   * Contents to use instead of what is on disk, by absolute path: the admin API loads the config
   * with an uploaded AsyncAPI document this way, to check it before writing it.
   */
  overrides?: ReadonlyMap<string, string>;
  /**
   * Files besides the config's own that its values come from (`run --vars-file`), by absolute
   * path, with the hash of what was read: watched, and part of the plan's version like the config's files.
   */
  extraFiles?: ReadonlyMap<string, string>;
  /** A running gateway's reload: the config file's errors are those of an edit (readSource). */
  reload?: boolean;
}

export interface LoadResult {
  plan: Plan | undefined;
  diagnostics: Diagnostic[];
  /** Every file the config referenced (even when loading failed), so a fix to any of them is noticed. */
  files: string[];
  /**
   * Content hash of each file as this load read it ('missing' when it could not be read). A
   * watcher compares against these, not against a later read, or an edit made while the load
   * ran would go unnoticed.
   */
  seen: Map<string, string>;
  /**
   * Things that are valid but probably not meant (a route that feeds the topic it reads): `eventgate
   * validate` prints them on stderr and still says ok; `run` logs them. An invalid config has those
   * of its sound parts (validate prints them beside its errors, as eslint and terraform do: a
   * warning may say what an error's cause is); none when its errors left nothing to compile.
   */
  warnings?: Diagnostic[];
  /** Secret strings of the loaded file (see secretValues), also when it was rejected: its diagnostics are redacted with them. */
  secrets?: ReadonlySet<string>;
  /** Where a key of a loaded config is written (its file, fragments included): problems found later, such as a port that cannot be bound, point at it. */
  locate?: (path: readonly PathPart[]) => { file: string; line: number; column: number };
}

/**
 * parse → schema check → compile. Collects every problem it can rather than stopping at the first.
 * Asynchronous because AsyncAPI documents are parsed (and their `$ref`s resolved) asynchronously.
 */
export async function loadPlan(file: string, options: LoadOptions): Promise<LoadResult> {
  const configFile = resolve(file);
  const diagnostics: Diagnostic[] = [];
  const { source: root, bytes } = readSource(file, options.env, diagnostics, { reload: options.reload });
  const configSeen = new Map([[configFile, bytes ? hash(bytes) : 'missing'], ...(options.extraFiles ?? [])]);
  if (!root) return { plan: undefined, diagnostics, files: [...configSeen.keys()], seen: configSeen };
  const notConfig = asyncApiDocument(root, file);
  if (notConfig) return { plan: undefined, diagnostics: [notConfig], files: [...configSeen.keys()], seen: configSeen };
  // Fragments named by `include:` are merged in; the watcher follows them (and each glob's directory).
  const included = resolveIncludes(root, file, options.env, diagnostics);
  for (const [f, h] of included?.files ?? []) configSeen.set(f, h);
  const src = included?.source ?? root;
  // What the file's own defaults gave is its text, shown as written (SourceDocument.defaultsOnly).
  const secrets = secretValues(src.value, new Set([...src.fromEnv].filter((p) => !src.defaultsOnly?.has(p))), src.envValues);
  // This instance's id and host name are no secrets: /admin/status and every log line show the id.
  // Put in the config through ${EVENTGATE_INSTANCE_ID} or ${HOSTNAME} (an MQTT clientId must differ
  // between instances), they were redacted like a password: /admin/status said `"instanceId":
  // "[redacted]"`, and a per-instance group name in a detail `eventgate-live-[redacted]`.
  secrets.delete(instanceId(options.env));
  secrets.delete(hostname());
  // A value whose variable is missing was left unsubstituted: its schema error would only repeat the problem.
  const missingEnv = new Set(diagnostics.filter((d) => d.code === 'EG_CONFIG_ENV').map((d) => `${d.file}\0${d.path}`));
  const schemaProblems = [
    ...quotingHints(root, checkSchema(root, options.registry)),
    ...(included?.fragments ?? []).flatMap((f) => quotingHints(f.source, checkSchema(f.source, options.registry, { fragment: true })).map((d) => ({ ...d, path: mergedPath(d.path, f.routeOffset) }))),
  ];
  diagnostics.push(...schemaProblems.filter((d) => !missingEnv.has(`${d.file}\0${d.path}`)));
  // With problems so far, the parts that are still sound are compiled anyway, so one run reports everything.
  // (A name defined twice keeps its first definition: that is not a part to leave out.)
  const pruned =
    diagnostics.length > 0
      ? pruneInvalid(
          src.value,
          diagnostics.filter((d) => d.code !== 'EG_CONFIG_CONFLICT'),
        )
      : undefined;
  if (diagnostics.length > 0 && !pruned) return { plan: undefined, diagnostics: sortDiagnostics(pathsInOwnFiles(diagnostics, included)), files: [...configSeen.keys()], seen: configSeen, secrets };
  const ctx = new CompileContext(src, configFile, configSeen.get(configFile)!, options.registry, options.overrides, pruned);
  for (const [f, h] of [...(included?.files ?? []), ...(options.extraFiles ?? [])]) ctx.files.set(f, h);
  const asyncapi = new AsyncApiCatalog(ctx);
  await asyncapi.load();
  const plan = compile(ctx, asyncapi, secrets);
  const warnings = [...ctx.warnings, ...routeWarnings(ctx, plan), ...adminWarnings(ctx), ...shellVariableWarnings(ctx)];
  const files = [...ctx.files.keys()];
  const seen = new Map(ctx.files);
  diagnostics.push(...ctx.diagnostics);
  const warned = sortDiagnostics(pathsInOwnFiles(warnings, included));
  if (diagnostics.length > 0) return { plan: undefined, diagnostics: sortDiagnostics(pathsInOwnFiles(diagnostics, included)), warnings: warned, files, seen, secrets };
  return {
    plan,
    diagnostics: [],
    warnings: warned,
    files,
    seen,
    secrets,
    locate: (path) => ({ file: ctx.fileOf(path), ...ctx.src.locate(path, 'key') }),
  };
}

/**
 * An AsyncAPI document given where a gateway config is expected (`validate -c asyncapi.yaml`, or a
 * loop over a directory's YAML files): one problem that says so, instead of a dozen unknown keys and
 * "cannot read '3.0.0'" from reading its `asyncapi:` version as the config's document path.
 */
function asyncApiDocument(root: SourceDocument, file: string): Diagnostic | undefined {
  const v = root.value as Record<string, unknown> | null;
  if (v === null || typeof v !== 'object' || Array.isArray(v) || 'version' in v) return undefined;
  if (typeof v.asyncapi !== 'string' || !/^\d+\.\d+\.\d+/.test(v.asyncapi)) return undefined;
  const { line, column } = root.locate(['asyncapi'], 'key');
  return {
    file,
    line,
    column,
    code: 'EG_CONFIG_SCHEMA',
    path: formatPath(['asyncapi']),
    message: `this is an AsyncAPI ${v.asyncapi} document, not a gateway config: name it in a gateway config's \`asyncapi:\` key, where validate checks it`,
  };
}

/**
 * `password: $KAFKA_PASSWORD`, as Docker Compose and shells take it: eventgate replaces `${VAR}`
 * only (a `$name` is JSONata's), so the value is that text, and a broker's login fails at run time
 * with nothing said. A warning at each value that is a whole `$NAME` in capitals; one that came
 * from the environment is the environment's value, not written so.
 */
function shellVariableWarnings(ctx: CompileContext): Diagnostic[] {
  const out: Diagnostic[] = [];
  const visit = (value: unknown, path: PathPart[]): void => {
    if (typeof value === 'string') {
      const m = /^\$([A-Z_][A-Z0-9_]*)$/.exec(value);
      if (!m || ctx.src.fromEnv.has(formatPath(path))) return;
      const { line, column } = ctx.src.locate(path, 'value');
      // A password that happens to look so is not printed, nor named by what it holds.
      const name = isSecretPath(path) ? 'VAR' : m[1]!;
      const what = isSecretPath(path) ? 'this value, a `$` and capitals,' : `'${value}'`;
      const message = `${what} is taken as it is written: eventgate replaces a variable written \`\${${name}}\`, with braces (as \`\${${name}:-default}\` with a default), not a shell's \`$${name}\``;
      out.push({ file: ctx.fileOf(path), line, column, code: 'EG_CONFIG_SHELL_VARIABLE', path: formatPath(path), message });
    } else if (Array.isArray(value)) value.forEach((v, i) => visit(v, [...path, i]));
    else if (value !== null && typeof value === 'object') for (const [k, v] of Object.entries(value)) visit(v, [...path, k]);
  };
  visit(ctx.src.value, []);
  return out;
}

/** An admin token short enough to guess (a warning: the contract sets no length, and configs in use may have one). */
function adminWarnings(ctx: CompileContext): Diagnostic[] {
  const token = ctx.config.admin?.token;
  if (typeof token !== 'string' || token.length >= MIN_ADMIN_TOKEN_CHARS) return [];
  const path = ['admin', 'token'];
  const { line, column } = ctx.src.locate(path, 'value');
  // The token's length only, never the token: it may come from ${VAR} and validate's output lands in CI logs.
  const message = `admin.token is ${token.length} character${token.length === 1 ? '' : 's'} long; a token shorter than ${MIN_ADMIN_TOKEN_CHARS} characters can be guessed by whoever reaches the admin port from enough addresses (each may try 10 a minute): use a random one of 32 or more, e.g. from \`openssl rand -hex 32\``;
  return [{ file: ctx.fileOf(path), line, column, code: 'EG_CONFIG_WEAK_TOKEN', path: formatPath(path), message }];
}

/**
 * Routes that feed the topics they read (feedback-loops.ts), at their `to` lines; topics a route
 * reads that its broker's kind finds suspicious (BrokerKind.readWarning), at their `from.topic`;
 * forward paths naming a parameter their route's path lacks (forwardParameterWarnings).
 */
function routeWarnings(ctx: CompileContext, plan: Plan): Diagnostic[] {
  const written = (ctx.config.routes ?? []) as ({ name?: string; to?: unknown } | undefined)[];
  const index = new Map(written.flatMap((r, i) => (r?.name ? [[r.name, i] as const] : [])));
  const routes = [...plan.routes.values()].filter((r) => index.has(r.name)).map((route) => ({ route, index: index.get(route.name)!, toIsList: Array.isArray(written[index.get(route.name)!]?.to) }));
  const at = (path: PathPart[], code: string, message: string): Diagnostic => {
    const { line, column } = ctx.src.locate(path, 'value');
    return { file: ctx.fileOf(path), line, column, code, path: formatPath(path), message };
  };
  // A topic from the environment is redacted, and so must its rewrite be: the hint names the variable.
  const suspicious = (path: PathPart[], route: string, warning: string): Diagnostic => {
    const variables = ctx.environmentVariablesOf(path);
    const said = variables === undefined ? warning : warning.replace(/ \(did you mean '[^']*'\?\)$/, ` (the topic is the value of ${ctx.variablesNamed(variables)}: write it there with those)`);
    return at(path, 'EG_CONFIG_SUSPICIOUS_TOPIC', `route '${route}': ${said}`);
  };
  // A broker whose compile failed has its options as written, which these hooks do not read.
  const compiledBroker = (name: string) => (ctx.uncompiledBrokers.has(name) ? undefined : plan.brokers.get(name));
  const reads = routes.flatMap(({ route, index: i }) => {
    if (route.from.type !== 'broker') return [];
    const broker = compiledBroker(route.from.broker);
    const warning = broker && ctx.registry.brokers.get(broker.kind)?.readWarning?.(route.from.topic, broker.options);
    return warning ? [suspicious(['routes', i, 'from', 'topic'], route.name, warning)] : [];
  });
  // A routing key written as a pattern: the server routes it as it is, no wildcard (BrokerKind.writeWarning).
  const writes = routes.flatMap(({ route, index: i, toIsList }) =>
    route.to.flatMap((t, j) => {
      if (t.type !== 'broker' || t.topicExpr !== undefined) return [];
      const broker = compiledBroker(t.broker);
      const warning = broker && ctx.registry.brokers.get(broker.kind)?.writeWarning?.(t.topic, broker.options);
      return warning ? [suspicious(['routes', i, 'to', ...(toIsList ? [j] : []), 'topic'], route.name, warning)] : [];
    }),
  );
  // What a route's filter reads, as its broker kind matches topics (MQTT `+` `#`, NATS `*` `>`, AMQP patterns).
  const readsTopic = (name: string, from: string) => {
    const broker = compiledBroker(name);
    const read = broker && ctx.registry.brokers.get(broker.kind)?.topicsRead?.(from, broker.options);
    return read && !read.literal && !read.unknown ? (topic: string) => read.matches(topic) : undefined;
  };
  return [
    ...feedbackLoops(routes, readsTopic).map((loop) => at(loop.path, 'EG_CONFIG_FEEDBACK_LOOP', loop.message)),
    ...reads,
    ...writes,
    ...forwardParameterWarnings(ctx, plan, routes, at),
    ...untaggedWebhookWarnings(routes, at),
  ];
}

/** The header a `tag` validate step gives an invalid message (docs/asyncapi.md). */
const VALIDATION_ERROR_HEADER = '_asyncapi_eg_validation_error';

/**
 * A webhook target of a route whose validate step tags invalid messages (`onInvalid: tag`, the
 * one that lets them on) and that does not send the tag: a webhook sends only the headers it
 * computes, so the endpoint got tagged messages with nothing telling them from valid ones. One
 * header of the target reading it (`$headers._asyncapi_eg_validation_error`) is enough.
 */
function untaggedWebhookWarnings(routes: { route: RoutePlan; index: number; toIsList: boolean }[], at: (path: PathPart[], code: string, message: string) => Diagnostic): Diagnostic[] {
  return routes.flatMap(({ route, index, toIsList }) => {
    if (!route.steps.some((s) => s.kind === 'validate' && s.stopsInvalid === false)) return [];
    return route.to.flatMap((t, j) => {
      if (t.type !== 'http' || t.webhook.headers.some(([, e]) => e.source.includes(VALIDATION_ERROR_HEADER))) return [];
      return [
        at(
          ['routes', index, 'to', ...(toIsList ? [j] : []), 'http'],
          'EG_CONFIG_TAG_NOT_SENT',
          `route '${route.name}' tags invalid messages (onInvalid: tag), but this webhook sends only the headers it computes, so its endpoint cannot tell them from valid ones: add headers: {${VALIDATION_ERROR_HEADER}: $headers.${VALIDATION_ERROR_HEADER}}`,
        ),
      ];
    });
  });
}

/**
 * A forward path whose parameters are filled from the message's (ListenerKind.forwardFillsParameters)
 * naming one that the route's path, which has parameters, does not: `/room/:room` to
 * `/rooms/:r` sends every message to every room, most likely not what was meant. A route path
 * without parameters (an announcement to every room) or a broker source is not warned of.
 */
function forwardParameterWarnings(
  ctx: CompileContext,
  plan: Plan,
  routes: { route: RoutePlan; index: number; toIsList: boolean }[],
  at: (path: PathPart[], code: string, message: string) => Diagnostic,
): Diagnostic[] {
  const kindOf = (listener: string) => {
    const l = plan.listeners.get(listener);
    return l && ctx.registry.listeners.get(l.kind);
  };
  return routes.flatMap(({ route, index, toIsList }) => {
    if (route.from.type !== 'listener') return [];
    const from = route.from;
    const source = kindOf(from.listener);
    const has = source?.routesBy !== 'topic' ? (source?.pathParameters?.(from.path) ?? []) : [];
    if (has.length === 0) return [];
    return route.to.flatMap((t, j) => {
      const kind = t.type === 'listener' ? kindOf(t.listener) : undefined;
      if (t.type !== 'listener' || !kind?.forwardFillsParameters || !kind.pathParameters) return [];
      const missing = kind.pathParameters(t.path).filter((n) => !has.includes(n));
      if (missing.length === 0) return [];
      const names = missing.map((n) => `'${n}'`).join(', ');
      return [
        at(
          ['routes', index, 'to', ...(toIsList ? [j] : []), 'path'],
          'EG_CONFIG_FORWARD_PARAMETER',
          `route '${route.name}': forward path '${t.path}' names ${names}, which the route's path '${from.path}' does not have (it has ${has.map((n) => `'${n}'`).join(', ')}): each message goes to the clients of every value of ${names}, not only of its own (a forward path's parameters are filled from the message's path parameters of the same names)`,
        ),
      ];
    });
  });
}

/** The schema check's words for a value of the wrong type or range (a port, a number, a boolean, an enum's value). */
const TYPED_VALUE_PROBLEM = / must be (an integer|a number|true or false|one of |[<>]=? |a multiple of )/;

/**
 * `retain: "${RETAIN}"` is a string (quoted YAML is), so "must be an integer, got string "10""
 * puzzles whoever set RETAIN=10: say why, and how to write it. And a typed value the environment
 * gave names its variables, `(from ${HTTP_PORT})`: the column points at `${HTTP_PORT:-8080}`, but
 * the file does not hold the value the message quotes, and a reader of the log may not see the file.
 */
function quotingHints(src: SourceDocument, problems: Diagnostic[]): Diagnostic[] {
  return problems.map((d) => {
    const names = src.variableNames?.get(d.path);
    const from = names && TYPED_VALUE_PROBLEM.test(d.message) && !names.some((n) => d.message.includes(`\${${n}`)) ? `from ${listed(names.map((n) => `\${${n}}`))}` : undefined;
    if (src.quotedVariables?.has(d.path) && /must be (an integer|a number|true or false)\b.*, got string /.test(d.message))
      return { ...d, message: `${d.message} (${from ? `${from}; ` : ''}quoted, a \${VAR} stays a string whatever its value: write it unquoted, in block style, to take the value's type)` };
    // And the other way round: `password: ${PW}` with PW=123456 is a number, where a string is wanted.
    const variable = src.typedVariables?.get(d.path);
    if (variable && /must be a string\b.*, got (a )?(number|boolean|null)\b|has the wrong shape \((a )?(number|boolean|null)\b/.test(d.message))
      return { ...d, message: `${d.message} (an unquoted ${variable} takes the type of its value: write it quoted, "${variable}", to keep it a string)` };
    return from ? { ...d, message: `${d.message} (${from})` } : d;
  });
}

function sortDiagnostics(d: Diagnostic[]): Diagnostic[] {
  const sorted = d.sort((a, b) => (a.file === b.file ? a.line - b.line || a.column - b.column : a.file < b.file ? -1 : 1));
  // One line per problem: a file two steps refer to (a schema file, one a `$ref` reaches) is checked
  // for each, and its problems would be said once per step.
  const seen = new Set<string>();
  return sorted.filter((x) => {
    const key = `${x.file}\0${x.line}\0${x.column}\0${x.code}\0${x.message}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The plan of a config that passed the schema check (or the parts of it that did); problems go to `ctx.diagnostics`. */
function compile(ctx: CompileContext, asyncapi: AsyncApiCatalog, secrets: ReadonlySet<string>): Plan {
  const c = ctx.config;
  const steps = new StepCompiler(ctx, asyncapi);
  const brokers = compileBrokers(ctx);
  const listeners = compileListeners(ctx, brokers);
  const chains = steps.chains();
  const routes = compileRoutes(ctx, steps, brokers, listeners, chains);
  const admin = compileAdmin(ctx);
  const routeIndex = new Map((c.routes ?? []).flatMap((r, i) => (r ? [[r.name, i] as const] : [])));
  // A route that did not compile, or a step left out as invalid (a validate step that dead-letters,
  // with a typo or a message of a broken AsyncAPI document), may be what writes the topic another
  // route reads: no "can never receive" then, which would point at a sound line.
  const written = Array.isArray(ctx.src.value && (ctx.src.value as { routes?: unknown }).routes) ? (ctx.src.value as { routes: unknown[] }).routes.length : 0;
  const compiled = [...routes.values()].map((route) => ({ index: routeIndex.get(route.name)!, route }));
  const allRoutes = compiled.length === written && ctx.config === ctx.src.value && ctx.diagnostics.length === 0;
  for (const conflict of findConflicts({ registry: ctx.registry, admin, brokers, listeners, routes: compiled, allRoutes, secrets })) {
    const otherFile = conflict.other && ctx.fileOf(conflict.other);
    const other = conflict.other ? ` (see ${otherFile === ctx.fileOf(conflict.path) ? 'line ' : `${otherFile}:`}${ctx.src.locate(conflict.other, 'value').line})` : '';
    ctx.report(conflict.path, 'EG_CONFIG_CONFLICT', conflict.message + other);
  }
  // Files in the config's directory count by their place in it, not by where the directory is: the
  // same config (and vars files) in another checkout or on another instance is the same version,
  // and `eventgate plan` says the version the gateway will report (/admin/status,
  // eventgate_config_info). A file outside it (a certificate by its absolute path) counts as it is.
  const version = hash(
    [...ctx.files.entries()]
      .map(([f, h]) => `${inside(ctx.dir, f) ?? f}\0${h}`)
      .sort()
      .join('\n'),
  ).slice(0, 12);
  return {
    version,
    file: ctx.src.file,
    files: ctx.files,
    asyncapi: asyncapi.plans,
    admin,
    log: { level: c.log?.level ?? 'info', payloads: c.log?.payloads ?? false },
    expressions: ctx.limits,
    brokers,
    listeners,
    routes,
    secretValues: secrets,
  };
}

/** `file`'s path relative to `dir` when it is inside it. */
function inside(dir: string, file: string): string | undefined {
  const rel = relative(dir, file);
  return rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel) ? undefined : rel;
}
