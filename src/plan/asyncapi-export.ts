import { canonical } from '../core/canonical.js';
import { shownEndpoint } from '../config/secrets.js';
import type { CompiledStep, Credential } from '../kinds/contracts.js';
import { VALIDATION_ERROR_HEADER } from '../kinds/steps/validate.js';
import { JsonSchemaCompiler } from './json-schema.js';
import type { Plan, TargetPlan } from './types.js';

type Json = Record<string, unknown>;

/** AsyncAPI protocol names of listener kinds; a kind not listed is named by its kind. */
const PROTOCOLS: Record<string, { plain: string; tls: string }> = {
  http: { plain: 'http', tls: 'https' },
  websocket: { plain: 'ws', tls: 'wss' },
  kafka: { plain: 'kafka', tls: 'kafka-secure' },
};

/**
 * The gateway's own surface as an AsyncAPI 3.0 document: a server per listener, a channel per
 * path clients use, an operation per route (`receive`: clients send the gateway messages on it;
 * `send`: the gateway pushes messages to clients), with the payload schemas the routes' validate
 * steps enforce. Generic over kinds: any listener a route reads from or forwards to appears.
 */
export function exportAsyncApi(plan: Plan, envelopeSchema: unknown): Json {
  const servers: Json = {};
  for (const l of plan.listeners.values()) {
    const o = l.options as { host?: string; port?: number; tls?: unknown; tlsMaterial?: unknown };
    const host = !o.host || o.host === '0.0.0.0' || o.host === '::' ? 'localhost' : o.host;
    const p = PROTOCOLS[l.kind] ?? { plain: l.kind, tls: l.kind };
    servers[l.name] = {
      host: o.port === undefined ? host : `${host}:${o.port}`,
      protocol: o.tls || o.tlsMaterial ? p.tls : p.plain,
      description: `eventgate ${l.kind} listener '${l.name}'.`,
    };
  }
  const channels: Json = {};
  const operations: Json = {};
  const securitySchemes: Record<string, Json> = {};
  /**
   * An operation's `security`: where a client of it presents its credential (an `auth` step's, or
   * a forward target's `auth`), each a scheme in components; AsyncAPI reads the list as
   * alternatives, as the step does (a header or a query parameter).
   */
  const securityOf = (credentials: readonly Credential[] | undefined) => {
    if (credentials === undefined || credentials.length === 0) return {};
    const refs = credentials.map((c) => {
      const scheme: Json =
        c.token === 'JWT' && c.in === 'header'
          ? { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'A JWT in `Authorization: Bearer <token>` (an `auth` step with `jwt`).' }
          : {
              type: 'httpApiKey',
              in: c.in,
              name: c.name,
              description: `${c.token === 'JWT' ? 'A JWT' : 'An API key'} in the \`${c.name}\` ${c.in === 'header' ? 'header' : 'query parameter'} (an \`auth\` step with \`${c.token === 'JWT' ? 'jwt' : 'apiKey'}\`).`,
            };
      const base = c.token === 'JWT' && c.in === 'header' ? 'jwt-bearer' : `${c.token}-${c.in}-${c.name.replace(/[^A-Za-z0-9._-]/g, '_')}`;
      let key = base;
      for (let n = 2; securitySchemes[key] !== undefined && canonical(securitySchemes[key]) !== canonical(scheme); n++) key = `${base}-${n}`;
      securitySchemes[key] = scheme;
      return { $ref: `#/components/securitySchemes/${escapePointer(key)}` };
    });
    return { security: refs };
  };
  const sharedMessages: Record<string, { name: string; contentType: string; payload: unknown }> = {};
  const channelFor = (listener: string, path: string) => {
    const id = channelId(listener, path);
    if (!channels[id]) {
      const params = [...path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
      channels[id] = {
        address: path.replace(/:([A-Za-z0-9_]+)/g, '{$1}'),
        servers: [{ $ref: `#/servers/${escapePointer(listener)}` }],
        messages: {},
        ...(params.length ? { parameters: Object.fromEntries(params.map((n) => [n, { description: `Path parameter \`${n}\` ($path.${n} in expressions).` }])) } : {}),
      };
    }
    return { id, channel: channels[id] as { messages: Json } };
  };

  // `more`: the later validate steps' schemas, joined to `a`'s in an allOf; `base`: a `$ref` to
  // the shared message's payload standing for `a`'s there.
  const payloadAt = (a: Accepted, at: string, more: readonly (readonly Accepted[])[], base?: string) => {
    const draft = needsDraft([a, ...more.flat()]);
    // In a Multi Format Schema Object the schema is one level down.
    const to = draft ? `${at}/schema` : at;
    const schema =
      more.length === 0
        ? payloadSchema(a.schema, to)
        : {
            allOf: [
              base ? { $ref: base } : payloadSchema(a.schema, `${to}/allOf/0`),
              ...more.map((m, k) => (m.length === 1 ? payloadSchema(m[0]!.schema, `${to}/allOf/${k + 1}`) : { anyOf: m.map((b, j) => payloadSchema(b.schema, `${to}/allOf/${k + 1}/anyOf/${j}`)) })),
            ],
          };
    return draft ? { schemaFormat: `application/schema+json;version=${DRAFT_FORMATS[draft]}`, schema } : schema;
  };
  // An AsyncAPI message is one message of the export, in components, whatever channels carry
  // it: a copy in each would make its id name several messages, which a `validate: {message}`
  // on the export refuses as ambiguous. Its key is its id (`$message`); the id the config named
  // it by, when another (its `name`, say), is its `name` there and its key in the route's
  // channel, so that config's `validate: {message}` finds it in the export as well.
  const shared = (a: Accepted): string | undefined => {
    if (a.message === null) return undefined;
    const at = `#/components/messages/${escapePointer(a.message)}`;
    const payload = payloadAt(a, `${at}/payload`, []);
    const known = sharedMessages[a.message];
    if (known === undefined) {
      const alias = a.named !== undefined && a.named !== a.message ? a.named : undefined;
      sharedMessages[a.message] = { name: alias ?? a.message, contentType: 'application/json', payload };
      return at;
    }
    return canonical(known.payload) === canonical(payload) ? at : undefined;
  };
  /**
   * The messages of a channel a route's validate steps enforce (`enforced`: the accepts of each,
   * in step order; the first step's are the messages, later ones an `allOf` on each), keyed by
   * message id, else by `base`; undefined when no step enforces anything.
   */
  const messagesOf = (enforced: readonly (readonly Accepted[])[], id: string, base: string, route: string) => {
    const first = enforced[0] ?? [];
    return first.length
      ? first.map((a, i) => {
          const mid = a.message ?? (first.length === 1 ? base : `${base}-${i + 1}`);
          if (enforced.length === 1) {
            const at = shared(a);
            if (at) return [a.named ?? mid, { $ref: at }] as const;
          } else if (a.message !== null && needsDraft([a]) === needsDraft([a, ...enforced.slice(1).flat()])) {
            // Enforced with more (later validate steps): the message stays one, in components, and
            // this channel's message is the route's own, its payload that one's and the rest (allOf).
            const at = shared(a);
            const key = first.length === 1 ? base : `${base}-${i + 1}`;
            if (at) {
              const sharedPayload = `${at}/payload${needsDraft([a]) ? '/schema' : ''}`;
              const own = `#/channels/${escapePointer(id)}/messages/${escapePointer(key)}/payload`;
              return [
                key,
                {
                  name: key,
                  contentType: 'application/json',
                  summary: `Message '${a.message}' as route '${route}' enforces it: its payload and the route's later validate steps.`,
                  payload: payloadAt(a, own, enforced.slice(1), sharedPayload),
                },
              ] as const;
            }
          }
          const at = `#/channels/${escapePointer(id)}/messages/${escapePointer(mid)}/payload`;
          return [mid, { name: a.message ?? base, contentType: 'application/json', payload: payloadAt(a, at, enforced.slice(1)) }] as const;
        })
      : undefined;
  };

  for (const r of plan.routes.values()) {
    if (r.from.type === 'listener') {
      const { id, channel } = channelFor(r.from.listener, r.from.path);
      const accepted = r.steps.flatMap((s) => s.accepts ?? []);
      // What clients send must pass every validate step met before a step that may change the
      // value (a transform); later ones check what earlier steps made of it.
      const enforced: Readonly<typeof accepted>[] = [];
      /** A validate step among them lets what fails it on (`onInvalid: tag`). */
      let tags = false;
      for (const s of r.steps) {
        if (s.accepts) enforced.push(s.accepts);
        if (s.accepts && !s.stopsInvalid) tags = true;
        if (!s.keepsValue) break;
      }
      // The messages stay those the steps check: what clients should send. A tag step takes the
      // others too, marked as failing; the operation says so rather than listing them as sound
      // (AsyncAPI 3: every message an operation processes is valid against one of its messages).
      const notes = [
        // The payloads below are what the steps see: the event's data (AsyncAPI has no way to say "the data of a structured event").
        ...(r.from.structured
          ? [
              `Clients send each message as a structured CloudEvent in the JSON format, one per text frame (route '${r.name}' reads frames so: from.cloudevents: structured); the messages here describe its data, and a frame that is no valid event is refused.`,
            ]
          : []),
        ...(tags
          ? [
              `Route '${r.name}' also takes a message that fails these (onInvalid: tag): it goes on to the route's targets with the header ${VALIDATION_ERROR_HEADER} saying why. Send messages that pass.`,
            ]
          : []),
        ...(accepted.length > enforced.flat().length ? ['Later validate steps check the message further after earlier steps changed it.'] : []),
      ];
      const messages = messagesOf(enforced, id, r.name, r.name) ?? [[r.name, { name: r.name, contentType: 'application/json', description: 'Any JSON value (the route validates nothing).' }] as const];
      for (const [mid, m] of messages) channel.messages[mid] = m;
      operations[r.name] = {
        action: 'receive',
        title: `route ${r.name}`,
        summary: `Clients send messages here (${r.from.path}); route '${r.name}' delivers them to ${describeTargets(r.to)}.`,
        channel: { $ref: `#/channels/${escapePointer(id)}` },
        messages: messages.map(([mid]) => ({ $ref: `#/channels/${escapePointer(id)}/messages/${escapePointer(mid)}` })),
        ...(notes.length > 0 ? { description: notes.join(' ') } : {}),
        // The first auth step's: a second one checks the same client again, which AsyncAPI's list of alternatives cannot say.
        ...securityOf(r.steps.find((s) => s.credentials)?.credentials),
      };
    }
    for (const t of r.to) {
      if (t.type !== 'listener') continue;
      const { id, channel } = channelFor(t.listener, t.path);
      const mid = `${r.name}-forward`;
      // What the route forwards passed every validate step after its last transform that stops
      // what it does not accept: those steps' messages are what clients receive.
      // Clients get the value itself only with `format: value`: an envelope or a structured CloudEvent wraps it.
      const forwarded = t.format === 'value' ? messagesOf(guaranteed(r.steps), id, mid, r.name) : undefined;
      const payloadAt = `#/channels/${escapePointer(id)}/messages/${escapePointer(mid)}/payload`;
      for (const [key, m] of forwarded ?? []) channel.messages[key] = m;
      if (!forwarded)
        channel.messages[mid] =
          t.format === 'envelope'
            ? {
                name: mid,
                contentType: 'application/json',
                summary: `What route '${r.name}' forwards, in an envelope.`,
                payload: payloadSchema(envelopeSchema, payloadAt),
              }
            : t.format === 'cloudevent'
              ? {
                  name: mid,
                  contentType: 'application/cloudevents+json',
                  summary: `What route '${r.name}' forwards, as a structured CloudEvent; a message that is no CloudEvent, in an envelope.`,
                  payload: { oneOf: [STRUCTURED_CLOUDEVENT, payloadSchema(envelopeSchema, `${payloadAt}/oneOf/1`)] },
                }
              : { name: mid, contentType: 'application/json', summary: `What route '${r.name}' forwards: the message value.` };
      operations[`${r.name}-forward-${id}`] = {
        action: 'send',
        title: `route ${r.name} → ${t.listener}${t.path}`,
        summary: `The gateway pushes what route '${r.name}' forwards to every client connected on ${t.path}.`,
        channel: { $ref: `#/channels/${escapePointer(id)}` },
        messages: (forwarded?.map(([key]) => key) ?? [mid]).map((key) => ({ $ref: `#/channels/${escapePointer(id)}/messages/${escapePointer(key)}` })),
        ...securityOf(t.auth?.credentials),
      };
    }
  }
  const used = new Set(Object.values(channels).map((c) => ((c as { servers: { $ref: string }[] }).servers[0]!.$ref.split('/').pop() ?? '').replace(/~1/g, '/').replace(/~0/g, '~')));
  return {
    asyncapi: '3.0.0',
    info: {
      title: `eventgate: ${plan.file}`,
      version: plan.version,
      description: 'The channels and operations of this gateway, exported by `eventgate export asyncapi` from its config.',
    },
    servers: Object.fromEntries(Object.entries(servers).filter(([name]) => used.has(name))),
    channels,
    operations,
    ...(Object.keys(sharedMessages).length > 0 || Object.keys(securitySchemes).length > 0
      ? {
          components: {
            ...(Object.keys(sharedMessages).length > 0 ? { messages: sharedMessages } : {}),
            ...(Object.keys(securitySchemes).length > 0 ? { securitySchemes } : {}),
          },
        }
      : {}),
  };
}

/** The accepts of each validate step after a route's last value-changing step that stops what it does not accept, in step order. */
function guaranteed(steps: readonly CompiledStep[]): (readonly Accepted[])[] {
  const out: (readonly Accepted[])[] = [];
  for (const s of steps) {
    if (!s.keepsValue) out.length = 0;
    else if (s.accepts && s.stopsInvalid) out.push(s.accepts);
  }
  return out;
}

function channelId(listener: string, path: string): string {
  // A kafka listener's routes name a topic, not a /path.
  return `${listener}${path.startsWith('/') ? '' : '-'}${path}`.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/-+$/, '');
}

/** JSON Pointer escaping for `$ref`s to component keys. */
function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

/** A payload a validate step accepts. */
type Accepted = NonNullable<CompiledStep['accepts']>[number];

const DRAFT_FORMATS = { '04': 'draft-04', '2019': 'draft-2019-09', '2020': 'draft-2020-12' } as const;

/**
 * The JSON Schema draft the exported payload must name in its `schemaFormat`, or undefined when
 * AsyncAPI's default format (a draft-07 superset) reads it as the gateway does. A schema compiled
 * as 2019-09 or 2020-12 (a `validate: {schema}` without `$schema` is 2020-12) is exported as it is
 * when draft-07 takes it as well; one that uses their own keywords (`prefixItems`,
 * `unevaluatedProperties`, `dependentRequired`) names its draft, or reading the export back would
 * refuse those keywords (or a reader that ignores them would check less). So does a draft-04 one
 * that draft-07 refuses (a boolean `exclusiveMaximum`), unless a part needs a later draft.
 */
function needsDraft(parts: readonly Accepted[]): keyof typeof DRAFT_FORMATS | undefined {
  let draft: keyof typeof DRAFT_FORMATS | undefined;
  for (const p of parts) {
    if (p.draft === undefined || p.draft === '07' || p.schema === null || typeof p.schema !== 'object') continue;
    const { $schema: _s, $id: _i, ...rest } = p.schema as Json;
    if (new JsonSchemaCompiler().compile(rest, '07').problems.length === 0) continue;
    if (draft === undefined || draft === '04' || (draft === '2019' && p.draft === '2020')) draft = p.draft;
  }
  return draft;
}

/** A forward's frame with `format: cloudevent` (src/codecs/cloudevents.ts): the event's attributes, and its value as `data`. */
const STRUCTURED_CLOUDEVENT = {
  type: 'object',
  description: 'A structured CloudEvent (JSON format): its context attributes, and the message value as `data` (`data_base64` for bytes).',
  required: ['specversion', 'id', 'source', 'type'],
  properties: {
    specversion: { const: '1.0' },
    id: { type: 'string', minLength: 1 },
    source: { type: 'string', minLength: 1 },
    type: { type: 'string', minLength: 1 },
    data: {},
    data_base64: { type: 'string' },
  },
};

/**
 * A payload as AsyncAPI's default schema format takes it: its own `$schema`/`$id` would be read as
 * a dialect switch. `at` is where it is put in the document: a local `$ref` of the schema (`#`,
 * `#/$defs/node`) would resolve against the AsyncAPI document's root there, not the schema's, so
 * it is rebased onto `at` and a recursive or `$defs`-using schema stays valid.
 */
function payloadSchema(schema: unknown, at: string): unknown {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return schema;
  const { $schema: _s, $id: _i, ...rest } = schema as Json;
  return rebaseRefs(rest, at);
}

/** Keywords whose values are data, not schemas: a `$ref` key inside them is no reference. */
const DATA_KEYWORDS = new Set(['const', 'enum', 'default', 'examples', 'example']);

function rebaseRefs(value: unknown, at: string): unknown {
  if (Array.isArray(value)) return value.map((v) => rebaseRefs(v, at));
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value as Json).map(([k, v]) => {
      if (k === '$ref' && typeof v === 'string' && v.startsWith('#')) return [k, `${at}${v.slice(1)}`];
      return [k, DATA_KEYWORDS.has(k) ? v : rebaseRefs(v, at)];
    }),
  );
}

function describeTargets(to: readonly TargetPlan[]): string {
  // Routes from a kafka listener without `to` have no targets: records go on to their topic upstream.
  if (to.length === 0) return 'the same topic of the upstream cluster';
  return to.map((t) => (t.type === 'broker' ? `${t.broker}/${t.topic}` : t.type === 'http' ? `webhook ${shownEndpoint(t.webhook.url)}` : `${t.listener}${t.path}`)).join(', ');
}
