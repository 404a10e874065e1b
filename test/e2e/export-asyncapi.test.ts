import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Parser } from '@asyncapi/parser';
import { parse } from 'yaml';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot, runCli, tempFiles } from '../helpers/gateway.js';

const yaml = (...lines: string[]) => `${lines.join('\n')}\n`;

/** Parses with the AsyncAPI project's own parser; returns the document and its error diagnostics. */
async function parseAsyncApi(text: string) {
  const { document, diagnostics } = await new Parser().parse(text);
  return { document, errors: diagnostics.filter((d) => d.severity === 0).map((d) => `${d.message} at ${d.path.join('/')}`) };
}

describe('eventgate export asyncapi', () => {
  for (const config of ['examples/gateway.yaml', 'examples/asyncapi-3.0/gateway.yaml', 'examples/asyncapi-2.6/gateway.yaml']) {
    it(`exports ${config} as an AsyncAPI 3.0 document that @asyncapi/parser parses without errors`, async () => {
      const r = await runCliInProcess(['export', 'asyncapi', '-c', config]);
      assert.equal(r.code, 0, r.stderr);
      const { document, errors } = await parseAsyncApi(r.stdout);
      assert.deepEqual(errors, []);
      assert.ok(document);
      assert.equal(document.version(), '3.0.0');
    });
  }

  it('describes the main example: a receive operation with the schema its validate step enforces, a send operation for websocket clients', async () => {
    const r = await runCli(['export', 'asyncapi', '-c', 'examples/gateway.yaml']);
    const doc = parse(r.stdout);
    assert.deepEqual(doc.servers.api, { host: 'localhost:8080', protocol: 'http', description: "eventgate http listener 'api'." });
    assert.equal(doc.servers.push.protocol, 'ws');
    assert.equal(doc.channels['api-light'].address, '/light');
    assert.equal(doc.operations['light-in'].action, 'receive');
    const { $schema: _, ...schema } = JSON.parse(readFileSync(join(repoRoot, 'examples/schemas/light-measured.json'), 'utf8'));
    assert.deepEqual(doc.channels['api-light'].messages['light-in'].payload, schema);
    assert.equal(doc.channels['push-ws-light'].address, '/ws/light');
    assert.equal(doc.operations['light-out-forward-push-ws-light'].action, 'send');
  });

  it('names AsyncAPI messages by their ids, turns :params into channel parameters, and documents envelopes', async () => {
    const dir = tempFiles({
      'gateway.yaml': yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 }, push: { kind: websocket, port: 0, host: 127.0.0.1 } }',
        'routes:',
        '  - name: orders',
        '    from: { listener: api, path: /orders/:id }',
        '    through:',
        "      - validate: { schema: { type: object, required: [qty], properties: { qty: { type: integer }, state: { enum: [on, off, yes, n, '<<', '='] }, '<<': {}, '=': { type: string } } } }",
        '    to: { broker: local, topic: orders }',
        '  - name: orders-ws',
        '    from: { broker: local, topic: orders }',
        '    to: { listener: push, path: /ws/orders, format: envelope }',
        '  - name: anything',
        '    from: { listener: push, path: /ws/in }',
        '    to: { broker: local, topic: orders }',
        // Two validate steps on what the client sent (a filter and a headers step keep the value), a third after a transform.
        '  - name: checked',
        '    from: { listener: api, path: /checked }',
        '    through:',
        '      - validate: { schema: { type: object, required: [a] } }',
        "      - filter: 'true'",
        '      - headers: { set: { x-seen: \'"1"\' } }',
        "      - validate: { schema: { $defs: { n: { type: integer } }, type: object, required: [b], properties: { b: { $ref: '#/$defs/n' } } } }",
        '      - transform: \'{"c": a}\'',
        '      - validate: { schema: { type: object, required: [c] } }',
        '    to: { broker: local, topic: orders }',
        // Point 1071: a forward carries what the validate steps after its last transform let through (not a tag step's).
        '  - name: checked-ws',
        '    from: { broker: local, topic: orders }',
        '    through:',
        '      - validate: { schema: { type: object, required: [x] } }',
        '      - transform: \'{"y": x}\'',
        '      - validate: { schema: { type: object, required: [y] }, onInvalid: deadletter, deadletter: { broker: local, topic: dl } }',
        '      - validate: { schema: { type: object, required: [z] }, onInvalid: tag }',
        '    to: { listener: push, path: /ws/checked }',
        // A structured CloudEvent is what its clients get, not the value its validate step checks.
        '  - name: ce-ws',
        '    from: { broker: local, topic: orders }',
        '    through: [{ validate: { schema: { type: object, required: [x] } } }]',
        '    to: { listener: push, path: /ws/ce, format: cloudevent }',
        '  - name: tagged-ws',
        '    from: { broker: local, topic: orders }',
        '    through: [{ validate: { schema: { type: object, required: [x] }, onInvalid: tag } }]',
        '    to: { listener: push, path: /ws/tagged }',
        // Point 1652: a tag step on what clients send keeps its message (what they should send); the operation says the rest is taken, tagged.
        '  - name: lenient',
        '    from: { listener: api, path: /lenient }',
        '    through: [{ validate: { schema: { type: object, required: [l] }, onInvalid: tag } }]',
        '    to: { broker: local, topic: orders }',
        // A webhook is described without its Basic credentials and query (an API key), as /admin/status names it.
        '  - name: hooked',
        '    from: { listener: api, path: /hooked }',
        "    to: { http: { url: 'http://hook:password-in-export-url@127.0.0.1:9/hook?apikey=key-in-export-query' } }",
      ),
    });
    const r = await runCliInProcess(['export', 'asyncapi'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const { errors } = await parseAsyncApi(r.stdout);
    assert.deepEqual(errors, []);
    const doc = parse(r.stdout);
    assert.equal(doc.channels['api-orders-id'].address, '/orders/{id}');
    assert.deepEqual(Object.keys(doc.channels['api-orders-id'].parameters), ['id']);
    assert.deepEqual(doc.channels['api-orders-id'].messages.orders.payload.required, ['qty']);
    // Point 657: a YAML 1.1 reader (SnakeYAML, PyYAML) reads the same strings, not booleans.
    // Point 731 (674): and YAML 1.1's merge key `<<` and value key `=` are quoted, as names and as values.
    const in11 = parse(r.stdout, { version: '1.1' }).channels['api-orders-id'].messages.orders.payload.properties;
    assert.deepEqual(in11.state.enum, ['on', 'off', 'yes', 'n', '<<', '=']);
    // (`<<` is given an empty schema: @asyncapi/parser's YAML reader, @stoplight/yaml with mergeKeys, merges even a
    // quoted `<<`, which no quoting can help; with an empty one that merge changes nothing it checks.)
    assert.deepEqual([in11['<<'], in11['=']], [{}, { type: 'string' }]);
    assert.match(r.stdout, /^ *"=": *$/m);
    assert.match(r.stdout, /^ *- "=" *$/m);
    assert.equal(doc.servers.push.host, '127.0.0.1:0');
    assert.deepEqual(doc.channels['push-ws-orders'].messages['orders-ws-forward'].payload.required.sort(), ['headers', 'key', 'offset', 'partition', 'timestamp', 'topic', 'value'].sort());
    assert.equal(doc.channels['push-ws-in'].messages.anything.payload, undefined);
    // The second schema was left out: only the first validate step's was exported.
    const at = '#/channels/api-checked/messages/checked/payload/allOf/1';
    assert.deepEqual(doc.channels['api-checked'].messages.checked.payload, {
      allOf: [
        { type: 'object', required: ['a'] },
        { $defs: { n: { type: 'integer' } }, type: 'object', required: ['b'], properties: { b: { $ref: `${at}/$defs/n` } } },
      ],
    });
    assert.match(doc.operations.checked.description, /Later validate steps check the message further after earlier steps changed it/);
    assert.deepEqual(doc.channels['push-ws-checked'].messages['checked-ws-forward'].payload, { type: 'object', required: ['y'] });
    assert.deepEqual(doc.operations['checked-ws-forward-push-ws-checked'].messages, [{ $ref: '#/channels/push-ws-checked/messages/checked-ws-forward' }]);
    assert.equal(doc.channels['push-ws-tagged'].messages['tagged-ws-forward'].payload, undefined);
    const ce = doc.channels['push-ws-ce'].messages['ce-ws-forward'];
    assert.equal(ce.contentType, 'application/cloudevents+json');
    assert.deepEqual(ce.payload.oneOf[0].required, ['specversion', 'id', 'source', 'type']);
    assert.deepEqual(ce.payload.oneOf[1].required.sort(), ['headers', 'key', 'offset', 'partition', 'timestamp', 'topic', 'value'].sort());
    assert.deepEqual(doc.channels['api-lenient'].messages.lenient.payload, { type: 'object', required: ['l'] });
    assert.equal(
      doc.operations.lenient.description,
      "Route 'lenient' also takes a message that fails these (onInvalid: tag): it goes on to the route's targets with the header _asyncapi_eg_validation_error saying why. Send messages that pass.",
    );
    assert.equal(doc.operations.orders.description, undefined);
    assert.match(doc.operations.hooked.summary, /webhook http:\/\/127\.0\.0\.1:9\/hook\b/);
    for (const secret of ['password-in-export-url', 'key-in-export-query']) assert.equal(r.stdout.includes(secret), false, `${secret} exported`);
  });

  it("says where each operation's clients present their credentials: an auth step's, a forward target's, as security schemes", async () => {
    const dir = tempFiles({
      'gateway.yaml': yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 }, push: { kind: websocket, port: 0 } }',
        'chains:',
        '  keyed: [ { auth: { apiKey: { keys: { fleet: fleet-key-0123456789 } } } } ]',
        'routes:',
        '  - name: keyed-a',
        '    from: { listener: api, path: /a }',
        '    through: [ keyed, { ratelimit: { rate: 5, key: $principal } } ]',
        '    to: { broker: local, topic: t }',
        '  - name: keyed-b',
        '    from: { listener: api, path: /b }',
        '    through: keyed',
        '    to: { broker: local, topic: t }',
        '  - name: tokens',
        '    from: { listener: push, path: /in }',
        '    through: [ { validate: { schema: { type: object } } }, { auth: { jwt: { secret: a-secret-of-32-characters-or-more!, query: access_token } } } ]',
        '    to: { broker: local, topic: t }',
        '  - name: open',
        '    from: { listener: api, path: /open }',
        '    to: { broker: local, topic: t }',
        '  - name: out',
        '    from: { broker: local, topic: t }',
        '    to: { listener: push, path: /out, auth: { apiKey: { query: key, keys: { page: page-key-0123456789 } } } }',
      ),
    });
    const r = await runCliInProcess(['export', 'asyncapi'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const { document, errors } = await parseAsyncApi(r.stdout);
    assert.deepEqual(errors, []);
    const doc = parse(r.stdout);
    // Before: no `security` and no scheme: a client made from the export got 401s it had no word of.
    assert.deepEqual(doc.components.securitySchemes, {
      'apiKey-header-x-api-key': { type: 'httpApiKey', in: 'header', name: 'x-api-key', description: 'An API key in the `x-api-key` header (an `auth` step with `apiKey`).' },
      'jwt-bearer': { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'A JWT in `Authorization: Bearer <token>` (an `auth` step with `jwt`).' },
      'JWT-query-access_token': { type: 'httpApiKey', in: 'query', name: 'access_token', description: 'A JWT in the `access_token` query parameter (an `auth` step with `jwt`).' },
      'apiKey-query-key': { type: 'httpApiKey', in: 'query', name: 'key', description: 'An API key in the `key` query parameter (an `auth` step with `apiKey`).' },
    });
    const ref = (key: string) => ({ $ref: `#/components/securitySchemes/${key}` });
    assert.deepEqual(doc.operations['keyed-a'].security, [ref('apiKey-header-x-api-key')]);
    assert.deepEqual(doc.operations['keyed-b'].security, [ref('apiKey-header-x-api-key')]);
    assert.deepEqual(doc.operations.tokens.security, [ref('jwt-bearer'), ref('JWT-query-access_token')]);
    assert.equal(doc.operations.open.security, undefined);
    assert.deepEqual(doc.operations['out-forward-push-out'].security, [ref('apiKey-query-key')]);
    // As the AsyncAPI parser reads them, and no key of a keys map is in the export.
    assert.deepEqual(
      document!
        .operations()
        .get('tokens')!
        .security()
        .map((requirements) => requirements.all().map((s) => s.scheme().type())),
      [['http'], ['httpApiKey']],
    );
    for (const secret of ['fleet-key-0123456789', 'page-key-0123456789', 'a-secret-of-32']) assert.equal(r.stdout.includes(secret), false, `${secret} exported`);
  });

  it('keeps the local $refs of a schema ($defs, "#") and of an AsyncAPI message (components) pointing into the payload, and brings in the files a schema refers to', async () => {
    // Embedded in the exported document, "#/..." would resolve against the AsyncAPI document's root.
    const dir = tempFiles({
      'gateway.yaml': yaml(
        'version: 1',
        'asyncapi: api.yaml',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 }, push: { kind: websocket, port: 0 } }',
        'routes:',
        // Point 1071: what a forward's validate step lets through is the message its clients receive.
        '  - name: on-out',
        '    from: { broker: local, topic: t }',
        '    through: [{ validate: { message: turnOn } }]',
        '    to: { listener: push, path: /ws/on }',
        '  - name: defs',
        '    from: { listener: api, path: /defs }',
        '    through: [{ validate: { schema: defs.json } }]',
        '    to: { broker: local, topic: t }',
        '  - name: root',
        '    from: { listener: api, path: /root }',
        '    through: [{ validate: { schema: root.json } }]',
        '    to: { broker: local, topic: t }',
        '  - name: message',
        '    from: { listener: api, path: /message }',
        '    through: [{ validate: { message: node } }]',
        '    to: { broker: local, topic: t }',
        // Point 651: the same message on a second path, a payload in draft 2020-12 by its schemaFormat, an inline 2020-12 schema.
        '  - name: message-again',
        '    from: { listener: api, path: /again }',
        '    through: [{ validate: { message: node } }]',
        '    to: { broker: local, topic: t }',
        '  - name: pair',
        '    from: { listener: api, path: /pair }',
        '    through: [{ validate: { message: pair } }]',
        '    to: { broker: local, topic: t }',
        '  - name: inline',
        '    from: { listener: api, path: /inline }',
        '    through: [{ validate: { schema: { type: object, dependentRequired: { card: [cvc] } } } }]',
        '    to: { broker: local, topic: t }',
        // Point 691: a message named by its `name` (not its key), and `node` enforced with one more step.
        '  - name: alias',
        '    from: { listener: api, path: /alias }',
        '    through: [{ validate: { message: turnOn } }]',
        '    to: { broker: local, topic: t }',
        '  - name: stricter',
        '    from: { listener: api, path: /stricter }',
        '    through: [{ validate: { message: node } }, { validate: { schema: { required: [kids] } } }]',
        '    to: { broker: local, topic: t }',
        // Point 692: a draft-04 schema (boolean exclusiveMaximum) keeps its draft.
        '  - name: old',
        '    from: { listener: api, path: /old }',
        "    through: [{ validate: { schema: { $schema: 'http://json-schema.org/draft-04/schema#', type: number, maximum: 10, exclusiveMaximum: true } } }]",
        '    to: { broker: local, topic: t }',
        // Point 744: schemas whose $refs name other files (a cycle back included), a file's and an inline one's.
        '  - name: files',
        '    from: { listener: api, path: /files }',
        '    through: [{ validate: { schema: tree.yaml } }]',
        '    to: { broker: local, topic: t }',
        '  - name: picked',
        '    from: { listener: api, path: /picked }',
        '    through: [{ validate: { schema: { $ref: "tree.yaml#/$defs/n" } } }]',
        '    to: { broker: local, topic: t }',
      ),
      'tree.yaml': yaml('type: object', 'properties:', '  kid: { $ref: "parts/kid.yaml" }', '$defs:', '  n: { type: integer }'),
      'parts/kid.yaml': yaml('type: object', 'properties:', '  up: { $ref: "../tree.yaml" }', '  n: { $ref: "../tree.yaml#/$defs/n" }'),
      'defs.json': JSON.stringify({ $defs: { n: { type: 'object', properties: { kids: { type: 'array', items: { $ref: '#/$defs/n' } } } } }, $ref: '#/$defs/n' }),
      'root.json': JSON.stringify({ type: 'object', properties: { kids: { type: 'array', items: { $ref: '#' } } } }),
      'api.yaml': yaml(
        'asyncapi: 3.0.0',
        'info: { title: trees, version: "1" }',
        'components:',
        '  schemas:',
        '    node: { type: object, properties: { kids: { type: array, items: { $ref: "#/components/schemas/node" } } } }',
        '  messages:',
        '    node: { payload: { $ref: "#/components/schemas/node" } }',
        '    pair: { payload: { schemaFormat: application/schema+json;version=draft-2020-12, schema: { type: array, prefixItems: [{ type: string }], items: false } } }',
        '    turnOnOff: { name: turnOn, payload: { type: object, properties: { command: { enum: [on, off] } } } }',
      ),
    });
    const r = await runCliInProcess(['export', 'asyncapi'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const { document, errors } = await parseAsyncApi(r.stdout);
    assert.deepEqual(errors, []);
    assert.ok(document);
    const doc = parse(r.stdout);
    assert.equal(doc.channels['api-defs'].messages.defs.payload.$ref, '#/channels/api-defs/messages/defs/payload/$defs/n');
    assert.equal(doc.channels['api-root'].messages.root.payload.properties.kids.items.$ref, '#/channels/api-root/messages/root/payload');
    // One message however many paths enforce it, in components; its $refs point into its payload there.
    assert.deepEqual([doc.channels['api-message'].messages.node, doc.channels['api-again'].messages.node], [{ $ref: '#/components/messages/node' }, { $ref: '#/components/messages/node' }]);
    assert.equal(doc.components.messages.node.payload.$ref, '#/components/messages/node/payload/definitions/eventgate-payload');
    // 2020-12 keywords keep their draft, as the schemaFormat of a Multi Format Schema Object.
    assert.equal(doc.components.messages.pair.payload.schemaFormat, 'application/schema+json;version=draft-2020-12');
    assert.equal(doc.channels['api-inline'].messages.inline.payload.schemaFormat, 'application/schema+json;version=draft-2020-12');
    // Point 691: the message under its key, also under the name the config used; `node` enforced with
    // more is still one message, the stricter route's own $refs its payload.
    assert.deepEqual(doc.channels['api-alias'].messages, { turnOn: { $ref: '#/components/messages/turnOnOff' } });
    assert.equal(doc.components.messages.turnOnOff.name, 'turnOn');
    assert.deepEqual(doc.channels['push-ws-on'].messages, { turnOn: { $ref: '#/components/messages/turnOnOff' } });
    assert.deepEqual(doc.operations['on-out-forward-push-ws-on'].messages, [{ $ref: '#/channels/push-ws-on/messages/turnOn' }]);
    assert.deepEqual(doc.channels['api-old'].messages.old.payload, { schemaFormat: 'application/schema+json;version=draft-04', schema: { type: 'number', maximum: 10, exclusiveMaximum: true } });
    assert.deepEqual(doc.channels['api-stricter'].messages.stricter.payload, { allOf: [{ $ref: '#/components/messages/node/payload' }, { required: ['kids'] }] });
    // The files a schema's $refs name are in its payload (the export is read anywhere, without them).
    const files = doc.channels['api-files'].messages.files.payload;
    assert.equal(files.properties.kid.$ref, '#/channels/api-files/messages/files/payload/$defs/parts_kid.yaml');
    assert.deepEqual(files.$defs['parts_kid.yaml'].properties, {
      up: { $ref: '#/channels/api-files/messages/files/payload' },
      n: { $ref: '#/channels/api-files/messages/files/payload/$defs/n' },
    });
    assert.deepEqual(doc.channels['api-picked'].messages.picked.payload.$ref, '#/channels/api-picked/messages/picked/payload/$defs/tree.yaml/$defs/n');
    // Round trip (point 651): the export, as the contract of another gateway, names each message once and keeps its draft.
    writeFileSync(join(dir, 'exported.yaml'), r.stdout);
    writeFileSync(
      join(dir, 'back.yaml'),
      yaml(
        'version: 1',
        'asyncapi: exported.yaml',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        ...['node', 'pair', 'inline', 'turnOn', 'turnOnOff', 'stricter', 'old', 'files', 'picked'].map(
          (m) => `  - { name: ${m}, from: { listener: api, path: /${m} }, through: [{ validate: { message: ${m} } }], to: { broker: local, topic: t } }`,
        ),
      ),
    );
    const back = await runCliInProcess(['validate', '-c', 'back.yaml'], { cwd: dir });
    assert.deepEqual([back.code, back.stdout.trim(), back.stderr], [0, 'ok', '']);
  });

  it('exits 1 with the problems when the config is invalid, and 2 when asked to export something else', async () => {
    const dir = tempFiles({ 'gateway.yaml': yaml('version: 1', 'brokers: { local: { kind: memroy } }') });
    const bad = await runCli(['export', 'asyncapi'], { cwd: dir });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^gateway\.yaml:2:27: unknown broker kind "memroy"/);
    assert.equal(bad.stdout, '');
    const other = await runCli(['export', 'openapi'], { cwd: dir });
    assert.equal(other.code, 2);
    assert.match(other.stderr, /export what\? 'eventgate export asyncapi \[-c FILE\]' \(not 'openapi'\)/);
  });
});
