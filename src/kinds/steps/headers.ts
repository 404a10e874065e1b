import { bindingsFor, evaluateThen, expressionProblem } from '../../expr/expression.js';
import { copyHeaders, resultText, SET_AS_CONSUMED, withHeaders, type Message } from '../../core/message.js';
import type { StepStop } from '../../core/outcome.js';
import type { StepResult } from '../contracts.js';
import { compileExpressionMap, defineStep, mapOf, Type } from '../define.js';

export const headersStep = defineStep({
  kind: 'headers',
  options: Type.Object(
    {
      set: Type.Optional(mapOf(Type.String({ minLength: 1, description: 'JSONata expression for the header value.' }), { description: 'Map of header name → JSONata expression for its value.' })),
      remove: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'List of header names to remove.' })),
    },
    { additionalProperties: false, minProperties: 1 },
  ),
  doc: {
    summary:
      'Edits the message headers. `set` maps a header name to a JSONata expression (a string result is used as is, anything else as JSON; no result leaves the header unset); `remove` lists headers to drop. Removal runs first, so a header can be replaced. Names are matched regardless of case (HTTP and WebSocket request headers arrive in lower case; `remove: [X-Debug]` drops `x-debug`), and a header `set` replaces the same name in any case, spelled as in the config: the steps after it read it by that spelling (after `set: {X-Tenant: ...}`, `$headers."X-Tenant"`; `$headers."x-tenant"`, the client\'s, is gone: validate warns of such a read, `EG_CONFIG_HEADER_SPELLING`).',
    example: 'headers:\n  set:\n    ce-type: \'"io.example.light.measured"\'\n    x-room: $path.room\n  remove: [x-debug]',
  },
  compile(options, ctx) {
    const set = compileExpressionMap(ctx, 'set', options.set);
    if (!set) return undefined;
    // Header names are matched regardless of case, as HTTP does: HTTP and WebSocket clients' headers
    // arrive in lower case, while a config (or a Kafka producer) may spell them `X-Request-Id`.
    const remove = new Set((options.remove ?? []).map((n) => n.toLowerCase()));
    const lowerSet = new Map(set.map(([name]) => [name, name.toLowerCase()]));
    return {
      kind: 'headers',
      keepsValue: true,
      setsHeaders: set.map(([name]) => name),
      run(msg, mctx) {
        const headers = copyHeaders(msg.headers);
        if (remove.size > 0) for (const k in headers) if (remove.has(k.toLowerCase())) delete headers[k];
        if (set.length === 0) return withHeaders(msg, headers);
        const bindings = bindingsFor(msg, mctx);
        // Set to the value it was consumed with: marked, or it would be taken for the consumed one.
        let asConsumed: Set<string> | undefined;
        const assign = (name: string, v: unknown): undefined => {
          if (v === undefined) return undefined;
          // The config's spelling replaces the header in whatever case the message had it.
          const lower = lowerSet.get(name)!;
          for (const k in headers) if (k !== name && k.toLowerCase() === lower) delete headers[k];
          const text = resultText(v, Buffer.isBuffer(msg.value));
          headers[name] = text;
          if (mctx.consumed?.[name] === text) (asConsumed ??= new Set(msg[SET_AS_CONSUMED])).add(name);
          return undefined;
        };
        const done = (): Message => (asConsumed === undefined ? withHeaders(msg, headers) : { ...msg, headers, [SET_AS_CONSUMED]: asConsumed });
        // Synchronous while every expression has a fast path; from the first that has not, asynchronous.
        const apply = (from: number): StepResult | Promise<StepResult> => {
          for (let i = from; i < set.length; i++) {
            const [name, expr] = set[i]!;
            const r = evaluateThen<StepStop | undefined>(
              expr,
              msg.value,
              bindings,
              (v) => assign(name, v),
              (err): StepStop => ({ stop: 'failed', problem: expressionProblem(`headers.set.${name}`, err) }),
            );
            if (r instanceof Promise) return r.then((stop) => stop ?? apply(i + 1));
          }
          return done();
        };
        return apply(0);
      },
    };
  },
});
