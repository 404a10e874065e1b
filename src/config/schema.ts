import { MAX_TIMER_MS } from '../core/expiry.js';
import { NOT_WEBHOOK_KEYS, webhookOptions } from '../kinds/targets/webhook.js';
import type { JsonSchema } from '../kinds/contracts.js';
import { exactlyOne, forbidKeys, routeQos, withMessage } from '../kinds/define.js';
import type { KindRegistry } from '../kinds/registry.js';

export const SCHEMA_ID = 'https://eventgate.dev/gateway.schema.json';

const name = { type: 'string', minLength: 1 };
/**
 * A broker's, listener's or chain's name (the key under `brokers:`, `listeners:`, `chains:`): any
 * text but the empty one, which a `${VAR}` set empty or a key `~` gives and no reference can name.
 */
const COMPONENT_NAME = {
  minLength: 1,
  title: 'a name of one character or more (an empty one, from a ${VAR} set empty or a key ~ or "", cannot be referred to)',
};

/** A `${VAR}` / `${VAR:-default}` reference (a default may hold references: `${A:-${B:-1}}`), substituted from the environment when the config loads. */
export const VARIABLE_PATTERN = '^\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-.*)?\\}$';

export interface ConfigSchemaOptions {
  /**
   * Accept a `${VAR}` string wherever a number, boolean or enum is allowed (default true): the
   * schema editors see, where `port: ${HTTP_PORT:-8080}` is written before substitution. The
   * loader checks the substituted document against the strict schema (false), so a wrong value
   * gets the type's own message. The editors' schema also keeps to standard keywords
   * (standardKeywords below); the loader's own may use ajv's `discriminator`, `x-aliases` and `x-absentKeys`.
   */
  acceptVariables?: boolean;
}

/**
 * The JSON Schema of gateway.yaml, assembled from the kinds in the registry (each kind owns its
 * fragment). `eventgate schema` prints it; gateway.schema.json at the repo root is this document.
 */
export function buildConfigSchema(registry: KindRegistry, options: ConfigSchemaOptions = {}): JsonSchema {
  // Plain JSON: TypeBox marks its schemas with symbol keys, which are no part of JSON Schema.
  const schema = capTimers(JSON.parse(JSON.stringify(assembleSchema(registry))) as JsonSchema);
  return options.acceptVariables === false ? schema : standardKeywords(acceptVariables(schema));
}

/**
 * The published document must compile in any JSON Schema 2020-12 validator as it comes: ajv, with
 * its default (strict) options, refuses the OpenAPI `discriminator` keyword ("unknown keyword")
 * and warns about `type: [a, b]`. So the editors' schema leaves out the one, and the loader's
 * `x-aliases`, `x-absentKeys` and `x-otherwise` (all only make the loader's own messages sharper), and writes the other as an `anyOf`; it accepts the same documents.
 */
function standardKeywords(root: JsonSchema): JsonSchema {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk);
    if (node === null || typeof node !== 'object') return node;
    const out: JsonSchema = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === 'discriminator' && v !== null && typeof v === 'object' && 'propertyName' in v) continue;
      // The loader's hints for another tool's spelling of an enum value (suggest.ts enumHint) and for
      // a key other tools have and this object has not, and for a value of a oneOf's other shape
      // (check-schema.ts), no keywords of JSON Schema's.
      if (k === 'x-aliases' || k === 'x-absentKeys' || k === 'x-otherwise') continue;
      out[k] = walk(v);
    }
    if (Array.isArray(out.type) && out.type.every((t) => typeof t === 'string')) {
      const union = { anyOf: (out.type as string[]).map((type) => ({ type })) };
      delete out.type;
      if (out.anyOf === undefined) Object.assign(out, union);
      else out.allOf = [...((out.allOf as unknown[] | undefined) ?? []), union];
    }
    return out;
  };
  return walk(root) as JsonSchema;
}

/**
 * Node arms timers with a 32-bit delay: one longer than 2^31-1 ms (~24.8 days) fires after 1 ms
 * instead (TimeoutOverflowWarning). So `drainTimeoutMs: 3000000000` cut shutdown's drain short
 * and dropped in-flight requests, and a webhook `timeoutMs` that large re-armed a 1 ms timer for
 * the whole request. Every `...Ms` duration is a delay the gateway (or its client libraries)
 * arms, except a NATS stream's `maxAgeMs`, a retention age sent to the server: cap the others
 * where no smaller maximum is set, so such a value is a validation error at its line.
 */
const NOT_TIMERS = new Set(['maxAgeMs']);

function capTimers(root: JsonSchema): JsonSchema {
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (node === null || typeof node !== 'object') return;
    const props = (node as JsonSchema).properties;
    if (props && typeof props === 'object') {
      for (const [key, prop] of Object.entries(props as Record<string, JsonSchema>)) {
        if (key.endsWith('Ms') && !NOT_TIMERS.has(key) && (prop.type === 'integer' || prop.type === 'number') && prop.maximum === undefined) prop.maximum = MAX_TIMER_MS;
      }
    }
    for (const v of Object.values(node)) walk(v);
  };
  walk(root);
  return root;
}

function assembleSchema(registry: KindRegistry): JsonSchema {
  const byKind = (kinds: Iterable<{ kind: string; schema: JsonSchema }>, what: string): JsonSchema => ({
    type: 'object',
    required: ['kind'],
    description: `A ${what}; \`kind\` selects which.`,
    discriminator: { propertyName: 'kind' },
    oneOf: [...kinds].map((k) => describedKind(k, what)),
  });
  const step: JsonSchema = {
    type: 'object',
    description: 'One middleware step: a map with exactly one key, the step kind.',
    minProperties: 1,
    maxProperties: 1,
    additionalProperties: false,
    properties: Object.fromEntries([...registry.steps.values()].map((s) => [s.kind, describedKind(s, 'step')])),
  };
  const brokerTopic = {
    type: 'object',
    description: 'Where messages that fail go: a broker topic.',
    additionalProperties: false,
    required: ['broker', 'topic'],
    properties: {
      broker: { ...name, description: 'Broker name (under `brokers:`).' },
      topic: { ...name, description: 'Topic name.' },
      qos: routeQos('of the dead-lettered messages this route publishes'),
    },
  };
  const target: JsonSchema = {
    type: 'object',
    description: 'Where messages go: a broker topic, the clients of a WebSocket path or event stream, or an HTTP endpoint (webhook).',
    additionalProperties: false,
    // Which kind of target it is decides which keys it takes.
    ...exactlyOne(['broker', 'listener', 'http']),
    dependentRequired: { broker: ['topic'], listener: ['path'] },
    dependentSchemas: {
      broker: forbidKeys(['path', 'format', 'auth'], "{keys} belong{s} with 'listener' targets, not 'broker' targets"),
      listener: {
        allOf: [
          forbidKeys(['topic', 'key', 'qos'], "{keys} belong{s} with 'broker' targets, not 'listener' targets"),
          forbidKeys(['cloudevents'], "'cloudevents' belongs with broker targets; listener targets choose with 'format'"),
        ],
      },
      http: forbidKeys(NOT_WEBHOOK_KEYS, "{keys} belong{s} with broker or listener targets, not 'http' targets (webhook options go inside 'http')"),
    },
    properties: {
      broker: { ...name, description: 'Broker targets: the broker name (under `brokers:`).' },
      topic: {
        description: 'Topic name, or `{expression: <JSONata>}` to compute it per message (broker targets).',
        oneOf: [
          { type: 'string', minLength: 1 },
          {
            type: 'object',
            additionalProperties: false,
            required: ['expression'],
            properties: { expression: { type: 'string', minLength: 1, description: 'JSONata computing the topic from the message.' } },
          },
        ],
      },
      key: { type: 'string', minLength: 1, description: 'JSONata expression for the record key (kafka and memory brokers; mqtt, amqp and nats messages have no key, and refuse it).' },
      qos: routeQos('of the publishes to this target: a 2xx only after the PUBACK (1) or PUBCOMP (2), once written at 0'),
      cloudevents: {
        enum: ['binary', 'structured'],
        default: 'binary',
        description:
          'Broker targets: CloudEvent messages as `ce_` headers and the data as value (binary, the CloudEvents Kafka binding default), or one application/cloudevents+json value (structured).',
      },
      http: webhookOptions,
      listener: { ...name, description: 'Listener targets: a websocket or http listener name (under `listeners:`).' },
      path: { type: 'string', pattern: '^/', title: 'a path starting with "/"', description: 'Listener targets: the WebSocket path clients connect to, or the http path of the event stream.' },
      format: {
        enum: ['value', 'envelope', 'cloudevent'],
        default: 'value',
        description:
          'Listener targets: the value as JSON (`value`), the whole message (`envelope`: topic, partition, offset, key, headers, value, timestamp, and `ce` for CloudEvents), or a CloudEvent in structured JSON form (`cloudevent`).',
      },
      // Subscribers of a websocket forward path must pass this at the handshake (the auth step's options).
      ...(registry.steps.has('auth')
        ? { auth: { ...describedKind(registry.steps.get('auth')!, 'step'), description: 'Listener targets: who may subscribe (the auth step options), checked at the WebSocket handshake.' } }
        : {}),
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
      include: {
        description:
          'Config fragments to merge in: files or globs (`teams/*.yaml`; `*`, `?` and `[...]` in the file name), relative to this file. A fragment holds any of `brokers`, `listeners`, `chains`, `routes`: maps are merged, route lists appended in include order; a name defined twice is an error. Included files are watched, and a new file matching a glob is picked up by hot reload.',
        oneOf: [
          { type: 'string', minLength: 1 },
          { type: 'array', items: { type: 'string', minLength: 1 } },
        ],
      },
      asyncapi: {
        description: 'AsyncAPI document(s), relative to this file.',
        oneOf: [
          { type: 'string', minLength: 1 },
          { type: 'array', items: { type: 'string', minLength: 1 } },
        ],
      },
      asyncapiRemoteRefs: {
        type: 'object',
        description: 'Remote (http/https) `$ref`s in AsyncAPI documents: off unless their origins are listed here.',
        additionalProperties: false,
        required: ['origins'],
        properties: {
          origins: {
            type: 'array',
            minItems: 1,
            description: 'Origins (`https://host[:port]`) remote `$ref`s may point to; any other is refused. Redirects are not followed.',
            items: { type: 'string', pattern: '^https?://[^/?#]+$', title: 'an origin (https://host[:port], no path)' },
          },
          timeoutMs: { type: 'integer', minimum: 1, maximum: 60_000, default: 5000, description: 'Longest a remote document may take to arrive; the document fails to load after it.' },
          maxBytes: { type: 'integer', minimum: 1, maximum: 4_194_304, default: 1_048_576, description: 'Largest remote document accepted.' },
        },
      },
      asyncapiParser: {
        type: 'object',
        description: 'The thread that parses AsyncAPI documents: how long a parse may take and how much memory it may use.',
        additionalProperties: false,
        properties: {
          timeoutMs: {
            type: 'integer',
            minimum: 1000,
            maximum: 600_000,
            default: 60_000,
            description: 'Longest one document may take to parse, its remote `$ref` fetches included; the document is refused after it.',
          },
          maxHeapMb: {
            type: 'integer',
            minimum: 32,
            maximum: 16_384,
            default: 1024,
            description: "The parser thread's heap; a document whose parse needs more is refused (the gateway itself goes on).",
          },
        },
      },
      admin: {
        type: 'object',
        description: 'The admin server: /healthz, /readyz, /metrics, /admin/status, the tap and the dashboard.',
        additionalProperties: false,
        // Keys other servers' admin APIs have (Kong's admin_listen ssl, Redpanda Connect's http.cert_file), said as such, not "did you mean 'tap'?".
        'x-absentKeys': {
          tls: 'the admin server serves plain HTTP, so its token crosses the network in clear: keep `host` on loopback (the default) or a private network, and reach it from elsewhere through a TLS-terminating proxy or `kubectl port-forward`',
        },
        required: ['port'],
        properties: {
          port: { type: 'integer', minimum: 0, maximum: 65535, description: 'TCP port of the admin server (0: any free port).' },
          host: {
            type: 'string',
            // Node binds an empty host on every interface: `host: ${ADMIN_HOST:-}` left empty opened the admin API to the network.
            minLength: 1,
            default: '127.0.0.1',
            description:
              'Interface to bind; the default keeps the admin server local (an empty host, which would bind every interface, is refused: leave the key out). It serves plain HTTP (no TLS): bound elsewhere, keep it on a private network or behind a TLS-terminating proxy, since the token crosses the network in clear.',
          },
          token: {
            type: 'string',
            minLength: 1,
            description:
              'Bearer token required on every admin endpoint but /healthz and /readyz: /metrics, /admin/*, the tap (the dashboard page itself holds no data and asks for it). One shorter than 16 characters is a config warning (EG_CONFIG_WEAK_TOKEN): use a random one of 32 or more. A client address that sends 10 wrong tokens within a minute is answered 429 with Retry-After until the minute ends.',
            // A header value cannot carry a control character, and HTTP drops the whitespace around
            // it: such a token could never be sent in Authorization. The rule's message does not
            // quote the value (a secret). A value that is no string is the type's error alone: the
            // pattern passes it, and `not` would then refuse a number or a map with this message.
            allOf: [
              withMessage(
                { not: { type: 'string', pattern: '^\\s|\\s$|[\\u0000-\\u001f\\u007f]' } },
                'a token must not start or end with whitespace or hold a control character (a line break from a secret file?): it could never be sent in an Authorization header',
              ),
            ],
          },
          drainTimeoutMs: {
            type: 'integer',
            minimum: 0,
            default: 10000,
            description: 'On SIGTERM, how long in-flight messages, and consumers committing what they handled, may take before the gateway exits anyway.',
          },
          shutdownDelayMs: {
            type: 'integer',
            minimum: 0,
            default: 0,
            description:
              'On SIGTERM, how long the gateway goes on serving as usual while /readyz answers 503 `shutting down` (and `eventgate_ready` is 0), before it stops accepting and drains (drainTimeoutMs). A load balancer that follows /readyz, or Kubernetes removing the pod from its Service, takes the instance out of rotation in that time, so a rolling update answers no client 503 `EG_SHUTTING_DOWN`. 0: the drain starts at once. Reloads are refused from the signal on; a second Ctrl-C still exits at once. Kubernetes: `terminationGracePeriodSeconds` above shutdownDelayMs plus drainTimeoutMs (docs/scaling.md, "Rolling updates behind a load balancer").',
          },
          maxConnections: {
            type: 'integer',
            minimum: 1,
            default: 10000,
            description:
              'Admin connections open at once; further ones are closed as they arrive (logged at most every 10 s, counted in `eventgate_admin_connections_dropped_total`). A reload applies a new value to the connections that arrive after it.',
          },
          allowedHosts: {
            type: 'array',
            description:
              'Host names (as in the Host header, without port) the admin API answers to besides loopback names and `host`; others get 403 (DNS rebinding). /healthz, /readyz and requests bearing the token in Authorization answer any Host.',
            items: { type: 'string', minLength: 1, pattern: '^[^\\s:/]+$|^\\[[0-9a-fA-F:.]+\\]$' },
          },
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
        description: 'Logging: one JSON object per line on stdout.',
        additionalProperties: false,
        properties: {
          level: { enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], default: 'info', description: 'Least severe level logged.' },
          payloads: { type: 'boolean', default: false, description: 'Include message values and headers in the log lines about failed, invalid and rejected messages.' },
        },
      },
      expressions: {
        type: 'object',
        description: 'Limits on every JSONata expression (filter, transform, headers, keys).',
        additionalProperties: false,
        properties: {
          timeoutMs: {
            type: 'integer',
            minimum: 1,
            maximum: 60_000,
            default: 1000,
            description: 'Bound of the time one evaluation runs (not the time it waits for its turn after yielding to other work every 10 ms); the message fails (500) when it is exceeded.',
          },
          maxDepth: { type: 'integer', minimum: 1, maximum: 10_000, default: 500, description: 'Deepest nesting of evaluation (recursion); deeper fails the message.' },
          maxRegexInput: {
            type: 'integer',
            minimum: 1,
            maximum: 1_048_576,
            default: 32_768,
            description: 'Longest string (characters) one regular-expression call searches; a longer one fails the message. Regexes run on RE2, in time linear in this length.',
          },
          maxResultBytes: {
            type: 'integer',
            minimum: 1024,
            maximum: 1_073_741_824,
            default: 16_777_216,
            description:
              'Largest result one evaluation may make, in estimated memory (2 bytes per character, 72 per array or object); a larger one fails the message (500, dead-letter on consume routes) before it is sent anywhere. One built-in call (`$pad`, `$join`) or range (`[1..n]`) can make a value of hundreds of MB within the time bound; `$pad` and ranges are held to it before they make theirs.',
          },
        },
      },
      brokers: {
        type: 'object',
        description: 'Broker connections by name; routes read from and write to their topics.',
        propertyNames: COMPONENT_NAME,
        additionalProperties: byKind(registry.brokers.values(), 'broker'),
      },
      listeners: {
        type: 'object',
        description: 'Sockets clients connect to, by name (HTTP, WebSocket, ...).',
        propertyNames: COMPONENT_NAME,
        additionalProperties: byKind(registry.listeners.values(), 'listener'),
      },
      chains: {
        type: 'object',
        propertyNames: COMPONENT_NAME,
        description: 'Named lists of steps that routes share through `through:`.',
        additionalProperties: { type: 'array', description: 'The steps, applied in order.', items: step },
      },
      routes: {
        type: 'array',
        description: 'Where messages come from, which steps they pass and where they go.',
        items: {
          type: 'object',
          description: 'One route: `from` → `through` → `to`.',
          additionalProperties: false,
          required: ['name', 'from'],
          properties: {
            name: { type: 'string', pattern: '^[A-Za-z0-9._-]+$', description: 'Unique route name (letters, digits, `.`, `_`, `-`); metrics, logs and tests refer to it.' },
            from: {
              type: 'object',
              description: 'A listener path (HTTP POST / WebSocket frames), a topic on a kafka listener (what Kafka clients produce to it), or a broker topic.',
              additionalProperties: false,
              ...exactlyOne(['listener', 'broker']),
              // A listener route names a `path`, or a `topic` on a kafka listener: which one the compiler checks, by the listener's kind.
              dependentRequired: { broker: ['topic'] },
              dependentSchemas: {
                // `cloudevents` is for broker sources and websocket listeners: the compiler checks the listener's kind (routes.ts).
                listener: forbidKeys(['group', 'qos'], "{keys} belong{s} with 'from.broker', not 'from.listener'"),
                broker: forbidKeys(['path'], "'path' belongs with 'from.listener', not 'from.broker'"),
              },
              properties: {
                listener: { ...name, description: 'Listener name (under `listeners:`) whose clients publish.' },
                path: { type: 'string', pattern: '^/', title: 'a path starting with "/"', description: 'HTTP POST path or WebSocket path; `:name` segments are path parameters ($path).' },
                broker: { ...name, description: 'Broker name (under `brokers:`) to consume from.' },
                topic: { ...name, description: 'Topic to consume; with a kafka listener, the topic whose produce requests the route governs.' },
                group: {
                  ...name,
                  description:
                    "Consumer group: default `eventgate-<route name>`, shared by every instance; a route whose only targets are forwards (websocket or event stream) defaults to a group of its own per instance, `eventgate-<route>-<instance id>`, so every instance's clients see every message.",
                },
                startFrom: {
                  enum: ['earliest', 'latest'],
                  description:
                    "Where partitions without a committed offset start: the oldest retained record, or new records only. Default on Kafka and JetStream: `earliest` when a target is a broker or a webhook (no record skipped), `latest` when every target is a forward (websocket or event stream); memory topics: `latest`. A kafka broker's `consumer.startFrom` sets it for all its routes.",
                },
                fromBeginning: { type: 'boolean', description: 'Older spelling of `startFrom`: true is `earliest`, false `latest`.' },
                cloudevents: {
                  enum: ['structured'],
                  description:
                    "The agreement that what this route reads is CloudEvents in structured mode whatever its headers say (the CloudEvents MQTT binding's way for MQTT 3.1.1, which has no content type: receivers know by agreement). From a broker: a message that is no binary-mode event and has no content type, or a JSON one, is read as the JSON event it holds (`$ce` its attributes, its `data` the value), as one with `content-type: application/cloudevents+json` always is; a payload that is no valid event stays the plain message it is (add `cloudevent: {require: true}` to refuse it). From a websocket listener: every text frame is one structured JSON event (the CloudEvents WebSocket binding's JSON format; a batch array is not taken), read as an http listener reads an `application/cloudevents+json` body; a frame that is no valid event gets an `EG_CLOUDEVENT_INVALID` error frame naming each attribute, and is not published. The handshake still never agrees to the binding's `cloudevents.json` subprotocol: acks and error frames are not events. An http listener tells an event by its request (`ce-*` headers, the content type) and refuses the key. Without the key, only the headers tell an event, and a websocket frame is a plain message.",
                },
                qos: routeQos(
                  "of this route's subscription: what the server sends it at most (a message comes at the lower of its publisher's QoS and this one); at 0 the server keeps nothing for the route while it is away, even in a persistent session",
                ),
              },
            },
            through: {
              description: 'A chain name, or a list of chain names and inline steps.',
              oneOf: [name, { type: 'array', items: { oneOf: [name, step] } }],
            },
            to: {
              description:
                'A target, or a list of targets (fan-out). Required, except on routes from a kafka listener (without it, records go on to the same topic upstream; with it, to these targets instead).',
              oneOf: [target, { type: 'array', minItems: 1, items: target }],
            },
            deadletter: brokerTopic,
            ack: {
              type: 'boolean',
              default: false,
              description:
                'WebSocket publish routes: answer each delivered frame with {"type":"ack","frame":N,...} (N: the number of the frame on its connection, from 1, as in error frames). true on a route from another listener or a broker is an error (those answer or acknowledge every message anyway).',
            },
          },
        },
      },
    },
  };
}

/** Keywords that describe a value rather than constrain it: they stay outside the `anyOf`, for hovers and completion. */
const ANNOTATIONS = new Set(['description', 'markdownDescription', 'title', 'default', 'examples', 'deprecated']);
const SUBSCHEMA_MAPS = ['properties', 'patternProperties', '$defs'];
const SUBSCHEMA_LISTS = ['oneOf', 'anyOf', 'allOf', 'prefixItems'];
const SUBSCHEMA_ONE = ['items', 'additionalProperties', 'if', 'then', 'else', 'contains'];

/**
 * The editor's schema: every number, boolean and enum also accepts a `${VAR}` string, as the
 * file is written before substitution. Done here, over the assembled document, so a new kind gets
 * it without writing anything.
 */
function acceptVariables(root: JsonSchema): JsonSchema {
  // `isKind`: the node is an object's `kind`, whose string consts tell a union's branches apart.
  const walk = (node: unknown, isKind = false): unknown => {
    if (Array.isArray(node)) return node.map((x) => walk(x));
    if (node === null || typeof node !== 'object') return node;
    const n = node as JsonSchema;
    const out: JsonSchema = { ...n };
    for (const key of SUBSCHEMA_MAPS) {
      const m = n[key];
      if (m && typeof m === 'object') out[key] = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, walk(v, key === 'properties' && k === 'kind')]));
    }
    for (const key of SUBSCHEMA_LISTS) if (Array.isArray(n[key])) out[key] = (n[key] as unknown[]).map((x) => walk(x));
    for (const key of SUBSCHEMA_ONE) if (n[key] && typeof n[key] === 'object') out[key] = walk(n[key]);
    // `kind: ${BROKER_KIND}` selects no branch of the kinds' oneOf (each a `const`): one more branch
    // takes it, with any options, which are checked once the variable is substituted.
    if (isKindUnion(n)) out.oneOf = [...(out.oneOf as unknown[]), variableKind];
    // A patterned string (a path, a URL) is checked after substitution: before it, any `${VAR}` in it may make it right.
    if (typeof n.pattern === 'string' && n.type === 'string') {
      const { pattern: _pattern, ...rest } = out;
      return { ...rest, anyOf: [{ pattern: n.pattern }, { $ref: '#/$defs/containsVariable' }] };
    }
    if (!takesVariable(n, isKind)) return out;
    const outer: JsonSchema = {};
    const inner: JsonSchema = {};
    for (const [k, v] of Object.entries(out)) (ANNOTATIONS.has(k) ? outer : inner)[k] = v;
    return { ...outer, anyOf: [inner, { $ref: '#/$defs/variable' }] };
  };
  const schema = walk(root) as JsonSchema;
  return {
    ...schema,
    $defs: {
      ...(schema.$defs as JsonSchema | undefined),
      containsVariable: {
        type: 'string',
        pattern: VARIABLE_PATTERN.slice(1, -1),
        description: 'A string with `${VAR}` or `${VAR:-default}` in it, replaced from the environment when the config loads.',
      },
      variable: {
        type: 'string',
        pattern: VARIABLE_PATTERN,
        description: "`${VAR}` or `${VAR:-default}`: replaced from the environment when the config loads (a value that is exactly `${VAR}` takes the type of the variable's value).",
      },
    },
  };
}

/** A broker's or listener's schema: a oneOf of the kinds, told apart by `kind`. */
function isKindUnion(n: JsonSchema): boolean {
  const d = n.discriminator as { propertyName?: unknown } | undefined;
  return d?.propertyName === 'kind' && Array.isArray(n.oneOf);
}

const variableKind: JsonSchema = {
  type: 'object',
  required: ['kind'],
  properties: { kind: { $ref: '#/$defs/variable', description: 'The kind, from an environment variable (`${VAR}` or `${VAR:-default}`).' } },
  description: 'A kind given by `${VAR}`: its options are checked when the config loads, after substitution.',
};

/**
 * A number, integer, boolean or enum (a const too, an enum of one: `version: 1`, `origins: "*"`)
 * that a `${VAR}` string could not satisfy as it is. A kind's const is left alone: the kinds'
 * union has a branch of its own for `kind: ${VAR}` (variableKind).
 */
function takesVariable(n: JsonSchema, isKind: boolean): boolean {
  if (n.const !== undefined) return !(isKind && typeof n.const === 'string');
  const types = typeof n.type === 'string' ? [n.type] : Array.isArray(n.type) ? (n.type as string[]) : [];
  if (types.includes('string')) return false;
  if (Array.isArray(n.enum)) return true;
  return types.some((t) => t === 'integer' || t === 'number' || t === 'boolean');
}

/**
 * A kind's schema as editors show it: the `kind` key and the kind itself described (its options
 * describe themselves in the kind's definition).
 */
function describedKind(k: { kind: string; schema: JsonSchema; doc?: { summary: string } }, what: string): JsonSchema {
  const props = k.schema.properties as Record<string, JsonSchema> | undefined;
  const kindProp = props?.kind;
  const schema = kindProp && kindProp.description === undefined ? { ...k.schema, properties: { ...props, kind: { ...kindProp, description: `The ${what} kind: \`${k.kind}\`.` } } } : k.schema;
  return schema.description === undefined && k.doc ? { ...schema, description: k.doc.summary } : schema;
}
