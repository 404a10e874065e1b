import type { ErrorObject, ValidateFunction } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { problem } from '../../errors.js';
import { withHeaders, type Message } from '../../runtime/message.js';
import type { StepStop } from '../../runtime/outcome.js';
import type { CompiledStep, StepKind } from '../contracts.js';

/** The header the AsyncAPI Event Gateway used for tagged messages; kept so its consumers work unchanged. */
export const VALIDATION_ERROR_HEADER = '_asyncapi_eg_validation_error';

type OnInvalid = 'reject' | 'tag' | 'deadletter';

export interface ValidateOptions {
  schema?: Record<string, unknown> | string;
  message?: string;
  channel?: string;
  onInvalid?: OnInvalid;
  deadletter?: { broker: string; topic: string };
}

export const validateStep: StepKind<ValidateOptions> = {
  kind: 'validate',
  schema: {
    type: 'object',
    additionalProperties: false,
    properties: {
      schema: {
        description: 'An inline JSON Schema, or the path of a JSON/YAML schema file relative to gateway.yaml.',
        oneOf: [{ type: 'object' }, { type: 'string', minLength: 1 }],
      },
      onInvalid: { enum: ['reject', 'tag', 'deadletter'], default: 'reject' },
      deadletter: {
        type: 'object',
        additionalProperties: false,
        required: ['broker', 'topic'],
        properties: { broker: { type: 'string' }, topic: { type: 'string' } },
      },
    },
    required: ['schema'],
  },
  doc: {
    summary:
      'Validates the message value against a JSON Schema (ajv, with formats such as date-time). `onInvalid: reject` (default) answers 400 / an error frame with the errors; `tag` forwards the message with header `_asyncapi_eg_validation_error` = `{"ts": ISO-8601, "errors": ["<instancePath>: <message>", ...]}`; `deadletter` sends it, with that header, to `deadletter: {broker, topic}` (or the route\'s `deadletter`) instead of the route\'s targets.',
    example: 'validate:\n  schema: schemas/light-measured.json\n  onInvalid: tag',
    options: {
      schema: 'inline JSON Schema, or a file path relative to gateway.yaml (JSON or YAML); the file is watched',
      onInvalid: 'reject | tag | deadletter (default reject)',
      deadletter: '{broker, topic} for onInvalid: deadletter; defaults to the route\'s deadletter',
    },
  },
  compile(options, ctx) {
    let schema: unknown = options.schema;
    let origin: string | undefined;
    if (typeof schema === 'string') {
      origin = schema;
      if (ctx.readDocument) {
        const doc = ctx.readDocument(schema, ['schema']);
        if (doc === undefined) return undefined;
        schema = doc.value;
      } else {
        const text = ctx.readFile(schema, ['schema']);
        if (text === undefined) return undefined;
        try {
          schema = parseYaml(text);
        } catch (err) {
          ctx.report(['schema'], 'EG_CONFIG_JSON_SCHEMA', `schema file '${origin}' is not valid JSON or YAML: ${(err as Error).message.split('\n')[0]}`);
          return undefined;
        }
      }
    }
    const check = ctx.compileJsonSchema(schema, ['schema'], origin);
    if (!check) return undefined;
    const onInvalid = options.onInvalid ?? 'reject';
    if (options.deadletter && !ctx.checkBroker(options.deadletter.broker, ['deadletter', 'broker'])) return undefined;
    return validator(check, onInvalid, options.deadletter);
  },
};

/** `deadletter` undefined with onInvalid: deadletter means the route's own dead-letter target. */
export function validator(check: ValidateFunction, onInvalid: OnInvalid, deadletter?: { broker: string; topic: string }): CompiledStep {
  return {
    kind: 'validate',
    brokers: deadletter ? [deadletter.broker] : [],
    needsRouteDeadletter: onInvalid === 'deadletter' && !deadletter,
    run(msg): Message | StepStop {
      if (check(msg.value)) return msg;
      const errors = formatErrors(check.errors);
      if (onInvalid === 'reject') {
        return { stop: 'invalid', problem: problem('EG_INVALID_MESSAGE', `the message does not match its schema (${errors.length} error${errors.length === 1 ? '' : 's'})`, { errors }) };
      }
      const tagged = withHeaders(msg, { ...msg.headers, [VALIDATION_ERROR_HEADER]: JSON.stringify({ ts: new Date().toISOString(), errors }) });
      if (onInvalid === 'tag') return tagged;
      return { stop: 'deadletter', message: tagged, errors, to: deadletter };
    },
  };
}

export function formatErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((e) => {
    let where = e.instancePath || '/';
    if (e.keyword === 'additionalProperties') where = `${e.instancePath}/${(e.params as { additionalProperty: string }).additionalProperty}`;
    return `${where}: ${e.message ?? e.keyword}`;
  });
}
