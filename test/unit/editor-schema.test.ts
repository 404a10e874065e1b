import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { repoRoot } from '../helpers/gateway.js';

const schema = JSON.parse(readFileSync(join(repoRoot, 'gateway.schema.json'), 'utf8')) as Record<string, unknown>;

/** A standard JSON Schema 2020-12 validator, as an editor or a CI linter would run it (ajv knows `discriminator` only when asked). */
let compiled: ReturnType<Ajv2020['compile']> | undefined;
function standardValidator() {
  compiled ??= new Ajv2020({ allErrors: true, discriminator: true, allowUnionTypes: true }).compile(schema);
  return compiled;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

/** Gateway configs are the files with a top-level `version`; examples/ also holds AsyncAPI documents, fragments and tests. */
const configs = yamlFiles(join(repoRoot, 'examples')).filter((f) => {
  const doc = parse(readFileSync(f, 'utf8')) as Record<string, unknown> | null;
  return doc !== null && typeof doc === 'object' && 'version' in doc;
});

describe('gateway.schema.json in an editor', () => {
  it('finds the example configs', () => {
    assert.ok(configs.length >= 4, `only ${configs.length} example configs found`);
  });

  for (const file of configs) {
    it(`accepts ${relative(repoRoot, file)} as it is, \${VAR} values included`, () => {
      const validate = standardValidator();
      const ok = validate(parse(readFileSync(file, 'utf8')));
      assert.ok(ok, JSON.stringify(validate.errors, null, 2));
    });
  }

  it('accepts ${VAR} and ${VAR:-default} wherever a number, boolean or enum goes (origins: "*" too), and still rejects a wrong literal', () => {
    const validate = standardValidator();
    const config = (port: unknown, level: unknown, payloads: unknown) => ({
      version: 1,
      log: { level, payloads },
      listeners: { api: { kind: 'http', port } },
      brokers: { kafka: { kind: 'kafka', brokers: ['k:9092'], producer: { acks: '${ACKS:-all}', idempotent: '${IDEMPOTENT}' } } },
    });
    assert.ok(validate(config('${HTTP_PORT:-8080}', '${LOG_LEVEL}', '${PAYLOADS:-false}')), JSON.stringify(validate.errors));
    assert.equal(validate(config('eighty', 'info', false)), false, 'a word is not a port');
    assert.equal(validate(config(8080, 'loud', false)), false, 'not a level');
    assert.equal(validate(config(8080, 'info', 'yes')), false, 'not a boolean');
    assert.equal(validate(config('${HTTP PORT}', 'info', false)), false, 'not a variable name');
    // `version` is a number too (the loader takes `version: ${CONFIG_VERSION}` when it is 1).
    assert.ok(validate({ version: '${CONFIG_VERSION:-1}' }), JSON.stringify(validate.errors));
    assert.equal(validate({ version: 2 }), false, 'only version 1');
    // `origins: "*"` is an enum of one: `${ORIGINS:-*}` loads (when it is `*`), so the editor takes it too.
    const origins = (value: unknown) => ({
      version: 1,
      listeners: { api: { kind: 'http', port: 8080, cors: { origins: value } }, push: { kind: 'websocket', port: 8081, origins: value } },
    });
    assert.ok(validate(origins('${ORIGINS:-*}')), JSON.stringify(validate.errors));
    assert.ok(validate(origins(['https://app.example.com', '${EXTRA_ORIGIN}'])), JSON.stringify(validate.errors));
    assert.equal(validate(origins('https://app.example.com')), false, 'one origin goes in a list');
  });

  it('accepts `kind: ${VAR}` for a broker and a listener, as the gateway does, and still rejects an unknown literal kind', () => {
    const validate = standardValidator();
    const config = (kind: string) => ({ version: 1, brokers: { main: { kind, retain: 10 } }, listeners: { api: { kind: '${API_KIND:-http}', port: 8080 } } });
    assert.ok(validate(config('${BROKER_KIND}')), JSON.stringify(validate.errors));
    assert.ok(validate(config('memory')), JSON.stringify(validate.errors));
    assert.equal(validate(config('memroy')), false, 'not a kind');
    assert.equal(validate(config('${BROKER KIND}')), false, 'not a variable name');
  });

  it('compiles in ajv with its default, strict options, with no warning: no keyword a standard validator does not know', () => {
    // A CI linter or an acceptance check writes `new Ajv2020().compile(schema)`, without ajv's extras.
    const warnings: unknown[] = [];
    const logger = { log: () => undefined, warn: (...m: unknown[]) => warnings.push(m), error: (...m: unknown[]) => warnings.push(m) };
    const validate = new Ajv2020({ logger }).compile(schema);
    assert.deepEqual(warnings, []);
    for (const file of configs) assert.ok(validate(parse(readFileSync(file, 'utf8'))), `${relative(repoRoot, file)}: ${JSON.stringify(validate.errors)}`);
    // The claim values that were `type: [string, number, boolean]` are still checked.
    const claims = (value: unknown) => ({
      version: 1,
      chains: { c: [{ auth: { jwt: { secret: 'x'.repeat(32), requiredClaims: { role: value } } } }] },
    });
    assert.ok(validate(claims('admin')), JSON.stringify(validate.errors));
    assert.equal(validate(claims({ not: 'a scalar' })), false);
  });

  it('gives every property a description, for hovers', () => {
    const missing: string[] = [];
    const walk = (node: unknown, at: string): void => {
      if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${at}[${i}]`));
      if (node === null || typeof node !== 'object') return;
      const n = node as Record<string, unknown>;
      for (const [name, p] of Object.entries((n.properties ?? {}) as Record<string, Record<string, unknown>>)) {
        if (typeof p.description !== 'string' || p.description === '') missing.push(`${at}.${name}`);
        walk(p, `${at}.${name}`);
      }
      for (const k of ['items', 'additionalProperties', 'oneOf', 'anyOf', 'allOf', '$defs']) walk(n[k], `${at}/${k}`);
    };
    walk(schema, '');
    assert.deepEqual(missing, []);
  });

  it("gives from.group's hover both defaults of the contract (§2): the shared group, and a forward-only route's group per instance", () => {
    const routes = (schema.properties as Record<string, { items: { properties: Record<string, { properties: Record<string, { description: string }> }> } }>).routes;
    const hover = routes.items.properties.from.properties.group.description;
    assert.match(hover, /`eventgate-<route name>`, shared by every instance/);
    assert.match(hover, /only targets are forwards .* per instance, `eventgate-<route>-<instance id>`/);
  });
});
