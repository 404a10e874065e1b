import { resolve } from 'node:path';
import type { PathPart } from '../config/source.js';
import { canonical } from '../core/canonical.js';
import type { Expression } from '../expr/expression.js';
import type { CompiledStep } from '../kinds/contracts.js';
import { pemCertificatesProblem } from '../kinds/pem.js';
import { signatureKey, WEBHOOK_DEFAULTS, type WebhookOptions, type WebhookPlan } from '../kinds/targets/webhook.js';
import type { CompileContext } from './context.js';
import type { RawTarget } from './raw.js';
import type { StepCompiler } from './steps.js';
import type { ListenerPlan, TargetPlan } from './types.js';

/** How a route's targets check the brokers and listeners they name (and record that the route uses them). */
export interface TargetRefs {
  /** `topic`: checked also when the broker is left out for problems of its own options. */
  checkBroker(name: string, path: PathPart[], topic?: [topic: string, use: 'publish' | 'consume', path: PathPart[]]): boolean;
  checkListener(name: string, path: PathPart[]): boolean;
  checkTopic(broker: string, topic: string, use: 'publish' | 'consume', path: PathPart[], hint?: string): boolean;
}

/** How a topic that reads as an expression is computed per message (a template's parts joined with JSONata's `&`). */
export function computedTopicHint(topic: string): string {
  const expression = TEMPLATE.test(topic) ? templateExpression(topic) : topic;
  return `a topic computed per message is written topic: { expression: '${expression.replaceAll("'", "''")}' }`;
}

/**
 * A name holding a part in braces, `orders.{$path.region}` or `orders.{region}`, as other gateways'
 * topic templates write one: nothing fills it in here, and NATS, MQTT and memory names may hold braces,
 * so every message went to the subject of that literal name (spec-checklist 5070).
 */
const TEMPLATE = /\{\s*(\$\w|[A-Za-z_][\w.]*\s*\})/;

/** `orders.{$path.region}` → `"orders." & $path.region`. */
function templateExpression(topic: string): string {
  return topic
    .split(/\{([^{}]*)\}/)
    .map((part, i) => (i % 2 === 1 ? part.trim() : part === '' ? '' : JSON.stringify(part)))
    .filter((part) => part !== '')
    .join(' & ');
}

/**
 * Whether a target's topic name reads as a JSONata expression: a function call (`$string(id)`), a
 * variable of the message (`$topic`, `$key.region`), a quoted string joined with `&` or a template (TEMPLATE). Beside
 * `key: $string(id)`, which is an expression, a newcomer writes the topic the same way; a topic
 * computed per message is `{expression: ...}`. Other names starting with `$` (NATS's `$KV.b.k`) stay names.
 */
export function readsAsExpression(topic: string): boolean {
  return TEMPLATE.test(topic) || /^\$\w+\s*\(/.test(topic) || /^\$(key|topic|headers|path|query|principal|claims|ce|message|channel)(\W|$)/.test(topic) || /["']\s*&|&\s*["'$]/.test(topic);
}

/**
 * A route's `to:` targets; files a forward target's auth reads are appended to `files`. A target
 * with a problem is left out (the problem is reported, so the route is rejected).
 */
export function compileTargets(
  ctx: CompileContext,
  steps: StepCompiler,
  to: RawTarget | RawTarget[] | undefined,
  at: PathPart[],
  refs: TargetRefs,
  listeners: Map<string, ListenerPlan>,
  files: string[],
): TargetPlan[] {
  const targets: TargetPlan[] = [];
  const rawTargets = to === undefined ? [] : Array.isArray(to) ? to : [to];
  rawTargets.forEach((t, j) => {
    const tAt: PathPart[] = Array.isArray(to) ? [...at, 'to', j] : [...at, 'to'];
    // The schema has checked the target's shape: exactly one of broker (with topic), listener (with path) or http, and only the keys of that kind.
    if ('http' in t) {
      const webhook = compileWebhook(ctx, t.http, [...tAt, 'http'], files);
      if (webhook) targets.push({ type: 'http', webhook });
      return;
    }
    if ('broker' in t) {
      if (!refs.checkBroker(t.broker, [...tAt, 'broker'], typeof t.topic === 'string' ? [t.topic, 'publish', [...tAt, 'topic']] : undefined)) return;
      if (t.qos !== undefined && !ctx.checkQos(t.broker, [...tAt, 'qos'])) return;
      if (t.key !== undefined && !ctx.checkKey(t.broker, [...tAt, 'key'])) return;
      const key = t.key === undefined ? undefined : ctx.expression(t.key, [...tAt, 'key']);
      const structured = t.cloudevents === 'structured';
      const qos = t.qos === undefined ? {} : { qos: t.qos };
      if (typeof t.topic === 'string') {
        const computed = readsAsExpression(t.topic);
        // A topic from the environment is redacted: its rewrite as an expression would show it.
        const variables = computed ? ctx.environmentVariablesOf([...tAt, 'topic']) : undefined;
        const hint =
          variables === undefined ? computedTopicHint(t.topic) : `a topic computed per message is written topic: { expression: ... } (the topic is the value of ${ctx.variablesNamed(variables)})`;
        if (!refs.checkTopic(t.broker, t.topic, 'publish', [...tAt, 'topic'], computed ? ` (${hint})` : '')) return;
        if (computed) ctx.warn([...tAt, 'topic'], 'EG_CONFIG_SUSPICIOUS_TOPIC', `topic ${ctx.quotedName(t.topic, [...tAt, 'topic'])} is taken as a name, as written, not as an expression: ${hint}`);
        targets.push({ type: 'broker', broker: t.broker, topic: t.topic, topicExpr: undefined, key, structured, ...qos });
      } else {
        const topicExpr = ctx.expression(t.topic.expression, [...tAt, 'topic', 'expression']);
        targets.push({ type: 'broker', broker: t.broker, topic: t.topic.expression, topicExpr, key, structured, ...qos });
      }
    } else {
      if (!refs.checkListener(t.listener, [...tAt, 'listener'])) return;
      const kind = ctx.registry.listeners.get(listeners.get(t.listener)!.kind)!;
      if (!kind.acceptsForward)
        return ctx.report(
          [...tAt, 'listener'],
          'EG_CONFIG_REF',
          `listener '${t.listener}' is a ${kind.kind} listener; only websocket and http listeners can be targets (clients connect to them to receive messages)`,
        );
      const invalid = kind.checkPath?.(t.path);
      if (invalid !== undefined) return ctx.report([...tAt, 'path'], 'EG_CONFIG_SCHEMA', `path '${t.path}' cannot be routed: ${invalid}`);
      let auth: CompiledStep | undefined;
      if (t.auth !== undefined) {
        const authKind = ctx.registry.steps.get('auth');
        const authFiles: string[] = [];
        auth = authKind?.compile(t.auth, steps.context([...tAt, 'auth'], authFiles));
        files.push(...authFiles);
        if (!auth) return;
      }
      targets.push({ type: 'listener', listener: t.listener, path: t.path, format: t.format ?? 'value', auth, ...(auth ? { authKey: canonical(t.auth) } : {}) });
    }
  });
  return targets;
}

/** A webhook target's options with its expressions compiled and defaults filled in. */
function compileWebhook(ctx: CompileContext, o: WebhookOptions, at: PathPart[], files: string[]): WebhookPlan | undefined {
  const before = ctx.diagnostics.length;
  const ca = o.tls === undefined ? undefined : webhookCa(ctx, o.tls.ca, [...at, 'tls', 'ca'], files);
  let url = typeof o.url === 'string' ? o.url : o.url.expression;
  let urlExpr: Expression | undefined;
  if (typeof o.url === 'string') url = normalUrl(o.url);
  else urlExpr = ctx.expression(o.url.expression, [...at, 'url', 'expression']);
  // Read and watched, but never used by a plain-HTTP endpoint: an `http://` written for `https://` would send in clear what the CA was meant to guard.
  if (ca !== undefined && typeof o.url === 'string' && url.startsWith('http:'))
    ctx.report([...at, 'tls'], 'EG_CONFIG_SCHEMA', 'tls applies to https:// endpoints only, and this url is http://: write https://, or drop tls');
  const headers: [string, Expression][] = [];
  for (const [name, source] of Object.entries(o.headers ?? {})) {
    const expr = ctx.expression(source, [...at, 'headers', name]);
    if (expr) headers.push([name, expr]);
  }
  const orderBy = o.orderBy === undefined ? undefined : ctx.expression(o.orderBy, [...at, 'orderBy']);
  retryBackoffProblem(ctx, o.retry, [...at, 'retry']);
  const secret = o.signature ? signatureKey(o.signature.secret) : undefined;
  // The secret itself is never quoted: it may have come from ${VAR}.
  if (secret && !Buffer.isBuffer(secret)) ctx.report([...at, 'signature', 'secret'], 'EG_CONFIG_SCHEMA', `signature.secret ${secret.invalid}`);
  if (ctx.diagnostics.length > before || (secret && !Buffer.isBuffer(secret))) return undefined;
  return {
    url,
    urlExpr,
    method: o.method ?? WEBHOOK_DEFAULTS.method,
    headers,
    timeoutMs: o.timeoutMs ?? WEBHOOK_DEFAULTS.timeoutMs,
    attempts: o.retry?.attempts ?? WEBHOOK_DEFAULTS.attempts,
    backoffMs: o.retry?.backoffMs ?? WEBHOOK_DEFAULTS.backoffMs,
    maxBackoffMs: o.retry?.maxBackoffMs ?? WEBHOOK_DEFAULTS.maxBackoffMs,
    concurrency: o.concurrency ?? WEBHOOK_DEFAULTS.concurrency,
    orderBy,
    cloudevents: o.cloudevents ?? WEBHOOK_DEFAULTS.cloudevents,
    secret,
    ca,
  };
}

/**
 * A `backoffMs` over `maxBackoffMs` (written, or its default) contradicts it: every wait would be
 * `maxBackoffMs`, the backoff written having no effect; an error, as `headersTimeoutMs` over
 * `requestTimeoutMs` is. A `maxBackoffMs` written alone below the default `backoffMs` (`0`: no
 * waits) says what it means.
 */
function retryBackoffProblem(ctx: CompileContext, retry: WebhookOptions['retry'], at: PathPart[]): void {
  if (retry?.backoffMs === undefined) return;
  const max = retry.maxBackoffMs ?? WEBHOOK_DEFAULTS.maxBackoffMs;
  if (retry.backoffMs <= max) return;
  const which = retry.maxBackoffMs === undefined ? `${max}, the default` : `${max}`;
  const fix = retry.maxBackoffMs === undefined ? '; raise maxBackoffMs too' : '';
  ctx.report([...at, 'backoffMs'], 'EG_CONFIG_SCHEMA', `retry.backoffMs (${retry.backoffMs}) must not be larger than retry.maxBackoffMs (${which}): every wait would be ${max} ms${fix}`);
}

/**
 * The PEM text of a webhook's `tls.ca` (its file becomes part of the route's key: a new CA rebuilds
 * the route). A file without a certificate is an error here: node would take it as no CA and trust
 * no endpoint, which every try would then say of the endpoint's certificate, not of the file.
 */
function webhookCa(ctx: CompileContext, file: string, at: PathPart[], files: string[]): string | undefined {
  const abs = resolve(ctx.dir, file);
  files.push(abs);
  const text = ctx.readFile(abs, file, at);
  if (text === undefined) return undefined;
  const problem = pemCertificatesProblem(text);
  if (problem !== undefined) ctx.report(at, 'EG_CONFIG_FILE', `CA file '${file}' cannot be used: ${problem}`);
  return text;
}

/** The URL as `new URL()` writes it (the schema has checked it is an http(s) URL; one it still cannot read fails each delivery, with the reason). */
function normalUrl(url: string): string {
  try {
    return new URL(url).href;
  } catch {
    return url;
  }
}
