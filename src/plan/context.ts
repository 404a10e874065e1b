import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { SchemaCheck } from '../kinds/contracts.js';
import { escapeControls, formatPath, type Diagnostic } from '../config/diagnostics.js';
import type { Hidden, Pruned } from '../config/prune.js';
import { readConfigFile } from '../config/read-file.js';
import { REDACTED } from '../config/secrets.js';
import { decodeUtf8, describeFsError, parseDataFile, type PathPart, type SourceDocument } from '../config/source.js';
import { closest, didYouMean } from '../config/suggest.js';
import { hash } from '../core/canonical.js';
import type { ErrorCode } from '../core/errors.js';
import { compileExpression, defaultExpressionLimits, ExpressionSyntaxError, type Expression, type ExpressionLimits } from '../expr/expression.js';
import type { KindRegistry } from '../kinds/registry.js';
import { isHidden } from '../config/prune.js';
import { JsonSchemaCompiler } from './json-schema.js';
import { type RefSite, schemaFiles, type SchemaFileReader } from './schema-refs.js';
import type { RawConfig } from './raw.js';
import { listed } from './variable-reads.js';

/**
 * What every part of one compile shares: the config (as the schema guarantees it), the problems
 * found so far, the files read with their hashes, and the ways to read files, expressions and
 * JSON Schemas so that each problem points at its file:line:col.
 */
export class CompileContext {
  readonly diagnostics: Diagnostic[] = [];
  readonly warnings: Diagnostic[] = [];
  /** Every expression compiled so far, with where it is written (a route's targets' are read from here: field-reads.ts). */
  readonly expressions: { expression: Expression; at: PathPart[] }[] = [];
  /** Every file read (the config, fragments, referenced files) → content hash, or 'missing'. */
  readonly files = new Map<string, string>();
  readonly config: RawConfig;
  /** The config file's directory: relative paths in the config are resolved against it. */
  readonly dir: string;
  readonly limits: ExpressionLimits;
  /** Parts left out because they are invalid themselves (see pruneInvalid): references to them are not reported again. */
  readonly hidden: Hidden;
  /**
   * Brokers whose kind's compile found problems: the plan holds their options as written, not the
   * settings the kind's hooks that read compiled settings take (topicsRead, readWarning), so those
   * are not asked of them (an amqp broker's missing `exchange` crashed validate).
   */
  readonly uncompiledBrokers = new Set<string>();
  private readonly schemas = new JsonSchemaCompiler();
  /** Data files read with readDocument, by the name the config used. */
  private readonly documents = new Map<string, SourceDocument>();
  /**
   * Schemas that name other files, compiled once per load however many steps use them: each gets
   * an ajv instance of its own (~25 ms of CPU), and 100 steps `schema: {$ref: defs.json#/...}` made
   * a reload 2.5 s longer. A check holds nothing of the step it was made for.
   */
  private readonly withFiles = new Map<string, SchemaCheck>();

  constructor(
    readonly src: SourceDocument,
    configFile: string,
    configHash: string,
    readonly registry: KindRegistry,
    private readonly overrides: ReadonlyMap<string, string> | undefined,
    pruned?: Pruned,
  ) {
    this.config = (pruned?.value ?? src.value) as RawConfig;
    this.hidden = pruned?.hidden ?? { brokers: new Set(), listeners: new Set(), chains: new Set(), asyncapi: false };
    this.dir = dirname(configFile);
    this.files.set(configFile, configHash);
    this.limits = { ...defaultExpressionLimits, ...this.config.expressions };
  }

  /** The file a config path was written in (a fragment pulled in with `include:`, or the config). */
  fileOf(path: readonly PathPart[]): string {
    return this.src.fileOf?.(path) ?? this.src.file;
  }

  /** A warning at `path`: valid, but most likely not meant (loadPlan returns them with the plan). */
  warn(path: readonly PathPart[], code: ErrorCode, message: string): void {
    const { line, column } = this.src.locate(path, 'value');
    this.warnings.push({ file: this.fileOf(path), line, column, code, path: formatPath(path), message });
  }

  /** A warning at `index` inside the string value at `path` (a name inside an expression); one per place and message, however many routes share the step. */
  warnInValue(path: readonly PathPart[], index: number, code: ErrorCode, message: string): void {
    const { line, column } = this.src.locateInValue(path, index);
    const file = this.fileOf(path);
    if (this.warnings.some((w) => w.file === file && w.line === line && w.column === column && w.message === message)) return;
    this.warnings.push({ file, line, column, code, path: formatPath(path), message });
  }

  /** Where `path` is written, `gateway.yaml:12:7`, for a message naming another place. */
  placeOf(path: readonly PathPart[]): string {
    const { line, column } = this.src.locate(path, 'key');
    return `${this.fileOf(path)}:${line}:${column}`;
  }

  /** An error at `index` inside the string value at `path` (a name inside an expression). */
  reportInValue(path: readonly PathPart[], index: number, code: ErrorCode, message: string): void {
    const { line, column } = this.src.locateInValue(path, index);
    this.diagnostics.push({ file: this.fileOf(path), line, column, code, path: formatPath(path), message });
  }

  report(path: readonly PathPart[], code: ErrorCode, message: string, which: 'key' | 'value' = 'value'): void {
    const { line, column } = this.src.locate(path, which);
    this.diagnostics.push({ file: this.fileOf(path), line, column, code, path: formatPath(path), message });
  }

  /** "broker 'x' is not defined", with a did-you-mean and the names that are (`what` is the section's singular). */
  reportUndefined(path: readonly PathPart[], what: 'broker' | 'listener' | 'chain', name: string, defined: Iterable<string>): void {
    // Entries set aside for a problem of their own (reported at their line) are still defined.
    const aside = this.hidden[`${what}s`];
    const listed = new Set([...defined, ...(aside === 'all' ? [] : aside)]);
    const written = Object.keys((this.src.value as Record<string, unknown> | null)?.[`${what}s`] ?? {});
    const names = [...written.filter((n) => listed.has(n)), ...[...listed].filter((n) => !written.includes(n))];
    this.report(path, 'EG_CONFIG_REF', `${what} '${name}' is not defined${didYouMean(name, names)}${names.length ? `; defined ${what}s: ${names.join(', ')}` : `; add it under ${what}s:`}`);
  }

  /**
   * A topic the config names as it is, of broker `broker` (a route's `from`, `to` or `deadletter`,
   * a validate step's `deadletter`): one the broker's server would refuse is a config error at
   * `path` (false), not a run-time failure of every message or a route that never consumes.
   * `hint` ends the message (how to write what was most likely meant).
   */
  checkTopic(broker: string, topic: string, use: 'publish' | 'consume', path: readonly PathPart[], hint = ''): boolean {
    const kind = this.brokerKind(broker);
    const why = kind === undefined ? undefined : this.registry.brokers.get(kind)?.topicProblem?.(topic, use, this.config.brokers?.[broker]);
    if (!why) return true;
    this.report(path, 'EG_CONFIG_SCHEMA', `${this.quotedName(topic, path)} cannot be a topic of ${kind} broker '${broker}': ${this.withoutTopicParts(why, path)}${hint}`);
    return false;
  }

  /**
   * A topic problem's hint rewrites the topic (`did you mean 'tenant/+/temperature'?` for
   * `tenant.*.temperature`) or quotes its parts (`topic: "...", group: "..."` of a `$share/`):
   * of a topic from the environment, redacted whole, those would show it, so the variable is named.
   */
  private withoutTopicParts(why: string, path: readonly PathPart[]): string {
    const variables = this.environmentVariablesOf(path);
    if (variables === undefined) return why;
    const named = `the topic is the value of ${this.variablesNamed(variables)}`;
    // Greedy: a topic with a ' or " in it (`o'rders.#`) is rewritten or quoted whole all the same.
    return why.replace(/did you mean '[\s\S]*'\?\)$/, `${named}: write it there with those)`).replace(/ \(topic: "[\s\S]*", group: "[\s\S]*"\)(?=: the gateway subscribes)/, ` (${named})`);
  }

  /**
   * A topic or group at `path` as a diagnostic quotes it (quoteTopic). Of a value from the
   * environment, a quote that is not its text (a long one shortened to its first 40 characters, a
   * control character escaped) is no value redaction finds: `'[redacted]'` instead.
   */
  quotedName(name: string, path: readonly PathPart[]): string {
    const quoted = quoteTopic(name);
    return quoted === `'${name}'` || this.environmentVariablesOf(path) === undefined ? quoted : `'${REDACTED}'`;
  }

  /**
   * The kind of broker `broker`, also of one left out for problems of its own options (pruneInvalid)
   * when its kind is one: the topics and QoS a route gives it are checked in the same pass.
   */
  private brokerKind(broker: string): string | undefined {
    const kind = this.config.brokers?.[broker]?.kind;
    if (kind !== undefined || !isHidden(this.hidden.brokers, broker)) return kind;
    const written = (this.src.value as { brokers?: Record<string, { kind?: unknown } | undefined> } | null)?.brokers?.[broker]?.kind;
    return typeof written === 'string' && this.registry.brokers.has(written) ? written : undefined;
  }

  /**
   * A consume route's consumer group, of broker `broker` reading `topic`: one the broker's server
   * would refuse (BrokerKind.groupProblem) is a config error at `path`, not a route that never starts.
   */
  checkGroup(broker: string, group: string, topic: string, path: readonly PathPart[]): boolean {
    const options = this.config.brokers?.[broker];
    const why = options === undefined ? undefined : this.registry.brokers.get(options.kind)?.groupProblem?.(group, topic, options);
    if (!why) return true;
    this.report(path, 'EG_CONFIG_SCHEMA', `consumer group ${this.quotedName(group, path)} cannot be used with ${options!.kind} broker '${broker}': ${why}`);
    return false;
  }

  /** What group `group` reading `topic` is on broker `broker`'s server when it is one thing for several topics (BrokerKind.sharedConsumer). */
  sharedConsumer(broker: string, group: string, topic: string): { name: string; clash: string } | undefined {
    const options = this.config.brokers?.[broker];
    return options === undefined ? undefined : this.registry.brokers.get(options.kind)?.sharedConsumer?.(group, topic, options);
  }

  /** Whether broker `broker` reads `topic` with no consumer group (BrokerKind.readsWithoutGroup: an amqp queue of `queues`). */
  readsWithoutGroup(broker: string, topic: string): boolean {
    const options = this.config.brokers?.[broker];
    return options !== undefined && this.registry.brokers.get(options.kind)?.readsWithoutGroup?.(topic, options) === true;
  }

  /**
   * Whether broker `broker` (which exists) keeps a target's `key` (kafka, memory); reported at
   * `path` (the `key` key) when its kind has no keys (BrokerKind.keyless), so a key is never dropped silently.
   */
  checkKey(broker: string, path: readonly PathPart[]): boolean {
    const kind = this.brokerKind(broker);
    const why = kind === undefined ? undefined : this.registry.brokers.get(kind)?.keyless;
    if (why === undefined) return true;
    this.report(path, 'EG_CONFIG_SCHEMA', `broker '${broker}' is ${aKind(kind!)} broker, whose messages have no key: ${why}`, 'key');
    return false;
  }

  /**
   * Whether broker `broker` (which exists) takes a route's `qos` (BrokerKind.takesQos: mqtt);
   * reported at `path` (the `qos` key) when not, so a QoS that would change nothing is not taken silently.
   */
  checkQos(broker: string, path: readonly PathPart[]): boolean {
    const kind = this.brokerKind(broker);
    if (kind === undefined || this.registry.brokers.get(kind)?.takesQos) return true;
    this.report(path, 'EG_CONFIG_SCHEMA', `'qos' is a setting of mqtt brokers: broker '${broker}' is ${aKind(kind)} broker, which has no QoS levels`, 'key');
    return false;
  }

  /**
   * What the files a component read held, in the order it read them, for its key. Not their
   * paths: the config names each one (a path as written is in the component's options), and an
   * absolute path would make the same config in another directory a change (`eventgate plan
   * --from` a checkout elsewhere, `--admin` against a gateway deployed under another path).
   */
  fileKeys(files: readonly string[]): (string | undefined)[] {
    return files.map((f) => this.files.get(f));
  }

  /** A path as the user would write it next to the config file's path (relative stays relative). */
  display(file: string): string {
    return join(dirname(this.src.file), relative(this.dir, file));
  }

  /**
   * What a component's compile context gets as `readFile(file, rel)`: the file resolved against
   * the config's directory, its absolute path appended to `files` (it becomes part of the key).
   */
  fileReader(at: PathPart[], files: string[]): (file: string, rel: PathPart[]) => string | undefined {
    return (file, rel) => {
      const abs = resolve(this.dir, file);
      files.push(abs);
      return this.readFile(abs, file, [...at, ...rel]);
    };
  }

  readFile(abs: string, asWritten: string, at: PathPart[]): string | undefined {
    try {
      return this.readText(abs);
    } catch (err) {
      const hint = fromFragmentHint(err, asWritten, this.fileOf(at), this.dir) || nearbyFileHint(err, abs, asWritten, this.dir);
      this.report(at, 'EG_CONFIG_FILE', `cannot read '${asWritten}' (${abs}): ${describeFsError(err)}${hint}`);
      return undefined;
    }
  }

  /** Reads a referenced file and records its hash (for the plan's version, route keys and the watcher), even when it is missing. */
  readText(abs: string): string {
    try {
      const override = this.overrides?.get(abs);
      const bytes = override === undefined ? readConfigFile(abs) : Buffer.from(override);
      this.files.set(abs, hash(bytes));
      const text = decodeUtf8(bytes);
      if (typeof text !== 'string') throw new Error(`${text.message.replace(' here ', ` at line ${text.line}, column ${text.column} `)}`);
      return text;
    } catch (err) {
      this.files.set(abs, 'missing');
      throw err;
    }
  }

  /**
   * readText() of a file an AsyncAPI document names (the document, or a file its `$ref` reads),
   * which an upload may choose: read only when it is a regular file of at most `maxBytes`. The
   * read happens on the gateway's thread, so a FIFO would hold it for good, and a large file
   * (a log in the config's directory) was read whole before the size cap refused it.
   */
  readRegularText(abs: string, maxBytes: number): string {
    // An upload's text in place of the file: checked by the parser like any document.
    if (this.overrides?.has(abs)) return this.readText(abs);
    let size: number;
    try {
      const st = statSync(abs);
      if (!st.isFile()) throw new Error(`'${basename(abs)}' is not a regular file`);
      size = st.size;
      if (size > maxBytes) {
        // A version of its own, so that a change to it (its size, its time) is a change of the config.
        this.files.set(abs, `too large: ${size} ${st.mtimeMs}`);
      }
    } catch (err) {
      this.files.set(abs, 'missing');
      throw err;
    }
    if (size > maxBytes) throw new Error(`'${basename(abs)}' has ${size} bytes; at most ${maxBytes} are accepted`);
    return this.readText(abs);
  }

  /**
   * A JSON or YAML data file (a schema), parsed once per load with positions kept for its own
   * problems. One a schema's `$ref` names (`site`) that cannot be read is reported at that `$ref`
   * (in a schema file, or in the config for an inline schema), not at the line naming the schema.
   */
  readDocument(abs: string, asWritten: string, at: PathPart[], site?: RefSite, json?: boolean): { value: unknown } | undefined {
    const known = this.documents.get(asWritten);
    if (known) return { value: known.value };
    let text: string | undefined;
    if (site) {
      try {
        text = this.readText(abs);
      } catch (err) {
        const message = `$ref '${site.ref}': cannot read '${asWritten}' (${abs}): ${describeFsError(err)}`;
        const referrer = this.documents.get(site.file);
        // A `$ref` of a schema file is in that file; one of an inline schema in the config, under `at`
        // (it was said at the schema's first line, without naming the `$ref`).
        if (!referrer) this.report([...at, ...site.path], 'EG_CONFIG_FILE', message);
        else {
          const { line, column } = referrer.locate(site.path, 'value');
          this.diagnostics.push({ file: referrer.file, line, column, code: 'EG_CONFIG_FILE', path: formatPath(site.path), message });
        }
        return undefined;
      }
    } else text = this.readFile(abs, asWritten, at);
    if (text === undefined) return undefined;
    const doc = parseDataFile(this.display(abs), text, this.diagnostics, json);
    if (!doc) return undefined;
    this.documents.set(asWritten, doc);
    return { value: doc.value };
  }

  /**
   * The variables whose environment values the value at `at` took (`${API_KEY}`), or undefined
   * for a value written in the file or given by its own defaults: a message about such a value
   * names them, never quotes its parts, which redaction (by whole values) does not hide.
   */
  environmentVariablesOf(at: readonly PathPart[]): readonly string[] | undefined {
    const path = formatPath(at);
    if (!this.src.fromEnv.has(path) || this.src.defaultsOnly?.has(path)) return undefined;
    return this.src.variableNames?.get(path) ?? [];
  }

  /** `${API_KEY}`, `${A} and ${B}`: the variables of environmentVariablesOf, as a message names them. */
  variablesNamed(variables: readonly string[]): string {
    return variables.length > 0 ? listed(variables.map((v) => `\${${v}}`)) : 'a variable';
  }

  expression(source: string, at: PathPart[]): Expression | undefined {
    try {
      const { line } = this.src.locate(at, 'value');
      const file = basename(this.fileOf(at));
      // A run-time failure that JSONata places is named at its line inside the expression (a block
      // scalar's), as compile errors are: the parsed config is kept while the expression is, to place it then.
      const src = this.src;
      const path = [...at];
      const origin = (index?: number) => {
        if (index === undefined) return `${file}:${line}`;
        const p = src.locateInValue(path, index);
        return `${file}:${p.line}:${p.column}`;
      };
      const expression = compileExpression(source, this.limits, origin);
      this.expressions.push({ expression, at: path });
      const asText = textAsExpression(source, at, this.environmentVariablesOf(at));
      if (asText) this.warn(at, 'EG_CONFIG_TEXT_EXPRESSION', asText);
      return expression;
    } catch (err) {
      if (!(err instanceof ExpressionSyntaxError)) throw err;
      const { line, column } = this.src.locateInValue(at, err.position);
      this.diagnostics.push({
        file: this.fileOf(at),
        line,
        column,
        code: 'EG_CONFIG_EXPRESSION',
        path: formatPath(at),
        message: `JSONata expression does not compile: ${this.unquotedParts(err, source, at)}`,
      });
      return undefined;
    }
  }

  /**
   * A compile error of the expression at `at`, with its hints. JSONata quotes the token it stopped at
   * (`Syntax error: "secretvalue"` for `12secretvalue`): of a value from the environment, that is a
   * part of it, which redaction (by whole values) does not hide, so such a token is not shown, and
   * the variable is named instead. A token of the file's own text (`$fo` in `v = ${LIMIT} and
   * $fo(w)`) and JSONata's operators and keywords, no one's secret, are shown.
   */
  private unquotedParts({ message, position }: ExpressionSyntaxError, source: string, at: PathPart[]): string {
    const variables = this.environmentVariablesOf(at);
    if (variables === undefined) return `${message}${this.commentHint(source, at, position) || textHint(source, at)}`;
    const secret = (part: string) => sharesText(part, this.src.envValues);
    // The gateway's own checks name an unknown `$name` (`pa$secret`), and the field it may be.
    const name = /^unknown (?:function|variable) \$([\p{L}\p{N}_]+)/u.exec(message)?.[1];
    const hidden = name !== undefined && secret(`$${name}`);
    const shown = message
      // JSONata writes its token as JSON: a string with `\"` and `\\` escaped, a number bare (as it reads it: 100000 for 1e5).
      .replace(/"((?:[^"\\]|\\.)*)"/g, (quote, token: string) => (JSONATA_WORDS.test(token) || !secret(JSON.parse(quote) as string) ? quote : `"${REDACTED}"`))
      .replace(/(: |got |symbol |value |side of )(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\b/g, (said, before: string, n: string) => (source.includes(n) && !secret(n) ? said : `${before}${REDACTED}`))
      .replace(/^(unknown (?:function|variable) \$)[\p{L}\p{N}_]+/u, (said, before: string) => (hidden ? `${before}${REDACTED}` : said))
      .replace(/(read without the \$: )[^)]*\)/, (said, before: string) => (hidden ? `${before}${REDACTED})` : said));
    const named = this.variablesNamed(variables);
    return `${shown}${textHint(source, at) || ` (the expression is the value of ${named}: the parts the message quoted are not shown)`}`;
  }

  /**
   * `filter: $contains(text, " #urgent")`: in a plain YAML value ` #` starts a comment, whatever
   * JSONata's quotes say, so JSONata was given the text before it. Say so, as the error it gives
   * ("unterminated string literal") points at what is left, not at what YAML took away. Only an
   * error where the text ran out (`position`, JSONata's: a string, a bracket or an operator left
   * open) can be the cut's: a comment after `amount > > 10` is the comment it looks like.
   */
  private commentHint(source: string, at: PathPart[], position: number): string {
    if (this.fileOf(at) !== this.src.file || position < source.length - 1) return '';
    const { line, column } = this.src.locate(at, 'value');
    const rest = (this.src.text.split('\n')[line - 1] ?? '').slice(column - 1);
    const comment = rest.search(/[ \t]#/);
    if (comment < 0 || /^["'|>]/.test(rest) || rest.slice(0, comment).trimEnd() !== source) return '';
    const key = String(at[at.length - 1]);
    return ` (the rest of line ${line}, \`${rest.slice(comment).trim()}\`, is a YAML comment: in a plain value, \` #\` starts one. To keep it in the expression, quote the whole value, \`${key}: '...'\`, a ' inside it written twice, or write it on the lines after \`${key}: |\`)`;
  }

  /**
   * Problems point into the file the schema came from when it was read with readDocument(), else
   * into the config at `at`. `defaultDraft` applies when the schema has no `$schema` (AsyncAPI
   * payloads are draft-07 supersets).
   */
  jsonSchema(
    schema: unknown,
    at: PathPart[],
    origin?: string,
    defaultDraft: '04' | '07' | '2019' | '2020' = '2020',
    read?: SchemaFileReader,
    /** Where a place in the schema is written (`schemas/order.yaml:5:12`) when it is not under `at`: an AsyncAPI payload's. */
    placeOf?: (path: readonly PathPart[]) => string | undefined,
  ): SchemaCheck | undefined {
    const own = origin === undefined ? undefined : this.documents.get(origin);
    // A schema file's `$ref`s to files beside it are read (and watched) with it; an inline schema's
    // (`$ref: defs.json#/$defs/order`) are relative to the config's directory, as a `schema:` path is.
    const configName = basename(this.src.file);
    const holder = own && origin ? { name: origin, abs: resolve(this.dir, origin) } : origin === undefined ? { name: configName, abs: join(this.dir, configName) } : undefined;
    const referred = holder && read ? schemaFiles(holder.name, holder.abs, schema, read) : { files: undefined, problems: [] };
    if (referred.unread) return undefined;
    // The files are the same ones within a load (documents), so the schema and its holder are the key.
    const key = referred.files && `${defaultDraft}\0${referred.files.url}\0${JSON.stringify(schema)}`;
    const known = key === undefined ? undefined : this.withFiles.get(key);
    if (known) return known;
    const { validate, problems } = referred.problems.length > 0 ? { validate: undefined, problems: referred.problems } : this.schemas.compile(schema, defaultDraft, referred.files);
    if (key !== undefined && validate) this.withFiles.set(key, validate);
    const where = origin ? (origin.startsWith('AsyncAPI') ? `payload schema of ${origin}` : `JSON Schema in '${origin}'`) : 'JSON Schema';
    for (const p of problems) {
      const path = formatPath(p.path);
      const doc = p.file === undefined ? own : this.documents.get(p.file);
      if (doc) {
        const { line, column } = doc.locate(p.path, 'value');
        this.diagnostics.push({ file: doc.file, line, column, code: 'EG_CONFIG_JSON_SCHEMA', path, message: `invalid JSON Schema${path ? ` at ${path}` : ''}: ${p.message}` });
      } else if (origin?.startsWith('AsyncAPI')) {
        // The payload lives in the AsyncAPI document, not under `at`: point at the step that names
        // it, and say where in the document the problem is written.
        const place = placeOf?.(p.path);
        this.report(at, 'EG_CONFIG_JSON_SCHEMA', `invalid ${where}${path ? ` at ${path}` : ''}${place ? ` (${place})` : ''}: ${p.message}`);
      } else {
        this.report([...at, ...p.path], 'EG_CONFIG_JSON_SCHEMA', `invalid ${where}${path ? ` at ${path}` : ''}: ${p.message}`);
      }
    }
    return validate;
  }
}

/**
 * A webhook header written as the text to send (`authorization: "Bearer ${TOKEN}"`: words, no
 * JSONata quotes) fails with `Syntax error: "<the second word>"`, which names neither the cause nor
 * the fix; the docs' example needs both quotes, which YAML takes the outer ones of.
 */
function textHint(source: string, at: PathPart[]): string {
  if (at[at.length - 2] !== 'headers' || !/^[\w.:/+=~@,;%-]+( [\w.:/+=~@,;%-]+)+$/.test(source.trim())) return '';
  return ` (a header's value is a JSONata expression: text is a string in it, quoted inside the YAML value, \`${String(at[at.length - 1])}: '"..."'\`)`;
}

/**
 * Whether `part`, a piece of an expression's text, holds text of a value from the environment:
 * inside one, holding one, or where one begins or ends in it (`pre${X}` read as one name).
 */
function sharesText(part: string, values: Iterable<string>): boolean {
  for (const v of values) {
    if (v === '') continue;
    if (v.includes(part) || part.includes(v)) return true;
    for (let n = 1; n < Math.min(v.length, part.length); n++) if (part.startsWith(v.slice(-n)) || part.endsWith(v.slice(0, n))) return true;
  }
  return false;
}

/** JSONata's operators and keywords, as its messages quote them (`Expected ")"`, `"and"`): quoted, they show no one's value. */
const JSONATA_WORDS = /^(?:[^\p{L}\p{N}_$\s"\\]{1,2}|and|or|in|function|\(end\))$/u;

/** Plain names and numbers joined by arithmetic or `=` without a space: `acme-corp`, `text/plain`, `max-age=60`. */
const TEXT_LIKE = /^[\p{L}_][\p{L}\p{N}_]*(?:[-+*/=](?:[\p{L}_][\p{L}\p{N}_]*|\d+))+$/u;

/**
 * A value whose expression is a header's (a webhook's `headers`, a headers step's `set`), a `key`,
 * an `orderBy` or a computed topic, written as the text it should give: `x-tenant: acme-corp`
 * compiles, as `acme - corp`, two fields no message has, so the header was never sent, without a
 * word. Said when two plain names or more are joined by `-`, `/`, `+`, `*` or `=` with no space
 * (`count-1`, a field and a number, is left alone: a computation often written so); arithmetic
 * meant is written with spaces (`total - discount`), a field of such a name in backquotes.
 */
function textAsExpression(source: string, at: PathPart[], variables?: readonly string[]): string | undefined {
  const last = at[at.length - 1];
  const parent = at[at.length - 2];
  const place = parent === 'headers' || (parent === 'set' && at[at.length - 3] === 'headers') || last === 'key' || last === 'orderBy' || (last === 'expression' && parent === 'topic');
  if (!place || !TEXT_LIKE.test(source)) return undefined;
  const tokens = source.split(/([-+*/=])/);
  const names = [...new Set(tokens.filter((t, i) => i % 2 === 0 && !/^\d/.test(t)))];
  if (names.length < 2) return undefined;
  if (variables !== undefined) {
    // The environment's value (an API key in a CI log): said by its variables, never by its text or parts.
    const references = variables.map((v) => `\${${v}}`);
    const example = references.length === 1 ? references[0] : '...';
    return `the value from ${references.length > 0 ? listed(references) : 'the environment'} is read as a JSONata expression: plain names joined by -, +, *, / or = with no space, arithmetic of (or a comparison of) the message's fields, not that text, which gives no value for a message without them. A \${VAR} in an expression is replaced by its value before the expression is read: to send the value as text, put the reference in a JSONata string, quoted inside the YAML value: \`${String(last)}: '"${example}"'\``;
  }
  const fields = `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;
  const outcome = source.includes('=')
    ? `a comparison of the message's fields ${fields}, not that text: it gives false for a message without them`
    : `arithmetic of the message's fields ${fields}, not that text: it gives no value for a message without them`;
  const key = String(last);
  return `'${source}' is read as the JSONata expression ${tokens.join(' ')}, ${outcome}. Text is a string in the expression, quoted inside the YAML value: \`${key}: '"${source}"'\`; a field of that name is written between backquotes: \`${key}: '\`${source}\`'\`; to compute, write spaces around the operators`;
}

/** A topic as a diagnostic quotes it: a long one (what a length limit refuses) shortened, with its size. */
export function quoteTopic(topic: string): string {
  if (topic.length <= 80) return `'${escapeControls(topic)}'`;
  const chars = [...topic];
  const bytes = Buffer.byteLength(topic);
  return `'${escapeControls(chars.slice(0, 40).join(''))}…' (${chars.length} characters${bytes === chars.length ? '' : `, ${bytes} bytes`})`;
}

/** "an amqp", "a kafka", "an http", "an mqtt": a kind with its article, for messages (http and mqtt are spelt out letter by letter). */
export function aKind(kind: string): string {
  return `${/^(?:[aeiou]|http|mqtt)/.test(kind) ? 'an' : 'a'} ${kind}`;
}

/** ` (did you mean 'schemas/light-measured.json'?)` for a file named with a typo, from the files beside where it was looked for. */
function nearbyFileHint(err: unknown, abs: string, asWritten: string, configDir: string): string {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return '';
  const fromConfigDir = pathFromConfigDir(asWritten, configDir);
  if (fromConfigDir !== undefined) return ` (paths are relative to the config file's directory, not to the working directory: did you mean '${fromConfigDir}'?)`;
  let names: string[];
  try {
    // Files only (a Kubernetes ConfigMap's are symlinks): a directory of a near name is no file to read.
    names = readdirSync(dirname(abs), { withFileTypes: true })
      .filter((e) => e.isFile() || (e.isSymbolicLink() && isFile(join(dirname(abs), e.name))))
      .map((e) => e.name);
  } catch {
    return '';
  }
  const hit = closest(basename(abs), names);
  return hit === undefined ? '' : ` (did you mean '${join(dirname(asWritten), hit)}'?)`;
}

/**
 * A path an included file wrote from its own directory (`schemas/order.json` in teams/orders.yaml
 * for teams/schemas/order.json): the path from the config's directory, which it is read from, when
 * that file exists. `writtenIn` is the file as the config names it, from the working directory.
 */
function fromFragmentHint(err: unknown, asWritten: string, writtenIn: string, configDir: string): string {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || isAbsolute(asWritten)) return '';
  const fragmentDir = dirname(resolve(writtenIn));
  if (fragmentDir === configDir) return '';
  const meant = resolve(fragmentDir, asWritten);
  if (!isFile(meant)) return '';
  return ` (paths in an included file are relative to the config file's directory, not to the included file's: did you mean '${relative(configDir, meant).split(sep).join('/')}'?)`;
}

/**
 * `examples/schemas/light.json` written in `examples/gateway.yaml`, as the path reads from the
 * directory `eventgate` was run in: the path from the config's directory (`schemas/light.json`)
 * when the written one starts with the directories the config is in and that file exists.
 */
function pathFromConfigDir(asWritten: string, configDir: string): string | undefined {
  if (isAbsolute(asWritten)) return undefined;
  const parts = asWritten.split(/[\\/]/).filter((p) => p !== '.' && p !== '');
  const dirParts = configDir.split(sep);
  for (let k = Math.min(parts.length - 1, dirParts.length); k >= 1; k--) {
    if (parts.slice(0, k).join('/') !== dirParts.slice(-k).join('/')) continue;
    const candidate = parts.slice(k).join('/');
    if (isFile(resolve(configDir, candidate))) return candidate;
  }
  return undefined;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}
