/**
 * A topic filter written in another broker kind's wildcard syntax: `plant.*.temperature` on an
 * MQTT server (whose wildcards are `+` and `#` between `/`), `plant/+/temperature` on NATS or
 * AMQP (`*` and `>` or `#` between `.`). Each kind takes such a filter as one literal topic, which
 * no publisher uses, so the route reads nothing and nothing says why: the kinds warn of it
 * (`readWarning`) and name the filter in their own syntax.
 */

/** How a kind writes a topic filter: the level separator, the one-level and the rest-of-levels wildcards. */
export interface WildcardSyntax {
  separator: '/' | '.';
  one: string;
  rest: string;
}

export const MQTT_WILDCARDS: WildcardSyntax = { separator: '/', one: '+', rest: '#' };
export const NATS_WILDCARDS: WildcardSyntax = { separator: '.', one: '*', rest: '>' };
export const AMQP_WILDCARDS: WildcardSyntax = { separator: '.', one: '*', rest: '#' };

const WILDCARD_CHARS = /[+*#>]/;
const ONE_LEVEL = new Set(['+', '*']);
const REST = new Set(['#', '>']);

/**
 * `filter` in `syntax`, when it reads as a wildcard filter of another kind (a level of its own
 * or another kind's separators that is a wildcard the kind does not take there); else undefined.
 */
export function foreignWildcardFilter(filter: string, syntax: WildcardSyntax): string | undefined {
  const ownLevels = filter.split(syntax.separator);
  const ownWildcardsOnly = ownLevels.every((l) => !WILDCARD_CHARS.test(l) || l === syntax.one || l === syntax.rest);
  if (ownWildcardsOnly) return undefined;
  const levels = filter.split(/[./]/);
  if (!levels.some((l) => ONE_LEVEL.has(l) || REST.has(l))) return undefined;
  const last = levels.length - 1;
  return levels.map((l, i) => (ONE_LEVEL.has(l) || (REST.has(l) && i < last) ? syntax.one : REST.has(l) ? syntax.rest : l)).join(syntax.separator);
}

/** The warning for such a filter, in the kind's own words (`MQTT`, `topic`); undefined for any other filter. */
export function foreignWildcardHint(filter: string, syntax: WildcardSyntax, kind: string, name: string): string | undefined {
  const meant = foreignWildcardFilter(filter, syntax);
  if (meant === undefined) return undefined;
  return `'${filter}' is written in another broker's wildcard syntax: ${kind} reads it as the one ${name} of that name, and nothing else; its wildcards are '${syntax.one}' (one level) and '${syntax.rest}' (every level below), between '${syntax.separator}' (did you mean '${meant}'?)`;
}

/** A filter the kind refuses (`problem`) that reads as another kind's: the problem, with the filter meant in the kind's own syntax. */
export function withForeignWildcardHint(problem: string | undefined, filter: string, syntax: WildcardSyntax, kind: string): string | undefined {
  const meant = problem && foreignWildcardFilter(filter, syntax);
  return meant ? `${problem} (${kind}'s levels are separated by '${syntax.separator}': did you mean '${meant}'?)` : problem;
}
