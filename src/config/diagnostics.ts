/** Config problems as data: 1-based positions taken from the bytes that were parsed. */
export interface Diagnostic {
  file: string;
  line: number;
  column: number;
  /** Stable EG_* code; see src/errors.ts. */
  code: string;
  /** Dotted path of the offending key, e.g. `routes[0].through[1].filter`. */
  path: string;
  message: string;
}

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.column}: ${d.message}`;
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}
