/**
 * The fields of its input an expression reads by name at the top: `streetlightId` in
 * `$string(streetlightId)`, `a` in `a.b[c > 1]`, `foo` in `$.foo`. Names read inside a path's later
 * steps, a filter, a sort or a function body are fields of something else (an item, an argument),
 * so they are not among them; but `$$` is the input wherever it is written, so `$$.kind` in a
 * filter (`items[sku = $$.kind]`) or a function body is. Read once per compile, for the check of a
 * route's field reads against the schema its validate step enforces (src/plan/field-reads.ts).
 */

import type { AstNode } from './checked-functions.js';

export interface InputField {
  readonly name: string;
  /** Where the name starts in the expression's source. */
  readonly index: number;
}

export function inputFields(source: string, ast: AstNode): InputField[] {
  const out: InputField[] = [];
  visit(source, ast, out);
  rootReads(source, ast, out, new Set());
  return out.sort((a, b) => a.index - b.index);
}

/** `$$.name` anywhere in the tree: `$$` is bound to the input once, for the whole evaluation. */
function rootReads(source: string, node: unknown, out: InputField[], seen: Set<object>): void {
  if (node === null || typeof node !== 'object' || seen.has(node)) return;
  seen.add(node);
  if (Array.isArray(node)) {
    for (const n of node) rootReads(source, n, out, seen);
    return;
  }
  const n = node as AstNode;
  if (n.type === 'path') {
    const [first, second] = (n.steps as AstNode[] | undefined) ?? [];
    if (first?.type === 'variable' && first.value === '$' && !first.stages && !first.predicate && second?.type === 'name') name(source, second, out);
  }
  for (const v of Object.values(n)) rootReads(source, v, out, seen);
}

function visit(source: string, node: AstNode | undefined, out: InputField[]): void {
  if (node === undefined || node === null || typeof node !== 'object') return;
  const each = (nodes: unknown) => {
    if (Array.isArray(nodes)) for (const n of nodes) visit(source, n as AstNode, out);
  };
  switch (node.type) {
    case 'path': {
      const [first, second] = (node.steps as AstNode[] | undefined) ?? [];
      // `$.foo`: the context variable, then a field of the input.
      if (first?.type === 'variable' && first.value === '' && !first.stages && !first.predicate) {
        if (second?.type === 'name') name(source, second, out);
        return;
      }
      if (first?.type === 'name') name(source, first, out);
      else visit(source, first, out);
      return;
    }
    case 'name':
      name(source, node, out);
      return;
    case 'binary':
    case 'apply':
      visit(source, node.lhs as AstNode, out);
      visit(source, node.rhs as AstNode, out);
      return;
    case 'unary':
      if (node.value === '-') visit(source, node.expression as AstNode, out);
      else if (node.value === '[') each(node.expressions);
      else if (node.value === '{') for (const pair of (node.lhs as AstNode[][] | undefined) ?? []) each(pair);
      return;
    case 'condition':
      visit(source, node.condition as AstNode, out);
      visit(source, node.then as AstNode, out);
      visit(source, node.else as AstNode, out);
      return;
    case 'block':
      each(node.expressions);
      return;
    case 'function':
    case 'partial':
      each(node.arguments);
      return;
    case 'bind':
      visit(source, node.rhs as AstNode, out);
      return;
    default:
      // Literals, variables, regexes, lambdas (their bodies read their arguments), transforms.
      return;
  }
}

/** A name node: JSONata's position is just past it (past the closing backquote of `` `a b` ``). */
function name(source: string, node: AstNode, out: InputField[]): void {
  const value = String(node.value);
  const end = node.position ?? 0;
  if (source.slice(end - value.length, end) === value) out.push({ name: value, index: end - value.length });
  else if (source[end - 1] === '`' && source.slice(end - 1 - value.length, end - 1) === value) out.push({ name: value, index: end - value.length - 2 });
}

/**
 * A comparison `field != literal` whose falsity for a message without the field decides the
 * expression's truth: JSONata's comparison with no value is false, `!=` as much as `=`, so a
 * filter `status != "test"` drops every message without a `status`, which few who write it mean.
 */
export interface MissingFieldComparison {
  readonly name: string;
  /** Where the field starts in the source (its `$.` included). */
  readonly index: number;
  /** The field as written: `status`, `$.status`, `` `order status` ``. */
  readonly field: string;
  /** The comparison as written: `status != "test"`. */
  readonly text: string;
  /** Whether it is the whole expression (in parentheses or not), not one operand of an `and` / `or`. */
  readonly whole: boolean;
}

/**
 * The `!=` comparisons of a field of the input with a literal that stand where the expression's
 * truth is read (the root, an operand of `and` / `or`, parentheses), one per field. A field the
 * expression reads anywhere else (`$exists(status)`, `status and ...`) is left out: the expression
 * already says what a message without it does. So are `=` and `in` (no message without the field
 * is meant to match), `!= null` (written to drop the messages without a value), and a comparison inside a function or a condition (its truth is that of
 * something else).
 */
export function missingFieldComparisons(source: string, ast: AstNode): MissingFieldComparison[] {
  const found = new Map<string, MissingFieldComparison>();
  const counted = new Map<string, number>();
  const visit = (node: AstNode | undefined, whole: boolean): void => {
    if (node?.type === 'block' && Array.isArray(node.expressions) && node.expressions.length === 1) return visit(node.expressions[0] as AstNode, whole);
    if (node?.type !== 'binary') return;
    if (node.value === 'and' || node.value === 'or') {
      visit(node.lhs as AstNode, false);
      visit(node.rhs as AstNode, false);
      return;
    }
    const rhs = node.rhs as AstNode | undefined;
    const field = node.value === '!=' ? fieldOf(source, node.lhs as AstNode) : undefined;
    // `field != null` is how one writes "has a value": the messages without it are meant to go.
    if (!field || !rhs || !['string', 'number', 'value'].includes(String(rhs.type)) || rhs.value === null || typeof rhs.position !== 'number') return;
    counted.set(field.name, (counted.get(field.name) ?? 0) + 1);
    if (!found.has(field.name)) found.set(field.name, { name: field.name, index: field.index, field: source.slice(field.index, field.end), text: source.slice(field.index, rhs.position), whole });
  };
  visit(ast, true);
  const reads = nameCounts(ast, new Map(), new Set());
  return [...found.values()].filter((c) => reads.get(c.name) === counted.get(c.name));
}

/** `status` or `$.status`: the field of the input a path of one name reads, and where it starts. */
function fieldOf(source: string, node: AstNode | undefined): { name: string; index: number; end: number } | undefined {
  const steps = node?.type === 'path' ? (node.steps as AstNode[] | undefined) : undefined;
  if (!steps || node!.predicate || node!.stages) return undefined;
  const [first, second] = steps;
  const named = steps.length === 1 ? first : steps.length === 2 && first?.type === 'variable' && first.value === '' && !first.predicate && !first.stages ? second : undefined;
  if (named?.type !== 'name' || named.predicate || named.stages || named.group) return undefined;
  const out: InputField[] = [];
  name(source, named, out);
  const at = out[0];
  if (!at) return undefined;
  // `$.status` starts at its `$` (the variable's position is just past it).
  return { name: at.name, index: steps.length === 2 ? (first!.position ?? 1) - 1 : at.index, end: named.position ?? at.index + at.name.length };
}

/** How often each name is read anywhere in the tree: a comparison's field read elsewhere too is guarded. */
function nameCounts(node: unknown, counts: Map<string, number>, seen: Set<object>): Map<string, number> {
  if (node === null || typeof node !== 'object' || seen.has(node)) return counts;
  seen.add(node);
  if (Array.isArray(node)) for (const n of node) nameCounts(n, counts, seen);
  else {
    const n = node as AstNode;
    if (n.type === 'name') counts.set(String(n.value), (counts.get(String(n.value)) ?? 0) + 1);
    for (const v of Object.values(n)) nameCounts(v, counts, seen);
  }
  return counts;
}
