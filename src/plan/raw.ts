import type { ParserLimits } from '../asyncapi/parser-thread.js';
import type { RemoteRefOptions } from '../asyncapi/refs.js';
import type { ExpressionLimits } from '../expr/expression.js';
import type { Qos, StartFrom } from '../kinds/contracts.js';
import type { WebhookOptions } from '../kinds/targets/webhook.js';

/* The config as the schema guarantees it to be: what the compile modules read. */
export interface RawConfig {
  version: 1;
  asyncapi?: string | string[];
  asyncapiRemoteRefs?: RemoteRefOptions;
  asyncapiParser?: Partial<ParserLimits>;
  admin?: { port: number; host?: string; token?: string; drainTimeoutMs?: number; shutdownDelayMs?: number; maxConnections?: number; tap?: { maxPerSecond?: number }; allowedHosts?: string[] };
  log?: { level?: string; payloads?: boolean };
  expressions?: Partial<ExpressionLimits>;
  brokers?: Record<string, { kind: string } & Record<string, unknown>>;
  listeners?: Record<string, { kind: string } & Record<string, unknown>>;
  chains?: Record<string, RawStep[]>;
  /** A hole where pruneInvalid() left an invalid route out. */
  routes?: (RawRoute | undefined)[];
}

export type RawStep = Record<string, unknown>;

/** A target as the schema guarantees it: one of three shapes, each with only its own keys. */
export type RawTarget =
  | { http: WebhookOptions }
  /** `topic` is a name, or `{expression}`: JSONata computing it per message. */
  | { broker: string; topic: string | { expression: string }; key?: string; cloudevents?: 'binary' | 'structured'; qos?: Qos }
  | { listener: string; path: string; format?: 'value' | 'envelope' | 'cloudevent'; auth?: Record<string, unknown> };

export interface RawRoute {
  name: string;
  /** The schema guarantees a listener, or a broker with a topic; the compiler checks a listener's path or topic by its kind. */
  from:
    | { listener: string; path?: string; topic?: string; cloudevents?: 'structured' }
    | { broker: string; topic: string; group?: string; startFrom?: StartFrom; fromBeginning?: boolean; qos?: Qos; cloudevents?: 'structured' };
  through?: string | (string | RawStep)[];
  /** Required, except on routes from a listener that routes by topic (kafka), where records go on upstream. */
  to?: RawTarget | RawTarget[];
  deadletter?: { broker: string; topic: string; qos?: Qos };
  ack?: boolean;
}
