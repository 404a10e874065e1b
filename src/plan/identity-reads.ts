/**
 * `$principal` and `$claims` read where no `auth` step binds them: in a route's step before its
 * first auth step, or in its targets (`key`, a computed `topic`, a webhook's `url`, `headers`,
 * `orderBy`) on a route with none. Only an auth step sets who sent a message, so such a read has
 * no value for any message: a filter on it drops everything, a ratelimit keyed on it keys on the
 * address. The expression compiles (the names are the gateway's), so the route is what tells.
 */

import type { CompileContext } from './context.js';
import type { CompiledChainStep } from './steps.js';

export function reportUnboundIdentity(ctx: CompileContext, route: string, steps: readonly CompiledChainStep[], targets: CompiledChainStep['expressions']): void {
  let authed = false;
  const check = (expressions: CompiledChainStep['expressions'], where: string) => {
    if (authed) return;
    for (const { expression, at } of expressions)
      for (const read of expression.identityReads)
        ctx.reportInValue(
          at,
          read.index,
          'EG_CONFIG_EXPRESSION',
          `$${read.name} has no value here: only an auth step sets it, and route '${route}' has none ${where}, so it would read no value for every message`,
        );
  };
  for (const s of steps) {
    // A ratelimit keyed on `$principal` runs before the auth step after it.
    check(s.expressions, 'before this step');
    if (s.step.kind === 'auth') authed = true;
  }
  check(targets, 'in its steps');
}
