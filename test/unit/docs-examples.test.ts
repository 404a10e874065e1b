import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { repoRoot } from '../helpers/gateway.js';
import { tempDir } from '../helpers/reaper.js';

/**
 * The config excerpts of README.md and docs/ as `eventgate validate` reads them. Readers copy
 * these into their gateway.yaml, and nothing else loads them: config-fuzz only mutates the whole
 * configs of docs/config.md, and docs-commands only parses every block as YAML. An excerpt names
 * listeners, brokers, chains and files that its page defines elsewhere or that sit beside the
 * reader's config, so those problems (EG_CONFIG_REF, EG_CONFIG_FILE, a missing AsyncAPI
 * document, a memory topic no route of the excerpt writes) are allowed; steps that name an AsyncAPI
 * message or channel are checked against examples/asyncapi-3.0/streetlights.yaml; every other one (a
 * renamed or retired key, a value of the wrong type, an expression or JSON Schema that does not
 * compile, a `${VAR}` inside a flow map) is a page that tells readers to write what the gateway
 * refuses.
 */
const PAGES = [
  'README.md',
  ...readdirSync(join(repoRoot, 'docs'))
    .filter((f) => f.endsWith('.md') && f !== 'performance.md' && f !== 'spec-checklist.md')
    .map((f) => `docs/${f}`),
];

const TOP_KEYS = new Set(Object.keys((JSON.parse(readFileSync(join(repoRoot, 'gateway.schema.json'), 'utf8')) as { properties: object }).properties));
const STEP_KINDS = new Set(defaultRegistry().steps.keys());

/** Stand-ins for the `${VAR}`s of the excerpts, of the type each takes (a port, a URL, a key long enough for apiKey). */
function standIn(name: string): string {
  if (/PORT$/.test(name)) return '8080';
  if (name === 'KAFKA_BROKERS') return 'localhost:9092';
  if (name === 'NATS_URL') return 'nats://localhost:4222';
  if (name === 'MQTT_URL') return 'mqtt://localhost:1883';
  if (name === 'AMQP_URL') return 'amqp://guest:guest@localhost:5672';
  if (/URL$/.test(name)) return 'http://localhost:8080/hook';
  return 'stand-in-secret-0123456789abcdef';
}
const env = new Proxy({} as Record<string, string | undefined>, { get: (_t, name) => (typeof name === 'string' ? standIn(name) : undefined) });

/** What an excerpt may lack: what its page or the reader's directory provides. */
function allowed(d: { code: string; message: string }): boolean {
  if (d.code === 'EG_CONFIG_REF' || d.code === 'EG_CONFIG_FILE') return true;
  if (d.code === 'EG_CONFIG_ASYNCAPI_REF' && /has no AsyncAPI document/.test(d.message)) return true;
  if (d.code === 'EG_CONFIG_ASYNCAPI' && /cannot read|no such file/.test(d.message)) return true;
  return d.code === 'EG_CONFIG_CONFLICT' && /can never receive a message/.test(d.message);
}

interface Excerpt {
  page: string;
  /** The page's line of the excerpt's first line. */
  line: number;
  /** The config to load, and how many lines were put before the excerpt's first. */
  text: string;
  offset: number;
}

/** Each YAML block that is config: top-level config keys, or steps (written into a chain). */
function excerpts(): Excerpt[] {
  const found: Excerpt[] = [];
  for (const page of PAGES) {
    const text = readFileSync(join(repoRoot, page), 'utf8');
    for (const block of text.matchAll(/^```ya?ml\n([\s\S]*?)^```/gm)) {
      const body = block[1]!;
      const where = { page, line: text.slice(0, block.index).split('\n').length + 1 };
      let value: unknown;
      try {
        value = parse(body);
      } catch {
        continue; // docs-commands reports blocks that are not YAML
      }
      const steps = Array.isArray(value) ? value : [value];
      const isStep = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 1 && STEP_KINDS.has(Object.keys(v)[0]!);
      if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).every((k) => TOP_KEYS.has(k))) {
        const versioned = 'version' in value;
        found.push({ ...where, text: versioned ? body : `version: 1\n${body}`, offset: versioned ? 0 : 1 });
      } else if (steps.length > 0 && steps.every(isStep)) {
        const lines = body.split('\n').map((l) => (l === '' ? l : `    ${Array.isArray(value) ? '' : '  '}${l}`));
        if (!Array.isArray(value)) lines[0] = lines[0]!.replace(/^ {6}/, '    - ');
        // Steps that name an AsyncAPI message or channel get the examples' document, which has them.
        const asyncapi = /^\s*-?\s*validate:.*\b(message|channel):|^\s+(message|channel):/m.test(body) ? 'asyncapi: streetlights.yaml\n' : '';
        found.push({ ...where, text: `version: 1\n${asyncapi}chains:\n  example:\n${lines.join('\n')}`, offset: asyncapi ? 4 : 3 });
      }
    }
  }
  return found;
}

describe('the config examples of README.md and docs/', () => {
  it('are config `eventgate validate` takes, but for what their page defines elsewhere', async () => {
    const dir = tempDir('docs-examples');
    // Files the excerpts name the way the examples do (schemas/light-measured.json, streetlights.yaml).
    cpSync(join(repoRoot, 'examples'), dir, { recursive: true });
    cpSync(join(repoRoot, 'examples', 'asyncapi-3.0'), dir, { recursive: true });
    const found = excerpts();
    assert.ok(found.length >= 30, `only ${found.length} config excerpts found: has the block syntax of the pages changed?`);
    const registry = defaultRegistry();
    const problems: string[] = [];
    for (const [i, excerpt] of found.entries()) {
      const file = join(dir, `excerpt-${i}.yaml`);
      writeFileSync(file, excerpt.text);
      const { diagnostics } = await loadPlan(file, { registry, env });
      for (const d of diagnostics.filter((d) => !allowed(d))) problems.push(`${excerpt.page}:${excerpt.line + d.line - excerpt.offset - 1}: ${d.code} ${d.message}`);
    }
    // docs/config.md is generated: its examples are fixed in the kinds' docs (src/kinds), then `npm run generate`.
    assert.deepEqual(problems, []);
  });
});
