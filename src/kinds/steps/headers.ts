import { bindingsFor, type Expression, ExpressionEvaluationError } from '../../expr/expression.js';
import { problem } from '../../errors.js';
import { withHeaders } from '../../runtime/message.js';
import type { StepKind } from '../contracts.js';

interface HeadersOptions {
  set?: Record<string, string>;
  remove?: string[];
}

export const headersStep: StepKind<HeadersOptions> = {
  kind: 'headers',
  schema: {
    type: 'object',
    additionalProperties: false,
    minProperties: 1,
    properties: {
      set: { type: 'object', additionalProperties: { type: 'string', minLength: 1 }, description: 'Header name → JSONata expression for its value.' },
      remove: { type: 'array', items: { type: 'string', minLength: 1 }, description: 'Header names to remove.' },
    },
  },
  doc: {
    summary: "Edits the message headers. `set` maps a header name to a JSONata expression (a string result is used as is, anything else as JSON; no result leaves the header unset); `remove` lists headers to drop. Removal runs first, so a header can be replaced.",
    example: 'headers:\n  set:\n    ce-type: \'"io.example.light.measured"\'\n    x-room: $path.room\n  remove: [x-debug]',
    options: { set: 'map of header name → JSONata expression', remove: 'list of header names' },
  },
  compile(options, ctx) {
    const set: [string, Expression][] = [];
    let ok = true;
    for (const [name, source] of Object.entries(options.set ?? {})) {
      const expr = ctx.compileExpression(source, ['set', name]);
      if (expr) set.push([name, expr]);
      else ok = false;
    }
    if (!ok) return undefined;
    const remove = options.remove ?? [];
    return {
      kind: 'headers',
      async run(msg, mctx) {
        const headers = { ...msg.headers };
        for (const name of remove) delete headers[name];
        if (set.length > 0) {
          const bindings = bindingsFor(msg, mctx);
          for (const [name, expr] of set) {
            let v: unknown;
            try {
              v = await expr.evaluate(msg.value, bindings);
            } catch (err) {
              return { stop: 'failed', problem: problem('EG_EXPRESSION_FAILED', `headers.set.${name} failed: ${(err as ExpressionEvaluationError).message}`) };
            }
            if (v !== undefined) headers[name] = typeof v === 'string' ? v : JSON.stringify(v);
          }
        }
        return withHeaders(msg, headers);
      },
    };
  },
};
