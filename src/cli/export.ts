import { readFileSync } from 'node:fs';
import { stringify } from '../config/yaml.js';
import { formatDiagnostic } from '../config/diagnostics.js';
import type { Env } from '../config/source.js';
import { defaultRegistry } from '../kinds/index.js';
import { exportAsyncApi } from '../plan/asyncapi-export.js';
import { loadPlan } from '../plan/compile.js';

/** `eventgate export asyncapi [-c FILE]`: the AsyncAPI 3.0 document (YAML) of the gateway's own channels. */
export async function exportCommand(what: string | undefined, config: string, env: Env): Promise<number> {
  if (what !== 'asyncapi') {
    process.stderr.write(`eventgate: export what? 'eventgate export asyncapi [-c FILE]'${what ? ` (not '${what}')` : ''}\n`);
    return 2;
  }
  const { plan, diagnostics } = await loadPlan(config, { registry: defaultRegistry(), env });
  if (!plan) {
    for (const d of diagnostics) process.stderr.write(`${formatDiagnostic(d)}\n`);
    return 1;
  }
  // The envelope websocket clients get with `format: envelope` is documented once, in schemas/.
  const envelope = JSON.parse(readFileSync(new URL('../../../schemas/envelope.json', import.meta.url), 'utf8')) as unknown;
  process.stdout.write(stringify(exportAsyncApi(plan, envelope), { aliasDuplicateObjects: false, lineWidth: 0 }));
  return 0;
}
