import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
});
