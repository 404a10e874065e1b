/**
 * A function built from JavaScript the gateway generated for a config (the expression fast paths,
 * the byte checks of JSON Schemas): `body` ends with `return function …`, and its free names are
 * `helpers`' keys and `K`, the constants it reads by index. Each generator puts into the source
 * only what it may (numbers, byte values, names as JSON string literals), never raw config text.
 * Undefined where code generation from strings is disallowed (node run with
 * --disallow-code-generation-from-strings): the caller then does without the generated function.
 */
export function buildGenerated<T>(helpers: Readonly<Record<string, unknown>>, constants: readonly unknown[], body: string): T | undefined {
  let make: (...args: unknown[]) => T;
  try {
    make = new Function(...Object.keys(helpers), 'K', body) as typeof make;
  } catch (err) {
    if (err instanceof EvalError) return undefined;
    throw err;
  }
  return make(...Object.values(helpers), constants);
}
