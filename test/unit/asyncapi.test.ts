import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { formatDiagnostic } from '../../src/config/diagnostics.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan, type LoadResult } from '../../src/plan/compile.js';
import { readableMessage } from '../../src/asyncapi/parse.js';
import type { Plan } from '../../src/plan/types.js';
import type { Message, MessageContext } from '../../src/core/message.js';
import { isStop, type StepStop } from '../../src/core/outcome.js';
import { channelsOf, documentOf, lightMeasuredPayload } from '../helpers/asyncapi-fixtures.js';
import { repoRoot, tempFiles } from '../helpers/gateway.js';

/** A config with one HTTP route per step, named r0, r1, ... */
function config(steps: string[], asyncapi = 'asyncapi: streetlights.yaml'): string {
  return [
    'version: 1',
    asyncapi,
    'brokers:',
    '  local: {kind: memory}',
    'listeners:',
    '  api: {kind: http, port: 0}',
    'routes:',
    ...steps.flatMap((step, i) => [`  - name: r${i}`, `    from: {listener: api, path: /r${i}}`, '    through:', `      - validate: ${step}`, '    to: {broker: local, topic: t}']),
    '',
  ].join('\n');
}

async function load(files: Record<string, string>): Promise<LoadResult & { dir: string }> {
  const dir = tempFiles(files);
  const result = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });
  return { ...result, dir };
}

async function loadOk(files: Record<string, string>): Promise<Plan> {
  const { plan, diagnostics } = await load(files);
  assert.deepEqual(diagnostics.map(formatDiagnostic), []);
  return plan!;
}

function message(value: unknown): Message {
  return { value, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 };
}

/** Runs route `name`'s first step (the validate step) on `value`. */
async function validateWith(plan: Plan, name: string, value: unknown): Promise<{ result: Message | StepStop; ctx: MessageContext }> {
  const ctx: MessageContext = { route: name };
  const result = await plan.routes.get(name)!.steps[0]!.run(message(value), ctx);
  return { result, ctx };
}

const light = { id: 7, lumens: 640, sentAt: '2026-11-23T10:00:00Z' };

for (const version of ['2.6', '3.0'] as const) {
  const ch = channelsOf[version];
  const files = (steps: string[]) => ({ 'gateway.yaml': config(steps), 'streetlights.yaml': documentOf[version], 'schemas/light-measured.yaml': lightMeasuredPayload });

  describe(`AsyncAPI ${version} documents`, () => {
    it("finds a message by its components key, its messageId or its name, and validates its payload (from a $ref'd file) with formats", async () => {
      const plan = await loadOk(files(['{message: lightMeasured}', '{message: turnOn}', '{message: turnOnCommand}', '{message: dimLight}', '{message: dim}']));
      const ok = await validateWith(plan, 'r0', light);
      assert.equal(isStop(ok.result), false);
      assert.deepEqual(ok.ctx.asyncapi, { message: 'lightMeasured', channel: ch.measured });
      const bad = await validateWith(plan, 'r0', { id: 7, lumens: -1, sentAt: 'yesterday' });
      assert.deepEqual(bad.result, { stop: 'invalid', problem: (bad.result as { problem: unknown }).problem });
      assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ['/lumens: must be >= 0', '/sentAt: must match format "date-time"']);
      for (const route of ['r1', 'r2']) {
        assert.equal(isStop((await validateWith(plan, route, { command: 'on' })).result), false, route);
        assert.equal(isStop((await validateWith(plan, route, { command: 'off' })).result), true, route);
        assert.deepEqual((await validateWith(plan, route, { command: 'on' })).ctx.asyncapi, { message: 'turnOn', channel: ch.commands });
      }
      for (const route of ['r3', 'r4']) {
        assert.equal(isStop((await validateWith(plan, route, { percentage: 50 })).result), false, route);
        assert.equal(isStop((await validateWith(plan, route, { percentage: 150 })).result), true, route);
      }
    });

    it('accepts any message of a channel, tells which one matched, and names the message in each error when none does', async () => {
      const plan = await loadOk(files([`{channel: '${ch.commands}'}`, `{channel: '${ch.measured}'}`]));
      const on = await validateWith(plan, 'r0', { command: 'on' });
      assert.equal(isStop(on.result), false);
      assert.deepEqual(on.ctx.asyncapi, { message: 'turnOn', channel: ch.commands });
      const dim = await validateWith(plan, 'r0', { percentage: 10 });
      assert.equal(isStop(dim.result), false);
      assert.deepEqual(dim.ctx.asyncapi, { message: 'dimLight', channel: ch.commands });
      const neither = await validateWith(plan, 'r0', { colour: 'red' });
      assert.deepEqual((neither.result as { problem: { errors: string[] } }).problem.errors, [
        ": must have required property 'command' (message turnOn)",
        ": must have required property 'percentage' (message dimLight)",
      ]);
      assert.deepEqual(neither.ctx.asyncapi, { message: null, channel: ch.commands });
      // a channel with one message reports its errors as they are
      const bad = await validateWith(plan, 'r1', { ...light, lumens: -1 });
      assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ['/lumens: must be >= 0']);
    });

    it('reports an unknown message id or channel at its line in gateway.yaml, with a did-you-mean hint', async () => {
      const { diagnostics } = await load(files(['{message: lightMeasurd}', `{channel: '${ch.measured}x'}`]));
      assert.deepEqual(
        diagnostics.map((d) => [d.line, d.column, d.code, d.path]),
        [
          [11, 29, 'EG_CONFIG_ASYNCAPI_REF', 'routes[0].through[0].validate.message'],
          [16, 29, 'EG_CONFIG_ASYNCAPI_REF', 'routes[1].through[0].validate.channel'],
        ],
      );
      assert.match(diagnostics[0]!.message, /^AsyncAPI message 'lightMeasurd' is not defined in the AsyncAPI document \(did you mean 'lightMeasured'\?\); defined messages: lightMeasured, /);
      assert.match(diagnostics[1]!.message, new RegExp(`^AsyncAPI channel '${ch.measured}x' is not defined in the AsyncAPI document \\(did you mean '${ch.measured}'\\?\\)`));
    });

    it('lists the document and every file it $refs as files of the plan, and folds them into the route key', async () => {
      const { plan, dir } = await load(files(['{message: lightMeasured}']));
      const payloadFile = join(dir, 'schemas/light-measured.yaml');
      assert.ok(plan!.files.has(join(dir, 'streetlights.yaml')));
      assert.ok(plan!.files.has(payloadFile));
      writeFileSync(payloadFile, lightMeasuredPayload.replace('lumens: {type: integer, minimum: 0}', 'lumens: {type: integer, minimum: 10}'));
      const again = (await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} })).plan!;
      assert.notEqual(again.version, plan!.version);
      assert.notEqual(again.routes.get('r0')!.key, plan!.routes.get('r0')!.key);
      assert.equal(isStop((await validateWith(again, 'r0', { ...light, lumens: 5 })).result), true);
    });
  });
}

describe('AsyncAPI documents: versions, formats and problems', () => {
  it('reads AsyncAPI 2.0 and 3.1 documents, in JSON as well as YAML', async () => {
    const v31 = { asyncapi: '3.1.0', info: { title: 't', version: '1' }, channels: { c: { address: 'a/b', messages: { m: { payload: { type: 'object', required: ['x'] } } } } } };
    const v20 = `asyncapi: 2.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  old/topic:\n    subscribe:\n      message:\n        name: legacy\n        payload: {type: object, required: [y]}\n`;
    const plan = await loadOk({
      'gateway.yaml': config(['{message: m}', '{channel: a/b}', '{message: legacy}'], 'asyncapi: [doc.json, old.yaml]'),
      'doc.json': JSON.stringify(v31, null, 2),
      'old.yaml': v20,
    });
    assert.deepEqual(
      plan.asyncapi!.map((d) => d.version),
      ['3.1.0', '2.0.0'],
    );
    assert.equal(isStop((await validateWith(plan, 'r0', { x: 1 })).result), false);
    assert.equal(isStop((await validateWith(plan, 'r1', {})).result), true);
    assert.equal(isStop((await validateWith(plan, 'r2', { y: 1 })).result), false);
    assert.deepEqual((await validateWith(plan, 'r2', { x: 1 })).ctx.asyncapi, { message: 'legacy', channel: 'old/topic' });
    assert.equal(isStop((await validateWith(plan, 'r2', { x: 1 })).result), true);
  });

  for (const [version, doc] of [
    [
      '2.6',
      `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  users:\n    publish:\n      message:\n        messageId: userSignedUp\n        schemaFormat: 'application/vnd.apache.avro;version=1.9.0'\n        payload:\n          type: record\n          name: User\n          fields:\n            - {name: name, type: string}\n            - {name: age, type: int}\n`,
    ],
    [
      '3.0',
      `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  users:\n    messages:\n      userSignedUp:\n        payload:\n          schemaFormat: 'application/vnd.apache.avro;version=1.9.0'\n          schema:\n            type: record\n            name: User\n            fields:\n              - {name: name, type: string}\n              - {name: age, type: int}\n`,
    ],
  ] as const) {
    it(`validates against an Avro payload schema (AsyncAPI ${version})`, async () => {
      const plan = await loadOk({ 'gateway.yaml': config(['{message: userSignedUp}']), 'streetlights.yaml': doc });
      assert.equal(isStop((await validateWith(plan, 'r0', { name: 'Ada', age: 36 })).result), false);
      const bad = await validateWith(plan, 'r0', { name: 'Ada', age: 'old' });
      assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ['/age: must be integer']);
    });
  }

  it('compiles a payload as the JSON Schema draft its schemaFormat names: 2019-09, 2020-12 (2.6 and a 3.0 Multi Format Schema) (point 650)', async () => {
    const tuple = '{type: array, prefixItems: [{type: string}, {type: integer}], items: false}';
    const v26 = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  a:\n    publish:\n      message:\n        messageId: pair\n        schemaFormat: application/schema+json;version=draft-2020-12\n        payload: ${tuple}\n  b:\n    publish:\n      message:\n        messageId: order\n        schemaFormat: application/schema+yaml;version=draft-2019-09\n        payload: {type: object, dependentRequired: {card: [cvc]}, properties: {card: {}, cvc: {}}, unevaluatedProperties: false}\n`;
    const v30 = `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    messages:\n      pair3:\n        payload:\n          schemaFormat: application/schema+json;version=draft-2020-12\n          schema: ${tuple}\n`;
    const closed = '{schema: {type: object, properties: {card: {}}, additionalProperties: false}}';
    const plan = await loadOk({ 'gateway.yaml': config(['{message: pair}', '{message: order}', '{message: pair3}', closed], 'asyncapi: [a.yaml, b.yaml]'), 'a.yaml': v26, 'b.yaml': v30 });
    for (const r of ['r0', 'r2']) {
      assert.equal(isStop((await validateWith(plan, r, ['a', 1])).result), false);
      const bad = await validateWith(plan, r, ['a', 1, 2]);
      assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [': must NOT have more than 2 items']);
    }
    assert.equal(isStop((await validateWith(plan, 'r1', { card: '4111', cvc: '123' })).result), false);
    const bad = await validateWith(plan, 'r1', { card: '4111' });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [': must have property cvc when property card is present']);
    // An unknown property is named by its own pointer (escaped as JSON Pointer), for
    // unevaluatedProperties as for additionalProperties: ajv's points at the object holding it.
    const unknown = { card: '4111', cvc: '123', 'a/b~c': 1 };
    const errorsOf = async (r: string) => ((await validateWith(plan, r, unknown)).result as { problem: { errors: string[] } }).problem.errors;
    assert.deepEqual(await errorsOf('r1'), ['/a~1b~0c: must NOT have unevaluated properties']);
    assert.deepEqual(await errorsOf('r3'), ['/cvc: must NOT have additional properties', '/a~1b~0c: must NOT have additional properties']);
  });

  it('compiles a draft-04 payload as draft-04: by its schemaFormat (2.6, a 3.0 Multi Format Schema) and by $schema in a plain schema step (point 692)', async () => {
    // Draft-04's boolean exclusiveMaximum/exclusiveMinimum (draft-07 wants numbers there) and `id`.
    const level =
      "{type: object, id: 'https://example.com/level.json', required: [level], properties: {level: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 10, exclusiveMaximum: true}}}";
    const v26 = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  a:\n    publish:\n      message:\n        messageId: level\n        schemaFormat: application/schema+json;version=draft-04\n        payload: ${level}\n`;
    const v30 = `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    messages:\n      level3:\n        payload:\n          schemaFormat: application/schema+yaml;version=draft-04\n          schema: ${level}\n`;
    // In a document, draft-04 is named by schemaFormat: the AsyncAPI parser checks a default-format payload as draft-07, `$schema` or not.
    const steps = ['{message: level}', '{message: level3}', `{schema: {$schema: 'http://json-schema.org/draft-04/schema#', type: number, maximum: 10, exclusiveMaximum: true}}`];
    const plan = await loadOk({ 'gateway.yaml': config(steps, 'asyncapi: [a.yaml, b.yaml]'), 'a.yaml': v26, 'b.yaml': v30 });
    for (const r of ['r0', 'r1']) {
      assert.equal(isStop((await validateWith(plan, r, { level: 9.5 })).result), false);
      for (const [level, error] of [
        [10, '/level: must be < 10'],
        [0, '/level: must be > 0'],
      ] as const) {
        const bad = await validateWith(plan, r, { level });
        assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [error]);
      }
    }
    assert.equal(isStop((await validateWith(plan, 'r2', 9.5)).result), false);
    const bad = await validateWith(plan, 'r2', 10);
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [': must be < 10']);
  });

  it("validates Avro named types referred to by name (also recursive ones) and unions whose branches overlap, a field's attributes its own (points 652, 673)", async () => {
    const avro = `{type: record, name: Order, namespace: com.example, fields: [
              {name: items, type: {type: array, items: {type: record, name: Item, fields: [{name: sku, type: string}]}}},
              {name: first, type: Item},
              {name: second, type: com.example.Item},
              {name: gift, type: ["null", Item]},
              {name: amount, type: [int, double]},
              {name: next, type: ["null", Order], default: null},
              {name: code, type: {type: fixed, name: Code, size: 2}, pattern: '^[A-Z]+$'},
              {name: alt, type: Code}]}`;
    const doc = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  orders:\n    publish:\n      message:\n        messageId: order\n        schemaFormat: 'application/vnd.apache.avro;version=1.9.0'\n        payload: ${avro}\n`;
    const plan = await loadOk({ 'gateway.yaml': config(['{message: order}']), 'streetlights.yaml': doc });
    // A field's own attributes stay its own (point 673): `alt` is any 2 bytes, only `code` has the pattern.
    const order = { items: [{ sku: 'a' }], first: { sku: 'b' }, second: { sku: 'c' }, gift: null, amount: 5, code: 'AB', alt: 'ab' };
    assert.equal(isStop((await validateWith(plan, 'r0', order)).result), false, 'null for ["null", Item], 5 for [int, double], alt without code\'s pattern');
    assert.equal(isStop((await validateWith(plan, 'r0', { ...order, gift: { sku: 'd' }, amount: 2.5, next: order })).result), false);
    const bad = await validateWith(plan, 'r0', { ...order, first: {}, second: { sku: 1 }, gift: { sku: 2 }, next: { ...order, first: {} }, code: 'ab' });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [
      "/first: must have required property 'sku'",
      '/second/sku: must be string',
      '/gift/sku: must be string',
      '/gift: must be null',
      '/gift: must match a schema in anyOf',
      "/next/first: must have required property 'sku'",
      '/next: must be null',
      '/next: must match a schema in anyOf',
      '/code: must match pattern "^[A-Z]+$"',
    ]);
  });

  it('validates a payload that uses a schema file with an $id twice, and one that is that file, and keeps a property named $id (points 658, 671, 683)', async () => {
    const money = JSON.stringify({
      $schema: 'http://json-schema.org/draft-07/schema#',
      $id: 'https://example.com/money.json',
      type: 'object',
      required: ['amount'],
      properties: { amount: { type: 'number' }, currency: { $ref: '#/definitions/currency' } },
      definitions: { currency: { type: 'string', pattern: '^[A-Z]{3}$' } },
    });
    const doc = `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    messages:\n      order:\n        payload:\n          type: object\n          properties:\n            price: {$ref: 'money.json'}\n            tax: {$ref: 'money.json'}\n            default: {$ref: 'money.json'}\n            example: {$ref: 'money.json'}\n      amount:\n        payload: {$ref: 'money.json'}\n      doc:\n        payload:\n          type: object\n          required: [$id]\n          properties:\n            $id: {type: string, format: uri}\n            kind: {const: {$id: 'urn:k'}}\n`;
    const plan = await loadOk({ 'gateway.yaml': config(['{message: order}', '{message: amount}', '{message: doc}']), 'streetlights.yaml': doc, 'money.json': money });
    assert.equal(isStop((await validateWith(plan, 'r0', { price: { amount: 1, currency: 'EUR' }, tax: { amount: 0.2 } })).result), false);
    const bad = await validateWith(plan, 'r0', { price: { amount: 1 }, tax: { amount: 'x', currency: 'eu' } });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ['/tax/amount: must be number', '/tax/currency: must match pattern "^[A-Z]{3}$"']);
    // Properties named as keywords whose value is data (`default`, `example`) are schemas all the same.
    const keywordNamed = await validateWith(plan, 'r0', { price: { amount: 1 }, tax: { amount: 1 }, default: { amount: 'x' }, example: { currency: 'eu' } });
    assert.deepEqual((keywordNamed.result as { problem: { errors: string[] } }).problem.errors, [
      '/default/amount: must be number',
      "/example: must have required property 'amount'",
      '/example/currency: must match pattern "^[A-Z]{3}$"',
    ]);
    const root = await validateWith(plan, 'r1', { currency: 'EUR' });
    assert.deepEqual((root.result as { problem: { errors: string[] } }).problem.errors, [": must have required property 'amount'"]);
    // Only nested `$id` keywords go (point 671): a property named `$id` keeps its schema, a `const` holding one its value.
    assert.equal(isStop((await validateWith(plan, 'r2', { $id: 'urn:a', kind: { $id: 'urn:k' } })).result), false);
    const named = await validateWith(plan, 'r2', { $id: 5, kind: {} });
    assert.deepEqual((named.result as { problem: { errors: string[] } }).problem.errors, ['/$id: must be string', '/kind: must be equal to constant {"$id":"urn:k"}']);
  });

  // Point 783: each such schema gets an ajv instance of its own (~25 ms of CPU): 100 steps
  // `schema: {$ref: defs.yaml#/...}` made every load and reload 2.5 s longer.
  it('compiles a schema that names other files once per load, however many steps use it', async () => {
    const steps = ["{schema: {$ref: 'defs.yaml#/$defs/n'}}", "{schema: {$ref: 'defs.yaml#/$defs/n'}}", "{schema: {$ref: 'defs.yaml#/$defs/s'}}"];
    const plan = await loadOk({ 'gateway.yaml': config(steps, ''), 'defs.yaml': '$defs:\n  n: {type: integer}\n  s: {type: string}\n' });
    const compiled = (route: string) => plan.routes.get(route)!.steps[0]!.accepts![0]!.schema;
    assert.equal(compiled('r0'), compiled('r1'), 'one compiled schema for the two steps');
    assert.notEqual(compiled('r0'), compiled('r2'));
    assert.deepEqual(
      await Promise.all([validateWith(plan, 'r0', 1), validateWith(plan, 'r1', 'x'), validateWith(plan, 'r2', 'x'), validateWith(plan, 'r2', 1)].map(async (p) => isStop((await p).result))),
      [false, true, false, true],
    );
  });

  it("says what an enum or a const asks for, after ajv's words (point 659)", async () => {
    const doc = `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    messages:\n      cmd:\n        payload:\n          type: object\n          properties:\n            command: {enum: ['on', 'off']}\n            event: {const: pong}\n            shape: {const: {kind: 1}}\n            month: {enum: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}\n`;
    const plan = await loadOk({ 'gateway.yaml': config(['{message: cmd}']), 'streetlights.yaml': doc });
    const bad = await validateWith(plan, 'r0', { command: 'dim', event: 'ping', shape: {}, month: 13 });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, [
      '/command: must be equal to one of the allowed values: "on", "off"',
      '/event: must be equal to constant "pong"',
      '/shape: must be equal to constant {"kind":1}',
      '/month: must be equal to one of the allowed values: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ... (2 more)',
    ]);
  });

  it('lists the errors of the branch a discriminated oneOf value names by its tag, every branch when it names none (spec-checklist 2218)', async () => {
    const doc = [
      'asyncapi: 3.0.0',
      "info: {title: t, version: '1'}",
      'channels:',
      '  pets:',
      '    messages:',
      "      pet: {payload: {$ref: '#/components/schemas/Pet'}}",
      '      owner:',
      '        payload:',
      '          type: object',
      '          properties:',
      '            pet:',
      '              discriminator: kind',
      '              oneOf:',
      "                - allOf: [{$ref: '#/components/schemas/Named'}, {required: [fins], properties: {kind: {const: fish}, fins: {type: integer}}}]",
      "                - allOf: [{$ref: '#/components/schemas/Named'}, {properties: {kind: {enum: [snake, lizard]}, legs: {type: integer, maximum: 4}}}]",
      'components:',
      '  schemas:',
      '    Pet:',
      '      discriminator: petType',
      "      oneOf: [{$ref: '#/components/schemas/Cat'}, {$ref: '#/components/schemas/Dog'}]",
      '    Cat: {type: object, required: [petType, meows], properties: {petType: {const: Cat}, meows: {type: boolean}}}',
      '    Dog: {type: object, required: [petType], properties: {petType: {const: Dog}, barks: {type: integer, minimum: 0}}}',
      '    Named: {type: object, required: [name], properties: {name: {type: string}}}',
      '',
    ].join('\n');
    const plan = await loadOk({ 'gateway.yaml': config(['{message: pet}', '{message: owner}', '{message: pet, onInvalid: tag}']), 'streetlights.yaml': doc });
    const errors = async (route: string, value: unknown) => ((await validateWith(plan, route, value)).result as { problem: { errors: string[]; detail: string } }).problem;
    // The value says it is a Dog: the Cat branch's errors, and the oneOf's own, are not its.
    assert.deepEqual((await errors('r0', { petType: 'Dog', barks: -1 })).errors, ['/barks: must be >= 0']);
    assert.deepEqual((await errors('r0', { petType: 'Cat', barks: 1 })).errors, [": must have required property 'meows'"]);
    assert.match((await errors('r0', { petType: 'Dog', barks: -1 })).detail, /\(1 error\)/);
    // A tag no branch names, or none: every branch's errors, as before.
    const every = [
      ": must have required property 'meows'",
      '/petType: must be equal to constant "Cat"',
      '/petType: must be equal to constant "Dog"',
      '/barks: must be >= 0',
      ': must match exactly one schema in oneOf',
    ];
    assert.deepEqual((await errors('r0', { petType: 'Bird', barks: -1 })).errors, every);
    assert.deepEqual((await errors('r0', { barks: -1 })).errors.length, 5);
    // Below the root, with branches made by allOf and a tag of an enum.
    assert.deepEqual((await errors('r1', { pet: { kind: 'lizard', name: 1, legs: 6 } })).errors, ['/pet/name: must be string', '/pet/legs: must be <= 4']);
    assert.deepEqual((await errors('r1', { pet: { kind: 'fish', name: 'x' } })).errors, ["/pet: must have required property 'fins'"]);
    // The tag the header carries says the same.
    const tagged = (await validateWith(plan, 'r2', { petType: 'Dog', barks: -1 })).result as Message;
    assert.deepEqual(JSON.parse(tagged.headers._asyncapi_eg_validation_error!).errors, ['/barks: must be >= 0']);
  });

  it("keeps what a discriminated oneOf's tag cannot cut to: a child's errors in a recursive schema, two branches matched", async () => {
    const doc = "asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels: {}\n";
    const pet = (tag: string, extra: string) => `{type: object, required: [petType], properties: {petType: {const: ${tag}}, ${extra}, kids: {type: array, items: {$ref: '#'}}}}`;
    const plan = await loadOk({
      'gateway.yaml': config(['{schema: pets.yaml}', '{schema: loose.yaml}']),
      'streetlights.yaml': doc,
      'pets.yaml': `discriminator: petType\noneOf:\n  - ${pet('Cat', 'meows: {type: boolean}')}\n  - ${pet('Dog', 'barks: {type: integer, minimum: 0}')}\n`,
      'loose.yaml': 'discriminator: petType\noneOf:\n  - {properties: {petType: {const: Dog}}}\n  - {properties: {name: {type: string}}}\n',
    });
    const errors = async (route: string, value: unknown) => ((await validateWith(plan, route, value)).result as { problem: { errors: string[] } }).problem.errors;
    // A Dog whose kid is a Cat: the kid's errors are cut by the kid's tag, not the Dog's (they were all cut: no error listed).
    assert.deepEqual([...new Set(await errors('r0', { petType: 'Dog', barks: -1, kids: [{ petType: 'Cat', meows: 1 }] }))], ['/kids/0/meows: must be boolean', '/barks: must be >= 0']);
    // The tagged branch matched, and so did another: that is the error (it was cut, leaving none).
    assert.deepEqual(await errors('r1', { petType: 'Dog', name: 'Rex' }), [': must match exactly one schema in oneOf']);
  });

  it("cuts a discriminated oneOf's errors to its tagged branch when the branches are $refs in a schema file or to other files (spec-checklist 2687)", async () => {
    const doc = "asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels: {}\n";
    const pets = [
      'type: object',
      'properties:',
      '  pet:',
      '    discriminator: petType',
      "    oneOf: [{$ref: '#/$defs/Cat'}, {$ref: '#/$defs/Dog', description: a dog}]",
      '  kin: {$ref: "#/$defs/Dog"}',
      '$defs:',
      "  Cat: {type: object, required: [petType, meows], properties: {petType: {const: Cat}, meows: {type: boolean}, kids: {type: array, items: {$ref: '#/properties/pet'}}}}",
      '  Dog: {$ref: "#/$defs/Hound"}',
      '  Hound: {type: object, required: [petType], properties: {petType: {const: Dog}, barks: {type: integer, minimum: 0}}}',
      '',
    ].join('\n');
    const plan = await loadOk({
      'gateway.yaml': config(['{schema: pets.yaml}', '{schema: pets.yaml, onInvalid: tag}', '{schema: filed.yaml}']),
      'streetlights.yaml': doc,
      'pets.yaml': pets,
      // Branches in other files, whose own $refs are relative to them.
      'filed.yaml': "discriminator: petType\noneOf: [{$ref: 'animals/cat.yaml'}, {$ref: 'animals/dog.yaml#/$defs/Dog'}]\n",
      'animals/cat.yaml': "$schema: https://json-schema.org/draft/2020-12/schema\ntype: object\nrequired: [petType]\nproperties: {petType: {const: Cat}, name: {$ref: 'names.yaml#/$defs/name'}}\n",
      'animals/dog.yaml':
        "$defs:\n  Dog: {type: object, required: [petType], properties: {petType: {const: Dog}, name: {$ref: 'names.yaml#/$defs/name'}, barks: {$ref: '#/$defs/count'}}}\n  count: {type: integer, minimum: 0}\n",
      'animals/names.yaml': '$defs: {name: {type: string, minLength: 2}}\n',
    });
    const errors = async (value: unknown) => ((await validateWith(plan, 'r0', value)).result as { problem: { errors: string[] } }).problem.errors;
    // The Dog's error only (every branch's, and the oneOf's own, were listed); a $ref outside the oneOf is checked as before.
    assert.deepEqual(await errors({ pet: { petType: 'Dog', barks: -1 }, kin: { petType: 'Dog', barks: -2 } }), ['/pet/barks: must be >= 0', '/kin/barks: must be >= 0']);
    assert.deepEqual(await errors({ pet: { petType: 'Cat', meows: 1 } }), ['/pet/meows: must be boolean']);
    // A kid, through a $ref that recurs (left a $ref): its errors all listed, as before; the pet's cut.
    assert.deepEqual(await errors({ pet: { petType: 'Cat', meows: 1, kids: [{ petType: 'Dog', barks: -1 }] } }), [
      '/pet/meows: must be boolean',
      "/pet/kids/0: must have required property 'meows'",
      '/pet/kids/0/petType: must be equal to constant "Cat"',
      '/pet/kids/0/barks: must be >= 0',
      '/pet/kids/0: must match exactly one schema in oneOf',
    ]);
    // A tag no branch names still lists every branch's errors.
    assert.equal((await errors({ pet: { petType: 'Bird', barks: -1 } })).length, 5);
    assert.equal(isStop((await validateWith(plan, 'r0', { pet: { petType: 'Dog', barks: 3 } })).result), false);
    const tagged = (await validateWith(plan, 'r1', { pet: { petType: 'Dog', barks: -1 } })).result as Message;
    assert.deepEqual(JSON.parse(tagged.headers._asyncapi_eg_validation_error!).errors, ['/pet/barks: must be >= 0']);
    const filed = async (value: unknown) => ((await validateWith(plan, 'r2', value)).result as { problem: { errors: string[] } }).problem.errors;
    assert.deepEqual(await filed({ petType: 'Dog', name: 'x', barks: -1 }), ['/name: must NOT have fewer than 2 characters', '/barks: must be >= 0']);
    assert.deepEqual(await filed({ petType: 'Cat', name: 'x' }), ['/name: must NOT have fewer than 2 characters']);
    assert.equal(isStop((await validateWith(plan, 'r2', { petType: 'Dog', name: 'Rex', barks: 2 })).result), false);
    // What the export writes is the schema as written, its $refs kept.
    assert.deepEqual((plan.routes.get('r0')!.steps[0]!.accepts![0]!.schema as { properties: { pet: { oneOf: unknown[] } } }).properties.pet.oneOf[0], { $ref: '#/$defs/Cat' });
  });

  it('refuses a payload in a schema format it cannot validate, naming the message', async () => {
    const doc = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    publish:\n      message:\n        messageId: proto\n        schemaFormat: application/vnd.google.protobuf;version=3\n        payload: 'message Point { int32 x = 1; }'\n`;
    const { diagnostics } = await load({ 'gateway.yaml': config(['{message: proto}']), 'streetlights.yaml': doc });
    assert.equal(diagnostics.length, 1);
    assert.equal(diagnostics[0]!.line, 11);
    assert.match(diagnostics[0]!.message, /AsyncAPI message 'proto' has a payload in schema format 'application\/vnd\.google\.protobuf;version=3', which eventgate cannot validate/);
    // Named as the step wrote it (its messageId), not by its components key `Proto` (spec-checklist 2218).
    const keyed = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    publish:\n      message: {$ref: '#/components/messages/Proto'}\ncomponents:\n  messages:\n    Proto:\n      messageId: proto\n      schemaFormat: application/vnd.google.protobuf;version=3\n      payload: 'message Point { int32 x = 1; }'\n`;
    const byMessageId = await load({ 'gateway.yaml': config(['{message: proto}']), 'streetlights.yaml': keyed });
    assert.deepEqual(
      byMessageId.diagnostics.map((d) => d.message.split(' has ')[0]),
      ["AsyncAPI message 'proto'"],
    );
  });

  it('validates against a recursive payload schema', async () => {
    const doc = `asyncapi: 2.6.0\ninfo: {title: t, version: '1'}\nchannels:\n  trees:\n    publish:\n      message:\n        messageId: tree\n        payload:\n          $ref: '#/components/schemas/node'\ncomponents:\n  schemas:\n    node:\n      type: object\n      required: [name]\n      properties:\n        name: {type: string}\n        children: {type: array, items: {$ref: '#/components/schemas/node'}}\n`;
    const plan = await loadOk({ 'gateway.yaml': config(['{message: tree}']), 'streetlights.yaml': doc });
    assert.equal(isStop((await validateWith(plan, 'r0', { name: 'a', children: [{ name: 'b', children: [{ name: 'c' }] }] })).result), false);
    const bad = await validateWith(plan, 'r0', { name: 'a', children: [{ name: 'b', children: [{}] }] });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ["/children/0/children/0: must have required property 'name'"]);
  });

  it('validates a payload whose file refers back into the file its message came from, to a schema nothing else uses', async () => {
    // The message is lib/common.yaml's; its payload file refers to ../common.yaml#/.../money. The
    // parser left that $ref as written, and the step said "points at nothing in this schema".
    const doc = "asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  prices:\n    address: prices\n    messages:\n      priced: {$ref: 'lib/common.yaml#/components/messages/Priced'}\n";
    const common =
      "components:\n  messages:\n    Priced:\n      payload: {$ref: 'deep/priced.yaml'}\n  schemas:\n    money:\n      type: object\n      required: [cents]\n      properties:\n        cents: {type: integer}\n        change: {$ref: '#/components/schemas/money'}\n";
    const plan = await loadOk({
      'gateway.yaml': config(['{message: priced}']),
      'streetlights.yaml': doc,
      'lib/common.yaml': common,
      'lib/deep/priced.yaml': "type: object\nrequired: [price]\nproperties:\n  price: {$ref: '../common.yaml#/components/schemas/money'}\n",
    });
    assert.equal(isStop((await validateWith(plan, 'r0', { price: { cents: 5, change: { cents: 1 } } })).result), false);
    const bad = await validateWith(plan, 'r0', { price: { cents: 5.5, change: { cents: 'x' } } });
    assert.deepEqual((bad.result as { problem: { errors: string[] } }).problem.errors, ['/price/cents: must be integer', '/price/change/cents: must be integer']);
  });

  it('reports parser problems at their line and column in the AsyncAPI document, or in the file a $ref points to', async () => {
    const broken = documentOf['2.6'].replace("  version: '1.0.0'\n", '');
    const { diagnostics } = await load({
      'gateway.yaml': config(['{message: lightMeasured}']),
      'streetlights.yaml': broken,
      'schemas/light-measured.yaml': 'type: object\nproperties: {a: {type: integer}\n',
    });
    const lines = diagnostics.map((d) => `${d.file.slice(d.file.lastIndexOf('/eventgate-files-'))}:${d.line}:${d.column}: ${d.code}`.replace(/\/eventgate-files-[^/]+/, ''));
    assert.deepEqual(lines, ['/schemas/light-measured.yaml:3:1: EG_CONFIG_ASYNCAPI']);
    assert.match(diagnostics[0]!.message, /^AsyncAPI: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a \}/);

    const { diagnostics: d2 } = await load({ 'gateway.yaml': config(['{message: lightMeasured}']), 'streetlights.yaml': broken, 'schemas/light-measured.yaml': lightMeasuredPayload });
    assert.deepEqual(
      d2.map((d) => [d.file.endsWith('/streetlights.yaml'), d.line, d.column, d.path, d.message]),
      [[true, 2, 6, 'info', 'AsyncAPI: "info" property must have required property "version"']],
    );
  });

  it("says a 2.x message's error without the refusals of the shape the message did not take (spec-checklist 2553)", async () => {
    const doc = (version: string, extra: string) =>
      [
        `asyncapi: ${version}`,
        "info: {title: t, version: '1'}",
        'channels:',
        '  lights:',
        '    subscribe:',
        "      message: {oneOf: [{$ref: '#/components/messages/measured'}, {$ref: 'more.yaml#/dimmed'}]}",
        'components:',
        '  messages:',
        '    measured:',
        '      name: measured',
        extra,
        "      payload: {$ref: '#/components/schemas/light'}",
        '  schemas:',
        '    light: {type: object}',
        '',
      ].join('\n');
    const problems = async (version: string, extra: string, more = 'dimmed:\n  name: dimmed\n  payload: {type: integer}\n') =>
      (await load({ 'gateway.yaml': config(['{message: measured}']), 'streetlights.yaml': doc(version, extra), 'more.yaml': more })).diagnostics.map(
        (d) => `${d.file.slice(d.file.lastIndexOf('/') + 1)}:${d.line}:${d.column}: ${d.message}`,
      );
    // Each field of the message (and the channel's oneOf) was also said "not expected": the {oneOf} shape's refusals.
    assert.deepEqual(await problems('2.6.0', '      summary: {a: 1}'), ['streetlights.yaml:11:15: AsyncAPI: "summary" property type must be string']);
    assert.deepEqual(await problems('2.6.0', '      summery: x'), ['streetlights.yaml:11:16: AsyncAPI: Property "summery" is not expected to be here']);
    assert.deepEqual(await problems('2.6.0', '      title: t', 'dimmed:\n  name: dimmed\n  payload: {type: integer, minimum: zero}\n'), [
      'more.yaml:3:37: AsyncAPI: "minimum" property type must be number',
      'more.yaml:3:37: AsyncAPI: must be number',
    ]);
    // A misspelt field holding a $ref to a file was said at that file's 1:1: now at the $ref.
    const misspelt = doc('2.6.0', "      paylod: {$ref: 'light.yaml'}").replace("      payload: {$ref: '#/components/schemas/light'}\n", '');
    const { diagnostics: atRef } = await load({
      'gateway.yaml': config(['{message: measured}']),
      'streetlights.yaml': misspelt,
      'more.yaml': 'dimmed: {payload: {type: integer}}\n',
      'light.yaml': 'type: object\n',
    });
    assert.deepEqual(
      atRef.map((d) => `${d.file.slice(d.file.lastIndexOf('/') + 1)}:${d.line}:${d.column}: ${d.message}`),
      ['streetlights.yaml:11:22: AsyncAPI: Property "paylod" is not expected to be here'],
    );
    // Before 2.4 `messageId` is no field of a message: that is the error, said once.
    assert.deepEqual(await problems('2.2.0', '      messageId: m'), ['streetlights.yaml:11:18: AsyncAPI: Property "messageId" is not expected to be here']);
  });

  it('reports a $ref to a missing file at the $ref, and watches the missing file so creating it is noticed', async () => {
    const { diagnostics, files, dir } = await load({ 'gateway.yaml': config(['{message: lightMeasured}']), 'streetlights.yaml': documentOf['3.0'] });
    assert.equal(diagnostics.length, 1);
    assert.equal(diagnostics[0]!.line, 33);
    assert.equal(diagnostics[0]!.path, 'components.messages.lightMeasured.payload.$ref');
    assert.equal(diagnostics[0]!.column, 15);
    assert.match(diagnostics[0]!.message, /^AsyncAPI: cannot read the file this \$ref points to \(ENOENT: .*schemas\/light-measured\.yaml\)$/);
    assert.ok(files.includes(join(dir, 'schemas/light-measured.yaml')));
    // From a file a $ref led to, the parser said it at 1:1 of that file (spec-checklist 1070).
    const nested = await load({
      'gateway.yaml': config(['{message: lightMeasured}']),
      'streetlights.yaml': documentOf['3.0'],
      'schemas/light-measured.yaml': 'type: object\nproperties:\n  id: {type: integer}\n  kid: {$ref: "parts/kid.yaml"}\n',
    });
    assert.deepEqual(
      nested.diagnostics.map((d) => [d.file.slice(d.file.indexOf('/schemas/') + 1), d.line, d.column, d.path]),
      [['schemas/light-measured.yaml', 4, 15, 'properties.kid.$ref']],
    );
    assert.match(nested.diagnostics[0]!.message, /^AsyncAPI: cannot read the file this \$ref points to \(ENOENT: .*schemas\/parts\/kid\.yaml\)$/);
  });

  it('says where a payload problem ajv finds is written, through oneOf, a Multi Format Schema Object and $refs (point 1072)', async () => {
    const at = async (doc: string, step: string) => {
      const { diagnostics } = await load({ 'gateway.yaml': config([step]), 'streetlights.yaml': doc, 'parts/p.yaml': "p: {type: string, pattern: '('}\n" });
      return diagnostics.map((d) => `${d.line}:${d.column}: ${d.message.replace(/: Invalid regular expression.*/, '')}`);
    };
    const v2 = [
      'asyncapi: 2.6.0',
      'info: {title: t, version: "1"}',
      'channels:',
      '  c:',
      '    publish:',
      '      message:',
      '        oneOf:',
      '          - {messageId: one, payload: {type: object}}',
      '          - messageId: two',
      '            payload: {properties: {q: {pattern: "["}}}',
      '',
    ].join('\n');
    assert.deepEqual(await at(v2, '{channel: c}'), ["11:29: invalid payload schema of AsyncAPI message 'two' at properties.q.pattern (streetlights.yaml:10:49)"]);
    const v3 = [
      'asyncapi: 3.0.0',
      'info: {title: t, version: "1"}',
      'channels:',
      '  c:',
      '    messages:',
      '      two:',
      '        payload:',
      '          schemaFormat: application/schema+json;version=draft-2020-12',
      "          schema: {$ref: '#/components/schemas/s'}",
      'components:',
      '  schemas:',
      "    s: {properties: {p: {$ref: 'parts/p.yaml#/p'}}}",
      '',
    ].join('\n');
    assert.deepEqual(await at(v3, '{message: two}'), ["11:29: invalid payload schema of AsyncAPI message 'two' at properties.p.pattern (parts/p.yaml:1:28)"]);
    // A $ref's pointer is URI-encoded (a key with a space, `my%20s`): followed as the parser follows it.
    const encoded = v3.replace("$ref: '#/components/schemas/s'", "$ref: '#/components/schemas/my%20s'").replace('    s: {properties', "    'my s': {properties");
    assert.deepEqual(await at(encoded, '{message: two}'), ["11:29: invalid payload schema of AsyncAPI message 'two' at properties.p.pattern (parts/p.yaml:1:28)"]);
  });

  it('reports a $ref to a place another file, or its own, does not have at the $ref, and one to an empty file, also one the parser leaves as written in a cycle (point 323)', async () => {
    const at = async (payload: string, others: Record<string, string>) => {
      const { diagnostics } = await load({ 'gateway.yaml': config(['{message: lightMeasured}']), 'streetlights.yaml': documentOf['3.0'], 'schemas/light-measured.yaml': payload, ...others });
      return diagnostics.map((d) => `${d.file.slice(d.file.indexOf('/schemas/') + 1)}:${d.line}:${d.column}: ${d.message}`);
    };
    const props = (...lines: string[]) => ['type: object', 'properties:', ...lines, ''].join('\n');
    // The parser said these at 1:1 (the second in the root document's name).
    // An empty file (one a reload reads while it is written in place) was "'' does not exist" at 1:1 of the document.
    assert.deepEqual(
      await at(props('  a: {$ref: "c.yaml#/x"}', '  b: {$ref: "c.yaml#/nope"}', '  z: {$ref: "#/properties/zz"}', '  e: {$ref: "empty.yaml"}'), {
        'schemas/c.yaml': 'x: {type: string}\n',
        'schemas/empty.yaml': '',
      }),
      [
        "schemas/light-measured.yaml:4:13: AsyncAPI: $ref 'c.yaml#/nope' points at nothing: schemas/c.yaml has no '#/nope'",
        "schemas/light-measured.yaml:5:13: AsyncAPI: $ref '#/properties/zz' points at nothing: schemas/light-measured.yaml has no '#/properties/zz'",
        "schemas/light-measured.yaml:6:13: AsyncAPI: $ref 'empty.yaml' points at nothing: schemas/empty.yaml is empty",
      ],
    );
    // Inside cycles across files (a message whose payload is node.yaml#/node, which refers back
    // through the root document and the payload's file) the parser left it as written: the
    // validate step said it, "points at nothing in this schema".
    const { diagnostics } = await load({
      'gateway.yaml': config(['{message: lightMeasured}']),
      'streetlights.yaml': `${documentOf['3.0'].replace('      dimLight:\n', "      other:\n        payload: {$ref: 'schemas/more/node.yaml#/node'}\n      dimLight:\n")}  schemas:\n    tree:\n      properties:\n        kid: {$ref: 'schemas/more/node.yaml#/node'}\n`,
      'schemas/light-measured.yaml': props('  a: {$ref: "more/node.yaml#/nope"}'),
      'schemas/more/node.yaml': "node:\n  properties:\n    up: {$ref: '../light-measured.yaml'}\n    tree: {$ref: '../../streetlights.yaml#/components/schemas/tree'}\n",
    });
    assert.deepEqual(
      diagnostics.map((d) => `${d.file.slice(d.file.indexOf('/schemas/') + 1)}:${d.line}:${d.column}: ${d.message}`),
      ["schemas/light-measured.yaml:3:13: AsyncAPI: $ref 'more/node.yaml#/nope' points at nothing: schemas/more/node.yaml has no '#/nope'"],
    );
  });

  it('reports a missing AsyncAPI document at its line in gateway.yaml', async () => {
    const { diagnostics } = await load({ 'gateway.yaml': config(['{message: lightMeasured}'], 'asyncapi:\n  - streetlights.yaml\n  - nowhere.yaml') });
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.column, d.code]),
      [
        [3, 5, 'EG_CONFIG_FILE'],
        [4, 5, 'EG_CONFIG_FILE'],
      ],
    );
  });

  it('needs an asyncapi document for a message or channel step, and exactly one of schema, message, channel', async () => {
    const { diagnostics } = await load({ 'gateway.yaml': config(['{message: lightMeasured}', '{schema: {type: object}, channel: c}', '{onInvalid: tag}'], '') });
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.code, d.message]),
      [
        [11, 'EG_CONFIG_ASYNCAPI_REF', "'message' names an AsyncAPI message, but the config has no AsyncAPI document; add 'asyncapi: <file>' at the top level"],
        [16, 'EG_CONFIG_SCHEMA', "routes[1].through[0].validate takes only one of 'schema', 'message' or 'channel', not 'schema' and 'channel'"],
        [21, 'EG_CONFIG_SCHEMA', "routes[2].through[0].validate needs one of 'schema', 'message' or 'channel'"],
      ],
    );
  });

  it('refuses an id that names different messages in two documents, and takes one message two documents share', async () => {
    const { diagnostics } = await load({
      'gateway.yaml': config(['{message: lightMeasured}', '{message: dimLight}'], 'asyncapi: [a.yaml, b.yaml]'),
      'a.yaml': documentOf['2.6'],
      // Another contract under the same id (the same payload would be one message: below).
      'b.yaml': documentOf['3.0'].replace(/lightMeasured/g, 'lightSeen').replace('maximum: 100}', 'maximum: 50}'),
      'schemas/light-measured.yaml': lightMeasuredPayload,
    });
    assert.deepEqual(
      diagnostics.map((d) => d.line),
      [16],
    );
    assert.match(diagnostics[0]!.message, /^AsyncAPI message id 'dimLight' names 2 different messages \(in channel 'light\/commands' of a\.yaml; in channel 'lightCommands' of b\.yaml\)/);
    // Two messages of one channel, one's components key the other's name: told apart by their keys
    // (both were "in channel 'c' of streetlights.yaml").
    const doc =
      "asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  c:\n    messages:\n      on: {$ref: '#/components/messages/lightOn'}\n      old: {$ref: '#/components/messages/legacyOn'}\ncomponents:\n  messages:\n    lightOn: {payload: {type: object}}\n    legacyOn: {name: lightOn, payload: {type: object, required: [b]}}\n";
    const one = await load({ 'gateway.yaml': config(['{message: lightOn}']), 'streetlights.yaml': doc });
    // Two documents that $ref one shared message define it once, not "2 different messages".
    const service = (address: string) => `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n  shared:\n    address: ${address}\n    messages:\n      priced: {$ref: 'common.yaml#/Priced'}\n`;
    const shared = await loadOk({
      'gateway.yaml': config(['{message: priced}'], 'asyncapi: [a.yaml, b.yaml]'),
      'a.yaml': service('prices.a'),
      'b.yaml': service('prices.b'),
      'common.yaml': 'Priced:\n  payload: {type: object, required: [cents]}\n',
    });
    assert.equal(isStop((await validateWith(shared, 'r0', {})).result), true);
    assert.deepEqual((await validateWith(shared, 'r0', { cents: 1 })).ctx.asyncapi, { message: 'priced', channel: 'shared' });
    assert.match(one.diagnostics[0]!.message, /^AsyncAPI message id 'lightOn' names 2 different messages \(in channel 'c' of streetlights\.yaml; 'legacyOn' in channel 'c' of streetlights\.yaml\)/);
  });

  it("names a channel by its key even when it is another channel's address, and lists the keys of channels sharing an address", async () => {
    const channel = (key: string, address: string, field: string) => `  ${key}:\n    address: ${address}\n    messages:\n      ${field}: {payload: {type: object, required: [${field}]}}\n`;
    const doc = `asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\nchannels:\n${channel('orders', 'orders.v2', 'a')}${channel('legacy', 'orders', 'b')}${channel('in', 'shared', 'c')}${channel('out', 'shared', 'd')}`;
    const { plan, diagnostics } = await load({ 'gateway.yaml': config(['{channel: orders}', '{channel: shared}']), 'streetlights.yaml': doc });
    // Both were "defined 2 times across the documents; name it by a key that is unique": the key orders could not be named.
    assert.deepEqual(
      diagnostics.map((d) => `${d.line}:${d.column}: ${d.message}`),
      ["16:29: AsyncAPI channel 'shared' names 2 channels (key 'in' of streetlights.yaml; key 'out' of streetlights.yaml); name one by its key"],
    );
    assert.equal(plan, undefined);
    const keyed = await loadOk({ 'gateway.yaml': config(['{channel: orders}', '{channel: in}']), 'streetlights.yaml': doc });
    const { result, ctx } = await validateWith(keyed, 'r0', { a: 1 });
    assert.equal(isStop(result), false);
    assert.equal(ctx.asyncapi?.channel, 'orders');
    assert.equal(isStop((await validateWith(keyed, 'r0', { b: 1 })).result), true);
  });

  it('loads an overridden document instead of the one on disk (how an upload is checked)', async () => {
    const dir = tempFiles({ 'gateway.yaml': config(['{message: lightMeasured}']), 'streetlights.yaml': documentOf['2.6'], 'schemas/light-measured.yaml': lightMeasuredPayload });
    const overrides = new Map([[join(dir, 'streetlights.yaml'), documentOf['2.6'].replace(/lightMeasured/g, 'lightSeen')]]);
    const { diagnostics } = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {}, overrides });
    assert.deepEqual(
      diagnostics.map((d) => [d.line, d.code]),
      [[11, 'EG_CONFIG_ASYNCAPI_REF']],
    );
  });

  it('loads the AsyncAPI parser only for a config that has asyncapi, and only in its own thread', async () => {
    const compile = pathToFileURL(join(repoRoot, 'dist/src/plan/compile.js')).href;
    const kinds = pathToFileURL(join(repoRoot, 'dist/src/kinds/index.js')).href;
    const thread = pathToFileURL(join(repoRoot, 'dist/src/asyncapi/parser-thread.js')).href;
    const bundled = pathToFileURL(join(repoRoot, 'dist/src/core/bundled.js')).href;
    // One process loads both configs, the one without asyncapi first: what it loaded is seen before the second load.
    const without = tempFiles({ 'gateway.yaml': 'version: 1\nchains:\n  c:\n    - validate: {schema: {type: object}}\n' });
    const withAsyncapi = tempFiles({ 'gateway.yaml': config(['{message: dimLight}']), 'streetlights.yaml': documentOf['2.6'], 'schemas/light-measured.yaml': lightMeasuredPayload });
    const script = `
      import { createRequire } from 'node:module';
      const { loadPlan } = await import(${JSON.stringify(compile)});
      const { defaultRegistry } = await import(${JSON.stringify(kinds)});
      const { parserThreadRunning } = await import(${JSON.stringify(thread)});
      const { loadedBundles } = await import(${JSON.stringify(bundled)});
      for (const dir of ${JSON.stringify([without, withAsyncapi])}) {
        const r = await loadPlan(dir + '/gateway.yaml', { registry: defaultRegistry(), env: {} });
        // The parse is hundreds of milliseconds of CPU: the gateway's thread, which serves traffic, never loads the parser.
        // Loaded from its bundle (src/core/bundled.ts), which require's cache does not list, or as the package.
        const inGatewayThread = loadedBundles().includes('asyncapi-parser.cjs') || Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('@asyncapi/parser'));
        console.log(JSON.stringify({ diagnostics: r.diagnostics.length, inGatewayThread, parserThread: parserThreadRunning() }));
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    await once(child, 'exit');
    assert.deepEqual(
      out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l)),
      [
        { diagnostics: 0, inGatewayThread: false, parserThread: false },
        { diagnostics: 0, inGatewayThread: false, parserThread: true },
      ],
    );
  });
});

describe("the AsyncAPI parser's own exceptions (fuzz, point 211)", () => {
  it("are said in the gateway's words: what the parser was doing, the rule's JSONPath, the value it met; never the error's class, JavaScript words or stack", () => {
    // As the parser reports a TypeError inside one of its rules (seen on a null `message` in a 2.x example, before point 210's check).
    const root = '/srv/gw';
    const diagnostic =
      "Error thrown during AsyncAPI document validation. Name: TypeError, message: Cannot read properties of null (reading 'schemaFormat'), stack: TypeError: Cannot read properties of null (reading 'schemaFormat')\n" +
      "    at $.channels.*.[publish,subscribe][?(@property === 'message' && @.schemaFormat === void 0)] (eval at query (/srv/gw/node_modules/nimma/dist/legacy/cjs/core/index.js:66:71), <anonymous>:165:71)\n" +
      '    at _traverseBody (/srv/gw/node_modules/nimma/dist/legacy/cjs/runtime/traverse.js:13:5)';
    assert.equal(
      readableMessage(diagnostic, { root }),
      'the AsyncAPI parser could not read this document: during AsyncAPI document validation (the rule over $.channels.*.[publish,subscribe]) it met a null value where it expected a map with `schemaFormat`; look for a null, empty or mistyped value there',
    );
    const notAFunction = readableMessage(
      'Error thrown during AsyncAPI document parsing. Name: TypeError, message: path.startsWith is not a function, stack: TypeError: path.startsWith is not a function\n    at x (/srv/gw/a.js:1:1)',
      { root },
    );
    assert.equal(
      notAFunction,
      'the AsyncAPI parser could not read this document: during AsyncAPI document parsing it met a value of a type it does not expect; look for a null, empty or mistyped value there',
    );
    assert.equal(readableMessage("ENOENT: no such file or directory, open '/srv/gw/x.yaml'", { root }), 'cannot read the file this $ref points to (ENOENT: x.yaml)');
  });
});
