import type { JsonSchema } from '../kinds/contracts.js';
import { exactlyOne, withMessage } from '../kinds/define.js';
import type { KindRegistry } from '../kinds/registry.js';

export const SCHEMA_ID = 'https://eventgate.dev/gateway.schema.json';

const name = { type: 'string', minLength: 1 };

/** None of `keys` may be present. */
const forbid = (keys: string[]) => ({ not: { anyOf: keys.map((k) => ({ required: [k] })) } });

/**
 * The JSON Schema of gateway.yaml, assembled from the kinds in the registry (each kind owns its
 * fragment). `eventgate schema` prints it; gateway.schema.json at the repo root is this document.
 */
export function buildConfigSchema(registry: KindRegistry): JsonSchema {
  // Plain JSON: TypeBox marks its schemas with symbol keys, which are no part of JSON Schema.
  return JSON.parse(JSON.stringify(assemble(registry))) as JsonSchema;
}

function assemble(registry: KindRegistry): JsonSchema {
  const byKind = (kinds: Iterable<{ kind: string; schema: JsonSchema }>, what: string): JsonSchema => ({
    type: 'object',
    required: ['kind'],
    description: `A ${what}; \`kind\` selects which.`,
    discriminator: { propertyName: 'kind' },
    oneOf: [...kinds].map((k) => k.schema),
  });
  const step: JsonSchema = {
    type: 'object',
    description: 'One middleware step: a map with exactly one key, the step kind.',
    minProperties: 1,
    maxProperties: 1,
    additionalProperties: false,
    properties: Object.fromEntries([...registry.steps.values()].map((s) => [s.kind, s.schema])),
  };
  const brokerTopic = {
    type: 'object',
    additionalProperties: false,
    required: ['broker', 'topic'],
    properties: { broker: name, topic: name },
  };
  const target: JsonSchema = {
    type: 'object',
    description: 'Where messages go: a broker topic, or the clients of a WebSocket path.',
    additionalProperties: false,
    ...exactlyOne(['broker', 'listener'], {
      none: "needs exactly one of 'broker' (with 'topic') or 'listener' (with 'path')",
      many: "takes exactly one of 'broker' (with 'topic') or 'listener' (with 'path')",
    }),
    dependentRequired: { broker: ['topic'], listener: ['path'] },
    dependentSchemas: {
      broker: withMessage(forbid(['path', 'format', 'auth']), "'path', 'format' and 'auth' belong with 'listener' targets, not 'broker' targets"),
      listener: withMessage(forbid(['topic', 'key']), "'topic' and 'key' belong with 'broker' targets, not 'listener' targets"),
    },
    properties: {
      broker: name,
      topic: {
        description: 'Topic name, or `{expression: <JSONata>}` to compute it per message (broker targets).',
        oneOf: [
          { type: 'string', minLength: 1 },
          { type: 'object', additionalProperties: false, required: ['expression'], properties: { expression: { type: 'string', minLength: 1 } } },
        ],
      },
      key: { type: 'string', minLength: 1, description: 'JSONata expression for the record key.' },
      listener: name,
      path: { type: 'string', pattern: '^/' },
      format: { enum: ['value', 'envelope'], default: 'value' },
      // Subscribers of a websocket forward path must pass this at the handshake (the auth step's options).
      ...(registry.steps.has('auth') ? { auth: { ...registry.steps.get('auth')!.schema, description: 'Listener targets: who may subscribe (the auth step options), checked at the WebSocket handshake.' } } : {}),
    },
  };
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: SCHEMA_ID,
    title: 'eventgate gateway.yaml',
    type: 'object',
    additionalProperties: false,
    required: ['version'],
    properties: {
      version: { const: 1, description: 'Config language version; must be 1.' },
      asyncapi: {
        description: 'AsyncAPI document(s), relative to this file.',
        oneOf: [{ type: 'string', minLength: 1 }, { type: 'array', items: { type: 'string', minLength: 1 } }],
      },
      admin: {
        type: 'object',
        additionalProperties: false,
        required: ['port'],
        properties: {
          port: { type: 'integer', minimum: 0, maximum: 65535 },
          host: { type: 'string', default: '127.0.0.1' },
          token: { type: 'string', minLength: 1 },
          drainTimeoutMs: { type: 'integer', minimum: 0, default: 10000 },
          tap: {
            type: 'object',
            additionalProperties: false,
            description: 'The live tap (GET /admin/tap?route=<name>, a WebSocket).',
            properties: {
              maxPerSecond: { type: 'integer', minimum: 1, default: 100, description: 'Messages per route per second sent to tap clients; the rest are counted in a "skipped" frame.' },
            },
          },
        },
      },
      log: {
        type: 'object',
        additionalProperties: false,
        properties: {
          level: { enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], default: 'info' },
          payloads: { type: 'boolean', default: false, description: 'Include message values and headers in the log lines about failed, invalid and rejected messages.' },
        },
      },
      expressions: {
        type: 'object',
        additionalProperties: false,
        properties: {
          timeoutMs: { type: 'integer', minimum: 1, maximum: 60_000, default: 1000, description: 'Wall-clock bound of one evaluation; the message fails (500) when it is exceeded.' },
          maxDepth: { type: 'integer', minimum: 1, maximum: 10_000, default: 500, description: 'Deepest nesting of evaluation (recursion); deeper fails the message.' },
        },
      },
      brokers: { type: 'object', additionalProperties: byKind(registry.brokers.values(), 'broker') },
      listeners: { type: 'object', additionalProperties: byKind(registry.listeners.values(), 'listener') },
      chains: { type: 'object', additionalProperties: { type: 'array', items: step } },
      routes: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: false,
          required: ['name', 'from', 'to'],
          properties: {
            name: { type: 'string', pattern: '^[A-Za-z0-9._-]+$' },
            from: {
              type: 'object',
              description: 'A listener path (HTTP POST / WebSocket frames) or a broker topic.',
              additionalProperties: false,
              ...exactlyOne(['listener', 'broker'], {
                none: "needs exactly one of 'listener' (with 'path') or 'broker' (with 'topic')",
                many: "takes exactly one of 'listener' (with 'path') or 'broker' (with 'topic')",
              }),
              dependentRequired: { listener: ['path'], broker: ['topic'] },
              dependentSchemas: {
                listener: withMessage(forbid(['topic', 'group']), "'topic' and 'group' belong with 'from.broker', not 'from.listener'"),
                broker: withMessage(forbid(['path']), "'path' belongs with 'from.listener', not 'from.broker'"),
              },
              properties: {
                listener: name,
                path: { type: 'string', pattern: '^/' },
                broker: name,
                topic: name,
                group: name,
                fromBeginning: { type: 'boolean', description: 'Where a consumer group with no committed offset starts: the oldest record (true) or new records only (false, the default).' },
              },
            },
            through: {
              description: 'A chain name, or a list of chain names and inline steps.',
              oneOf: [name, { type: 'array', items: { oneOf: [name, step] } }],
            },
            to: { description: 'A target, or a list of targets (fan-out).', oneOf: [target, { type: 'array', minItems: 1, items: target }] },
            deadletter: brokerTopic,
            ack: { type: 'boolean', default: false, description: 'WebSocket publish routes: answer each delivered frame with {"type":"ack",...}.' },
          },
        },
      },
    },
  };
}
