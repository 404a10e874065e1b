import type { ExpressionLimits, Expression } from '../expr/expression.js';
import type { CompiledStep, Qos, StartFrom } from '../kinds/contracts.js';
import type { WebhookPlan } from '../kinds/targets/webhook.js';

/**
 * The immutable result of compiling gateway.yaml: every reference resolved, every expression and
 * schema compiled. Building a plan opens no socket; `eventgate validate` stops here.
 */
export interface Plan {
  /** Short hash of the config and every file it references. */
  version: string;
  file: string;
  /** Absolute paths of the config and every referenced file → content hash. */
  files: Map<string, string>;
  /** The AsyncAPI documents in force, in the order the config lists them (optional so hand-built plans keep compiling). */
  asyncapi?: AsyncApiPlan[];
  admin: AdminPlan | undefined;
  log: { level: string; payloads: boolean };
  expressions: ExpressionLimits;
  brokers: Map<string, ComponentPlan>;
  listeners: Map<string, ListenerPlan>;
  routes: Map<string, RoutePlan>;
  /** The secret strings themselves (from the environment, or under token/secret/password/keys): redacted wherever output might quote them. */
  secretValues?: ReadonlySet<string>;
}

export interface AdminPlan {
  port: number;
  host: string;
  token: string | undefined;
  drainTimeoutMs: number;
  /** After SIGTERM, how long /readyz says 503 while the listeners still serve, before the drain. */
  shutdownDelayMs: number;
  maxConnections: number;
  tap: { maxPerSecond: number };
  /** Host names (besides loopback ones and `host`) the admin API answers to. */
  allowedHosts?: string[];
  key: string;
}

export interface ComponentPlan {
  name: string;
  kind: string;
  options: Record<string, unknown>;
  /** Canonical form of the options: equal keys mean nothing changed. */
  key: string;
  /**
   * Brokers: canonical form of the options less those its kind applies in place
   * (BrokerKind.inPlaceOptions): equal ones mean a changed broker is reconfigured, not replaced.
   * What `eventgate plan --admin` compares, knowing hashes only; absent for kinds that say nothing.
   */
  replaceKey?: string;
}

export interface ListenerPlan extends ComponentPlan {
  /** Canonical form of the options that need a new socket when they change. */
  socketKey: string;
  /** The CA bundle its `tls.ca` names, trusted for client certificates (mutual TLS), when it has one. */
  clientCa?: string;
}

export type SourcePlan =
  /** `structured`: each message its clients send is a structured CloudEvent by agreement (`from.cloudevents: structured`, websocket listeners). */
  | { type: 'listener'; listener: string; path: string; structured?: true }
  /**
   * `groupless`: the broker reads the topic with no consumer group (BrokerKind.readsWithoutGroup).
   * `structured`: what it reads is a structured CloudEvent by agreement (`from.cloudevents: structured`).
   */
  | { type: 'broker'; broker: string; topic: string; group: string | undefined; startFrom: StartFrom | undefined; qos?: Qos; groupless?: true; structured?: true };

export type TargetPlan =
  /** `topic` is the name, or the expression's source when `topicExpr` computes it per message. */
  | { type: 'broker'; broker: string; topic: string; topicExpr: Expression | undefined; key: Expression | undefined; structured?: boolean; qos?: Qos }
  | { type: 'http'; webhook: WebhookPlan }
  | {
      type: 'listener';
      listener: string;
      path: string;
      format: 'value' | 'envelope' | 'cloudevent';
      auth?: CompiledStep;
      /** The auth's config, canonical: its state (a jwksUrl's keys) is kept across reloads while it is the same. */
      authKey?: string;
    };

export interface RoutePlan {
  name: string;
  /** Canonical form of everything the route is built from, including referenced files' hashes. */
  key: string;
  from: SourcePlan;
  steps: CompiledStep[];
  /** Identity of each step within the route (its canonical config and occurrence), for state kept across reloads. */
  stepIds?: string[];
  to: TargetPlan[];
  deadletter: { broker: string; topic: string; qos?: Qos } | undefined;
  ack: boolean;
  /** Components the route holds references to: when one is replaced, the route is rebuilt. */
  brokers: string[];
  listeners: string[];
}

export interface AsyncApiPlan {
  /** The path as the config writes it (relative to the config file). */
  asWritten: string;
  /** Absolute path. */
  file: string;
  /** The text that was loaded. */
  text: string;
  /** The document and every local file it `$ref`s (absolute paths). */
  files: string[];
  /** The AsyncAPI version it declares, e.g. `3.0.0`. */
  version: string;
  title: string;
  /** Every id a `validate: {message}` step may use. */
  messages: string[];
  /** Channel keys. */
  channels: string[];
}
