import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { post, WsClient } from '../helpers/clients.js';
import { lightMeasuredPayload, streetlights26, streetlights30 } from '../helpers/asyncapi-fixtures.js';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot, runCli, tempFiles, useGateway } from '../helpers/gateway.js';

const config = `version: 1
asyncapi: streetlights.yaml
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: light
    from: {listener: api, path: /light}
    through:
      - validate: {message: lightMesured}
    to: {broker: local, topic: light}
  - name: commands
    from: {listener: api, path: /commands}
    through:
      - validate:
          channel: lightCommand
    to: {broker: local, topic: light}
`;

describe('eventgate validate with AsyncAPI documents', () => {
  for (const version of ['2.6', '3.0']) {
    it(`passes on examples/asyncapi-${version}/gateway.yaml`, async () => {
      const { code, stdout, stderr } = await runCli(['validate', '-c', `examples/asyncapi-${version}/gateway.yaml`]);
      assert.equal(stderr, '');
      assert.equal(stdout, 'ok\n');
      assert.equal(code, 0);
    });
  }

  it('says an AsyncAPI document given as the config is one, in one line, instead of a dozen unknown keys', async () => {
    for (const version of ['2.6', '3.0']) {
      const file = `examples/asyncapi-${version}/streetlights.yaml`;
      const { code, stdout } = await runCliInProcess(['validate', '-c', file]);
      assert.equal(code, 1);
      assert.match(stdout, /^[^\n]*:\d+:1: this is an AsyncAPI \d\.\d\.\d document, not a gateway config: name it in a gateway config's `asyncapi:` key, where validate checks it\n$/);
      assert.ok(stdout.startsWith(`${file}:`), stdout);
    }
  });

  it('names an unknown message id and an unknown channel at their lines in gateway.yaml, with a hint', async () => {
    const dir = tempFiles({ 'gateway.yaml': config, 'streetlights.yaml': streetlights30, 'schemas/light-measured.yaml': lightMeasuredPayload });
    const text = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(text.code, 1);
    assert.deepEqual(text.stdout.trimEnd().split('\n'), [
      "gateway.yaml:11:29: AsyncAPI message 'lightMesured' is not defined in the AsyncAPI document (did you mean 'lightMeasured'?); defined messages: lightMeasured, turnOn, turnOnCommand, dimLight, dim",
      "gateway.yaml:17:20: AsyncAPI channel 'lightCommand' is not defined in the AsyncAPI document (did you mean 'lightCommands'?); defined channels: lightingMeasured, light/measured, lightCommands, light/commands",
    ]);
    const json = await runCli(['validate', '-c', 'gateway.yaml', '--format', 'json'], { cwd: dir });
    assert.equal(json.code, 1);
    assert.deepEqual(
      JSON.parse(json.stdout).map((d: { line: number; column: number; path: string }) => [d.line, d.column, d.path]),
      [
        [11, 29, 'routes[0].through[0].validate.message'],
        [17, 20, 'routes[1].through[0].validate.channel'],
      ],
    );
  });

  it('refuses an unknown format in a message payload at the validate step, naming the message, the key and where the key is written (point 1072)', async () => {
    const payload = lightMeasuredPayload.replace('format: date-time', 'format: datetime');
    const dir = tempFiles({ 'gateway.yaml': config.replace('lightMesured', 'lightMeasured'), 'streetlights.yaml': streetlights30, 'schemas/light-measured.yaml': payload });
    const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(code, 1);
    assert.equal(stderr, '');
    const lines = stdout.trimEnd().split('\n');
    assert.match(
      lines[0]!,
      /^gateway\.yaml:11:\d+: invalid payload schema of AsyncAPI message 'lightMeasured' at properties\.sentAt\.format \(schemas\/light-measured\.yaml:6:34\): unknown format 'datetime' \(did you mean 'date-time'\?\)/,
    );
  });

  it('refuses a $ref to a file that is not a regular file or is over 4 MiB at the $ref, without reading it', async () => {
    const dir = tempFiles({
      'gateway.yaml': 'version: 1\nasyncapi: [fifo.yaml, large.yaml]\n',
      'fifo.yaml': streetlights30,
      'large.yaml': streetlights30.replace('schemas/light-measured.yaml', 'schemas/large.yaml'),
    });
    mkdirSync(join(dir, 'schemas'));
    // A named pipe nobody writes to: reading it would wait for ever (it held the gateway's thread).
    execFileSync('mkfifo', [join(dir, 'schemas/light-measured.yaml')]);
    // Read whole, on the gateway's thread, before the size cap refused it.
    const large = `type: string\ndescription: ${'x'.repeat(5_000_000)}\n`;
    writeFileSync(join(dir, 'schemas/large.yaml'), large);
    const { code, stdout } = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(code, 1);
    const at = streetlights30.split('\n').findIndex((l) => l.includes('schemas/light-measured.yaml')) + 1;
    assert.deepEqual(stdout.trim().split('\n').sort(), [
      `fifo.yaml:${at}:15: AsyncAPI: $ref refused: 'light-measured.yaml' is not a regular file`,
      `large.yaml:${at}:15: AsyncAPI: $ref refused: 'large.yaml' has ${large.length} bytes; at most 4194304 are accepted`,
    ]);
  });

  it('reports what the AsyncAPI parser finds as FILE:LINE:COL in the document', async () => {
    const broken = streetlights30.replace('    action: receive\n', '    action: recieve\n');
    const dir = tempFiles({
      'gateway.yaml': config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n'),
      'streetlights.yaml': broken,
      'schemas/light-measured.yaml': lightMeasuredPayload,
    });
    const { code, stdout } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(code, 1);
    assert.equal(stdout, 'streetlights.yaml:25:13: AsyncAPI: "action" property must be equal to one of the allowed values: "send", "receive". Did you mean "receive"?\n');
  });

  it('reports the place in a document or a file its $ref reads that starts with a byte order mark, or has CRLF line ends, as without', async () => {
    // With a BOM, every column the parser gave was one short, on every line (`25:12`): editors on
    // Windows save UTF-8 with one, and a CI annotation then pointed before the mistake.
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    const broken = streetlights30.replace('    action: receive\n', '    action: recieve\n');
    const brokenPayload = lightMeasuredPayload.replace('lumens: {type: integer', 'lumens: {type: intger');
    for (const [bom, eol] of [
      ['\ufeff', '\n'],
      ['', '\r\n'],
      ['\ufeff', '\r\n'],
    ]) {
      const as = (text: string) => bom + text.replaceAll('\n', eol!);
      const inDocument = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': as(broken), 'schemas/light-measured.yaml': lightMeasuredPayload });
      const first = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: inDocument });
      assert.equal(
        first.stdout,
        'streetlights.yaml:25:13: AsyncAPI: "action" property must be equal to one of the allowed values: "send", "receive". Did you mean "receive"?\n',
        JSON.stringify([bom, eol]),
      );
      const inPayload = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': streetlights30, 'schemas/light-measured.yaml': as(brokenPayload) });
      const second = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: inPayload });
      assert.match(second.stdout, /^schemas\/light-measured\.yaml:5:18: AsyncAPI: "type" property must be equal to one of the allowed values/, JSON.stringify([bom, eol]));
    }
  });

  it('points at a JSON syntax error in a JSON document where it is, not at 1:0 with a YAML message', async () => {
    const document = JSON.stringify(parse(streetlights30), null, 2);
    const lines = document.split('\n');
    const at = lines.findIndex((l) => l.includes('"action": "receive",'));
    lines[at] = lines[at]!.replace('"receive",', '"receive",,'); // the second comma ends the line
    const dir = tempFiles({
      'gateway.yaml': config.replace('streetlights.yaml', 'streetlights.json').replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n'),
      'streetlights.json': lines.join('\n'),
      'schemas/light-measured.yaml': lightMeasuredPayload,
    });
    const { code, stdout } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(code, 1);
    assert.equal(stdout, `streetlights.json:${at + 1}:${lines[at]!.length}: AsyncAPI: JSON syntax error: Expected double-quoted property name\n`);
  });
  it('refuses a document whose arrays nest so deeply that the AsyncAPI parser would run for minutes, and takes one that does not', async () => {
    // @asyncapi/parser visits an array's items twice, so a value inside k arrays costs 2^k: 25 nested
    // arrays held the event loop (validate, a reload, an upload) for 13 s, 30 for minutes.
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    const nested = (levels: number) => `${streetlights30}x-deep:\n  - ${'['.repeat(levels)}${']'.repeat(levels)}\n`;
    const deep = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': nested(24), 'schemas/light-measured.yaml': lightMeasuredPayload });
    const refused = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: deep });
    assert.equal(refused.code, 1);
    assert.match(refused.stdout, /^streetlights\.yaml:\d+:\d+: AsyncAPI: the document nests arrays inside arrays too deeply: the value at \/x-deep\/0\/0\/[0/]+ is inside \d+ arrays, /);
    // The same depth reached through a $ref to a place in the document, which the parser inlines.
    const viaRef = `${streetlights30}x-a: ${'['.repeat(12)}${']'.repeat(12)}\nx-b: ${'['.repeat(12)}{$ref: '#/x-a'}${']'.repeat(12)}\n`;
    const inlined = await runCliInProcess(['validate', '-c', 'gateway.yaml'], {
      cwd: tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': viaRef, 'schemas/light-measured.yaml': lightMeasuredPayload }),
    });
    assert.equal(inlined.code, 1);
    assert.match(inlined.stdout, /AsyncAPI: the document nests arrays inside arrays too deeply: the value at \/x-b\/[0/]+ is inside \d+ arrays \(counting those around the \$refs that inline it/);
    const fine = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': nested(12), 'schemas/light-measured.yaml': lightMeasuredPayload });
    const ok = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: fine });
    assert.equal(ok.stdout, 'ok\n', ok.stdout + ok.stderr);
  });

  it('reports a YAML syntax error in a document as config files get it, at its place, never an exception of the parser', async () => {
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    // The AsyncAPI parser threw "TypeError: Cannot read properties of undefined (reading 'split')" on
    // the first, and on the second reported the half-read structure ('"info" property type must be object').
    const cases: [string, string][] = [
      ['asyncapi: [\n', 'streetlights.yaml:2:1: AsyncAPI: YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]\n'],
      ['asyncapi: 3.0.0\n\tinfo: {title: t, version: 1.0.0}\n', 'streetlights.yaml:2:1: AsyncAPI: YAML syntax error: Tabs are not allowed as indentation\n'],
      // The yaml package's words advised a call of its API ("please use YAML.parseAllDocuments()").
      [
        'asyncapi: 3.0.0\n---\ninfo: {title: t, version: 1.0.0}\n',
        'streetlights.yaml:2:1: AsyncAPI: the file holds more than one YAML document (a second one starts at this `---`); eventgate reads one: remove the `---`, or move the second part to a file of its own (in a config, with `include:`)\n',
      ],
      // Tags the yaml package cannot resolve went on to the AsyncAPI parser, which said them in
      // its own words ("Unknown tag <!Ref>", "Cannot resolve a node with !<tag:yaml.org,2002:int>
      // explicit tag") and, inside { }, added errors at lines where nothing is wrong.
      [
        'asyncapi: 3.0.0\ninfo:\n  title: !Ref lights\n  version: 1.0.0\n',
        "streetlights.yaml:3:10: AsyncAPI: unknown YAML tag !Ref on info.title: eventgate resolves no custom tags (another tool's, such as CloudFormation's !Ref or !Sub), so the value would be read as if it had none; remove it (a value from the environment is written ${VAR})\n",
      ],
      [
        'asyncapi: 3.0.0\ninfo: {title: t, version: 1.0.0}\ncomponents:\n  schemas:\n    n: {type: integer, minimum: !!int x}\n',
        'streetlights.yaml:5:33: AsyncAPI: YAML tag !!int on components.schemas.n.minimum does not fit the value after it, so it would be dropped, not applied: write the value without the tag\n',
      ],
    ];
    for (const [document, expected] of cases) {
      const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': document });
      const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(code, 1);
      assert.equal(stdout, expected);
      assert.doesNotMatch(stdout + stderr, /TypeError|Error thrown/);
    }
  });

  it('says an `asyncapi` version that is not a string (an unquoted 3.0, null, a map) is one, at it, never the TypeError the parser throws', async () => {
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    const cases: [string, string][] = [
      ['3.0', 'it is the number 3.0 (YAML reads an unquoted 3.0 as a number: write the whole version, or quote it)'],
      ['', 'it is empty'],
      ['{v: 3}', 'it is a map'],
      ["''", 'it is an empty string'],
      ['x', "it is 'x'"],
    ];
    for (const [version, what] of cases) {
      const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': streetlights30.replace(/^asyncapi: .*$/m, `asyncapi: ${version}`) });
      const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(code, 1);
      const line = streetlights30.split('\n').findIndex((l) => l.startsWith('asyncapi:')) + 1;
      assert.equal(stdout, `streetlights.yaml:${line}:11: AsyncAPI: \`asyncapi\` must be the version of the specification as a string, such as '3.0.0'; ${what}\n`, version);
      assert.doesNotMatch(stdout + stderr, /TypeError|Error thrown/);
    }
  });

  it('says a $ref that is not a string, an empty 2.x message, or a `__proto__` key is one, at it, never the TypeError the parser throws', async () => {
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    const ref = streetlights30.replace("$ref: '#/channels/lightingMeasured'", '$ref: []');
    const refLine = ref.split('\n').findIndex((l) => l.includes('$ref: []')) + 1;
    const empty = streetlights26.replace("      message:\n        $ref: '#/components/messages/lightMeasured'\n", '      message:\n');
    // A `__proto__` key (fuzzed): the parser failed with Immer's "... Got '[object Object]'" at 1:1.
    const proto = streetlights26.replace('      name: lightMeasured\n', '      name: lightMeasured\n      x-meta: {__proto__: {a: 1}}\n');
    const protoLine = proto.split('\n').findIndex((l) => l.includes('__proto__')) + 1;
    const cases: [string, string][] = [
      [ref, `streetlights.yaml:${refLine}:${ref.split('\n')[refLine - 1]!.indexOf('[') + 1}: AsyncAPI: $ref must be a string: a path or URL, and a JSON pointer after #\n`],
      [empty, 'streetlights.yaml:8:15: AsyncAPI: the message at /channels/light~1measured/publish/message is empty; write the message (or a $ref to one)\n'],
      [
        proto,
        `streetlights.yaml:${protoLine}:16: AsyncAPI: a \`__proto__\` key (at /components/messages/lightMeasured/x-meta/__proto__) cannot be read: the AsyncAPI parser would take it for the object's prototype; rename it\n`,
      ],
    ];
    for (const [document, expected] of cases) {
      const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': document, 'schemas/light-measured.yaml': lightMeasuredPayload });
      const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(code, 1);
      assert.equal(stdout, expected);
      assert.doesNotMatch(stdout + stderr, /TypeError|Error thrown/);
    }
  });
});

describe('a null `message` in an AsyncAPI 2.x document (fuzz, point 210)', () => {
  it('is a problem at it, in the document or in a file its $ref names, never the TypeError the parser throws', async () => {
    const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
    // A message example whose payload has a `message` field that is null: valid AsyncAPI, on which the parser's 2.x rules threw.
    const example = streetlights26.replace('      name: lightMeasured\n', '      name: lightMeasured\n      examples:\n        - payload: {message: null}\n');
    const line = example.split('\n').findIndex((l) => l.includes('{message: null}')) + 1;
    const column = example.split('\n')[line - 1]!.indexOf('null') + 1;
    const inFile = `${lightMeasuredPayload}examples:\n  - message:\n`;
    const words =
      "the AsyncAPI parser's 2.x rules read every `message` key under a channel's operation (examples and $ref'd parts included) as a message and cannot read a null one; give it a value, or leave the key out";
    const cases: [string, string, string][] = [
      [example, lightMeasuredPayload, `streetlights.yaml:${line}:${column}: AsyncAPI: \`message\` is null at /components/messages/lightMeasured/examples/payload/message: ${words}\n`],
      [streetlights26, inFile, `schemas/light-measured.yaml:${inFile.split('\n').length - 1}:13: AsyncAPI: \`message\` is null at /examples/message: ${words}\n`],
    ];
    for (const [document, schema, expected] of cases) {
      const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': document, 'schemas/light-measured.yaml': schema });
      const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(code, 1);
      assert.equal(stdout, expected);
      assert.doesNotMatch(stdout + stderr, /TypeError|Error thrown|Cannot read/);
    }
  });
});

describe('a $ref cycle through a message in an AsyncAPI document (fuzz, point 212)', () => {
  const gateway = config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n');
  /** `validate` of streetlights30 with its lightMeasured payload replaced by `payload` and `schemas` added to its components. */
  const check = async (payload: string, schemas = '') => {
    const doc = `${streetlights30.replace("        $ref: 'schemas/light-measured.yaml'", payload)}${schemas ? `  schemas:\n${schemas}` : ''}`;
    const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': doc, 'schemas/light-measured.yaml': lightMeasuredPayload });
    const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.doesNotMatch(stdout + stderr, /RangeError|Maximum call stack|Error thrown|\n\s+at /);
    /** `streetlights.yaml:LINE:COL: ` of the last `text` in the document. */
    const place = (text: string) => {
      const lines = doc.split('\n');
      const line = lines.findLastIndex((l) => l.includes(text));
      return `streetlights.yaml:${line + 1}:${lines[line]!.indexOf(text) + 1}: AsyncAPI: `;
    };
    return { code, stdout, place };
  };

  it('is said at the $ref that closes it, before the parser runs (it ran out of stack, at 1:1); a cycle through a channel too, and $refs that only name each other; recursive schemas pass', async () => {
    // The payload of lightMeasured is a schema that is the message itself, through the channel that holds it.
    const message = await check("        $ref: '#/components/schemas/measured'", "    measured:\n      $ref: '#/channels/lightingMeasured/messages/lightMeasured'\n");
    assert.equal(message.code, 1);
    assert.equal(
      message.stdout,
      `${message.place("'#/channels/lightingMeasured/messages/lightMeasured'")}$ref '#/channels/lightingMeasured/messages/lightMeasured' leads back to the message at /channels/lightingMeasured/messages/lightMeasured, which holds this $ref (through the $refs at /channels/lightingMeasured/messages/lightMeasured, /components/messages/lightMeasured/payload): a $ref cycle through a message or channel, which the AsyncAPI parser cannot read (it runs out of stack, or takes the message for a schema); a schema may refer to itself, a message or channel may not\n`,
    );
    // A property of the payload that is the channel (the parser read the channel as a schema: "unknown keyword 'address'").
    const channel = await check("        type: object\n        properties:\n          at:\n            $ref: '#/channels/lightingMeasured'");
    assert.equal(channel.code, 1);
    assert.match(
      channel.stdout,
      new RegExp(`^${channel.place("'#/channels/lightingMeasured'").replace(/[$]/g, '\\$')}\\$ref '#/channels/lightingMeasured' leads back to the channel at /channels/lightingMeasured, `),
    );
    // The parser went round these until asyncapiParser.timeoutMs (60 s).
    const names = await check("        $ref: '#/components/schemas/p'", "    p:\n      $ref: '#/components/schemas/q'\n    q:\n      $ref: '#/components/schemas/p'\n");
    assert.equal(names.code, 1);
    assert.equal(
      names.stdout,
      `${names.place("'#/components/schemas/p'")}$ref '#/components/schemas/p' closes a cycle of $refs that only name each other (/components/schemas/q → /components/schemas/p → /components/schemas/q) and never reach a value; the AsyncAPI parser would go round it until its time limit\n`,
    );
    // Recursive schemas: in components, through a $ref to a $ref, inside the payload itself.
    const tree = "    node:\n      type: object\n      properties:\n        child:\n          $ref: '#/components/schemas/alias'\n    alias:\n      $ref: '#/components/schemas/node'\n";
    for (const [payload, schemas] of [
      ["        $ref: '#/components/schemas/node'", tree],
      ["        type: object\n        properties:\n          child:\n            $ref: '#/components/messages/lightMeasured/payload'", ''],
    ] as const) {
      const ok = await check(payload, schemas);
      assert.deepEqual([ok.code, ok.stdout], [0, 'ok\n'], payload);
    }
  });
});

describe('a $ref cycle through $refs into other files (point 274)', () => {
  const gateway = `${config.replace('lightMesured', 'lightMeasured').replace('lightCommand\n', 'lightCommands\n')}asyncapiParser: { timeoutMs: 10000 }\n`;
  /** `validate` of streetlights30 with `files` beside it (its payload's schemas/light-measured.yaml among them) and `schemas` added to its components. */
  const check = async (files: Record<string, string>, schemas = '') => {
    const dir = tempFiles({ 'gateway.yaml': gateway, 'streetlights.yaml': `${streetlights30}${schemas ? `  schemas:\n${schemas}` : ''}`, ...files });
    const { code, stdout, stderr } = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.doesNotMatch(stdout + stderr, /RangeError|Maximum call stack|Error thrown|\n\s+at /);
    return { code, stdout };
  };
  const schemaFile = (ref: string) => `type: object\nproperties:\n  id: {type: integer}\n  back:\n    $ref: '${ref}'\n`;
  const words =
    'a $ref cycle through a message or channel, which the AsyncAPI parser cannot read (it runs out of stack, or takes the message for a schema); a schema may refer to itself, a message or channel may not';

  it('is said at the $ref that closes it, in its file, before the parser runs (it read the message or channel as a schema, or went round until its time limit)', async () => {
    // The payload's file holds the message, or the channel, that holds the payload.
    const message = await check({ 'schemas/light-measured.yaml': schemaFile('../streetlights.yaml#/channels/lightingMeasured/messages/lightMeasured') });
    assert.deepEqual(message, {
      code: 1,
      stdout: `schemas/light-measured.yaml:5:11: AsyncAPI: $ref '../streetlights.yaml#/channels/lightingMeasured/messages/lightMeasured' leads back to the message at streetlights.yaml#/channels/lightingMeasured/messages/lightMeasured, which holds this $ref (through the $refs at streetlights.yaml#/channels/lightingMeasured/messages/lightMeasured, streetlights.yaml#/components/messages/lightMeasured/payload): ${words}\n`,
    });
    // Through a third file.
    const channel = await check({
      'schemas/light-measured.yaml': schemaFile('more/at.yaml#/at'),
      'schemas/more/at.yaml': "at:\n  type: object\n  properties:\n    channel:\n      $ref: '../../streetlights.yaml#/channels/lightingMeasured'\n",
    });
    assert.deepEqual(channel, {
      code: 1,
      stdout: `schemas/more/at.yaml:5:13: AsyncAPI: $ref '../../streetlights.yaml#/channels/lightingMeasured' leads back to the channel at streetlights.yaml#/channels/lightingMeasured, which holds this $ref (through the $refs at streetlights.yaml#/channels/lightingMeasured/messages/lightMeasured, streetlights.yaml#/components/messages/lightMeasured/payload, schemas/light-measured.yaml#/properties/back): ${words}\n`,
    });
    // $refs that only name each other, across two files: the parser went round them until asyncapiParser.timeoutMs.
    const names = await check({ 'schemas/light-measured.yaml': "$ref: '../streetlights.yaml#/components/messages/lightMeasured/payload'\n" });
    assert.deepEqual(names, {
      code: 1,
      stdout:
        "schemas/light-measured.yaml:1:7: AsyncAPI: $ref '../streetlights.yaml#/components/messages/lightMeasured/payload' closes a cycle of $refs that only name each other (streetlights.yaml#/components/messages/lightMeasured/payload → schemas/light-measured.yaml → streetlights.yaml#/components/messages/lightMeasured/payload) and never reach a value; the AsyncAPI parser would go round it until its time limit\n",
    });
  });

  it('leaves recursive schemas across files to the parser: they are no cycle through a message or channel; a payload made of them compiles (point 314)', async () => {
    // A schema of the payload's file that refers to itself, and schemas of two files that refer to
    // each other, which the payload uses (`forest`): the $ref back is left as written by the parser.
    const inFile = `${lightMeasuredPayload}  tree: {$ref: '#/definitions/node'}\n  forest: {$ref: '../streetlights.yaml#/components/schemas/tree'}\ndefinitions:\n  node:\n    type: object\n    properties:\n      next: {$ref: '#/definitions/node'}\n`;
    const across = "node:\n  type: object\n  properties:\n    up: {$ref: '../streetlights.yaml#/components/schemas/tree'}\n";
    const ok = await check(
      { 'schemas/light-measured.yaml': inFile, 'schemas/node.yaml': across },
      "    tree:\n      type: object\n      properties:\n        kid: {$ref: 'schemas/node.yaml#/node'}\n",
    );
    assert.deepEqual(ok, { code: 0, stdout: 'ok\n' });
  });
});

describe('the AsyncAPI examples run', () => {
  const gw = useGateway();

  for (const version of ['2.6', '3.0'] as const) {
    it(`examples/asyncapi-${version}: a valid lightMeasured event reaches websocket clients with its AsyncAPI metadata; an invalid one is refused`, async () => {
      const example = (name: string) => readFileSync(join(repoRoot, 'examples', name), 'utf8');
      const files: Record<string, string> = {
        [`asyncapi-${version}/streetlights.yaml`]: example(`asyncapi-${version}/streetlights.yaml`),
        [`asyncapi-${version}/schemas/light-measured.json`]: example('schemas/light-measured.json'),
      };
      const yaml = example(`asyncapi-${version}/gateway.yaml`).replace('asyncapi: streetlights.yaml', `asyncapi: asyncapi-${version}/streetlights.yaml`);
      await gw.start(yaml, { files, env: { HTTP_PORT: '0', WS_PORT: '0', ADMIN_PORT: '0' } });
      const client = await WsClient.connect(gw.url('push', '/ws/light', 'ws'));
      const event = { id: 3, lumens: 250, sentAt: '2026-11-23T10:00:00Z' };
      assert.equal((await post(gw.url('api', '/light'), event)).status, 200);
      const seen = await client.next();
      assert.deepEqual(seen.value, event);
      assert.equal(seen.headers['ce-type'], 'io.example.streetlights.lightMeasured');
      assert.equal(seen.headers['ce-subject'], version === '2.6' ? 'light/measured' : 'lightingMeasured');
      const refused = await post(gw.url('api', '/light'), { ...event, lumens: -3 });
      assert.equal(refused.status, 400);
      assert.deepEqual(refused.body.errors, ['/lumens: must be >= 0']);
      client.close();
    });
  }
});
