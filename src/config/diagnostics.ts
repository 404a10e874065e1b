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

/**
 * One line, whatever the problem quotes: a name, key or path written with a line break in quotes
 * (`"me\nm"`) is escaped, so `validate` prints one line per problem (spec §1) and a CI job that
 * reads them line by line gets each whole.
 */
export function formatDiagnostic(d: Diagnostic): string {
  return escapeControls(`${d.file}:${d.line}:${d.column}: ${d.message}`);
}

/**
 * A warning's line (validate's and plan's stderr, an AsyncAPI upload's answer): its code at the
 * end, as gcc puts its `[-Wflag]`, so a CI step can annotate or silence it by code while a
 * pattern on `: warning: ` still matches.
 */
export function formatWarning(d: Diagnostic): string {
  return `${formatDiagnostic({ ...d, message: `warning: ${d.message}` })} [${d.code}]`;
}

/** A diagnostic as `--format json` reports it: validate's array, plan's `errors` and `warnings`. */
export interface ReportedDiagnostic {
  file: string;
  line: number;
  column: number;
  message: string;
  path: string;
  code: string;
  /** Beside the errors of validate's array, its warnings (which leave the config valid). */
  severity: 'error' | 'warning';
}

export function reported(d: Diagnostic, severity: ReportedDiagnostic['severity']): ReportedDiagnostic {
  return { file: d.file, line: d.line, column: d.column, message: d.message, path: d.path, code: d.code, severity };
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}

/**
 * Control characters (a NUL from "\0" in a double-quoted scalar) and the Unicode line and paragraph
 * separators as their escapes: a diagnostic quoting a value writes none to the terminal, nor a line
 * break a reader splits on.
 */
export function escapeControls(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The config file itself could not be read (missing, a directory, no permission): nothing in it
 * is invalid, so the CLI says that line alone rather than "the config is invalid" (spec-checklist 2108).
 */
export function configUnreadable(diagnostics: readonly Diagnostic[]): boolean {
  return diagnostics.length === 1 && diagnostics[0]!.code === 'EG_CONFIG_FILE' && diagnostics[0]!.path === '';
}
