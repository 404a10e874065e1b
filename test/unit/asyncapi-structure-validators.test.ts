import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseDocument, parserModules } from '../../src/asyncapi/parse.js';
import { buildTimeValidatorsServed, setBuildTimeStructureValidators, useBuildTimeStructureValidators } from '../../src/asyncapi/structure-validators.js';
import { documentOf, lightMeasuredPayload } from '../helpers/asyncapi-fixtures.js';
import { repoRoot, tempFiles } from '../helpers/gateway.js';

// The payload inline: the parse of a raw text has no file for a relative $ref to read.
const v26 = documentOf['2.6'].replace("$ref: 'schemas/light-measured.yaml'", 'type: object');
const v30 = documentOf['3.0'].replace("$ref: 'schemas/light-measured.yaml'", 'type: object');

/** Invalid documents, each breaking the AsyncAPI schema (resolved or unresolved) in another way. */
const broken: Record<string, string> = {
  'no info.version (2.6)': v26.replace("  version: '1.0.0'\n", ''),
  'no info.version (3.0)': v30.replace("  version: '1.0.0'\n", ''),
  'an unknown top-level property': v30.replace('info:\n', 'colour: red\ninfo:\n'),
  'a title of the wrong type': v26.replace('title: Streetlights', 'title: [1, 2]'),
  'an operation action that is none of send/receive': v30.replace('action: receive', 'action: listen'),
  'a server without a protocol (2.6)': v26.replace('channels:\n', 'servers:\n  prod: {url: example.com}\nchannels:\n'),
  'a server without a host (3.0)': v30.replace('channels:\n', 'servers:\n  prod: {protocol: mqtt}\nchannels:\n'),
  'a channel address of the wrong type': v30.replace('address: light/measured', 'address: 42'),
  'a $ref where referencing is not allowed': v30.replace('  title: Streetlights\n', "  $ref: '#/components/messages/turnOn'\n  title: Streetlights\n"),
  'a message with an unknown property': v26.replace('      messageId: turnOnCommand\n', '      messageId: turnOnCommand\n      colour: red\n'),
  'a payload schema that is no schema': v30.replace('required: [command]', 'required: command'),
  'an AsyncAPI 2.0 document': 'asyncapi: 2.0.0\ninfo: {title: T}\nchannels: {a: {publish: {message: {payload: {type: 3}}}}}\n',
  'an AsyncAPI 3.1 document': 'asyncapi: 3.1.0\ninfo: {title: T, version: "1"}\noperations: {o: {action: send}}\n',
};

/** The parser's own diagnostics for `text`, as they come (before parse.ts picks the errors it reports). */
async function rawDiagnostics(text: string): Promise<unknown[]> {
  const { Parser } = parserModules();
  const { diagnostics } = await new Parser({ ruleset: { recommended: false } }).parse(text, { source: 'doc.yaml', __unstable: { resolver: { resolvers: [] } } });
  return diagnostics.map((d) => ({ code: d.code, message: d.message, path: d.path, severity: d.severity, range: d.range }));
}

describe('AsyncAPI structure validators from the build (point 90)', () => {
  // The validators are made from @asyncapi/parser 3.6.3, and the vendor bundle holds it with the
  // Avro schema parser at the lock's versions. A range lets `npm install -g eventgate-*.tgz`
  // resolve another Avro parser, and from 3.1.0 it wants parser ^3.6.4: npm warns ERESOLVE on
  // every install outside the repo (docs/gitops.md). Both are pinned to what the lock holds.
  it('pins the AsyncAPI parser packages in package.json to the versions the lock installs', () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    const lock = JSON.parse(readFileSync(join(repoRoot, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version: string }> };
    for (const name of ['@asyncapi/parser', '@asyncapi/avro-schema-parser']) assert.equal(pkg.dependencies[name], lock.packages[`node_modules/${name}`]!.version, name);
  });

  it("serves both of a parse's AsyncAPI schemas from the build's code, for 2.x and 3.x", async () => {
    const files = { 'a.yaml': documentOf['3.0'], 'b.yaml': documentOf['2.6'], 'schemas/light-measured.yaml': lightMeasuredPayload };
    const dir = tempFiles(files);
    const before = buildTimeValidatorsServed();
    for (const name of ['a.yaml', 'b.yaml'] as const) {
      const file = join(dir, name);
      const { result } = await parseDocument(file, files[name], async () => lightMeasuredPayload, { root: dir });
      assert.deepEqual(result.problems, []);
      assert.equal(result.document?.messages.length, 3);
    }
    assert.equal(buildTimeValidatorsServed() - before, 6); // per parse: the two structure schemas and asyncapi-latest-version's
  });

  it("finds the same problems, at the same paths and with the same messages, as Spectral's own ajv", async () => {
    assert.equal(useBuildTimeStructureValidators(parserModules()), true);
    // Spectral's ajv, as the parser has it, but one set of its instances for every parse below: each
    // schema is compiled once (the parser makes each schema object once per process), not per parse
    // (~0.4 s of CPU each); a compiled validator answers a document the same whichever parse compiled it.
    const spectral = parserModules().spectralAjv;
    const perParse = spectral.createAjvInstances;
    const compiledOnce = perParse();
    const compiled = async (text: string) => {
      setBuildTimeStructureValidators(false);
      spectral.createAjvInstances = () => compiledOnce;
      try {
        return await rawDiagnostics(text);
      } finally {
        spectral.createAjvInstances = perParse;
        setBuildTimeStructureValidators(true);
      }
    };
    for (const [what, text] of Object.entries(broken)) {
      const before = buildTimeValidatorsServed();
      const fromBuild = await rawDiagnostics(text);
      // The two structure schemas, asyncapi-latest-version's, and asyncapi-servers' where a document has servers.
      assert.ok(buildTimeValidatorsServed() - before >= 3, what);
      const served = buildTimeValidatorsServed();
      assert.deepEqual(fromBuild, await compiled(text), what);
      assert.equal(buildTimeValidatorsServed(), served, `${what}: Spectral's ajv compiled every schema`);
      assert.ok(
        fromBuild.some((d) => (d as { severity: number }).severity === 0),
        `${what}: no error`,
      );
    }
  });

  it("leaves a schema the build did not make from to Spectral's ajv", async () => {
    // The module of Spectral's that the parser in use calls (the bundle's copy): the hook is on its exports.
    const spectral = parserModules().spectralAjv as unknown as {
      createAjvInstances: () => (schema: object, dialect: string, allErrors: boolean) => ((data: unknown) => boolean) & { errors?: { message?: string }[] };
    };
    assert.equal(useBuildTimeStructureValidators(parserModules()), true);
    // Validators made from other versions than the parser's are not used at all.
    assert.equal(useBuildTimeStructureValidators({ ...parserModules(), versions: { ...parserModules().versions, ajv: '8.0.0' } }), false);
    const rule = createRequire(import.meta.url).resolve('@asyncapi/parser/cjs/ruleset/functions/documentStructure.js');
    const { getSchema } = createRequire(rule)(rule) as { getSchema: (f: Set<unknown>, resolved: boolean) => Record<string, any> };
    const { AsyncAPIFormats } = createRequire(rule)('../formats.js') as { AsyncAPIFormats: Map<string, unknown> };
    const schema = getSchema(new Set([AsyncAPIFormats.get('3.0.0')]), true);
    const changed = structuredClone(schema);
    changed.required = [...changed.required, 'x-changed'];
    const doc = { asyncapi: '3.0.0', info: { title: 'T', version: '1' } };

    const before = buildTimeValidatorsServed();
    const validators = spectral.createAjvInstances();
    assert.equal(validators(schema, 'draft7', true)(doc), true);
    assert.equal(buildTimeValidatorsServed() - before, 1);
    // Another schema under the same $id: compiled, so it holds the change.
    const validate = spectralAfresh(spectral)(changed, 'draft7', true);
    assert.equal(validate(doc), false);
    assert.deepEqual(
      validate.errors?.map((e) => e.message),
      ["must have required property 'x-changed'"],
    );
    // Asked without allErrors (not as the parser asks): compiled too.
    assert.equal(spectralAfresh(spectral)(schema, 'draft7', false)(doc), true);
    assert.equal(buildTimeValidatorsServed() - before, 1);
  });
});

/** A new set of Spectral's ajv instances (one per document inventory, as in a parse). */
function spectralAfresh<T>(spectral: { createAjvInstances: () => T }): T {
  return spectral.createAjvInstances();
}
