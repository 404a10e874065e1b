/**
 * A header an expression reads by a name that a `headers` step before it sets in another case:
 * `$headers."x-tenant"` after `set: {X-Tenant: ...}`. The step replaces the header in any case
 * with its own spelling (an HTTP client's `x-tenant` becomes `X-Tenant`), and `$headers` is an
 * object whose names JSONata matches exactly, so the read has no value wherever the step's
 * expression had one: a filter on it dropped every message, without a word. A warning, as the
 * step may give no value for some messages (the client's header then stays as it came).
 */

import type { CompileContext } from './context.js';
import type { CompiledChainStep } from './steps.js';

/** Warns of each read of a header a step before it (or, for the targets, any step) sets in another case. */
export function warnHeaderSpelling(ctx: CompileContext, steps: readonly CompiledChainStep[], targets: CompiledChainStep['expressions']): void {
  /** By the lower-case name: how the last step setting it spells it, and where that step is. */
  const set = new Map<string, { spelled: string; place: string }>();
  const checkAll = (expressions: CompiledChainStep['expressions']) => {
    if (set.size === 0) return;
    for (const { expression, at } of expressions) {
      for (const read of expression.headerReads) {
        const setter = set.get(read.member!.toLowerCase());
        if (setter === undefined || setter.spelled === read.member) continue;
        ctx.warnInValue(
          at,
          read.index,
          'EG_CONFIG_HEADER_SPELLING',
          `header '${read.member}' is set as '${setter.spelled}' by the headers step at ${setter.place}, which replaces it in any case with that spelling, so this reads no value wherever that step's expression has one; read $headers."${setter.spelled}"`,
        );
      }
    }
  };
  for (const s of steps) {
    // A step's own expressions read the headers as they were before it.
    checkAll(s.expressions);
    for (const name of s.step.setsHeaders ?? []) set.set(name.toLowerCase(), { spelled: name, place: ctx.placeOf(s.at) });
  }
  checkAll(targets);
}
