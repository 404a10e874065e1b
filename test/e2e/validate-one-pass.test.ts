import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { runCliInProcess } from '../helpers/cli.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';

/** A config from its lines, so a test reads as "line N, column C" against the array index + 1. */
const yaml = (...lines: string[]) => `${lines.join('\n')}\n`;

async function validate(config: string, extra: string[] = [], files: Record<string, string> = {}) {
  const dir = tempFiles({ 'gateway.yaml': config, ...files });
  const r = await runCliInProcess(['validate', '-c', 'gateway.yaml', ...extra], { cwd: dir });
  assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, 'never a stack trace');
  return { ...r, lines: r.stdout.split('\n').filter((l) => l !== '') };
}

describe('eventgate validate finds every problem in one pass', () => {
  it('reports a key typo, a bad expression and an unknown broker of the same file together', async () => {
    const r = await validate(
      yaml(
        'version: 1', //                                   1
        'brokers:', //                                     2
        '  local: { kind: memory, retian: 5 }', //         3
        '  other: { kind: memory }', //                    4
        'listeners: { api: { kind: http, port: 0 } }', //  5
        'chains:', //                                      6
        '  c1:', //                                        7
        "    - filter: 'a >'", //                          8
        'routes:', //                                      9
        '  - name: r', //                                  10
        '    from: { listener: api, path: /x }', //        11
        '    through: c1', //                              12
        '    to: { broker: other, topic: t }', //          13
        '  - name: r2', //                                 14
        '    form: { listener: api, path: /y }', //        15
        '    to: { broker: other, topic: t }', //          16
        '  - name: r3', //                                 17
        '    from: { listener: api, path: /x }', //        18: r's path, while r's chain does not compile
        '    to: { broker: nope, topic: t }', //           19
      ),
    );
    assert.equal(r.code, 1);
    assert.deepEqual(
      r.lines.map((l) => l.replace(/: .*/, '')),
      ['gateway.yaml:3:26', 'gateway.yaml:8:18', 'gateway.yaml:15:5', 'gateway.yaml:18:34', 'gateway.yaml:19:19'],
      r.stdout,
    );
    assert.match(r.lines[0]!, /unknown key 'retian'.*did you mean 'retain'/);
    assert.match(r.lines[1]!, /JSONata expression does not compile/);
    assert.match(r.lines[2]!, /unknown key 'form'.*did you mean 'from'/);
    // Two routes on one path, both with a problem of their own: reported in the same pass (spec-checklist 663).
    assert.match(r.lines[3]!, /listener 'api' path '\/x' is already the source of route 'r'$/);
    assert.match(r.lines[4]!, /broker 'nope' is not defined/);
  });

  it('does not repeat a problem as a broken reference: a route using an invalid broker is not told the broker is missing', async () => {
    const r = await validate(
      yaml(
        'version: 1',
        'brokers:',
        '  local: { kind: memory, retain: many }', // 3
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    to: { broker: local, topic: t }',
      ),
    );
    assert.equal(r.code, 1);
    assert.equal(r.lines.length, 1, r.stdout);
    assert.match(r.lines[0]!, /^gateway\.yaml:3:34: brokers\.local\.retain must be an integer/);
  });
});

describe('eventgate validate catches what would only fail at run time', () => {
  it('two listeners on one port, and the admin server on a listener port', async () => {
    const r = await validate(
      yaml(
        'version: 1',
        'admin: { port: 9100 }', //                                    2
        'brokers: { local: { kind: memory } }',
        'listeners:',
        '  api: { kind: http, port: 9100, host: 127.0.0.1 }', //      5
        '  push: { kind: websocket, port: 9100 }', //                  6
        '  other: { kind: http, port: 9101, host: 127.0.0.1 }',
        '  more: { kind: http, port: 9101, host: 127.0.0.2 }', //      different hosts: no clash
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    to: { broker: local, topic: t }',
      ),
    );
    assert.equal(r.code, 1);
    assert.equal(r.lines.length, 2, r.stdout);
    assert.match(r.lines[0]!, /^gateway\.yaml:2:16: the admin server and listener 'api' both bind port 9100.*\(see line 5\)/);
    assert.match(r.lines[1]!, /^gateway\.yaml:6:34: listener 'push' and listener 'api' both bind port 9100; the second would fail with EADDRINUSE.*\(see line 5\)/);
  });

  it('a websocket path served by two routes', async () => {
    const r = await validate(
      yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { push: { kind: websocket, port: 0 } }',
        'routes:',
        '  - name: a',
        '    from: { listener: push, path: /in }',
        '    to: { broker: local, topic: t }',
        '  - name: b',
        '    from: { listener: push, path: /in }', // 9
        '    to: { broker: local, topic: t }',
      ),
    );
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, ["gateway.yaml:9:35: listener 'push' path '/in' is already the source of route 'a'"]);
  });

  it('a route that can never receive a message: it reads a memory topic no route writes to', async () => {
    const r = await validate(
      yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 }, push: { kind: websocket, port: 0 } }',
        'routes:',
        '  - name: in',
        '    from: { listener: api, path: /x }',
        '    to: { broker: local, topic: orders }',
        '  - name: out',
        '    from: { broker: local, topic: order }', // 9
        '    to: { listener: push, path: /ws }',
      ),
    );
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      "gateway.yaml:9:35: route 'out' can never receive a message: 'local' is a memory broker, whose topics only this gateway's routes write to, and no route writes to topic 'order' (routes write to: orders)",
    ]);
  });

  it("a step that did not compile is reported alone, not as a route that can never receive the step's dead letters", async () => {
    const config = (step: string) =>
      yaml(
        'version: 1',
        'asyncapi: streetlights.yaml',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 }, push: { kind: websocket, port: 0 } }',
        'routes:',
        '  - name: in',
        '    from: { listener: api, path: /x }',
        `    through: [ { validate: { ${step}, onInvalid: deadletter, deadletter: { broker: local, topic: dlq } } } ]`, // 8
        '    to: { broker: local, topic: t }',
        '  - name: t-out',
        '    from: { broker: local, topic: t }',
        '    to: { listener: push, path: /ws }',
        '  - name: dlq-out',
        '    from: { broker: local, topic: dlq }',
        '    to: { listener: push, path: /dlq }',
      );
    const doc = (ref: string) =>
      yaml(
        'asyncapi: 3.0.0',
        'info: { title: t, version: 1.0.0 }',
        'channels: { light: { address: light, messages: { lightMeasured: { $ref: "#/components/messages/lightMeasured" } } } }',
        `components: { messages: { ${ref}: { payload: { type: object } } } }`, // 4
      );
    const sound = await validate(config('message: lightMeasured'), [], { 'streetlights.yaml': doc('lightMeasured') });
    assert.equal(sound.code, 0, sound.stdout);
    const typo = await validate(config('message: lightMeasured, onInvlid: tag'), [], { 'streetlights.yaml': doc('lightMeasured') });
    assert.equal(typo.code, 1);
    assert.deepEqual(
      typo.lines.map((l) => l.replace(/ \(did you mean.*/, '')),
      ["gateway.yaml:8:54: unknown key 'onInvlid' in routes[0].through[0].validate"],
    );
    const brokenDocument = await validate(config('message: lightMeasured'), [], { 'streetlights.yaml': doc('lightMeasurd') });
    assert.equal(brokenDocument.code, 1);
    assert.ok(brokenDocument.lines.length > 0);
    for (const l of brokenDocument.lines) assert.match(l, /^streetlights\.yaml:/);
  });

  it('a call to a JSONata function that does not exist or with arguments it never takes, and a variable nothing binds, with a hint and its position; the text of $eval, and literals $fromMillis and $formatNumber cannot format', async () => {
    const r = await validate(
      yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    through:',
        '      - transform: \'{"n": $uppercse(name)}\'', // 8: `$` at column 27
        "      - filter: '($twice := function($v){ $v * 2 }; $twice(n) > 1)'", // user-defined: fine
        '      - filter: \'$header."x-source" != "test"\'', // 10: a misspelt variable, `$` at column 18
        // The text of an $eval given a literal is checked too, and its errors placed in the literal (640).
        '      - filter: \'$eval("$fo(1) = 1")\'', // 11: `$fo` at column 25
        '      - filter: \'$eval("a +") = 1\'', // 12: its syntax error, at the `+` (column 27)
        '      - filter: \'($x := 1; $eval("$x + a") > 0 and $eval($headers.code))\'', // what the expression binds, and a computed text: fine
        // A literal $fromMillis/$formatNumber argument they cannot format: JSONata gave junk text for every message.
        "      - transform: '$fromMillis(1e20)'", // 14: the number at column 33
        '      - transform: \'$formatNumber(n, "#.#.#")\'', // 15: the picture at column 38
        '      - transform: \'$fromMillis(ts, "[Y0001]", "+05:30")\'', // 16: the timezone at column 48
        // A literal picture with a literal options object is checked with its separators (732): "," ends the integer part here.
        '      - transform: \'$formatNumber(n, "#,##0.00", {"decimal-separator": ",", "grouping-separator": "."})\'', // 17: the picture at column 38
        '      - transform: \'$formatNumber(n, "#.##0,00", {"decimal-separator": ",", "grouping-separator": "."})\'', // fine with them (not alone)
        // A built-in given more (or fewer) arguments than it ever takes failed every message (1030).
        '      - transform: |',
        '          {"n": n,',
        '           "up": $uppercase(a, b)}', // 21: `$` at column 18, inside the block scalar
        // A literal argument of a type the signature refuses failed every message too (1038).
        '      - transform: |',
        '          {"n": n,',
        '           "all": $join([1, 2], ","),', // 24: the array at column 25
        '           "up": $uppercase(n)}', // a path: it may be a string
        '    to: { broker: local, topic: t }',
      ),
    );
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      'gateway.yaml:8:27: JSONata expression does not compile: unknown function $uppercse (did you mean $uppercase?)',
      'gateway.yaml:10:18: JSONata expression does not compile: unknown variable $header (did you mean $headers?): nothing binds it, so it would have no value for any message',
      'gateway.yaml:11:25: JSONata expression does not compile: in the text $eval is given: unknown function $fo (did you mean $not?)',
      'gateway.yaml:12:27: JSONata expression does not compile: in the text $eval is given: Unexpected end of expression',
      'gateway.yaml:14:33: JSONata expression does not compile: $fromMillis cannot format 100000000000000000000 milliseconds: a date lies within 8640000000000000 ms (about 273,790 years) of 1970',
      `gateway.yaml:15:38: JSONata expression does not compile: $formatNumber's picture "#.#.#" cannot be used: The sub-picture must not contain more than one instance of the 'decimal-separator' character (D3081)`,
      'gateway.yaml:16:48: JSONata expression does not compile: $fromMillis: the timezone "+05:30" is not ±HHMM (e.g. "+0530", "-0800")',
      `gateway.yaml:17:38: JSONata expression does not compile: $formatNumber's picture "#,##0.00" cannot be used with the options given: The fractional part of the sub-picture must not contain an instance of the 'optional digit character' that is followed by a member of the 'decimal digit family' (D3091)`,
      'gateway.yaml:21:18: JSONata expression does not compile: $uppercase takes at most 1 argument, not 2: JSONata would refuse it for every message',
      'gateway.yaml:24:25: JSONata expression does not compile: $join takes an array of strings as argument 1, not this array: JSONata would refuse it for every message (T0412)',
    ]);
  });

  it('a $sift that is given no function, at its position; the forms that give it one validate', async () => {
    const config = (...filters: string[]) =>
      yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    through:',
        ...filters.map((f) => `      - transform: '${f}'`),
        '    to: { broker: local, topic: t }',
      );
    // Before: valid, and every message then failed with JSONata's "Cannot read properties of undefined (reading 'arity')".
    const r = await validate(config('{"kept": $sift()}', '{"kept": $sift({"a": 1})}'));
    assert.equal(r.code, 1);
    const problem = 'JSONata expression does not compile: $sift needs a function to keep each entry by, e.g. $sift($obj, function($v, $k) { $v > 0 })';
    assert.deepEqual(r.lines, [`gateway.yaml:8:30: ${problem}`, `gateway.yaml:9:30: ${problem}`]);
    const fine = await validate(config('$sift(function($v){ $v > 0 })', '$sift(counts, function($v){ $v > 0 })', '($sift := function(){ 1 }; $sift())'));
    assert.equal(fine.code, 0, fine.lines.join('\n'));
  });

  it('a literal range larger than expressions.maxResultBytes or than JSONata takes, at its `..`; smaller ones, computed ends and a raised limit validate (spec-checklist 199)', async () => {
    const config = (limits: string, ...filters: string[]) =>
      yaml(
        'version: 1',
        limits,
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    through:',
        ...filters.map((f) => `      - transform: '${f}'`),
        '    to: { broker: local, topic: t }',
      );
    // Before: valid, and every message then built 10^7 numbers (~0.7 s, ~370 MB) in one step the time box could not stop.
    const r = await validate(config('expressions: {}', '{"n": $count([1..10000000])}', '{"n": $count([0, 5..20000000])}'));
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      'gateway.yaml:9:36: JSONata expression does not compile: the range [1..10000000] makes an array of 10000000 numbers, about 152.6 MiB in memory, more than expressions.maxResultBytes (16.0 MiB): every message would fail here',
      'gateway.yaml:10:39: JSONata expression does not compile: the range [5..20000000] has more than 10000000 numbers, which JSONata refuses: every message would fail here',
    ]);
    const fine = await validate(config('expressions: { maxResultBytes: 1073741824 }', '{"n": $count([1..10000000])}', '{"n": $count([1..1000])}', '{"n": $count([1..n])}'));
    assert.equal(fine.code, 0, fine.lines.join('\n'));
  });
});

describe('${VAR} without the deployment environment', () => {
  it('--vars-file supplies stand-ins for variables the environment does not set', async () => {
    const config = yaml('version: 1', 'brokers:', '  local:', '    kind: memory', '    retain: ${RETAIN}');
    const without = await validate(config);
    assert.equal(without.code, 1);
    assert.match(without.stdout, /gateway\.yaml:5:13: environment variable 'RETAIN' is not set.*--vars-file/);
    const withFile = await validate(config, ['--vars-file', 'ci.env'], { 'ci.env': '# stand-ins for CI\nRETAIN=10\n' });
    assert.equal(withFile.code, 0, withFile.stdout);
    assert.equal(withFile.stdout, 'ok\n');
    const missingFile = await validate(config, ['--vars-file', 'nope.env']);
    assert.equal(missingFile.code, 1);
    assert.match(missingFile.stderr, /cannot read --vars-file 'nope\.env': no such file/);
  });

  it("a variable several --vars-file files name takes the first file's value; one a file names twice, its last", async () => {
    const config = yaml('version: 1', 'brokers:', '  local:', '    kind: memory', '    retain: ${RETAIN}');
    const files = { 'ci.env': 'RETAIN=10\n', 'defaults.env': 'RETAIN=ten\n', 'twice.env': 'RETAIN=ten\nRETAIN=10\n' };
    assert.equal((await validate(config, ['--vars-file', 'ci.env', '--vars-file', 'defaults.env'], files)).stdout, 'ok\n');
    const later = await validate(config, ['--vars-file', 'defaults.env', '--vars-file', 'ci.env'], files);
    assert.equal(later.code, 1);
    assert.match(later.stdout, /^gateway\.yaml:5:13: brokers\.local\.retain must be an integer, got string "ten"/);
    assert.equal((await validate(config, ['--vars-file', 'twice.env'], files)).stdout, 'ok\n');
  });

  it('a --vars-file with a byte order mark is read; one with a line that is not NAME=value or bytes that are not UTF-8 is refused at them', async () => {
    const config = yaml(
      'version: 1',
      'brokers:',
      '  local:',
      '    kind: memory',
      '    retain: ${RETAIN}',
      'listeners:',
      '  api: {kind: http, port: 0}',
      'routes:',
      '  - name: in',
      '    from: {listener: api, path: /in}',
      '    to: {broker: local, topic: "${TOPIC}"}',
    );
    const cases: [Buffer, number, string][] = [
      // node's parseEnv made the first name '\ufeffRETAIN': "RETAIN is not set".
      [Buffer.from('\ufeffRETAIN=10\nTOPIC=t\n'), 0, ''],
      // A line without '=' swallowed the next one into its name: TOPIC was "not set".
      [Buffer.from('# CI\nRETAIN 10\nTOPIC=t\n'), 1, 'eventgate: --vars-file ci.env:2:1: expected NAME=value (or a # comment); a value with spaces is written NAME="a value"\n'],
      // Latin-1 'é' became U+FFFD in the topic's name, without a word.
      [
        Buffer.concat([Buffer.from('RETAIN=10\nTOPIC=caf'), Buffer.from([0xe9]), Buffer.from('\n')]),
        1,
        'eventgate: --vars-file ci.env:2:10: the file is not UTF-8 text: byte 0xE9 here is not valid UTF-8 (save the file as UTF-8)\n',
      ],
      // Quoted values may span lines, as parseEnv reads them.
      [Buffer.from('RETAIN=10\nTOPIC="t"\nNOTE="two\nlines"\n  # indented comment\n'), 0, ''],
    ];
    for (const [vars, code, stderr] of cases) {
      const dir = tempFiles({ 'gateway.yaml': config });
      writeFileSync(join(dir, 'ci.env'), vars);
      const r = await runCliInProcess(['validate', '-c', 'gateway.yaml', '--vars-file', 'ci.env'], { cwd: dir });
      assert.deepEqual([r.code, r.stderr], [code, stderr], `${JSON.stringify(vars.toString('latin1'))}: ${r.stdout}`);
      if (code === 0) assert.equal(r.stdout, 'ok\n');
    }
  });

  it("a --vars-file that cannot be used is in the report a CI job reads: validate's and plan's JSON at its place, test's JUnit", async () => {
    // Before, stdout was empty: a job piping validate's JSON into jq annotated nothing, and a saved JUnit file was empty.
    const dir = tempFiles({ 'gateway.yaml': yaml('version: 1', 'brokers:', '  local:', '    kind: memory', '    retain: ${RETAIN}'), 'ci.env': '# CI\nRETAIN 10\n' });
    const error = {
      file: 'ci.env',
      line: 2,
      column: 1,
      message: 'expected NAME=value (or a # comment); a value with spaces is written NAME="a value"',
      path: '',
      code: 'EG_CONFIG_FILE',
      severity: 'error',
    };
    const validated = await runCliInProcess(['validate', '-c', 'gateway.yaml', '--vars-file', 'ci.env', '--format', 'json'], { cwd: dir });
    assert.equal(validated.code, 1);
    assert.deepEqual(JSON.parse(validated.stdout), [error]);
    const planned = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--vars-file', 'ci.env', '--format', 'json'], { cwd: dir });
    assert.equal(planned.code, 1);
    assert.deepEqual(JSON.parse(planned.stdout).errors, [error]);
    const tested = await runCliInProcess(['test', '-c', 'gateway.yaml', '--vars-file', 'nope.env', '--format', 'junit'], { cwd: dir });
    assert.equal(tested.code, 2);
    assert.match(
      tested.stdout,
      /<testcase classname="eventgate" name="the tests could not run" time="0\.000">\n\s+<error message="eventgate: cannot read --vars-file 'nope\.env': no such file \(ENOENT\)"/,
    );
  });

  it('examples/kafka.yaml validates in CI with an env file', async () => {
    const r = await runCli(['validate', '-c', 'examples/kafka.yaml', '--vars-file', 'examples/ci.env']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });
});

describe('run-time failures name their cause', () => {
  const gw = useGateway();

  it('a taken port: the file, the listener and the address, no stack trace', async () => {
    const holder: Server = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const port = (holder.address() as { port: number }).port;
    try {
      const dir = tempFiles({ 'gateway.yaml': yaml('version: 1', `listeners: { api: { kind: http, port: ${port}, host: 127.0.0.1 } }`) });
      const r = await runCli(['run', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(r.code, 1);
      // At the listener's `port:`, in the form of every config problem.
      assert.match(r.stderr, new RegExp(`^gateway\\.yaml:2:33: could not start listener 'api': cannot bind 127\\.0\\.0\\.1:${port}: the port is already in use .*\\(EADDRINUSE\\)$`, 'm'));
      assert.doesNotMatch(r.stderr, /new config|\n\s+at /);
    } finally {
      holder.close();
    }
  });

  it('a JSONata evaluation error names the expression and its file:line in the log, and only what failed in the answer', async () => {
    await gw.start(
      yaml(
        'version: 1',
        'brokers: { local: { kind: memory } }',
        'listeners: { api: { kind: http, port: 0 } }',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /x }',
        '    through:',
        "      - transform: '($f := name; $f(1))'", // 8
        '    to: { broker: local, topic: t }',
      ),
    );
    const reply = await post(gw.url('api', '/x'), { name: 'not a function' });
    assert.equal(reply.status, 500);
    assert.equal((reply.body as { detail: string }).detail, 'transform failed: Attempted to invoke a non-function');
    const line = await gw.waitForLog((l) => l.msg === 'message failed');
    // Line and column of the call's `(` that failed (JSONata places it).
    assert.equal(line.where, 'expression "($f := name; $f(1))" at gateway.yaml:8:36');
  });
});
