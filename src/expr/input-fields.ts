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
