import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { narrowToTaggedBranch } from '../../src/kinds/steps/discriminated-errors.js';
import { inlineDiscriminatedBranches } from '../../src/plan/discriminated-branches.js';
import { JsonSchemaCompiler } from '../../src/plan/json-schema.js';

// Config loads share one ajv per draft (a reload no longer compiles the meta-schema again); what
// one load compiled must not leak into, or break, the next.
describe('JsonSchemaCompiler', () => {
  it('compiles the same schema in two loads, and both validators keep working', () => {
    const schema = { type: 'object', required: ['id'], properties: { id: { type: 'integer' } } };
    const first = new JsonSchemaCompiler().compile(schema).validate!;
    const second = new JsonSchemaCompiler().compile(structuredClone(schema)).validate!;
    for (const v of [first, second]) {
      assert.equal(v({ id: 1 }), true);
      assert.equal(v({ id: 'x' }), false);
    }
  });

  it('still checks schemas against the meta-schema after one that claims a meta-schema $id', () => {
    const claims = new JsonSchemaCompiler().compile({ $id: 'https://json-schema.org/draft/2020-12/schema', type: 'string' });
    assert.equal(claims.validate!('a'), true);
    const bad = new JsonSchemaCompiler().compile({ type: 'object', properties: { n: { type: 'integr' } } });
    assert.equal(bad.validate, undefined);
    assert.match(bad.problems[0]!.message, /'type'/);
    const good = new JsonSchemaCompiler().compile({ type: 'object', properties: { n: { type: 'integer' } } });
    assert.equal(good.validate!({ n: 1.5 }), false);
  });

  it('reports an unresolvable $ref, then compiles the next schema normally', () => {
    const broken = new JsonSchemaCompiler().compile({ $ref: '#/$defs/missing' });
    assert.equal(broken.validate, undefined);
    assert.match(broken.problems[0]!.message, /points at nothing/);
    const ok = new JsonSchemaCompiler().compile({ $defs: { n: { type: 'number' } }, $ref: '#/$defs/n' });
    assert.equal(ok.validate!(2), true);
    assert.equal(ok.validate!('2'), false);
  });

  it("puts a discriminated oneOf's branches in place, and only as many $refs below them as the schema has objects (shared types copied each time)", () => {
    // Each level's type uses the next one three times: in place all the way down, 3^12 copies.
    const $defs: Record<string, unknown> = { L12: { type: 'string', minLength: 1 } };
    for (let i = 11; i >= 0; i--) $defs[`L${i}`] = { type: 'object', properties: { a: { $ref: `#/$defs/L${i + 1}` }, b: { $ref: `#/$defs/L${i + 1}` }, c: { $ref: `#/$defs/L${i + 1}` } } };
    const pet = (tag: string, extra: object) => ({ type: 'object', required: ['petType'], properties: { petType: { const: tag }, home: { $ref: '#/$defs/L0' }, ...extra } });
    $defs.Cat = pet('Cat', { meows: { type: 'boolean' } });
    $defs.Dog = pet('Dog', { barks: { type: 'integer', minimum: 0 } });
    const schema = { discriminator: { propertyName: 'petType' }, oneOf: [{ $ref: '#/$defs/Cat' }, { $ref: '#/$defs/Dog' }], $defs };
    const count = (v: unknown): number => (typeof v === 'object' && v !== null ? 1 + Object.values(v).reduce<number>((n, x) => n + count(x), 0) : 0);
    const placed = inlineDiscriminatedBranches(schema, '$id') as { oneOf: object[] };
    // Both branches in place (the first one's $refs did not use up what copies may add), and the
    // copies at most the schema's own size again (they were 20,000 schema objects: ~13 s to compile).
    assert.deepEqual(
      placed.oneOf.map((b) => '$ref' in b),
      [false, false],
    );
    assert.ok(count(placed) <= 2 * count(schema) + 200, `${count(placed)} objects from ${count(schema)}`);
    const { validate } = new JsonSchemaCompiler().compile(schema);
    const dog = { petType: 'Dog', barks: -1, home: 1 };
    assert.equal(validate!(dog), false);
    const errors = narrowToTaggedBranch(validate!.errors ?? [], placed, dog).map((e) => `${e.instancePath}: ${e.message}`);
    assert.deepEqual(errors, ['/home: must be object', '/barks: must be >= 0']);
    assert.equal(validate!({ petType: 'Cat', meows: true, home: { a: { b: {} }, c: { a: {} } } }), true);
  });
});
