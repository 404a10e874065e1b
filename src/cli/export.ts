import { readFileSync } from 'node:fs';
import { Document, parse, visit } from '../config/yaml.js';
import { formatDiagnostic } from '../config/diagnostics.js';
import type { Env } from '../config/source.js';
import { defaultRegistry } from '../kinds/index.js';
import { exportAsyncApi } from '../plan/asyncapi-export.js';
import { loadPlan } from '../plan/compile.js';
import type { CliIo } from './io.js';

/** `eventgate export asyncapi [-c FILE]`: the AsyncAPI 3.0 document (YAML) of the gateway's own channels. */
export async function exportCommand(what: string | undefined, config: string, env: Env, io: CliIo): Promise<number> {
  if (what !== 'asyncapi') {
    io.stderr(`eventgate: export what? 'eventgate export asyncapi [-c FILE]'${what ? ` (not '${what}')` : ''}\n`);
    return 2;
  }
  const { plan, diagnostics } = await loadPlan(config, { registry: defaultRegistry(), env });
  if (!plan) {
    for (const d of diagnostics) io.stderr(`${formatDiagnostic(d)}\n`);
    return 1;
  }
  // The envelope websocket clients get with `format: envelope` is documented once, in schemas/.
  const envelope = JSON.parse(readFileSync(new URL('../../../schemas/envelope.json', import.meta.url), 'utf8')) as unknown;
  io.stdout(portableYaml(exportAsyncApi(plan, envelope)));
  return 0;
}

/**
 * YAML that reads the same in YAML 1.2 and 1.1 parsers. The export is for other tools, and many
 * read YAML 1.1 (SnakeYAML in Java's AsyncAPI tooling, PyYAML, Go's yaml.v2), where a plain `on`,
 * `off`, `yes`, `no` or `y` is a boolean: `enum: [on, off]` of a payload came out as
 * `[true, false]` there. A string a 1.1 parser would read as anything else is quoted, and so
 * are 1.1's `<<` (a merge key: a property so named had its schema merged into its siblings) and `=`
 * (a value key; PyYAML refuses either as a plain value), which a lone scalar's parse cannot show.
 */
export function portableYaml(value: unknown): string {
  const doc = new Document(value, { aliasDuplicateObjects: false });
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value === 'string' && !node.value.includes('\n') && (TYPED_IN_11.has(node.value) || readsOtherwiseIn11(node.value))) node.type = 'QUOTE_DOUBLE';
    },
  });
  return doc.toString({ lineWidth: 0 });
}

/** YAML 1.1's merge and value keys: a plain `<<` or `=` is typed there, wherever it stands. */
const TYPED_IN_11 = new Set(['<<', '=']);

function readsOtherwiseIn11(text: string): boolean {
  try {
    return parse(text, { version: '1.1' }) !== text;
  } catch {
    return true;
  }
}
