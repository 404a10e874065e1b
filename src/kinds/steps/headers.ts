import { bindingsFor, evaluateThen, expressionProblem } from '../../expr/expression.js';
import { withHeaders } from '../../core/message.js';
import type { StepStop } from '../../core/outcome.js';
import type { StepResult } from '../contracts.js';
import { compileExpressionMap, defineStep, mapOf, Type } from '../define.js';

export const headersStep = defineStep({
  kind: 'headers',
  options: Type.Object(
    {
      set: Type.Optional(mapOf(Type.String({ minLength: 1 }), { description: 'Map of header name → JSONata expression for its value.' })),
      remove: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'List of header names to remove.' })),
    },
    { additionalProperties: false, minProperties: 1 },
  ),
  doc: {
    summary:
      'Edits the message headers. `set` maps a header name to a JSONata expression (a string result is used as is, anything else as JSON; no result leaves the header unset); `remove` lists headers to drop. Removal runs first, so a header can be replaced.',
    example: 'headers:\n  set:\n    ce-type: \'"io.example.light.measured"\'\n    x-room: $path.room\n  remove: [x-debug]',
  },
  compile(options, ctx) {
    const set = compileExpressionMap(ctx, 'set', options.set);
    if (!set) return undefined;
    const remove = options.remove ?? [];
    return {
      kind: 'headers',
      run(msg, mctx) {
        const headers = { ...msg.headers };
        for (const name of remove) delete headers[name];
        if (set.length === 0) return withHeaders(msg, headers);
        const bindings = bindingsFor(msg, mctx);
        const assign = (name: string, v: unknown): undefined => {
          if (v !== undefined) headers[name] = typeof v === 'string' ? v : JSON.stringify(v);
          return undefined;
        };
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
          return withHeaders(msg, headers);
        };
        return apply(0);
      },
    };
  },
});
