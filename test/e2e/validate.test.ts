import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCliInProcess } from '../helpers/cli.js';
import { runCli, tempFiles } from '../helpers/gateway.js';
import { lightMeasuredPayload, streetlights30 } from '../helpers/asyncapi-fixtures.js';

/** A config from its lines, so a test reads as "line N, column C" against the array index + 1. */
function yaml(...lines: string[]): string {
  return `${lines.join('\n')}\n`;
}

/** `text` as a regular expression matching just it. */
function literally(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

interface Validated {
  code: number | null;
  stdout: string;
  stderr: string;
  /** stdout split into lines (text format). */
  lines: string[];
}

/**
 * Runs `eventgate validate -c gateway.yaml` in a temp directory holding `files`: in this process
 * (the CLI's own main(), test/helpers/cli.ts), or with `process: true` as a CLI process, for the
 * cases that check what only a process shows (its exit code and output as a shell sees them, a
 * process warning or a library's console output on its stderr).
 */
async function validate(files: Record<string, string>, options: { env?: Record<string, string>; format?: 'text' | 'json'; warnings?: boolean; process?: boolean } = {}): Promise<Validated> {
  const dir = tempFiles(files);
  const args = ['validate', '-c', 'gateway.yaml', ...(options.format ? ['--format', options.format] : []), ...(options.warnings ? ['--warnings'] : [])];
  const r = await (options.process ? runCli : runCliInProcess)(args, { cwd: dir, env: options.env });
  assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, 'never a stack trace');
  return { ...r, lines: r.stdout.split('\n').filter((l) => l !== '') };
}

/** Asserts exit 1 and exactly these problems, each `gateway.yaml:LINE:COL: ` followed by text matching the pattern. */
function assertProblems(r: Validated, expected: [position: string, message: RegExp][]): void {
  assert.equal(r.code, 1, `exit code 1; stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.equal(r.lines.length, expected.length, `one line per problem; got:\n${r.stdout}`);
  expected.forEach(([position, message], i) => {
    const line = r.lines[i]!;
    assert.ok(line.startsWith(`${position}: `), `line ${i + 1} is at ${position}: ${line}`);
    assert.match(line.slice(position.length + 2), message);
  });
}

const base = [
  'version: 1', //                          1
  'brokers:', //                            2
  '  local:', //                            3
  '    kind: memory', //                    4
  'listeners:', //                          5
  '  api:', //                              6
  '    kind: http', //                      7
  '    port: 0', //                         8
  '  push:', //                             9
  '    kind: websocket', //                10
  '    port: 0', //                        11
];

describe('eventgate validate', { concurrency: 4 }, () => {
  it('prints ok and exits 0 for a valid config', async () => {
    const r = await validate(
      {
        'gateway.yaml': yaml(
          ...base,
          'chains:',
          '  main:',
          '    - filter: a > 1',
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    through: main',
          '    to: { broker: local, topic: t }',
        ),
      },
      { process: true },
    );
    assert.equal(r.code, 0);
    assert.equal(r.stdout, 'ok\n');
    assert.equal(r.stderr, '');
  });

  it('prints an empty JSON array and exits 0 for a valid config with --format json', async () => {
    const r = await validate({ 'gateway.yaml': yaml(...base) }, { format: 'json', process: true });
    assert.equal(r.code, 0);
    assert.deepEqual(JSON.parse(r.stdout), []);
  });

  it("shows the config's secrets a problem quotes as [redacted], as run does, in text and JSON; a header written as text is told to quote it", async () => {
    // A header written as text, not as a JSONata string: JSONata's error quotes the token the
    // variable gave, which went to a CI job's log as it was.
    const files = {
      'gateway.yaml': yaml(
        ...base,
        'routes:',
        '  - name: hook',
        '    from: { listener: api, path: /in }',
        '    to: { http: { url: "https://crm.example.com/in", headers: { authorization: "Bearer ${CRM_TOKEN}" } } }',
      ),
    };
    const env = { CRM_TOKEN: 'tok8c2f61d0e9' };
    const text = await validate(files, { env });
    assertProblems(text, [
      [
        'gateway.yaml:15:88',
        /^JSONata expression does not compile: Syntax error: "\[redacted\]" \(a header's value is a JSONata expression: text is a string in it, quoted inside the YAML value, `authorization: '"\.\.\."'`\)$/,
      ],
    ]);
    const json = await validate(files, { env, format: 'json', warnings: true });
    assert.equal(json.code, 1);
    assert.doesNotMatch(json.stdout + json.stderr + text.stderr, /tok8c2f61d0e9/);
    assert.match(JSON.parse(json.stdout)[0].message, /\[redacted\]/);
  });

  it('quotes no part of a secret cut at `-` or `.` in a JSONata syntax error, but still the word of an expression written in the file (5008)', async () => {
    // JSONata stops at `tok` of `tok-8c2f61d0e9`, a part redaction by value does not recognise.
    const files = {
      'gateway.yaml': yaml(
        ...base,
        'routes:',
        '  - name: hook',
        '    from: { listener: api, path: /in }',
        '    to: { http: { url: "https://crm.example.com/in", headers: { authorization: "Bearer ${CRM_TOKEN}", x-written: "Bearer abc-def" } } }',
      ),
    };
    for (const token of ['tok-8c2f61d0e9', 'sk_live.8c2f61d0e9abc']) {
      const r = await validate(files, { env: { CRM_TOKEN: token } });
      const hint = " (a header's value is a JSONata expression: text is a string in it, quoted inside the YAML value, `";
      assert.deepEqual(r.stdout.trim().split('\n'), [
        `gateway.yaml:15:88: JSONata expression does not compile: Syntax error: "[redacted]"${hint}authorization: '"..."'\`)`,
        `gateway.yaml:15:124: JSONata expression does not compile: Syntax error: "abc"${hint}x-written: '"..."'\`)`,
      ]);
      assert.doesNotMatch(r.stdout + r.stderr, new RegExp(`"${token.split(/[-.]/)[0]}"`));
    }
  });

  it("keeps the file's name whole where a directory is named as a secret value, and shows a signature.secret of whsec_ from ${VAR} as what it is", async () => {
    // Redacted as a whole, a problem's `file` became `[redacted]/gateway.yaml`: FILE:LINE:COL
    // (spec §1) named no file. `whsec_` was kept from redaction only when written in the file.
    const dir = tempFiles({
      'production/gateway.yaml': yaml(
        ...base,
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /in }',
        '    to: { broker: local, topic: "${STAGE}" }',
        '  - name: hook',
        '    from: { listener: api, path: /hook }',
        '    to:',
        '      http:',
        '        url: "http://127.0.0.1:1/x"',
        '        signature:',
        '          secret: ${WEBHOOK_SECRET}',
        '  - name: closed',
        '    from: { listener: api, path: /closed }',
        '    through:',
        '      - validate: { schema: { properties: { level: {} }, additionalProperties: false } }',
        '      - filter: levl',
        '    to: { broker: local, topic: c }',
      ),
    });
    const env = { STAGE: 'production', WEBHOOK_SECRET: 'whsec_' };
    const text = await runCliInProcess(['validate', '-c', 'production/gateway.yaml'], { cwd: dir, env });
    assert.equal(text.code, 1, text.stdout + text.stderr);
    assert.deepEqual(text.stdout.trim().split('\n'), ["production/gateway.yaml:22:19: signature.secret is 'whsec_' with nothing after it: the signing key would be empty, and anyone could sign"]);
    // A message naming its own file (the validate step's place) names it whole too.
    assert.deepEqual(text.stderr.trim().split('\n'), [
      "production/gateway.yaml:27:17: warning: 'levl' is not a field of the message: no message the validate step at production/gateway.yaml:26:9 lets through has it (its schema allows no other properties), so this reads no value (did you mean 'level'?) [EG_CONFIG_UNDECLARED_FIELD]",
    ]);
    const json = await runCliInProcess(['validate', '-c', join(dir, 'production/gateway.yaml'), '--format', 'json'], { cwd: dir, env });
    assert.deepEqual(
      JSON.parse(json.stdout).map((d: { file: string }) => d.file),
      [join(dir, 'production/gateway.yaml')],
    );
  });

  it('warns of a header, key or topic expression written as text (`acme-corp`: JSONata arithmetic of two fields), saying to quote it; not of real expressions', async () => {
    // `acme-corp` compiles as `acme - corp`: two fields no message has, so no value, and the
    // header was never sent, without a word.
    const r = await validate({
      'gateway.yaml': yaml(
        ...base,
        'routes:', //                                                                                 12
        '  - name: hook', //                                                                          13
        '    from: { listener: api, path: /in }', //                                                  14
        '    through:', //                                                                            15
        '      - headers: { set: { x-tenant: acme-corp } }', //                                       16
        '    to:', //                                                                                 17
        '      - broker: local', //                                                                   18
        '        topic: { expression: orders/eu }', //                                                19
        '        key: customer-id', //                                                                20
        '      - http:', //                                                                           21
        '          url: https://crm.example.com/in', //                                               22
        '          headers:', //                                                                      23
        '            x-tenant: acme-corp', //                                                         24
        '            content-type: image/svg+xml', //                                                 25
        '            cache-control: max-age=60', //                                                   26
        `            x-quoted: '"acme-corp"'`, //                                                     27
        '            x-spaced: total - discount', //                                                  28
        '            x-less: count-1', //                                                             29
        '            x-read: $headers.x-1', //                                                        30
        '            x-paths: payload.a-payload.b', //                                                31
      ),
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const said = (
      at: string,
      key: string,
      text: string,
      computed: string,
      fields: string,
      outcome = "arithmetic of the message's fields " + fields + ', not that text: it gives no value for a message without them',
    ) =>
      `gateway.yaml:${at}: warning: '${text}' is read as the JSONata expression ${computed}, ${outcome}. Text is a string in the expression, quoted inside the YAML value: \`${key}: '"${text}"'\`; a field of that name is written between backquotes: \`${key}: '\`${text}\`'\`; to compute, write spaces around the operators [EG_CONFIG_TEXT_EXPRESSION]`;
    assert.deepEqual(r.stderr.split('\n').filter(Boolean), [
      said('16:37', 'x-tenant', 'acme-corp', 'acme - corp', 'acme and corp'),
      said('19:30', 'expression', 'orders/eu', 'orders / eu', 'orders and eu'),
      said('20:14', 'key', 'customer-id', 'customer - id', 'customer and id'),
      said('24:23', 'x-tenant', 'acme-corp', 'acme - corp', 'acme and corp'),
      said('25:27', 'content-type', 'image/svg+xml', 'image / svg + xml', 'image, svg and xml'),
      said('26:28', 'cache-control', 'max-age=60', 'max - age = 60', '', "a comparison of the message's fields max and age, not that text: it gives false for a message without them"),
    ]);
  });

  it('warns of a header or key expression a ${VAR} gives as text without showing the value or its parts: names the variable, and how to quote it', async () => {
    // The warning quoted the value and spelt out its parts (`live - secretkey - abcdef`, "the
    // message's fields live, secretkey and abcdef"): redaction hides the whole value, not its parts,
    // so an API key given by the environment was in the CI log, text and JSON.
    const files = {
      'gateway.yaml': yaml(
        ...base,
        'routes:', //                                                     12
        '  - name: hook', //                                              13
        '    from: { listener: api, path: /in }', //                      14
        '    to:', //                                                     15
        '      - broker: local', //                                       16
        '        topic: orders', //                                       17
        '        key: ${KEY_FIELD:-customer-id}', //                      18
        '      - http:', //                                               19
        '          url: https://crm.example.com/in', //                   20
        '          headers:', //                                          21
        '            x-api-key: ${API_KEY}', //                           22
        '            x-both: ${API_KEY}+${TENANT}', //                    23
      ),
    };
    const env = { API_KEY: 'live-secretkey-abcdef', TENANT: 'acmecorp' };
    const text = await validate(files, { env });
    assert.equal(text.code, 0, text.stdout + text.stderr);
    const fromEnv = (at: string, key: string, names: string, example: string) =>
      `gateway.yaml:${at}: warning: the value from ${names} is read as a JSONata expression: plain names joined by -, +, *, / or = with no space, arithmetic of (or a comparison of) the message's fields, not that text, which gives no value for a message without them. A \${VAR} in an expression is replaced by its value before the expression is read: to send the value as text, put the reference in a JSONata string, quoted inside the YAML value: \`${key}: '"${example}"'\` [EG_CONFIG_TEXT_EXPRESSION]`;
    assert.deepEqual(text.stderr.split('\n').filter(Boolean), [
      // A default is the file's own text, no secret: said as written text is.
      `gateway.yaml:18:14: warning: 'customer-id' is read as the JSONata expression customer - id, arithmetic of the message's fields customer and id, not that text: it gives no value for a message without them. Text is a string in the expression, quoted inside the YAML value: \`key: '"customer-id"'\`; a field of that name is written between backquotes: \`key: '\`customer-id\`'\`; to compute, write spaces around the operators [EG_CONFIG_TEXT_EXPRESSION]`,
      fromEnv('22:24', 'x-api-key', '${API_KEY}', '${API_KEY}'),
      fromEnv('23:21', 'x-both', '${API_KEY} and ${TENANT}', '...'),
    ]);
    const json = await validate(files, { env, format: 'json', warnings: true });
    assert.equal(json.code, 0, json.stdout + json.stderr);
    for (const part of ['live', 'secretkey', 'abcdef', 'acmecorp']) assert.doesNotMatch(json.stdout + json.stderr + text.stdout + text.stderr, new RegExp(part));
  });

  it("says an expression a ${VAR} gives that does not compile without quoting the value's parts, naming the variable", async () => {
    // JSONata's message quotes the token it stopped at (`Syntax error: "secretvalue"` for
    // `12secretvalue`): a part of the value, which redaction (by whole values) did not hide.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          ...base,
          'routes:', //                                                     12
          '  - name: hook', //                                              13
          '    from: { listener: api, path: /in }', //                      14
          '    to:', //                                                     15
          '      - http:', //                                               16
          '          url: https://crm.example.com/in', //                   17
          '          headers:', //                                          18
          '            x-api-key: ${API_KEY}', //                           19
          '            x-op: ${OP}', //                                     20
        ),
      },
      { env: { API_KEY: '12secretvalue', OP: 'ab:cd' } },
    );
    assertProblems(r, [
      ['gateway.yaml:19:24', /^JSONata expression does not compile: Syntax error: "\[redacted\]" \(the expression is the value of \$\{API_KEY\}: the parts the message quoted are not shown\)$/],
      ['gateway.yaml:20:19', /^JSONata expression does not compile: Syntax error: ":" \(the expression is the value of \$\{OP\}: the parts the message quoted are not shown\)$/],
    ]);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it("does not show a part of a ${VAR}'s value that JSONata prints as a number, a string with escapes or a short name; its own operators and hints stay readable", async () => {
    // JSONata prints its token as JSON: a number bare (`Syntax error: 20231208`), a string with a
    // quote or backslash escaped (`"pa\\"ss"`), which the quotes' pattern did not take whole; a
    // name of two letters (`"ey"`, a JWT's start) was kept as if it were an operator, and the hint
    // for `&&` lost its `"and"` wherever the value held those letters. The gateway's own checks
    // named an unknown `$name` of the value whole (`unknown function $secretfn`).
    const r = await validate(
      {
        'gateway.yaml': yaml(
          ...base,
          'routes:', //                                                     12
          '  - name: hook', //                                              13
          '    from: { listener: api, path: /in }', //                      14
          '    to:', //                                                     15
          '      - http:', //                                               16
          '          url: https://crm.example.com/in', //                   17
          '          headers:', //                                          18
          '            x-a: ${A}', //                                       19
          '            x-b: ${B}', //                                       20
          '            x-c: ${C}', //                                       21
          '            x-d: ${D}', //                                       22
          '            x-e: ${E}', //                                       23
          '            x-f: ${F}', //                                       24
          '            x-g: ${G}', //                                       25
          `            x-h: "'Bearer ' & \${H} foo"`, //                     26
          "            x-i: 'v = ${I} and $fo(w)'", //                      27
        ),
      },
      {
        env: { A: 'x 20231208-abcdefgh', B: 'x pa"ssword-xyz', C: 'x ey.Jhbsecret', D: 'x ab\\cdefgh-123', E: 'x && brandnew', F: '$secretfn(1)', G: '$secretvar-x', H: 'secretvalue', I: '1' },
      },
    );
    // A value that reads as a header's text is told how to write text instead (textHint), the others name their variable.
    const named = (v: string) => `\\((the expression is the value of \\$\\{${v}\\}: the parts the message quoted are not shown|a header's value is a JSONata expression: .*)\\)$`;
    assertProblems(r, [
      ['gateway.yaml:19:18', new RegExp(`^JSONata expression does not compile: Syntax error: \\[redacted\\] ${named('A')}`)],
      ['gateway.yaml:20:18', new RegExp(`^JSONata expression does not compile: Syntax error: "\\[redacted\\]" ${named('B')}`)],
      ['gateway.yaml:21:18', new RegExp(`^JSONata expression does not compile: Syntax error: "\\[redacted\\]" ${named('C')}`)],
      ['gateway.yaml:22:18', new RegExp(`^JSONata expression does not compile: Syntax error: "\\[redacted\\]" ${named('D')}`)],
      [
        'gateway.yaml:23:18',
        new RegExp(`^JSONata expression does not compile: The symbol "&" cannot be used as a unary operator \\(JSONata's "and" is the word: \`a > 0 and b > 0\`; & joins strings\\) ${named('E')}`),
      ],
      // The gateway's own check names an unknown $name: of the value, it is not shown either.
      ['gateway.yaml:24:18', new RegExp(`^JSONata expression does not compile: unknown function \\$\\[redacted\\] ${named('F')}`)],
      [
        'gateway.yaml:25:18',
        new RegExp(
          `^JSONata expression does not compile: unknown variable \\$\\[redacted\\] \\(a field of the message is read without the \\$: \\[redacted\\]\\): nothing binds it, so it would have no value for any message ${named('G')}`,
        ),
      ],
      // The file's own text beside a ${VAR} is shown as written.
      ['gateway.yaml:26:38', new RegExp(`^JSONata expression does not compile: Syntax error: "foo" ${named('H')}`)],
      ['gateway.yaml:27:32', new RegExp(`^JSONata expression does not compile: unknown function \\$fo \\(did you mean \\$not\\?\\) ${named('I')}`)],
    ]);
    for (const part of ['20231208', 'ssword', '"ey"', 'cdefgh', 'secretfn', 'secretvar']) assert.ok(!(r.stdout + r.stderr).includes(part), `${part} is not shown`);
  });

  it('says which character of a key or name only looks like the one meant (a Cyrillic о for o), beside its "did you mean"', async () => {
    // `unknown key 'rоutes' ... (did you mean 'routes'?)` showed two spellings a reader cannot tell apart.
    const routes = (key: string, broker: string) =>
      validate({
        'gateway.yaml': yaml(
          ...base,
          `${key}:`, //                                                     12
          '  - name: r', //                                                 13
          '    from: { listener: api, path: /in }', //                      14
          `    to: { broker: ${broker}, topic: t }`, //                     15
        ),
      });
    assertProblems(await routes('rоutes', 'local'), [
      [
        'gateway.yaml:12:1',
        /^unknown key 'rоutes' in the config \(did you mean 'routes'\? 'rоutes' has U\+043E where 'routes' has 'o', a character of another script that looks the same\); expected one of: /,
      ],
    ]);
    assertProblems(await routes('routes', 'lоcal'), [
      ['gateway.yaml:15:19', /^broker 'lоcal' is not defined \(did you mean 'local'\? 'lоcal' has U\+043E where 'local' has 'o', a character of another script that looks the same\)/],
    ]);
    // Only a letter that prints as the Latin one is said to look the same: an accented letter, a
    // full-width one, a Cyrillic letter unlike any Latin one and a character that prints nothing are
    // said as what they are (the zero-width space made the hint's two spellings look alike too).
    for (const [key, said] of [
      ['routés', "'routés' has U\\+00E9 where 'routes' has 'e', 'e' with a mark"],
      ['ｒoutes', "'ｒoutes' has U\\+FF52 where 'routes' has 'r', another form of 'r'"],
      ['rжutes', "'rжutes' has U\\+0436 where 'routes' has 'o', a character of another script"],
      ['rou\u200btes', "'rou\u200btes' has U\\+200B, a character that prints nothing, which 'routes' has not"],
    ]) {
      assertProblems(await routes(key!, 'local'), [['gateway.yaml:12:1', new RegExp(`^unknown key '${key}' in the config \\(did you mean 'routes'\\? ${said}\\); expected one of: `)]]);
    }
  });

  it("warns of a topic a ${VAR} gives in another kind's wildcards or as a template without rewriting its value into the hint", async () => {
    // The topic was `[redacted]`, its rewrite not: `(did you mean 'tenantsecret/+/temperature'?)`,
    // `topic: { expression: '"tenantsecret." & $path.region' }`.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          'version: 1', //                                                  1
          'brokers:', //                                                    2
          '  m: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //           3
          '  local: { kind: memory }', //                                   4
          'listeners:', //                                                  5
          '  api: { kind: http, port: 0 }', //                              6
          'routes:', //                                                     7
          '  - name: r', //                                                 8
          '    from: { broker: m, topic: "${TOPIC}" }', //                  9
          '    to: { broker: local, topic: x }', //                         10
          '  - name: w', //                                                 11
          '    from: { listener: api, path: /w/:region }', //               12
          '    to: { broker: local, topic: "${TARGET}" }', //               13
        ),
      },
      { env: { TOPIC: 'tenantsecret.*.temperature', TARGET: 'tenantsecret.{$path.region}' } },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(r.stderr.split('\n').filter(Boolean), [
      "gateway.yaml:9:31: warning: route 'r': '[redacted]' is written in another broker's wildcard syntax: MQTT reads it as the one topic of that name, and nothing else; its wildcards are '+' (one level) and '#' (every level below), between '/' (the topic is the value of ${TOPIC}: write it there with those) [EG_CONFIG_SUSPICIOUS_TOPIC]",
      "gateway.yaml:13:33: warning: topic '[redacted]' is taken as a name, as written, not as an expression: a topic computed per message is written topic: { expression: ... } (the topic is the value of ${TARGET}) [EG_CONFIG_SUSPICIOUS_TOPIC]",
    ]);
  });

  it('refuses a topic a ${VAR} gives that its broker cannot take without rewriting its value or quoting its parts in the hint', async () => {
    // The topic was `[redacted]`, the error's hint not: `(MQTT's levels are separated by '/': did
    // you mean 'tenantsecret/+/temperature'?)`, `(topic: "tenantsecret", group: "grpsecret")`.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          'version: 1', //                                                  1
          'brokers:', //                                                    2
          '  m: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //           3
          '  local: { kind: memory }', //                                   4
          'listeners:', //                                                  5
          '  api: { kind: http, port: 0 }', //                              6
          'routes:', //                                                     7
          '  - name: r', //                                                 8
          '    from: { broker: m, topic: "${TOPIC}" }', //                  9
          '    to: { broker: local, topic: x }', //                         10
          '  - name: s', //                                                 11
          '    from: { broker: m, topic: "${SHARED}" }', //                 12
          '    to: { broker: local, topic: y }', //                         13
          '  - name: t', //                                                 14
          '    from: { broker: m, topic: "plant.#.temperature" }', //       15
          '    to: { broker: local, topic: z }', //                         16
        ),
      },
      { env: { TOPIC: 'tenantsecret.#.temperature', SHARED: '$share/grpsecret/tenantsecret' } },
    );
    assertProblems(r, [
      [
        'gateway.yaml:9:31',
        /^'\[redacted\]' cannot be a topic of mqtt broker 'm': '#' must be a whole level, and the last one \(MQTT's levels are separated by '\/': the topic is the value of \$\{TOPIC\}: write it there with those\)$/,
      ],
      ['gateway.yaml:12:31', /^'\[redacted\]' cannot be a topic of mqtt broker 'm': a shared subscription is written as the route's topic and group \(the topic is the value of \$\{SHARED\}\): /],
      // A topic written in the file is rewritten as before.
      ['gateway.yaml:15:31', /\(MQTT's levels are separated by '\/': did you mean 'plant\/\+\/temperature'\?\)$/],
    ]);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it('quotes no part of a topic a ${VAR} gives that its broker refuses: not shortened, escaped, or rewritten where a quote is in it', async () => {
    // Each was shown: `'kafkasecretxxx…' (311 characters)` (its first 40 characters), `'mqttsecret\u0001x'`
    // (escaped), `did you mean 'o'rdersecret/+/x'?` and `(topic: "sharesecret", group: "g"x")` (a quote
    // in the value stopped the hint's rewrite), and a suspicious topic's warning shortened as the first.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          'version: 1', //                                                  1
          'brokers:', //                                                    2
          '  m: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //           3
          '  k: { kind: kafka, brokers: ["127.0.0.1:9092"] }', //           4
          '  local: { kind: memory }', //                                   5
          'listeners:', //                                                  6
          '  api: { kind: http, port: 0 }', //                              7
          'routes:', //                                                     8
          '  - name: a', //                                                 9
          '    from: { listener: api, path: /a }', //                       10
          '    to: { broker: k, topic: "${LONG}" }', //                     11
          '  - name: b', //                                                 12
          '    from: { listener: api, path: /b }', //                       13
          '    to: { broker: m, topic: "${CONTROL}" }', //                  14
          '  - name: c', //                                                 15
          '    from: { broker: m, topic: "${QUOTED}" }', //                 16
          '    to: { broker: local, topic: x }', //                         17
          '  - name: d', //                                                 18
          '    from: { broker: m, topic: "${SHARED}" }', //                 19
          '    to: { broker: local, topic: y }', //                         20
          '  - name: e', //                                                 21
          '    from: { listener: api, path: /e }', //                       22
          '    to: { broker: local, topic: "${TEMPLATE}" }', //             23
        ),
      },
      {
        env: {
          LONG: `kafkasecret${'x'.repeat(300)}`,
          CONTROL: 'mqttsecret\u0001x',
          QUOTED: "o'rdersecret.#.x",
          SHARED: '$share/g"x/sharesecret',
          TEMPLATE: `orders.{region}.templatesecret${'y'.repeat(100)}`,
        },
      },
    );
    assertProblems(r, [
      ['gateway.yaml:11:29', /^'\[redacted\]' cannot be a topic of kafka broker 'k': a Kafka topic name is 1 to 249 characters/],
      ['gateway.yaml:14:29', /^'\[redacted\]' cannot be a topic of mqtt broker 'm': an MQTT topic cannot hold the control character U\+0001$/],
      ['gateway.yaml:16:31', /^'\[redacted\]' cannot be a topic of mqtt broker 'm': .*\(MQTT's levels are separated by '\/': the topic is the value of \$\{QUOTED\}: write it there with those\)$/],
      ['gateway.yaml:19:31', /^'\[redacted\]' cannot be a topic of mqtt broker 'm': a shared subscription is written as the route's topic and group \(the topic is the value of \$\{SHARED\}\): /],
    ]);
    assert.match(r.stderr, /^gateway\.yaml:23:33: warning: topic '\[redacted\]' is taken as a name/m);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it("quotes no part of a ${VAR}'s long routing-key pattern two routes of one group read (EG_CONFIG_CONFLICT)", async () => {
    // Shown shortened, `'amqpsecret.xxx…' (111 characters)`: its first 40 characters, past the redaction.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          'version: 1', //                                                                              1
          'brokers:', //                                                                                2
          '  r: { kind: amqp, url: "amqp://127.0.0.1:5672", exchange: { name: events, type: topic } }', // 3
          '  local: { kind: memory }', //                                                               4
          'listeners:', //                                                                              5
          '  api: { kind: http, port: 0 }', //                                                          6
          'routes:', //                                                                                 7
          '  - name: a', //                                                                             8
          '    from: { broker: r, topic: "${PATTERN}", group: g }', //                                  9
          '    to: { broker: local, topic: x }', //                                                     10
          '  - name: b', //                                                                             11
          '    from: { broker: r, topic: "other.*", group: g }', //                                     12
          '    to: { broker: local, topic: y }', //                                                     13
        ),
      },
      { env: { PATTERN: `amqpsecret.${'x'.repeat(100)}` } },
    );
    assertProblems(r, [['gateway.yaml:12:49', /^route 'b' reads 'other\.\*' with group 'g', as route 'a' reads '\[redacted\]': on broker 'r' that group is queue 'g'/]]);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it("names no JetStream consumer spelt from a ${VAR}'s group two routes of other subjects read (EG_CONFIG_CONFLICT)", async () => {
    // `grp.secretvalue` is consumer `grp_secretvalue` on the server: shown as that, past the redaction.
    const r = await validate(
      {
        'gateway.yaml': yaml(
          'version: 1', //                                                                                    1
          'brokers:', //                                                                                      2
          '  n: { kind: nats, servers: ["nats://127.0.0.1:4222"], streams: { s: { subjects: ["orders.>"] } } }', // 3
          '  local: { kind: memory }', //                                                                     4
          'listeners:', //                                                                                    5
          '  api: { kind: http, port: 0 }', //                                                                6
          'routes:', //                                                                                       7
          '  - name: a', //                                                                                   8
          '    from: { broker: n, topic: orders.a, group: "${GROUP}" }', //                                  9
          '    to: { broker: local, topic: x }', //                                                           10
          '  - name: b', //                                                                                   11
          '    from: { broker: n, topic: orders.b, group: "${GROUP}" }', //                                  12
          '    to: { broker: local, topic: y }', //                                                           13
        ),
      },
      { env: { GROUP: 'grp.secretvalue' } },
    );
    assertProblems(r, [
      ['gateway.yaml:12:48', /^route 'b' reads 'orders\.b' with group '\[redacted\]', as route 'a' reads 'orders\.a': on broker 'n' that group is JetStream consumer '\[redacted\]' of stream 's'/],
    ]);
    assert.doesNotMatch(r.stdout + r.stderr, /secret/);
  });

  it('quotes no number a value from ${VAR} begins with in a JSONata error (`1234567890-AbCd...`: JSONata quotes the number unquoted)', async () => {
    // Tokens of the form `<id>-<secret>` or `<id>.<secret>`: JSONata reads the digits before `-`
    // or `.` as one number and quotes it as it read it, without quotes.
    const files = {
      'gateway.yaml': yaml(
        ...base,
        'routes:',
        '  - name: hook',
        '    from: { listener: api, path: /in }',
        '    to: { http: { url: "https://crm.example.com/in", headers: { authorization: "Bearer ${CRM_TOKEN}", x-k: "${CRM_TOKEN}", x-written: "Bearer 4217-abc" } } }',
      ),
    };
    for (const [token, number] of [
      ['1234567890-AbCdEfGhIjKl', '1234567890'],
      ['98765432.abcdefgh', '98765432'],
      ['12345.678e9-xyzabc', '12345678000000'],
    ] as const) {
      const r = await validate(files, { env: { CRM_TOKEN: token } });
      assert.doesNotMatch(r.stdout + r.stderr, new RegExp(number), r.stdout);
      assert.match(r.stdout, /^gateway\.yaml:15:88: JSONata expression does not compile: Syntax error: "?\[redacted\]"? /m);
      // Written in the file, a number is quoted as JSONata says it.
      assert.match(r.stdout, /: Syntax error: 4217 /);
    }
  });

  it("refuses a webhook's retry.backoffMs larger than its maxBackoffMs, written or the default, at backoffMs; a maxBackoffMs alone below the default backoffMs caps it", async () => {
    // Accepted, every wait was maxBackoffMs: the backoffMs written had no effect.
    const hook = (retry: string) => `    to: { http: { url: "https://crm.example.com/in", retry: ${retry} } }`;
    const r = await validate({
      'gateway.yaml': yaml(
        ...base,
        'routes:', //                                                         12
        '  - name: a', //                                                     13
        '    from: { listener: api, path: /a }', //                           14
        hook('{ backoffMs: 500, maxBackoffMs: 100 }'), //                     15
        '  - name: b', //                                                     16
        '    from: { listener: api, path: /b }', //                           17
        hook('{ backoffMs: 15000 }'), //                                      18
        '  - name: c', //                                                     19
        '    from: { listener: api, path: /c }', //                           20
        hook('{ maxBackoffMs: 0 }'), //                                       21
        '  - name: d', //                                                     22
        '    from: { listener: api, path: /d }', //                           23
        hook('{ backoffMs: 100, maxBackoffMs: 100 }'), //                     24
      ),
    });
    assertProblems(r, [
      ['gateway.yaml:15:74', /^retry\.backoffMs \(500\) must not be larger than retry\.maxBackoffMs \(100\): every wait would be 100 ms$/],
      ['gateway.yaml:18:74', /^retry\.backoffMs \(15000\) must not be larger than retry\.maxBackoffMs \(10000, the default\): every wait would be 10000 ms; raise maxBackoffMs too$/],
    ]);
  });

  describe('YAML syntax errors', () => {
    it('points at a key indented deeper than its siblings, saying which line', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '      port: 0') });
      assertProblems(r, [['gateway.yaml:4:11', /YAML syntax error: .*\(line 5 is indented deeper than the key on this line, so it reads as part of this line's value/]]);
    });

    it('points at a key indented less than its siblings where the key starts, naming the column of the first', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    tls:', '      cert: x', '   port: 0') });
      assertProblems(r, [['gateway.yaml:7:4', /YAML syntax error: All mapping items must start at the same column \(this key starts at column 4, the first key of its map, on line 4, at column 5/]]);
    });

    it("points at a key indented less than its list item's keys, naming the column after the item's `- `", async () => {
      const r = await validate({ 'gateway.yaml': yaml(...base, 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '  to: { broker: local, topic: t }') });
      assertProblems(r, [['gateway.yaml:15:3', /YAML syntax error: All mapping items must start at the same column \(this key starts at column 3, the first key of its map, on line 13, at column 5/]]);
    });

    it("says a listener's or broker's key indented as far as the names reads as an entry of its own, naming the entry above", async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'brokers:', '  local:', '    kind: memory', '  retain: 10', 'listeners:', '  api:', '    kind: http', '  port: 0') });
      const hint = (what: string, name: string, above: string, line: number) =>
        new RegExp(
          `^${what}s\\.${name} must be a map, got number \\d+: indented as a ${what}'s name, so it reads as a ${what} named '${name}'; if it is a key of ${what} '${above}' \\(line ${line}\\), indent it`,
        );
      assertProblems(r, [
        ['gateway.yaml:5:3', hint('broker', 'retain', 'local', 3)],
        ['gateway.yaml:7:3', /listeners\.api is missing required key 'port'/],
        ['gateway.yaml:9:3', hint('listener', 'port', 'api', 7)],
      ]);
    });

    it('says how to write a JSONata expression that YAML cannot hold as a plain value', async () => {
      const steps = (...lines: string[]) => yaml(...base, 'chains:', '  main:', ...lines);
      // Before: the parser's words alone ("Nested mappings are not allowed in compact mappings",
      // "Unexpected scalar at node end"), which name YAML's grammar, not the `: ` or the quote.
      const rewrite = (key: string) => literally(`quote the whole value (\`${key}: '...'\`, a ' inside it written twice) or write it on the lines after \`${key}: |\`, indented)`);
      const ternary = await validate({ 'gateway.yaml': steps('    - filter: temperature > (battery ? 50 : 80)') });
      assertProblems(ternary, [
        [
          'gateway.yaml:14:15',
          new RegExp(
            `^YAML syntax error: Nested mappings are not allowed in compact mappings \\(the value of 'filter' holds ': ' at column 43, which YAML reads as the start of a map: ${rewrite('filter')}$`,
          ),
        ],
      ]);
      const quoted = await validate({ 'gateway.yaml': steps('    - filter: "d1" = deviceId') });
      assertProblems(quoted, [
        [
          'gateway.yaml:14:20',
          new RegExp(
            `^YAML syntax error: Unexpected scalar at node end \\(the value of 'filter' starts with ", and a value that starts with a " ends at its closing ", so the rest of the line cannot follow it; for text, such as a JSONata expression, ${rewrite('filter')}$`,
          ),
        ],
      ]);
      const list = await validate({ 'gateway.yaml': steps('    - filter: ["on", "auto"] = mode') });
      assertProblems(list, [
        [
          'gateway.yaml:14:30',
          /\(the value of 'filter' starts with \[, and a value that starts with a \[ is read as a YAML list, which ends at its \], so the rest of the line cannot follow it; for text/,
        ],
      ]);
      // A map that is valid YAML is a schema error; the hint names the expression too.
      const map = await validate({ 'gateway.yaml': steps('    - transform: {"device": deviceId}') });
      assertProblems(map, [
        [
          'gateway.yaml:14:18',
          /^chains\.main\[0\]\.transform must be a string, got a map \(a value that starts with \{ is read as a YAML map, not as the text of a JSONata expression: quote the whole expression \(`transform: '\.\.\.'`, a ' inside it written twice\) or write it on the lines after `transform: \|`, indented\)$/,
        ],
      ]);
      // A flow map's own mistake inside its braces is not told to quote the map, but the entry whose value it is.
      const flow = await validate({
        'gateway.yaml': steps('    - filter: a', 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    through: main', '    to: { broker: local, topic: "t" x }'),
      });
      const entry = (key: string, q: string, rewrite: string) =>
        `(the value of '${key}' in this { } map starts with ${q}, and a value that starts with a ${q} ends at its closing ${q}, so the rest cannot follow it; for text, such as a JSONata expression, quote the whole value (${rewrite}))`;
      assert.equal(flow.code, 1);
      assert.equal(flow.stdout, `gateway.yaml:19:37: YAML syntax error: Unexpected scalar at node end ${entry('topic', '"', "`topic: '...'`, a ' inside it written twice")}\n`);
      // A key or topic written as an expression in a target's { } map, as the docs write targets:
      // before, "Unexpected anchor at node end" alone (YAML reads the `&` as an anchor).
      const target = await validate({
        'gateway.yaml': steps(
          '    - filter: a',
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in/:kind }',
          "    to: { broker: local, topic: 'orders.' & $path.kind }",
          '  - name: keyed',
          '    from: { listener: api, path: /keyed }',
          '    to: [{ broker: local, topic: t, key: "k-" & $string(id) }]',
        ),
      });
      assert.equal(target.code, 1);
      assert.equal(
        target.stdout,
        [
          `gateway.yaml:18:43: YAML syntax error: Unexpected anchor at node end ${entry('topic', "'", '`topic: "..."`, a " or \\ inside it written \\" or \\\\')}`,
          `gateway.yaml:21:47: YAML syntax error: Unexpected anchor at node end ${entry('key', '"', "`key: '...'`, a ' inside it written twice")}`,
          '',
        ].join('\n'),
      );
    });

    it('points at a tab used as indentation', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '\tapi: {}') });
      assertProblems(r, [['gateway.yaml:3:1', /YAML syntax error: Tabs are not allowed as indentation/]]);
    });

    it('points at the second of two equal keys, naming the key and where the first is (block and flow maps)', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: 0', '    port: 1') });
      // Before: "Map keys must be unique" alone; in a long file the other one is what to find.
      assertProblems(r, [['gateway.yaml:6:5', /^YAML syntax error: Map keys must be unique: 'port' is written at 5:5 too \(remove one, or merge the two\)$/]]);
      const appended = await validate({ 'gateway.yaml': yaml(...base, 'routes: []', 'brokers: { other: { kind: memory }, other: { kind: memory } }') });
      assertProblems(appended, [['gateway.yaml:13:1', /^YAML syntax error: Map keys must be unique: 'brokers' is written at 2:1 too /]]);
    });

    it('points at two keys YAML reads as different values that are one name (1 and "1", true and "true", ~ and ""), in text and json', async () => {
      // Before: YAML compared them as a number and a string, and the second broker replaced the first, unsaid.
      for (const [first, second] of [
        ['1', '"1"'],
        ['true', "'true'"],
        ['~', '""'],
      ] as const) {
        const files = { 'gateway.yaml': yaml('version: 1', 'brokers:', `  ${first}: { kind: memory }`, `  ${second}: { kind: memory, retain: 5 }`) };
        const name = first === '~' ? '' : first;
        const r = await validate(files);
        // An empty name is a problem of its own besides (a broker's name must not be empty).
        const empty: [string, RegExp][] = name === '' ? [['gateway.yaml:3:3', /^brokers: key '' must be a name of one character or more /]] : [];
        assertProblems(r, [
          ...empty,
          [
            'gateway.yaml:4:3',
            new RegExp(
              `^key '${name}' is given twice in this map: here \\(${second}\\) and at line 3 \\(${first}\\), which YAML reads as two keys \\(one a string, one a number, boolean or null\\), but a name is text: the second would replace the first$`,
            ),
          ],
        ]);
        const json = await validate(files, { format: 'json' });
        assert.equal(json.code, 1);
        assert.deepEqual(
          (JSON.parse(json.stdout) as { line: number; column: number; code: string }[]).map((p) => [p.line, p.column, p.code]),
          [...(name === '' ? [[3, 3, 'EG_CONFIG_SCHEMA']] : []), [4, 3, 'EG_CONFIG_CONFLICT']],
        );
      }
    });

    it('points at an alias to an anchor that does not exist', async () => {
      const r = await validate({ 'gateway.yaml': yaml(...base, 'chains:', '  main: *steps') });
      assertProblems(r, [['gateway.yaml:13:9', /Unresolved alias.*steps/]]);
    });

    it('refuses an empty broker, listener or chain name (a ${VAR} set empty, a key ~ or ""), at its key; any other text is a name', async () => {
      // Before: valid, a broker and a listener no route could name (`must not be empty`) started all the same.
      const must = 'must be a name of one character or more \\(an empty one, from a \\$\\{VAR\\} set empty or a key ~ or "", cannot be referred to\\)$';
      const r = await validate(
        { 'gateway.yaml': yaml('version: 1', 'brokers:', '  ${BROKER}: { kind: memory }', 'listeners:', '  ~: { kind: http, port: 0 }', 'chains:', '  "": []') },
        { env: { BROKER: '' } },
      );
      assertProblems(r, [
        ['gateway.yaml:3:3', new RegExp(`^brokers: key '' ${must}`)],
        ['gateway.yaml:5:3', new RegExp(`^listeners: key '' ${must}`)],
        ['gateway.yaml:7:3', new RegExp(`^chains: key '' ${must}`)],
      ]);
      const named = await validate({ 'gateway.yaml': yaml('version: 1', 'brokers:', '  ${BROKER}: { kind: memory }', '  "k a": { kind: memory }') }, { env: { BROKER: 'm' } });
      assert.equal(named.code, 0, named.stdout);
    });

    it('points at a merge key given an alias to no anchor, or what is not a map, saying which', async () => {
      // Before: "Merge sources must be maps or map aliases", for a missing anchor too, and at 1:1 for the others.
      const unresolved = 'Unresolved alias (the anchor must be set before the alias): missing';
      const notMap = 'a merge key (<<) takes a map, an alias of one, or a list of those; this is';
      for (const [merge, at, said] of [
        ['  other: { <<: *missing }', '6:16', unresolved],
        ['  other:\n    <<: [*local, *missing]', '7:18', unresolved],
        ['  other: { <<: 3 }', '6:16', `${notMap} a scalar`],
        // yaml merges an aliased list of maps: the scalar after it is the mistake, not the alias.
        ['  maps: &maps [{ a: 1 }, *local]\n  other: { <<: *maps }\n  more: { <<: 3 }', '8:15', `${notMap} a scalar`],
        ['  other: { <<: *list }', '6:16', `${notMap} an alias of a list with an item that is no map`],
        ['  other: { <<: [*list] }', '6:17', `${notMap} an alias of a list`],
        ['  other:\n    <<: [*local, [a]]', '7:18', `${notMap} a list inside the list`],
      ] as const) {
        const r = await validate({ 'gateway.yaml': yaml('version: 1', 'x: &list [a]', 'brokers:', '  local: &local', '    kind: memory', merge) });
        assertProblems(r, [[`gateway.yaml:${at}`, new RegExp(`^YAML error: ${said.replace(/[()*<]/g, '\\$&')}$`)]]);
      }
    });

    it('points at an alias inside the node its anchor names (a cycle), in text and json, without a stack overflow', async () => {
      // `&steps` names the list that `*steps` sits in: the value would contain itself.
      const files = { 'gateway.yaml': yaml(...base, 'chains:', '  main: &steps', '    - *steps') };
      assertProblems(await validate(files), [['gateway.yaml:14:7', /YAML error: alias \*steps is inside the node its anchor &steps names/]]);
      const json = await validate(files, { format: 'json' });
      assert.equal(json.code, 1);
      const problems = JSON.parse(json.stdout) as { file: string; line: number; column: number; message: string }[];
      assert.deepEqual(
        problems.map((p) => [p.file, p.line, p.column]),
        [['gateway.yaml', 14, 7]],
      );
    });

    it('points at a list or map written as a key, with no process warning on stderr, and finds a key written as an alias', async () => {
      for (const [key, what] of [
        ['? [a]\n: 1', 'list'],
        ['{a: 1}: 1', 'map'],
        ['x: &k [a]\n*k : 1', 'list'],
      ] as const) {
        const r = await validate({ 'gateway.yaml': yaml(...base, key) }, { process: true });
        const line = key.startsWith('x:') ? 13 : 12;
        assertProblems(r, [[`gateway.yaml:${line}:${key.startsWith('?') ? 3 : 1}`, new RegExp(`YAML error: this key is a ${what}, not a name`)]]);
        assert.equal(r.stderr, '', key);
      }
      // An alias to a scalar is a name: its problem is where the alias is written, not at 1:1.
      assertProblems(await validate({ 'gateway.yaml': yaml(...base, 'x: &k b', '*k : 1') }), [
        ['gateway.yaml:12:1', /unknown key 'x' in the config/],
        ['gateway.yaml:13:1', /unknown key 'b' in the config/],
      ]);
    });

    it('says lists and maps nest too deeply, where, rather than a bare stack overflow', async () => {
      for (const deep of ['['.repeat(5000) + ']'.repeat(5000), '{a: '.repeat(3000) + '1' + '}'.repeat(3000)]) {
        const r = await validate({ 'gateway.yaml': yaml(...base, `x: ${deep}`) });
        assert.equal(r.code, 1);
        assert.equal(r.lines.length, 1, r.stdout);
        assert.match(r.lines[0]!, /^gateway\.yaml:12:\d+: YAML error: the lists and maps here nest too deeply to be read/);
        assert.doesNotMatch(r.stdout, /Maximum call stack/);
      }
    });

    it('takes YAML merge keys (<<: *anchor), and points at a bad key of an anchor where it is written and where it is merged', async () => {
      const merged = (extra: string) =>
        yaml('version: 1', 'brokers: { local: { kind: memory } }', 'listeners:', `  api: &http { kind: http, port: 0${extra} }`, '  api2:', '    <<: *http', '    host: 127.0.0.1');
      const ok = await validate({ 'gateway.yaml': merged('') });
      assert.deepEqual([ok.code, ok.stdout.trim()], [0, 'ok']);
      assertProblems(await validate({ 'gateway.yaml': merged(', prot: 1') }), [
        ['gateway.yaml:4:37', /unknown key 'prot' in listeners\.api \(did you mean 'port'\?\)/],
        ['gateway.yaml:5:3', /unknown key 'prot' in listeners\.api2 \(did you mean 'port'\?\)/],
      ]);
    });

    it('points at the first byte that is not UTF-8, rather than reading it as U+FFFD', async () => {
      // A Latin-1 'é' in a route name: read leniently it became another name without a word.
      const dir = tempFiles({});
      const text = yaml(...base, 'routes:', '  - name: caf\u00e9', '    from: { listener: api, path: /in }', '    to: { broker: local, topic: t }');
      writeFileSync(join(dir, 'gateway.yaml'), Buffer.from(text, 'latin1'));
      const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, 'gateway.yaml:13:14: the file is not UTF-8 text: byte 0xE9 here is not valid UTF-8 (save the file as UTF-8)\n');
    });

    it('says a UTF-16 or UTF-32 file is one, with or without a byte order mark, and points at a NUL byte', async () => {
      // PowerShell 5's `>` and Notepad's "Unicode" write UTF-16; without a byte order mark its NULs
      // were read as part of one string ("the config must be a map, got string").
      const dir = tempFiles({});
      const text = yaml(...base);
      const files: Record<string, Buffer> = {
        'le-bom.yaml': Buffer.from(`\ufeff${text}`, 'utf16le'),
        'le.yaml': Buffer.from(text, 'utf16le'),
        'be.yaml': Buffer.from(text, 'utf16le').swap16(),
        'utf32.yaml': Buffer.concat([...text].map((c) => Buffer.from([c.charCodeAt(0), 0, 0, 0]))),
        'nul.yaml': Buffer.from(text.replace('local', 'lo\0cal')),
      };
      const said: string[] = [];
      for (const [name, bytes] of Object.entries(files)) {
        writeFileSync(join(dir, name), bytes);
        const r = await runCliInProcess(['validate', '-c', name], { cwd: dir });
        said.push(`${r.code} ${r.stdout}`);
      }
      assert.deepEqual(said, [
        '1 le-bom.yaml:1:1: the file is UTF-16 text, not UTF-8 (save the file as UTF-8)\n',
        '1 le.yaml:1:1: the file is UTF-16 text, not UTF-8 (save the file as UTF-8)\n',
        '1 be.yaml:1:1: the file is UTF-16 text, not UTF-8 (save the file as UTF-8)\n',
        '1 utf32.yaml:1:1: the file is UTF-32 text, not UTF-8 (save the file as UTF-8)\n',
        '1 nul.yaml:3:5: the file is not text: a NUL byte (0x00) here is not allowed (a binary file? save the file as UTF-8 text)\n',
      ]);
      // A referenced file says where in it, as a byte that is not UTF-8 does.
      writeFileSync(join(dir, 'nul.json'), Buffer.from('{\n  "type": "obj\0ect"\n}\n'));
      writeFileSync(join(dir, 'utf16.json'), Buffer.from('\ufeff{"type": "object"}', 'utf16le'));
      const chain = ['chains:', '  c:', '    - validate: { schema: nul.json }', '    - validate: { schema: utf16.json }'];
      writeFileSync(join(dir, 'gateway.yaml'), yaml(...base, ...chain, 'routes:', '  - { name: r, from: { listener: api, path: /in }, through: c, to: { broker: local, topic: t } }'));
      const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assertProblems({ ...r, lines: r.stdout.split('\n').filter((l) => l !== '') }, [
        ['gateway.yaml:14:27', /^cannot read 'nul\.json' \(.*\): the file is not text: a NUL byte \(0x00\) at line 2, column 15 is not allowed/],
        ['gateway.yaml:15:27', /^cannot read 'utf16\.json' \(.*\): the file is UTF-16 text, not UTF-8/],
      ]);
    });

    it('takes a file that starts with a byte order mark, with columns as an editor shows them', async () => {
      const r = await validate({ 'gateway.yaml': `\ufeff${yaml('version: 2')}` });
      assertProblems(r, [['gateway.yaml:1:10', /version must be 1, got number 2/]]);
    });

    it('points at the start of a second YAML document, saying what to do rather than which library call to use', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'brokers: { local: { kind: memory } }', '---', 'version: 1') });
      assertProblems(r, [['gateway.yaml:3:1', /^the file holds more than one YAML document \(a second one starts at this `---`\).*include:/]]);
      assert.doesNotMatch(r.stdout, /parseAllDocuments/);
    });

    it('points at a YAML tag that makes what JSON has not (bytes, a set, an ordered map, a date), in the config, a fragment and a schema file', async () => {
      // Before: `brokers: !!binary ...` was "eventgate: Cannot read properties of undefined (reading
      // 'compile')", `chains: !!set ...` passed as no chains, `!!timestamp` was "got a map".
      const json = 'eventgate reads only JSON values from YAML \\(maps, lists, strings, numbers, booleans, null\\)';
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers: !!binary aGVsbG8=',
          'chains: !!set { c }',
          'routes:',
          '  - name: r',
          '    from: { listener: api, path: /in }',
          '    to: { broker: local, topic: !<tag:yaml.org,2002:timestamp> 2001-12-14 }',
        ),
      });
      assert.doesNotMatch(r.stdout + r.stderr, /Cannot read properties/);
      assertProblems(r, [
        ['gateway.yaml:2:10', new RegExp(`^brokers is tagged !!binary, which makes bytes: ${json}; write the text as a string, without the tag$`)],
        ['gateway.yaml:3:9', new RegExp(`^chains is tagged !!set, which makes a set: ${json}; write a list, without the tag$`)],
        ['gateway.yaml:7:33', new RegExp(`^routes\\[0\\]\\.to\\.topic is tagged !!timestamp, which makes a date: ${json}; write the date as a string, without the tag$`)],
      ]);
      // A fragment and a schema file, once the config itself reads.
      const inParts = await validate({
        'gateway.yaml': yaml(...base, 'include: part.yaml', 'chains:', '  c: [ { validate: { schema: s.yaml } } ]'),
        'part.yaml': yaml('brokers:', '  other: !!omap [ kind: memory ]'),
        's.yaml': yaml('type: object', 'required: !!set { id }'),
      });
      assert.equal(inParts.code, 1, inParts.stdout);
      assert.match(inParts.stdout, /^part\.yaml:2:10: brokers\.other is tagged !!omap, which makes an ordered map: .*; write a map, without the tag$/m);
      assert.match(inParts.stdout, /s\.yaml.*required is tagged !!set, which makes a set/);
    });

    it('points at such a tag in an AsyncAPI document and in a file its $ref reads', async () => {
      // Before: `streetlights.yaml:1:1: AsyncAPI: the AsyncAPI parser could not read this document:
      // ... it met a value of a type it does not expect` (the parser, not the tag check, read it).
      const json = 'eventgate reads only JSON values from YAML \\(maps, lists, strings, numbers, booleans, null\\)';
      const withDocument = yaml(
        ...base,
        'asyncapi: streetlights.yaml',
        'routes:',
        '  - name: r',
        '    from: { listener: api, path: /in }',
        '    through: [ { validate: { channel: alerts } } ]',
        '    to: { broker: local, topic: t }',
      );
      const document = (title: string, payload: string) =>
        yaml('asyncapi: 3.0.0', 'info:', `  title: ${title}`, "  version: '1.0.0'", 'channels:', '  alerts:', '    messages:', '      alert:', `        payload: ${payload}`);
      const root = await validate({ 'gateway.yaml': withDocument, 'streetlights.yaml': document('!!binary aGVsbG8=', '{ type: object }') });
      assertProblems(root, [['streetlights.yaml:3:10', new RegExp(`^AsyncAPI: info\\.title is tagged !!binary, which makes bytes: ${json}; write the text as a string, without the tag$`)]]);
      const referenced = await validate({
        'gateway.yaml': withDocument,
        'streetlights.yaml': document('Lights', "{ $ref: 'schemas/alert.yaml' }"),
        'schemas/alert.yaml': yaml('type: object', 'required: !!set { id }'),
      });
      assertProblems(referenced, [['schemas/alert.yaml:2:11', new RegExp(`^AsyncAPI: required is tagged !!set, which makes a set: ${json}; write a list, without the tag$`)]]);
    });

    it("points at a YAML tag the reader cannot resolve, which it would drop: another tool's (!Ref, !ENV) and a standard one that does not fit its value", async () => {
      // Before: `topic: !Ref orders` validated and ran as topic `orders`; `!!float 5` was "got string "5" (write it without quotes)".
      const r = await validate({
        'gateway.yaml': yaml(
          ...base.slice(0, 3),
          '    kind: memory',
          '    retain: !!float 5',
          'listeners:',
          '  api: { kind: http, port: !ENV PORT }',
          'routes:',
          '  - name: r',
          '    from: { listener: api, path: /in }',
          '    to: { broker: local, topic: !Ref orders }',
        ),
      });
      const custom = "eventgate resolves no custom tags \\(another tool's, such as CloudFormation's !Ref or !Sub\\), so the value would be read as if it had none; remove it";
      assertProblems(r, [
        ['gateway.yaml:5:13', /^YAML tag !!float on brokers\.local\.retain does not fit the value after it, so it would be dropped, not applied: write the value without the tag$/],
        ['gateway.yaml:7:28', new RegExp(`^unknown YAML tag !ENV on listeners\\.api\\.port: ${custom}`)],
        ['gateway.yaml:11:33', new RegExp(`^unknown YAML tag !Ref on routes\\[0\\]\\.to\\.topic: ${custom}`)],
      ]);
      // Tags that resolve to what they say are read as before.
      const fine = await validate({ 'gateway.yaml': yaml('version: !!int 1', 'brokers: !!map { local: { kind: !!str memory, retain: !!int "5" } }') });
      assert.equal(fine.code, 0, fine.stdout);
      // So is a standard tag on a ${VAR} whose value fits it: the tag did not fit the text `${PORT}`,
      // and was an error at the tag, where earlier releases read the value as the variable gave it;
      // `!!str ${TOPIC}` keeps TOPIC=123 a string (it was typed a number, the tag dropped).
      const typed = await validate(
        {
          'gateway.yaml': yaml(
            ...base.slice(0, 4),
            '    retain: !!int ${RETAIN}',
            'listeners:',
            '  api:',
            '    kind: http',
            '    port: !!int ${PORT}',
            '    cors:',
            '      origins: ["*"]',
            '      credentials: !!bool ${CREDS}',
            'routes:',
            '  - name: r',
            '    from: { listener: api, path: /in }',
            '    to:',
            '      broker: local',
            '      topic: !!str ${TOPIC}',
          ),
        },
        { env: { RETAIN: '5', PORT: '0', CREDS: 'false', TOPIC: '123' } },
      );
      assert.equal(typed.code, 0, typed.stdout);
      // A merge key is named as written (it was `Symbol(<<)`).
      const merged = await validate({
        'gateway.yaml': yaml(...base, 'routes:', '  - name: r', '    from: { listener: api, path: /in }', '    to:', '      <<: !Ref { broker: local }', '      topic: t'),
      });
      assertProblems(merged, [['gateway.yaml:16:11', new RegExp(`^unknown YAML tag !Ref on routes\\[0\\]\\.to\\.<<: ${custom}`)]]);
    });

    it('reports an empty file as such', async () => {
      const r = await validate({ 'gateway.yaml': '' });
      assertProblems(r, [['gateway.yaml:1:1', /empty.*version: 1/]]);
    });
  });

  describe('unknown keys', () => {
    it('points at a misspelt top-level key and suggests the right one', async () => {
      const r = await validate({ 'gateway.yaml': yaml(...base, 'rotues: []') });
      assertProblems(r, [['gateway.yaml:12:1', /unknown key 'rotues'.*did you mean 'routes'\?/]]);
    });

    it('points at a misspelt nested key and does not also report the key it meant as missing', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    prot: 8080') });
      assertProblems(r, [['gateway.yaml:5:5', /unknown key 'prot' in listeners\.api \(did you mean 'port'\?\)/]]);
    });

    it('points at a misspelt key in a flow map inside a route', async () => {
      const r = await validate({ 'gateway.yaml': yaml(...base, 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    to: { broker: local, topik: t }') });
      assertProblems(r, [['gateway.yaml:15:26', /unknown key 'topik' in routes\[0\]\.to \(did you mean 'topic'\?\)/]]);
    });

    it("hints 'through' for `thru`, an informal spelling three edits away, and still lists the keys", async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    thru: [{ transform: $ }]', '    to: { broker: local, topic: t }'),
      });
      assertProblems(r, [['gateway.yaml:15:5', /^unknown key 'thru' in routes\[0\] \(did you mean 'through'\?\); expected one of: .*through/]]);
    });

    it('says the admin server serves plain HTTP for `admin.tls`, not "did you mean \'tap\'?"', async () => {
      const r = await validate({ 'gateway.yaml': yaml(...base, 'admin:', '  port: 0', '  tls: { cert: c.pem, key: k.pem }') });
      // Before: "unknown key 'tls' in admin (did you mean 'tap'?)", two edits from three letters.
      assertProblems(r, [
        [
          'gateway.yaml:14:3',
          /^unknown key 'tls' in admin: the admin server serves plain HTTP, so its token crosses the network in clear: .*TLS-terminating proxy.*; expected one of: port, host, token/,
        ],
      ]);
      // The editors' schema (gateway.schema.json) carries no such keyword: it is the loader's.
      const schema = JSON.parse((await runCliInProcess(['schema'])).stdout) as { properties: { admin: Record<string, unknown> } };
      assert.equal(schema.properties.admin['x-absentKeys'], undefined);
    });
  });

  describe('wrong types', () => {
    it('says how to write a number or boolean given quoted, or as YAML 1.1 wrote it', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  local: { kind: memory, retain: "10" }', //                          3
          '  rabbit: { kind: amqp, url: "amqp://localhost", mandatory: off }', // 4
          '  more: { kind: memory, retain: 1_000 }', //                           5
          'listeners:',
          '  api: { kind: http, port: "8080", http2: "true", maxBodyBytes: "1.5" }', // 7
          '  web: { kind: http, port: 8081, http2: "True" }', //                      8
          '  web2: { kind: http, port: 8082, http2: "FALSE" }', //                    9
        ),
      });
      // Before: "must be an integer, got string "10"" and no more.
      assertProblems(r, [
        ['gateway.yaml:3:34', /^brokers\.local\.retain must be an integer, got string "10" \(write it without quotes: 10\)$/],
        ['gateway.yaml:4:61', /^brokers\.rabbit\.mandatory must be true or false, got string "off" \(YAML 1\.1 read 'off' as a boolean; the config is YAML 1\.2, where it is a string: write false\)$/],
        ['gateway.yaml:5:33', /^brokers\.more\.retain must be an integer, got string "1_000" \(YAML 1\.2, as the config is read, has no '_' in numbers: write 1000\)$/],
        ['gateway.yaml:7:28', /^listeners\.api\.port must be an integer, got string "8080" \(write it without quotes: 8080\)$/],
        ['gateway.yaml:7:43', /^listeners\.api\.http2 must be true or false, got string "true" \(write it without quotes: true\)$/],
        // Not an integer unquoted either: no hint.
        ['gateway.yaml:7:65', /^listeners\.api\.maxBodyBytes must be an integer, got string "1\.5"$/],
        // YAML 1.2's other spellings of a boolean, quoted: the same hint, in the usual spelling.
        ['gateway.yaml:8:41', /^listeners\.web\.http2 must be true or false, got string "True" \(write it without quotes: true\)$/],
        ['gateway.yaml:9:42', /^listeners\.web2\.http2 must be true or false, got string "FALSE" \(write it without quotes: false\)$/],
      ]);
    });

    it('says `version: "1"` is 1 without the quotes, the first line of every config', async () => {
      // Before: "version must be 1, got string "1"", which reads as a riddle.
      assertProblems(await validate({ 'gateway.yaml': 'version: "1"\n' }), [['gateway.yaml:1:10', /^version must be 1, got string "1" \(write it without quotes: 1\)$/]]);
      // Another version is no quoting mistake: no hint.
      assertProblems(await validate({ 'gateway.yaml': 'version: "2"\n' }), [['gateway.yaml:1:10', /^version must be 1, got string "2"$/]]);
    });

    it('points at each value of the wrong type and says what was expected', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'listeners:',
          '  api:',
          '    kind: http',
          '    port: "eighty"',
          '    maxBodyBytes: 1.5',
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    ack: yes',
          '    to: { broker: b, topic: t }',
          // ajv's own words were "must NOT have fewer than 1 characters" (and 32).
          '    through: [ { validate: { schema: "" } }, { auth: { jwt: { secret: "short-secret" } } } ]',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:5:11', /listeners\.api\.port must be an integer, got string "eighty"/],
        ['gateway.yaml:6:19', /listeners\.api\.maxBodyBytes must be an integer, got number 1\.5/],
        // YAML 1.1's boolean, a string to YAML 1.2: said so (it was the type error alone).
        ['gateway.yaml:10:10', /routes\[0\]\.ack must be true or false, got string "yes" \(YAML 1\.1 read 'yes' as a boolean; the config is YAML 1\.2, where it is a string: write true\)$/],
        ['gateway.yaml:12:38', /^routes\[0\]\.through\[0\]\.validate\.schema must not be empty$/],
        ['gateway.yaml:12:71', /^routes\[0\]\.through\[1\]\.auth\.jwt\.secret must be at least 32 characters long$/],
      ]);
    });

    it('refuses an empty host, which node binds on every interface (the admin API opened to the network)', async () => {
      // `host: ${ADMIN_HOST:-}` with the variable unset: before, validate said ok and run bound
      // the admin server (default 127.0.0.1) and the listeners on every interface.
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'admin: { port: 0, host: "${ADMIN_HOST:-}" }',
          'brokers:',
          '  k: { kind: kafka, brokers: ["localhost:9092"] }',
          'listeners:',
          '  api: { kind: http, port: 0, host: "" }', //                       6
          '  push: { kind: websocket, port: 0, host: "" }', //                 7
          '  proxy: { kind: kafka, upstream: k, port: 0, host: "" }', //       8
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:2:25', /^admin\.host must not be empty$/],
        ['gateway.yaml:6:37', /^listeners\.api\.host must not be empty$/],
        ['gateway.yaml:7:43', /^listeners\.push\.host must not be empty$/],
        ['gateway.yaml:8:53', /^listeners\.proxy\.host must not be empty$/],
      ]);
    });

    it('points at a millisecond duration longer than a timer can hold, also from a ${VAR}', async () => {
      // Node fires a timer of more than 2^31-1 ms after 1 ms: this drain would have ended at once.
      const r = await validate(
        {
          'gateway.yaml': yaml(
            'version: 1',
            'admin:',
            '  port: 0',
            '  drainTimeoutMs: 3000000000',
            'listeners:',
            '  api:',
            '    kind: http',
            '    port: 0',
            '    requestTimeoutMs: ${REQUEST_TIMEOUT}',
          ),
        },
        { env: { REQUEST_TIMEOUT: '2147483648' } },
      );
      assertProblems(r, [
        ['gateway.yaml:4:19', /admin\.drainTimeoutMs must be <= 2147483647/],
        ['gateway.yaml:9:23', /listeners\.api\.requestTimeoutMs must be <= 2147483647/],
      ]);
    });

    it('points at each number that is not finite (.inf, .nan, 1e400), also from a ${VAR}: a limit YAML made infinite was taken as no limit', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(
            ...base,
            '    maxPayloadBytes: .inf', //                                     12
            'routes:', //                                                       13
            '  - name: r', //                                                   14
            '    from: { listener: api, path: /in }', //                        15
            '    through:', //                                                  16
            '      - ratelimit: { rate: 1e400, per: second, burst: .NaN }', //  17
            '      - ratelimit:', //                                            18
            '          rate: ${RATE}', //                                       19
            '          per: second', //                                         20
            '    to: { broker: local, topic: t }', //                           21
          ),
        },
        { env: { RATE: '-1e999' } },
      );
      assertProblems(r, [
        ['gateway.yaml:12:22', /^listeners\.push\.maxPayloadBytes is \.inf, which is not a finite number/],
        ['gateway.yaml:17:28', /^routes\[0\]\.through\[0\]\.ratelimit\.rate is 1e400, which is not a finite number/],
        ['gateway.yaml:17:55', /^routes\[0\]\.through\[0\]\.ratelimit\.burst is \.NaN, which is not a finite number/],
        ['gateway.yaml:19:17', /^routes\[0\]\.through\[1\]\.ratelimit\.rate is \$\{RATE\} \(-Infinity once substituted\), which is not a finite number/],
      ]);
    });

    it('points at an MQTT keep-alive longer than the protocol can carry', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'brokers:', '  devices: { kind: mqtt, url: "mqtt://localhost:1883", keepaliveSeconds: 65536 }') });
      assertProblems(r, [['gateway.yaml:3:74', /brokers\.devices\.keepaliveSeconds must be <= 65535/]]);
    });

    // ws holds a connection's bound as a 32-bit integer: 4294967297 was a bound of 1 byte (every
    // frame closed 1009), 2147483648 none at all, while a reload to either applied it as written.
    it('points at a websocket maxPayloadBytes larger than ws can hold', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  push: { kind: websocket, port: 0, maxPayloadBytes: 4294967297 }') });
      assertProblems(r, [['gateway.yaml:3:54', /listeners\.push\.maxPayloadBytes must be <= 2147483647/]]);
    });

    it('points at a version other than 1', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 2') });
      assertProblems(r, [['gateway.yaml:1:10', /version must be 1, got number 2/]]);
    });

    it('says what shape `through` takes when given a map', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    through: { filter: a }', '    to: { broker: local, topic: t }'),
      });
      assertProblems(r, [['gateway.yaml:15:14', /routes\[0\]\.through has the wrong shape \(a map\): expected a chain name, or a list of chain names and inline steps/]]);
    });
  });

  describe('one line per problem inside a list or a target (spec §1)', () => {
    it('names a wrongly typed step option or target key once, not also the step, `through` and `to` around it', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    through: [ { filter: true } ]', '    to: { broker: local, topic: 7 }'),
      });
      // Before: five lines, three of them "has the wrong shape" about the list, the step and the target.
      assertProblems(r, [
        ['gateway.yaml:15:26', /^routes\[0\]\.through\[0\]\.filter must be a string, got boolean true$/],
        ['gateway.yaml:16:33', /^routes\[0\]\.to\.topic has the wrong shape \(number 7\): expected topic name/],
      ]);
    });

    it("points at a cloudevent step's source or type beside require: true, which wraps nothing they could name (2395)", async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    through: [ { cloudevent: { require: true, type: t.x } } ]',
          '    to: { broker: local, topic: t }',
        ),
      });
      assertProblems(r, [['gateway.yaml:15:53', /^'type' is for plain messages this step wraps, and with 'require: true' it wraps none: remove it$/]]);
    });

    it('says a cloudevent step\'s remove names a required attribute, not ajv\'s "must NOT be valid"', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    through: [ { cloudevent: { remove: [tenant, id] } } ]',
          '    to: { broker: local, topic: t }',
        ),
      });
      assertProblems(r, [
        [
          'gateway.yaml:15:49',
          /^routes\[0\]\.through\[0\]\.cloudevent\.remove\[1\]: is a required CloudEvents attribute \(specversion, id, source, type\), which no event goes without: list only optional attributes or extensions$/,
        ],
      ]);
    });
  });

  describe('target shapes (stated in the schema)', () => {
    /** base + one route from api whose `to` is the given lines (the first on line 15). */
    const route = (...to: string[]) => yaml(...base, 'routes:', '  - name: r', '    from: { listener: api, path: /in }', ...to);

    it('points at a target that is none of broker, listener or http', async () => {
      const r = await validate({ 'gateway.yaml': route('    to: { topic: t }') });
      assertProblems(r, [['gateway.yaml:15:5', /^routes\[0\]\.to needs one of 'broker', 'listener' or 'http'$/]]);
    });

    it('points at the second kind of a target that is two', async () => {
      const r = await validate({ 'gateway.yaml': route('    to: { broker: local, topic: t, http: { url: "http://127.0.0.1:1/x" } }') });
      assertProblems(r, [['gateway.yaml:15:36', /^routes\[0\]\.to takes only one of 'broker', 'listener' or 'http', not 'broker' and 'http'$/]]);
    });

    it('points at broker and listener keys beside http, naming them', async () => {
      const r = await validate({ 'gateway.yaml': route('    to:', '      http: { url: "http://127.0.0.1:1/x" }', '      path: /p', '      cloudevents: structured') });
      assertProblems(r, [['gateway.yaml:17:7', /^routes\[0\]\.to: 'path' and 'cloudevents' belong with broker or listener targets, not 'http' targets \(webhook options go inside 'http'\)$/]]);
    });

    it('points at a webhook url that is not an http(s) URL, also when it comes from a ${VAR}, and at a header name HTTP does not allow', async () => {
      const r = await validate(
        {
          'gateway.yaml': route(
            '    to:',
            '      - http: { url: "ftp://files.example.com/in" }',
            '      - http: { url: "${HOOK_URL}" }',
            '      - http: { url: "https://hooks.example.com/${TENANT}/in" }',
            '      - http: { url: "http://127.0.0.1:0/in" }',
            '      - http: { url: "http://127.0.0.1:65536/in" }',
            '      - http: { url: "http://127.0.0.1:/in" }',
            '      - http: { url: "http://127.0.0.1:08080/in" }',
            `      - http: { url: "http://127.0.0.1:1/in", headers: { x-fine: '"a"', "x bad": '"b"', "x:colon": '"c"' } }`,
            '      - http: { url: "http:/127.0.0.1:1/in" }',
            '      - http: { url: "https:hooks.example.com/in" }',
            '      - http: { url: "http//hooks.example.com/in" }',
          ),
        },
        { env: { HOOK_URL: 'localhost:8080/hook', TENANT: 'acme' } },
      );
      assertProblems(r, [
        ['gateway.yaml:16:22', /^routes\[0\]\.to\[0\]\.http\.url must be an http\(s\) URL \(http:\/\/host\[:port\]\/path, port 1–65535\), got string "ftp:\/\/files\.example\.com\/in"$/],
        // A URL without its scheme is told to add it; the value, from the environment, is a secret (shown redacted, as run shows it).
        [
          'gateway.yaml:17:22',
          /^routes\[0\]\.to\[1\]\.http\.url must be an http\(s\) URL \(http:\/\/host\[:port\]\/path, port 1–65535\), got string "\[redacted\]" \(a URL starts with its scheme: write http:\/\/ before it\)$/,
        ],
        ['gateway.yaml:19:22', /^routes\[0\]\.to\[3\]\.http\.url must be an http\(s\) URL \(http:\/\/host\[:port\]\/path, port 1–65535\), got string "http:\/\/127\.0\.0\.1:0\/in"$/],
        ['gateway.yaml:20:22', /^routes\[0\]\.to\[4\]\.http\.url must be an http\(s\) URL \(http:\/\/host\[:port\]\/path, port 1–65535\), got string "http:\/\/127\.0\.0\.1:65536\/in"$/],
        // Such a name failed every message at run time, blaming the value's characters.
        ['gateway.yaml:23:73', /^routes\[0\]\.to\[7\]\.http\.headers: key 'x bad' must be an HTTP header name \(.*no spaces or colons\)$/],
        ['gateway.yaml:23:89', /^routes\[0\]\.to\[7\]\.http\.headers: key 'x:colon' must be an HTTP header name/],
        // A scheme without its `://` is told how it is written, not to put another before it.
        ['gateway.yaml:24:22', /^routes\[0\]\.to\[8\]\.http\.url must be an http\(s\) URL .*, got string "http:\/127\.0\.0\.1:1\/in" \(the scheme is written http:\/\/, colon and two slashes\)$/],
        ['gateway.yaml:25:22', /^routes\[0\]\.to\[9\]\.http\.url must be an http\(s\) URL .*, got string "https:hooks\.example\.com\/in" \(the scheme is written https:\/\/, colon and two slashes\)$/],
        [
          'gateway.yaml:26:22',
          /^routes\[0\]\.to\[10\]\.http\.url must be an http\(s\) URL .*, got string "http\/\/hooks\.example\.com\/in" \(the scheme is written http:\/\/, colon and two slashes\)$/,
        ],
      ]);
      // A key set's URL the same way, in words rather than as the pattern "^https?://".
      const jwks = await validate({ 'gateway.yaml': route('    through:', '      - auth: { jwt: { jwksUrl: "login.example.com/jwks.json" } }', '    to: { broker: local, topic: t }') });
      assertProblems(jwks, [
        [
          'gateway.yaml:16:33',
          /^routes\[0\]\.through\[0\]\.auth\.jwt\.jwksUrl must be an https URL \(https:\/\/host\/path; http only on a loopback host\), got string "login\.example\.com\/jwks\.json" \(a URL starts with its scheme: write https:\/\/ before it\)$/,
        ],
      ]);
    });

    it('points at a broker target without a topic and a listener target without a path', async () => {
      const r = await validate({ 'gateway.yaml': route('    to:', '      - { broker: local }', '      - { listener: push }') });
      assertProblems(r, [
        ['gateway.yaml:16:9', /^routes\[0\]\.to\[0\]: 'broker' needs a 'topic'$/],
        ['gateway.yaml:17:9', /^routes\[0\]\.to\[1\]: 'listener' needs a 'path'$/],
      ]);
    });

    it('points at listener keys on a broker target and broker keys on a listener target', async () => {
      const r = await validate({
        'gateway.yaml': route(
          '    to:',
          '      - { broker: local, topic: t, format: envelope, path: /p }',
          '      - { listener: push, path: /p, key: id }',
          '      - { listener: push, path: /q, cloudevents: structured }',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:16:36', /^routes\[0\]\.to\[0\]: 'format' and 'path' belong with 'listener' targets, not 'broker' targets$/],
        ['gateway.yaml:17:37', /^routes\[0\]\.to\[1\]: 'key' belongs with 'broker' targets, not 'listener' targets$/],
        ['gateway.yaml:18:37', /^routes\[0\]\.to\[2\]: 'cloudevents' belongs with broker targets; listener targets choose with 'format'$/],
      ]);
    });
  });

  describe('references to things that do not exist', () => {
    it('points at each missing chain, listener and broker, with a did-you-mean (a listener a route names with a topic too, alone: not a `to` its kind may need), and at ack: true on routes not from a websocket listener', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                                      12
          '  main:', //                                      13
          '    - filter: a > 1', //                          14
          'routes:', //                                      15
          '  - name: in', //                                 16
          '    from: { listener: apii, path: /in }', //      17
          '    through: mian', //                            18
          '    to: { broker: lokal, topic: t }', //          19
          '  - name: out', //                                20
          '    from: { broker: local, topic: t }', //        21
          '    through: [main, { filter: "true" }, mainn]', // 22
          '    to:', //                                      23
          '      - { listener: psuh, path: /ws }', //        24
          '      - { listener: api, path: /ws }', //         25 (an http listener: an event stream, valid)
          // In the same pass: ack: true where it would do nothing (it answers websocket frames only).
          '  - name: acked-http', //                         26
          '    from: { listener: api, path: /a }', //        27
          '    ack: true', //                                28
          '    to: { broker: local, topic: t }', //          29
          '  - name: acked-broker', //                       30
          '    from: { broker: local, topic: t }', //        31
          '    ack: true', //                                32
          '    to: { broker: local, topic: u }', //          33
          // A kafka listener renamed, its route not: the listener is missing, not the route's `to`.
          '  - name: governed', //                           34
          '    from: { listener: kafka-in, topic: t }', //   35
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:17:23', /listener 'apii' is not defined \(did you mean 'api'\?\)/],
        ['gateway.yaml:18:14', /chain 'mian' is not defined \(did you mean 'main'\?\)/],
        ['gateway.yaml:19:19', /broker 'lokal' is not defined \(did you mean 'local'\?\)/],
        ['gateway.yaml:22:41', /chain 'mainn' is not defined \(did you mean 'main'\?\)/],
        ['gateway.yaml:24:21', /listener 'psuh' is not defined \(did you mean 'push'\?\)/],
        ['gateway.yaml:28:5', /^route 'acked-http': 'ack' is for routes from a websocket listener \(an answer per frame\); an http listener answers every message anyway$/],
        ['gateway.yaml:32:5', /^route 'acked-broker': 'ack' is for routes from a websocket listener \(an answer per frame\); a route from a broker acknowledges each message/],
        ['gateway.yaml:35:23', /^listener 'kafka-in' is not defined; defined listeners: api, push$/],
      ]);
    });

    it('says where to define a broker when there are none', async () => {
      const r = await validate({
        'gateway.yaml': yaml('version: 1', 'listeners:', '  api: { kind: http, port: 0 }', 'routes:', '  - name: in', '    from: { listener: api, path: /in }', '    to: { broker: local, topic: t }'),
      });
      assertProblems(r, [['gateway.yaml:7:19', /broker 'local' is not defined; add it under brokers:/]]);
    });
  });

  describe('JSONata expressions that do not compile', () => {
    it('points inside a one-line expression, plain or quoted', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(
            ...base,
            'chains:', //                                         12
            '  main:', //                                         13
            '    - filter: a > > 1', //                           14: second '>' at column 19
            "    - filter: 'b = = 2'", //                         15: second '=' at column 20
            '    - headers: { set: { x-a: "\\"ok\\" &" } }', //  16: '&' at column 38
            "    - filter: 'v = ${LIMIT} and $fo(w)'", //        17: '$fo' at column 33 (the value is 7 characters shorter)
            'routes:', //                                         18
            '  - name: in', //                                    19
            '    from: { listener: api, path: /in }', //          20
            '    through: main', //                               21
            '    to: { broker: local, topic: t, key: "$string(" }', // 22: '(' at column 49
          ),
        },
        { env: { LIMIT: '1' } },
      );
      assertProblems(r, [
        ['gateway.yaml:14:19', /JSONata expression does not compile: The symbol ">" cannot be used as a unary operator/],
        ['gateway.yaml:15:20', /JSONata expression does not compile: The symbol "=" cannot be used as a unary operator/],
        ['gateway.yaml:16:38', /JSONata expression does not compile/],
        // Past a `${VAR}`, a place in the value is as many columns off as the two differ in length.
        ['gateway.yaml:17:33', /JSONata expression does not compile: unknown function \$fo/],
        ['gateway.yaml:22:49', /JSONata expression does not compile: Expected "\)"/],
      ]);
    });

    it('warns of a value written as a shell variable, `$VAR`, which is taken as text', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(
            'version: 1', //                                  1
            'brokers:', //                                    2
            '  kafka:', //                                    3
            '    kind: kafka', //                             4
            '    brokers: localhost:9092', //                 5
            '    clientId: ${CLIENT}', //                     6: from the environment, "$NOT_A_VAR": not warned of
            '    sasl:', //                                   7
            '      mechanism: scram-sha-512', //              8
            '      username: $KAFKA_USER', //                 9
            '      password: $KAFKA_PASSWORD', //             10
            'listeners:', //                                  11
            '  api:', //                                      12
            '    kind: http', //                              13
            '    port: 0', //                                 14
            'routes:', //                                     15
            '  - name: in', //                                16
            '    from: { listener: api, path: /in }', //      17
            '    to: { broker: kafka, topic: t, key: $string(id) }', // 18: an expression's `$name` is JSONata's
          ),
        },
        { env: { CLIENT: '$NOT_A_VAR' } },
      );
      // Before: valid, no word, and the login fails at run time with the user name `$KAFKA_USER`.
      assert.equal(r.code, 0, r.stdout);
      assert.equal(
        r.stderr,
        [
          "gateway.yaml:9:17: warning: '$KAFKA_USER' is taken as it is written: eventgate replaces a variable written `${KAFKA_USER}`, with braces (as `${KAFKA_USER:-default}` with a default), not a shell's `$KAFKA_USER` [EG_CONFIG_SHELL_VARIABLE]",
          // A password is neither printed nor named by what it holds.
          "gateway.yaml:10:17: warning: this value, a `$` and capitals, is taken as it is written: eventgate replaces a variable written `${VAR}`, with braces (as `${VAR:-default}` with a default), not a shell's `$VAR` [EG_CONFIG_SHELL_VARIABLE]",
          '',
        ].join('\n'),
      );
    });

    it('says a ` #` in a plain value cut the expression short as a YAML comment', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                                             12
          '  main:', //                                             13
          '    - filter: $contains(tag, " #urgent")', //              14: YAML keeps `$contains(tag, "`
          '    - filter: \'$contains(tag, " #urgent")\'', //          15: quoted: the whole expression
          '    - filter: $contains(tag, "a") # a comment', //         16: a comment after a whole expression
          '    - filter: amount > > 10 # the big orders', //          17: a comment after an expression wrong before it
          'routes:', //                                             18
          '  - name: in', //                                        19
          '    from: { listener: api, path: /in }', //              20
          '    through: main', //                                   21
          '    to: { broker: local, topic: t }', //                 22
        ),
      });
      // Before: the string-literal error alone, at what YAML left, with nothing about the `#`.
      assertProblems(r, [
        [
          'gateway.yaml:14:30',
          new RegExp(
            `^JSONata expression does not compile: String literal must be terminated by a matching quote ${literally("(the rest of line 14, `#urgent\")`, is a YAML comment: in a plain value, ` #` starts one. To keep it in the expression, quote the whole value, `filter: '...'`, a ' inside it written twice, or write it on the lines after `filter: |`)")}$`,
          ),
        ],
        // Its own mistake, in the middle: the comment after it is one, and no hint says otherwise.
        ['gateway.yaml:17:24', /^JSONata expression does not compile: The symbol ">" cannot be used as a unary operator$/],
      ]);
    });

    it('points at the line and column inside a block-scalar expression', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                        12
          '  main:', //                        13
          '    - transform: |', //             14
          '        {', //                      15
          '          "x": a,', //              16
          '          "y": b > > 2', //         17: the second '>' at column 20
          '        }', //                      18
          'routes:', //                        19
          '  - name: in', //                   20
          '    from: { listener: api, path: /in }', // 21
          '    through: main', //              22
          '    to: { broker: local, topic: t }', // 23
        ),
      });
      assertProblems(r, [['gateway.yaml:17:20', /JSONata expression does not compile: The symbol ">" cannot be used as a unary operator/]]);
    });

    it("says JSONata's words for JavaScript's ==, &&, || and !", async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                                      12
          '  main:', //                                      13
          '    - filter: lumens == 0', //                    14: the second '=' at column 23
          '    - filter: lumens > 0 && id > 1', //           15: the second '&' at column 27
          '    - filter: lumens > 0 || id > 1', //           16: the second '|' at column 26
          "    - filter: '!bright'", //                      17: '!' at column 16
          'routes:', //                                      18
          '  - { name: in, from: { listener: api, path: /in }, through: main, to: { broker: local, topic: t } }', // 19
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:14:23', /does not compile: .* \(JSONata compares with one =: `lumens = 0`; != is not equal\)$/],
        ['gateway.yaml:15:27', /does not compile: .* \(JSONata's "and" is the word: `a > 0 and b > 0`; & joins strings\)$/],
        ['gateway.yaml:16:26', /does not compile: .* \(JSONata's "or" is the word: `a > 0 or b > 0`\)$/],
        ['gateway.yaml:17:16', /does not compile: .* \(JSONata negates with \$not\(\.\.\.\): `\$not\(bright\)`; != is not equal\)$/],
      ]);
    });

    it('says a field of the message written as a variable (`$lumens`) is read without the $', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:', //                                                     12
          '  - name: in', //                                                13
          '    from: { listener: api, path: /in }', //                      14
          '    through: [{ filter: $lumens > 0 }]', //                      15: `$lumens` at column 25
          '    to: { broker: local, topic: t }', //                         16
        ),
      });
      assertProblems(r, [['gateway.yaml:15:25', /^JSONata expression does not compile: unknown variable \$lumens \(a field of the message is read without the \$: lumens\): nothing binds it/]]);
    });

    it('says a target topic written as an expression (beside `key: $string(id)`) is a name, and how to compute it per message', async () => {
      const routes = (topic: string) => [
        'routes:', //                                                   12
        '  - name: in', //                                              13
        '    from: { listener: api, path: /in }', //                    14
        `    to: { broker: local, topic: ${topic}, key: $string(id) }`, // 15: the topic at column 33
      ];
      const hint = (topic: string) => `a topic computed per message is written topic: { expression: '${topic}' }`;
      // A memory topic may be any name: the route that reads the topic meant gets the reason it never receives.
      const memory = await validate({
        'gateway.yaml': yaml(...base, ...routes('$strng(id)'), '  - { name: out, from: { broker: local, topic: t }, to: { listener: push, path: /t } }'), //  16: the from topic at column 48
      });
      assertProblems(memory, [
        [
          'gateway.yaml:16:48',
          new RegExp(`no route writes to topic 't' \\(routes write to: \\$strng\\(id\\)\\); '\\$strng\\(id\\)' is a name, as written, not an expression: ${literally(hint('$strng(id)'))}$`),
        ],
      ]);
      // And the writer's topic is warned of at its own line, as in a valid config (spec-checklist 2016).
      assert.equal(memory.stderr, `gateway.yaml:15:33: warning: topic '$strng(id)' is taken as a name, as written, not as an expression: ${hint('$strng(id)')} [EG_CONFIG_SUSPICIOUS_TOPIC]\n`);
      // Nothing reads it: valid, with a warning.
      const unread = await validate({ 'gateway.yaml': yaml(...base, ...routes('$topic')) });
      assert.equal(unread.code, 0, unread.stdout);
      assert.equal(unread.stderr, `gateway.yaml:15:33: warning: topic '$topic' is taken as a name, as written, not as an expression: ${hint('$topic')} [EG_CONFIG_SUSPICIOUS_TOPIC]\n`);
      // Beside an error elsewhere, an expression's or the schema's, the warning is printed too, as
      // eslint and terraform validate print both: errors on stdout (exit 1), warnings on stderr (spec-checklist 2016).
      for (const [bad, at, error] of [
        ['through: [{ filter: $lumens > 0 }], to: { broker: local, topic: t } }', 'gateway.yaml:16:75', /unknown variable \$lumens/],
        ['to: { broker: local, topic: t }, bogus: 1 }', 'gateway.yaml:16:88', /bogus/],
      ] as const) {
        const both = await validate({ 'gateway.yaml': yaml(...base, ...routes('$topic'), `  - { name: bad, from: { listener: api, path: /bad }, ${bad}`) }); // 16
        assertProblems(both, [[at, error]]);
        assert.equal(both.stderr, unread.stderr);
      }
      // A Kafka topic cannot be so named: the error says what was meant.
      const kafka = await validate({ 'gateway.yaml': yaml(...base.map((l) => (l === '    kind: memory' ? '    kind: kafka\n    brokers: [localhost:9092]' : l)), ...routes(`'"orders." & region'`)) });
      assertProblems(kafka, [['gateway.yaml:16:33', new RegExp(`'"orders\\." & region' cannot be a topic of kafka broker 'local': .* \\(${literally(hint(`"orders." & region`))}\\)$`)]]);
    });

    it('says a target topic written as a template (`orders.{$path.region}`) is a name, and the expression that computes it', async () => {
      // A NATS subject may hold braces: before, every message went to the subject `orders.{$path.region}`, unwarned (spec-checklist 5070).
      const nats = base.map((l) => (l === '    kind: memory' ? '    kind: nats\n    servers: nats://127.0.0.1:4222\n    streams: { ORDERS: { subjects: ["orders.>"] } }' : l));
      const r = await validate({
        'gateway.yaml': yaml(
          ...nats, // 13 lines
          'routes:', //                                                          14
          '  - name: in', //                                                     15
          '    from: { listener: api, path: /in/:region }', //                   16
          "    to: [{ broker: local, topic: 'orders.{$path.region}' }, { broker: local, topic: 'orders.{region}.eu' }]", // 17: topics at columns 34 and 85
        ),
      });
      assert.equal(r.code, 0, r.stdout);
      assert.equal(
        r.stderr,
        [
          `gateway.yaml:17:34: warning: topic 'orders.{$path.region}' is taken as a name, as written, not as an expression: a topic computed per message is written topic: { expression: '"orders." & $path.region' } [EG_CONFIG_SUSPICIOUS_TOPIC]`,
          `gateway.yaml:17:85: warning: topic 'orders.{region}.eu' is taken as a name, as written, not as an expression: a topic computed per message is written topic: { expression: '"orders." & region & ".eu"' } [EG_CONFIG_SUSPICIOUS_TOPIC]`,
          '',
        ].join('\n'),
      );
    });
  });

  describe('JSON Schemas that do not compile', () => {
    const route = ['routes:', '  - name: in', '    from: { listener: api, path: /in }', '    through: main', '    to: { broker: local, topic: t }'];

    it('points at the offending keyword of an inline schema', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                             12
          '  main:', //                             13
          '    - validate:', //                     14
          '        schema:', //                     15
          '          type: object', //              16
          '          properties:', //               17
          '            lumens: { type: integr }', // 18: 'integr' at column 29
          '          required: lumens', //          19: 'lumens' at column 21
          ...route,
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:18:29', /invalid JSON Schema at properties\.lumens\.type: 'type' must be one of .*got "integr" \(did you mean 'integer'\?\)/],
        ['gateway.yaml:19:21', /invalid JSON Schema at required: 'required' must be array/],
      ]);
    });

    it('points into the schema file at the offending keyword', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
        'schemas/light.json': yaml('{', '  "type": "object",', '  "properties": {', '    "lumens": { "type": "integer", "minimum": "zero" }', '  }', '}'),
      });
      assertProblems(r, [['schemas/light.json:4:47', /invalid JSON Schema at properties\.lumens\.minimum: 'minimum' must be number/]]);
    });

    it("points at a `$schema` that is not a string or names no draft it knows, in a schema file and inline, instead of ending with ajv's words", async () => {
      for (const [value, message] of [
        ['1', /'\$schema' must be a string \(http:\/\/json-schema\.org\/draft-04\/schema#, http:\/\/json-schema\.org\/draft-07\/schema#, .*\), or left out$/],
        ['null', /'\$schema' must be a string/],
        ['"http://example.com/my-draft"', /'\$schema' names no JSON Schema draft this gateway knows \(.*\); leave it out for 2020-12$/],
      ] as const) {
        const r = await validate({
          'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', `    - validate: { schema: { $schema: ${value}, type: object } }`, ...route),
          'schemas/light.json': yaml('{', `  "$schema": ${value},`, '  "type": "object"', '}'),
        });
        assertProblems(r, [
          ['gateway.yaml:15:38', message],
          ['schemas/light.json:2:14', message],
        ]);
        assert.doesNotMatch(r.stderr, /eventgate:/);
      }
    });

    it('refuses an unknown format at its key, with a hint, and nothing from ajv on stderr (validate and run)', async () => {
      const files = {
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                                          12
          '  main:', //                                          13
          '    - validate:', //                                  14
          '        schema:', //                                  15
          '          type: object', //                           16
          '          properties:', //                            17
          '            email: { type: string, format: emial }', // 18: 'emial' at column 44
          '            home: { type: string, format: iri }', //   19: JSON Schema's, unchecked by ajv-formats: no problem
          ...route,
        ),
      };
      const r = await validate(files, { process: true });
      assertProblems(r, [['gateway.yaml:18:44', /^invalid JSON Schema at properties\.email\.format: unknown format 'emial' \(did you mean 'email'\?\); known formats: .*date-time/]]);
      assert.equal(r.stderr, '');
      const run = await runCli(['run', '-c', 'gateway.yaml'], { cwd: tempFiles(files) });
      assert.notEqual(run.code, 0);
      assert.doesNotMatch(run.stdout + run.stderr, /ignored in schema/);
      assert.match(run.stdout + run.stderr, /gateway\.yaml:18:44: invalid JSON Schema at properties\.email\.format: unknown format 'emial'/);
    });

    it('refuses a misspelt keyword in a schema file at its line there, and lets x- extensions and AsyncAPI annotations pass', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
          'schemas/light.json': yaml(
            '{', //                                                                           1
            '  "type": "object",', //                                                         2
            '  "x-owner": "lighting", "example": { "lumens": 3 },', //                          3
            '  "properties": { "lumens": { "type": "integer", "minimum": 0, "maximun": 9 } },', // 4: "maximun" at column 75
            '  "requird": ["lumens"]', //                                                       5
            '}',
          ),
        },
        { process: true },
      );
      assertProblems(r, [
        ['schemas/light.json:4:75', /^invalid JSON Schema at properties\.lumens\.maximun: unknown keyword 'maximun' \(did you mean 'maximum'\?\)/],
        ['schemas/light.json:5:14', /^invalid JSON Schema at requird: unknown keyword 'requird' \(did you mean 'required'\?\)/],
      ]);
      assert.equal(r.stderr, '');
    });

    it('points into a schema file that is not valid JSON', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
        'schemas/light.json': yaml('{', '  "type": "object"', '  "required": ["lumens"]', '}'),
      });
      assertProblems(r, [['schemas/light.json:3:3', /JSON syntax error: Expected ',' or '}' after property value/]]);
    });

    it('points at the token JSON cannot read, also where V8 gives no position, without quoting the file', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
        'schemas/light.json': yaml('{', '  "type": "object",', '  "properties": { "lumens": { "type": integer } }', '}'),
      });
      assertProblems(r, [['schemas/light.json:3:39', /^JSON syntax error: Unexpected token 'i'$/]]);
    });

    // Each a JSON file as a hand edit leaves it: the message without the file's text, at the character JSON stops at.
    for (const [what, text, at, message] of [
      // A regular expression's \d written once, as in the regex: JSON has no \d (the d is what it cannot read).
      ['an escape JSON does not have', '{ "pattern": "\\d+" }', '1:16', /^JSON syntax error: Bad escaped character$/],
      ['a tab inside a string', '{ "description": "a\tb" }', '1:20', /^JSON syntax error: Bad control character in string literal$/],
      // At the line break the string runs into.
      ['a string never closed', '{\n  "type": "object\n}', '2:18', /^JSON syntax error: Bad control character in string literal$/],
      ['a file cut short', '{\n  "type": "object",\n  "required": ["lumens"', '3:24', /^JSON syntax error: Expected ',' or '\]' after array element$/],
      ['a misspelt literal', '{ "additionalProperties": flase }', '1:28', /^JSON syntax error: Unexpected token 'l'$/],
      ['a number with a leading zero', '{ "maximum": 010 }', '1:15', /^JSON syntax error: Unexpected number$/],
      ['nothing at all', '', '1:1', /^JSON syntax error: Unexpected end of the file$/],
    ] as const) {
      it(`points at ${what} in a schema file`, async () => {
        const r = await validate({
          'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
          'schemas/light.json': text,
        });
        assertProblems(r, [[`schemas/light.json:${at}`, message]]);
        assert.equal(r.stderr, '');
      });
    }

    it('takes a schema file that starts with a byte order mark', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/light.json }', ...route),
        'schemas/light.json': `\ufeff${yaml('{ "type": "objekt" }')}`,
      });
      assertProblems(r, [['schemas/light.json:1:11', /'type' must be one of .*got "objekt"/]]);
    });

    it('accepts a recursive schema whose $ref is the root ("#")', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate: { schema: schemas/tree.json }', ...route),
        'schemas/tree.json': '{"type": "object", "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#"}}}}\n',
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(r.lines, ['ok']);
    });

    it('points at a $ref that resolves to nothing, also in a file another schema file refers to, and at a mistake there (point 322); reads the files an inline schema refers to; says a problem of a file two steps use once', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:',
          '  main:',
          '    - validate: { schema: schemas/light.yaml }',
          '    - validate: { schema: schemas/tree.yaml }',
          '    - validate: { schema: schemas/typo.yaml }',
          '    - validate: { schema: schemas/re.yaml }',
          '    - validate: { schema: schemas/re-ref.yaml }',
          '    - validate: { schema: { properties: { s: { pattern: "a{2,1}" } } } }',
          '    - validate: { schema: schemas/gone-ref.yaml }',
          // An inline schema's `$ref` to a file, relative to the config as a `schema:` path (point 742).
          '    - validate: { schema: { $ref: "schemas/defs.yaml#/$defs/n" } }',
          '    - validate: { schema: { properties: { y: { $ref: "schemas/gone.yaml" } } } }',
          // A second step on a file with a problem: the problem is said once.
          '    - validate: { schema: schemas/typo.yaml }',
          // Point 780: a file reached through another file's `{$ref: ../leaf.yaml}` resolves its own
          // `$ref`s from where it is (they were resolved from the other file: "points at nothing"), and
          // a draft-04 schema's files are read too (its base URI is `id`, not `$id`).
          '    - validate: { schema: schemas/via.yaml }',
          '    - validate: { schema: { $schema: "http://json-schema.org/draft-04/schema#", properties: { d: { $ref: "schemas/defs.yaml#/$defs/n" } } } }',
          // Point 782: a `$ref` by an absolute path or a URL says why it was not read.
          '    - validate: { schema: { properties: { a: { $ref: "/etc/defs.yaml" } } } }',
          '    - validate: { schema: { properties: { h: { $ref: "https://example.com/defs.json#/n" } } } }',
          // A schema with an `$id`: its `$ref`s resolve against the id, so no file is read (said why: it was "points at nothing").
          '    - validate: { schema: schemas/with-id.yaml }',
          ...route,
        ),
        'schemas/light.yaml': yaml('type: object', 'properties:', '  lumens:', '    $ref: "#/$defs/count"'),
        // tree.yaml → parts/kid.yaml, which refers back to it, and to a place it does not have.
        'schemas/tree.yaml': yaml('type: object', 'properties:', '  kid: {$ref: "parts/kid.yaml"}', '$defs:', '  n: {type: integer}'),
        'schemas/parts/kid.yaml': yaml('type: object', 'properties:', '  up: {$ref: "../tree.yaml"}', '  n: {$ref: "../tree.yaml#/$defs/m"}'),
        'schemas/typo.yaml': yaml('properties:', '  kid: {$ref: "parts/typo-kid.yaml"}'),
        'schemas/parts/typo-kid.yaml': yaml('properties:', '  up: {$ref: "../typo.yaml"}', '  n: {type: integr}'),
        // A pattern that is no regular expression was said at 1:1 of the file, or at the step's schema.
        'schemas/re.yaml': yaml('type: object', 'properties:', '  x:', '    pattern: "(["'),
        'schemas/re-ref.yaml': yaml('properties:', '  kid: {$ref: "parts/re-kid.yaml"}'),
        'schemas/parts/re-kid.yaml': yaml('type: object', 'patternProperties:', '  "^(x": {}'),
        // A file a $ref names that is not there (yet): said at that $ref, not at the step naming gone-ref.yaml.
        'schemas/gone-ref.yaml': yaml('properties:', '  kid: {$ref: "parts/gone.yaml"}'),
        'schemas/defs.yaml': yaml('$defs:', '  n: {type: integer}'),
        'schemas/via.yaml': yaml('properties:', '  r: {$ref: "parts/hub.yaml#/$defs/other"}'),
        'schemas/parts/hub.yaml': yaml('$defs:', '  item: {type: integer}', '  other: {$ref: "../leaf.yaml"}'),
        'schemas/leaf.yaml': yaml('items: {$ref: "parts/hub.yaml#/$defs/item"}'),
        'schemas/with-id.yaml': yaml('$id: https://schemas.example.com/order.json', 'properties:', '  total: {$ref: "money.yaml"}'),
        'schemas/money.yaml': yaml('type: number'),
      });
      assertProblems(r, [
        ['gateway.yaml:19:57', /^invalid JSON Schema at properties\.s\.pattern: Invalid regular expression: \/a\{2,1\}\/u: numbers out of order in \{\} quantifier$/],
        // Point 781: at the inline schema's `$ref`, as in a schema file (it was at the schema's `{`, 22:27).
        ['gateway.yaml:22:54', /^\$ref 'schemas\/gone\.yaml': cannot read 'schemas\/gone\.yaml' \(.*\): no such file \(ENOENT\)$/],
        [
          'gateway.yaml:26:54',
          /\$ref '\/etc\/defs\.yaml' points at nothing in this schema \(a file is read only by a path relative to the schema file naming it, or to the directory of the config for an inline schema\)$/,
        ],
        [
          'gateway.yaml:27:54',
          /\$ref 'https:\/\/example\.com\/defs\.json#\/n' points at nothing in this schema \(remote \$refs are not fetched: keep the file beside the schema and name it by a relative path\)$/,
        ],
        ['schemas/gone-ref.yaml:2:15', /^\$ref 'parts\/gone\.yaml': cannot read 'schemas\/parts\/gone\.yaml' \(\/.*\/schemas\/parts\/gone\.yaml\): no such file \(ENOENT\)$/],
        ['schemas/light.yaml:4:11', /\$ref '#\/\$defs\/count' points at nothing/],
        ['schemas/parts/kid.yaml:4:13', /at properties\.n\.\$ref: \$ref '\.\.\/tree\.yaml#\/\$defs\/m' points at nothing in this schema or the files it refers to$/],
        ['schemas/parts/re-kid.yaml:3:10', /^invalid JSON Schema at patternProperties\.\^\(x: Invalid regular expression: \/\^\(x\/u: Unterminated group$/],
        ['schemas/parts/typo-kid.yaml:3:13', /at properties\.n\.type: 'type' must be one of .*got "integr" \(did you mean 'integer'\?\)$/],
        ['schemas/re.yaml:4:14', /^invalid JSON Schema at properties\.x\.pattern: Invalid regular expression: \/\(\[\/u: Unterminated character class$/],
        [
          'schemas/with-id.yaml:3:17',
          /\$ref 'money\.yaml' points at nothing in this schema \(it resolves against the schema's \$id 'https:\/\/schemas\.example\.com\/order\.json', not against its file, and no file is read for a schema with an \$id: leave the \$id out to have 'money\.yaml' read beside the schema file\)$/,
        ],
      ]);
    });
  });

  it("refuses $principal and $claims where no auth step binds them (before the route's auth step, on a route without one, in a shared chain no route using it binds them in), $query on a consume route and $path.x for a parameter its path has not", async () => {
    const lines = [
      ...base,
      'chains:', //                                                                                       12
      '  who:', //                                                                                        13
      "    - headers: { set: { x-by: '$principal', x-tenant: '$claims.tenant' } }", //                   14: after auth in route a: fine
      '  stamp:', //                                                                                      15
      "    - headers: { set: { x-by: '$principal' } }", //                                               16: no route using it has auth
      '  roomed:', //                                                                                     17
      "    - headers: { set: { x-room: '$path.room' } }", //                                             18: route b's path has no :room, c takes no request (review-s42)
      'routes:', //                                                                                       19
      '  - name: a', //                                                                                   20
      '    from: { listener: api, path: /a }', //                                                         21
      '    through:', //                                                                                  22
      '      - ratelimit: { rate: 1, key: $principal }', //                                               23: before the auth step
      '      - auth: { apiKey: { keys: { shop: a-long-enough-secret-key-1234 } } }', //                   24
      '      - who', //                                                                                   25
      '    to: { broker: local, topic: a, key: $principal }', //                                          26: fine, after it
      '  - name: b', //                                                                                   27
      '    from: { listener: api, path: /b }', //                                                         28
      '    through: [who, stamp, roomed]', //                                                             29
      '    to: { broker: local, topic: { expression: \'"t-" & $principal\' } }', //                      30
      '  - name: c', //                                                                                   31
      '    from: { broker: local, topic: a }', //                                                         32
      '    through: [{ filter: \'($principal := "me"; $principal = "me") and $query.x\' }, roomed]', // 33: its own binding; no query from a broker
      '    to: { broker: local, topic: c }', //                                                           34
      '  - name: d', //                                                                                   35
      '    from: { listener: api, path: /rooms/:room }', //                                               36
      "    through: [{ filter: '$path.room and $path.rom and $query.q' }, stamp]", //                    37: a parameter the path has not
      "    to: { broker: local, topic: d, key: '$path.room' }", //                                        38
      '  - name: e', //                                                                                   39
      '    from: { listener: api, path: /e/:id }', //                                                     40: nor has its path :room (1714)
      '    through: [roomed]', //                                                                         41
      '    to: { broker: local, topic: e }', //                                                           42
    ];
    const r = await validate({ 'gateway.yaml': yaml(...lines) });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const none = (name: string, routes: string, where: string) => `$${name} has no value here: only an auth step sets it, and ${routes} none ${where}, so it would read no value for every message`;
    assert.deepEqual(r.lines, [
      `gateway.yaml:16:32: ${none('principal', "routes 'b' and 'd' have", 'before this step')}`,
      // Point 1714: each route's path named, not the first one's only.
      "gateway.yaml:18:34: $path.room has no value here: the paths of routes 'b' ('/b': no parameters) and 'e' ('/e/:id': only :id) have no parameter 'room', so it would read no value for every message",
      "gateway.yaml:18:34: $path has no value here: route 'c' takes no HTTP or WebSocket request, so it has no path parameters and this would read no value for every message",
      `gateway.yaml:23:36: ${none('principal', "route 'a' has", 'before this step')}`,
      `gateway.yaml:30:55: ${none('principal', "route 'b' has", 'in its steps')}`,
      "gateway.yaml:33:70: $query has no value here: route 'c' takes no HTTP or WebSocket request, so it has no query string and this would read no value for every message",
      "gateway.yaml:37:41: $path.rom has no value here: the path of route 'd' ('/rooms/:room') has no parameter 'rom', only :room (did you mean $path.room?), so it would read no value for every message",
    ]);
  });

  it('refuses $message and $channel where no validate step naming an AsyncAPI message or channel binds them, but not $key, which the contract binds everywhere (null where messages have no key) (1596)', async () => {
    const lines = [
      ...base.slice(0, 4),
      '  devices: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //                      5: the lines below are one further down
      ...base.slice(4),
      'asyncapi: streetlights.yaml', //                                                    12
      'chains:', //                                                                        13
      '  stamp:', //                                                                       14
      "    - headers: { set: { ce-type: '$message' } }", //                                 15: route e binds it
      '  bare:', //                                                                        16
      "    - headers: { set: { x-channel: '$channel' } }", //                              17: no route using it binds it
      'routes:', //                                                                        18
      '  - name: e', //                                                                    19
      '    from: { listener: api, path: /e }', //                                          20
      '    through:', //                                                                   21
      '      - filter: \'$message = "lightMeasured"\'', //                                 22: before the validate step
      '      - validate: { message: lightMeasured }', //                                   23
      '      - stamp', //                                                                  24
      "    to: { broker: local, topic: e, key: '$channel' }", //                           25: fine, after it
      '  - name: f', //                                                                    26
      '    from: { listener: api, path: /f }', //                                          27
      '    through: [stamp, bare]', //                                                     28
      "    to: { broker: local, topic: f, key: '$key' }", //                               29: null (a request has no key), and bound: fine
      '  - name: g', //                                                                    30
      '    from: { listener: push, path: /g }', //                                         31
      "    through: [{ filter: '$exists($key)' }]", //                                     32: fine (a frame has none either)
      '    to: { broker: local, topic: g }', //                                            33
      '  - name: h', //                                                                    34
      '    from: { broker: local, topic: e }', //                                          35
      '    through: [{ filter: \'$key != "x"\' }]', //                                     36: fine, a consumed message has one
      "    to: { broker: local, topic: h, key: '$key' }", //                               37
      '  - name: m', //                                                                    38
      '    from: { broker: devices, topic: lights }', //                                   39
      '    through: [{ filter: \'$key = "x"\' }]', //                                     40: fine (an mqtt message has none either)
      '    to: { broker: local, topic: m }', //                                            41
      '  - name: n', //                                                                    42
      '    from: { listener: api, path: /n }', //                                          43
      '    through:', //                                                                   44
      '      - validate: { message: lightMeasurd }', //                                    45: its own error, the only one of the route
      "      - headers: { set: { x-message: '$message' } }", //                            46: bound, once the step is put right
      '    to: { broker: local, topic: n }', //                                            47
    ];
    const r = await validate({ 'gateway.yaml': yaml(...lines), 'streetlights.yaml': streetlights30, 'schemas/light-measured.yaml': lightMeasuredPayload });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const none = (name: string, routes: string, where: string) =>
      `$${name} has no value here: only a validate step naming an AsyncAPI message or channel sets it, and ${routes} none ${where}, so it would read no value for every message`;
    // The step naming no message of the document is said (at 46), and nothing after it: what it binds once put right is not known.
    assert.ok(
      r.lines.some((l) => l.startsWith('gateway.yaml:46:')),
      r.stdout,
    );
    assert.deepEqual(
      r.lines.filter((l) => !l.startsWith('gateway.yaml:46:')),
      [`gateway.yaml:18:37: ${none('channel', "route 'f' has", 'before this step')}`, `gateway.yaml:23:18: ${none('message', "route 'e' has", 'before this step')}`],
    );
  });

  describe("expressions reading a field the validate step's schema does not declare", () => {
    it('warns at the name (a typo of a declared field, or any field of a schema allowing no others), says ok, and keeps quiet after a transform, inside filters and for open-ended schemas', async () => {
      const lines = [
        ...base,
        'chains:', //                                                                                          12
        '  lights:', //                                                                                        13
        '    - validate:', //                                                                                  14
        '        schema: { type: object, properties: { streetlightId: { type: string }, lumens: { type: number }, id: { type: string } } }', // 15
        // The typo only: `extra` may be meant, and so may `ts`, `on` and `v`, each two edits from `id` (walk-expr3).
        '    - filter: lumens > 100 and streetlightI != "x" and extra != 1 and ts != 0 and on and v and Id', //  16
        "    - headers: { set: { x-light: '$string(lumen)' } }", //                                           17
        'routes:', //                                                                                          18
        '  - { name: a, from: { listener: api, path: /a }, through: lights, to: { broker: local, topic: a } }', // 19
        "  - { name: b, from: { listener: api, path: /b }, through: lights, to: { broker: local, topic: b, key: '$string(streetlightid)' } }", // 20: the chain's once
        '  - name: closed', //                                                                                  21
        '    from: { listener: api, path: /closed }', //                                                        22
        '    through:', //                                                                                      23
        '      - validate: { schema: light.json }', //                                                          24
        '      - filter: level > 1 and items[price > 1] and $.zz', //                                           25
        '      - transform: \'{"x": level, "y": [1][$ = $$.levels]}\'', //                                   26: `$$` is the input inside a filter too
        '      - filter: x > 1 and y', //                                                                       27: a new value
        '    to: { broker: local, topic: c }', //                                                               28
        '  - name: either', //                                                                                  29
        '    from: { listener: api, path: /either }', //                                                        30
        '    through:', //                                                                                      31
        '      - validate: { schema: { oneOf: [{ properties: { a: {} } }, { properties: { b: {} } }] } }', //   32
        '      - filter: c', //                                                                                 33: not said: oneOf
        '    to: { broker: local, topic: d }', //                                                               34
        // Legal reads (review-s41): a tagging step lets any message on; a required field; a map of readings.
        '  - name: tagged', //                                                                                  35
        '    from: { listener: api, path: /tagged }', //                                                        36
        '    through:', //                                                                                      37
        '      - validate: { schema: light.json, onInvalid: tag }', //                                          38
        '      - filter: legacyLevel and levl', //                                                              39: the typo only
        '    to: { broker: local, topic: e }', //                                                               40
        '  - name: readings', //                                                                                41
        '    from: { listener: api, path: /readings }', //                                                      42
        '    through:', //                                                                                      43
        '      - validate: { schema: { properties: { sensor: {} }, required: [sensors] } }', // 44
        '      - filter: sensors', //                                                                           45: required, so every message has it
        '      - validate: { schema: { properties: { temp1: { type: number } }, additionalProperties: { type: number } } }', // 46
        '      - filter: temp2 > 1', //                                                                         47: one of the readings the schema allows
        '    to: { broker: local, topic: f }', //                                                               48
      ];
      // A file schema whose root is a $ref into its own $defs, allowing no other properties.
      const light = JSON.stringify({ $ref: '#/$defs/light', $defs: { light: { type: 'object', properties: { level: { type: 'number' } }, additionalProperties: false } } });
      const r = await validate({ 'gateway.yaml': yaml(...lines), 'light.json': light });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, 'ok\n');
      const open = 'the schema of the validate step at gateway.yaml:14:7 does not declare it, and JSONata reads a missing field as no value';
      const closed = 'no message the validate step at gateway.yaml:24:9 lets through has it (its schema allows no other properties), so this reads no value';
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        `gateway.yaml:16:32: warning: 'streetlightI' is not a field of the message: ${open} (did you mean 'streetlightId'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:16:96: warning: 'Id' is not a field of the message: ${open} (did you mean 'id'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:17:43: warning: 'lumen' is not a field of the message: ${open} (did you mean 'lumens'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:20:113: warning: 'streetlightid' is not a field of the message: ${open} (did you mean 'streetlightId'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:25:31: warning: 'items' is not a field of the message: ${closed} [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:25:54: warning: 'zz' is not a field of the message: ${closed} [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:26:50: warning: 'levels' is not a field of the message: ${closed} (did you mean 'level'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:39:33: warning: 'levl' is not a field of the message: the schema of the validate step at gateway.yaml:38:9 does not declare it, and JSONata reads a missing field as no value (did you mean 'level'?) [EG_CONFIG_UNDECLARED_FIELD]`,
      ]);
    });
    it('reads the fields of an allOf-composed schema, and goes on past a cloudevent step, which keeps the value (1595)', async () => {
      const lines = [
        ...base,
        'routes:', //                                                                                         12
        '  - name: composed', //                                                                              13
        '    from: { listener: api, path: /composed }', //                                                    14
        '    through:', //                                                                                    15
        '      - validate: { schema: composed.json }', //                                                     16
        '      - cloudevent: { source: /lights, type: light }', //                                            17: the value is the data, as it came
        '      - filter: streetlightI and lumens > 1 and id', //                                              18
        "    to: { broker: local, topic: c, key: '$string(lumen)' }", //                                       19
        '  - name: parts', //                                                                                 20
        '    from: { listener: api, path: /parts }', //                                                       21
        '    through:', //                                                                                    22
        '      - validate: { schema: { allOf: [{ properties: { a: {} }, additionalProperties: false }, { properties: { b: {} } }] } }', // 23
        '      - filter: a and b and zz', //                                                                  24: not said: a composition is never taken as closed
        '    to: { broker: local, topic: d }', //                                                             25
      ];
      // An AsyncAPI-style payload: a base schema and the message's own fields.
      const composed = JSON.stringify({
        $defs: { base: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
        allOf: [{ $ref: '#/$defs/base' }, { properties: { streetlightId: { type: 'string' }, lumens: { type: 'number' } } }],
      });
      const r = await validate({ 'gateway.yaml': yaml(...lines), 'composed.json': composed });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const open = 'the schema of the validate step at gateway.yaml:16:9 does not declare it, and JSONata reads a missing field as no value';
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        `gateway.yaml:18:17: warning: 'streetlightI' is not a field of the message: ${open} (did you mean 'streetlightId'?) [EG_CONFIG_UNDECLARED_FIELD]`,
        `gateway.yaml:19:50: warning: 'lumen' is not a field of the message: ${open} (did you mean 'lumens'?) [EG_CONFIG_UNDECLARED_FIELD]`,
      ]);
    });
  });

  describe("a filter's != on a field the validate step's schema does not require (4712)", () => {
    it('warns at the field that the filter drops every message without it, with the form that keeps them; not for =, in, a guarded or required field', async () => {
      const order = '{ schema: { type: object, properties: { id: { type: string }, status: { type: string }, amount: { type: number } }, required: [id] } }';
      const lines = [
        ...base,
        'asyncapi: streetlights.yaml', //                                                      12
        'routes:', //                                                                          13
        '  - name: plain', //                                                                  14
        '    from: { listener: api, path: /plain }', //                                        15
        '    through:', //                                                                     16
        `      - validate: ${order}`, //                                                       17
        '      - filter: status != "test"', //                                                 18: warned, the whole expression
        "      - filter: amount > 0 and $.status != 'test'", //                                19: warned, one operand
        '    to: { broker: local, topic: a }', //                                              20
        '  - name: contract', //                                                               21
        '    from: { listener: api, path: /contract }', //                                     22
        '    through:', //                                                                     23
        '      - validate: { message: lightMeasured }', //                                     24
        '      - filter: (status != "off")', //                                                25: warned: the AsyncAPI payload's status is optional
        '      - filter: lumens != 0 and status != null', //                                   26: required: every message has it; != null drops those without it on purpose
        '    to: { broker: local, topic: b }', //                                              27
        '  - name: quiet', //                                                                  28
        '    from: { listener: api, path: /quiet }', //                                        29
        '    through:', //                                                                     30
        `      - validate: ${order}`, //                                                       31
        '      - filter: status = "live" or status in ["new", "paid"]', //                     32: no message without it is meant
        '      - filter: $exists(status) and status != "test"', //                             33: guarded
        '      - filter: status != "test" or $not($exists(status))', //                        34: the form the warning gives
        '      - filter: $exists(status) = false or status != "test"', //                      35: the other form that keeps them
        '      - filter: status and status != "test"', //                                      36: guarded by its truth
        '      - filter: $not(status = "test")', //                                            37: keeps them
        '      - filter: id != "x"', //                                                        38: required
        '      - filter: \'$boolean(status != "test") ? true : false\'', //                   39: inside a function: not judged
        '      - transform: \'{"status": status}\'', //                                       40
        '      - filter: status != "test"', //                                                 41: a new value, no schema
        '    to: { broker: local, topic: c }', //                                              42
      ];
      const payload = `${lightMeasuredPayload}  status: {type: string}\n`;
      const r = await validate({ 'gateway.yaml': yaml(...lines), 'streetlights.yaml': streetlights30, 'schemas/light-measured.yaml': payload });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, 'ok\n');
      const drops = (place: string) =>
        `'status' is optional in the schema of the validate step at ${place}, and a comparison with a missing field is false, \`!=\` as much as \`=\`: this filter drops every message without 'status'; to keep them, `;
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        `gateway.yaml:18:17: warning: ${drops('gateway.yaml:17:9')}write 'status != "test" or $not($exists(status))' [EG_CONFIG_OPTIONAL_FIELD]`,
        `gateway.yaml:19:32: warning: ${drops('gateway.yaml:17:9')}write '($.status != 'test' or $not($exists($.status)))' in its place [EG_CONFIG_OPTIONAL_FIELD]`,
        `gateway.yaml:25:18: warning: ${drops('gateway.yaml:24:9')}write 'status != "off" or $not($exists(status))' [EG_CONFIG_OPTIONAL_FIELD]`,
      ]);
    });
  });

  describe('routes that feed the topic they read', () => {
    const loops = [
      ...base,
      'routes:', //                                   12
      '  - name: in', //                              13
      '    from: { listener: api, path: /in }', //    14
      '    to: { broker: local, topic: t }', //       15
      '  - name: again', //                           16
      '    from: { broker: local, topic: t }', //     17
      '    to: { broker: local, topic: t }', //       18: the target map at column 9
      '  - name: ping', //                            19
      '    from: { broker: local, topic: t1 }', //    20
      '    to:', //                                   21
      '      - { broker: local, topic: t2 }', //      22: the target map at column 9
      '  - name: pong', //                            23
      '    from: { broker: local, topic: t2 }', //    24
      '    to: { broker: local, topic: t1 }', //      25
      '  - name: seed', //                            26
      '    from: { listener: api, path: /seed }', //  27
      '    to: { broker: local, topic: t1 }', //      28
    ];

    it("warns on stderr at the `to` line, for one route and for a cycle of two, and still says ok (exit 0); so of a forward path naming a parameter its route's path lacks", async () => {
      // Forward paths' parameters are filled from the message's path parameters of the same names.
      const forwards = [
        '  - { name: typo, from: { listener: api, path: "/room/:room" }, to: { listener: push, path: "/rooms/:r" } }', //        29
        '  - name: partial', //                                                                                                30
        '    from: { listener: api, path: "/seat/:r" }', //                                                                     31
        '    to: [{ broker: local, topic: t3 }, { listener: push, path: "/seats/:r/:seat" }]', //                               32
        '  - { name: same, from: { listener: push, path: "/chat/:room" }, to: { listener: push, path: "/chat/:room" } }', //     33: fine
        '  - { name: all, from: { listener: api, path: /announce }, to: { listener: push, path: "/rooms/:r" } }', //              34: every room, as meant
        '  - { name: consumed, from: { broker: local, topic: t3 }, to: { listener: push, path: "/seats/:a/:b" } }', //           35: so too
        '  - { name: stream, from: { listener: api, path: "/s/:a" }, to: { listener: api, path: "/events/:b" } }', //            36: event streams are filled too
      ];
      const r = await validate({ 'gateway.yaml': yaml(...loops, ...forwards) });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, 'ok\n');
      const warnings = r.stderr.trimEnd().split('\n');
      assert.equal(warnings.length, 5, r.stderr);
      assert.deepEqual(warnings.slice(2), [
        "gateway.yaml:29:93: warning: route 'typo': forward path '/rooms/:r' names 'r', which the route's path '/room/:room' does not have (it has 'room'): each message goes to the clients of every value of 'r', not only of its own (a forward path's parameters are filled from the message's path parameters of the same names) [EG_CONFIG_FORWARD_PARAMETER]",
        "gateway.yaml:32:64: warning: route 'partial': forward path '/seats/:r/:seat' names 'seat', which the route's path '/seat/:r' does not have (it has 'r'): each message goes to the clients of every value of 'seat', not only of its own (a forward path's parameters are filled from the message's path parameters of the same names) [EG_CONFIG_FORWARD_PARAMETER]",
        "gateway.yaml:36:88: warning: route 'stream': forward path '/events/:b' names 'b', which the route's path '/s/:a' does not have (it has 'a'): each message goes to the clients of every value of 'b', not only of its own (a forward path's parameters are filled from the message's path parameters of the same names) [EG_CONFIG_FORWARD_PARAMETER]",
      ]);
      assert.match(warnings[0]!, /^gateway\.yaml:18:9: warning: route 'again' writes topic 't' of broker 'local', the topic it reads, and has no filter: every message goes round for ever/);
      assert.match(
        warnings[1]!,
        /^gateway\.yaml:22:9: warning: routes 'ping' \('t1' of broker 'local' to 't2' of broker 'local'\), 'pong' \('t2' of broker 'local' to 't1' of broker 'local'\) feed each other with no filter/,
      );
      // The text line ends with the warning's code, so CI can annotate or silence it by code.
      assert.match(warnings[0]!, / \[EG_CONFIG_FEEDBACK_LOOP\]$/);
      // JSON is the contract's array of problems: a valid config's is empty, its warnings on stderr.
      const plain = await validate({ 'gateway.yaml': yaml(...loops) }, { format: 'json' });
      assert.equal(plain.code, 0);
      assert.deepEqual(JSON.parse(plain.stdout), []);
      assert.equal(plain.stderr, `${warnings.slice(0, 2).join('\n')}\n`);
      // --warnings belongs to the JSON report: in text, where warnings go to stderr anyway, it did
      // nothing and validated (exit 0); a usage error now, before the config is read.
      const text = await validate({ 'gateway.yaml': yaml(...loops) }, { warnings: true });
      assert.equal(text.code, 2, text.stdout + text.stderr);
      assert.equal(text.stdout, '');
      assert.match(
        text.stderr,
        /^eventgate: --warnings adds the warnings to --format json's array \(text prints them on stderr without it\): add --format json, or leave --warnings out\nusage: eventgate validate /,
      );
      const explicit = await validate({ 'gateway.yaml': yaml(...loops) }, { format: 'text', warnings: true });
      assert.equal(explicit.code, 2, explicit.stdout + explicit.stderr);
      // --warnings gives CI the warnings too: after the errors, told apart by `severity`, each with
      // what an error has. stderr keeps its lines.
      const json = await validate({ 'gateway.yaml': yaml(...loops) }, { format: 'json', warnings: true });
      assert.equal(json.code, 0);
      const reported = JSON.parse(json.stdout) as { file: string; line: number; column: number; code: string; path: string; message: string; severity: string }[];
      assert.deepEqual(
        reported.map(({ message: _, ...rest }) => rest),
        [
          { file: 'gateway.yaml', line: 18, column: 9, path: 'routes[1].to', code: 'EG_CONFIG_FEEDBACK_LOOP', severity: 'warning' },
          { file: 'gateway.yaml', line: 22, column: 9, path: 'routes[2].to[0]', code: 'EG_CONFIG_FEEDBACK_LOOP', severity: 'warning' },
        ],
      );
      // Each the warning the text line says.
      assert.deepEqual(
        reported.map((w) => `${w.file}:${w.line}:${w.column}: warning: ${w.message} [${w.code}]`),
        warnings.slice(0, 2),
      );
      assert.equal(json.stderr, `${warnings.slice(0, 2).join('\n')}\n`);
      // An invalid config's errors come first, its warnings after them.
      const invalid = await validate(
        { 'gateway.yaml': yaml(...loops, '  - { name: bad, from: { listener: api, path: /bad }, to: { broker: nowhere, topic: t } }') },
        { format: 'json', warnings: true },
      ); // 29
      assert.equal(invalid.code, 1);
      assert.deepEqual(
        (JSON.parse(invalid.stdout) as typeof reported).map((d) => `${d.severity} ${d.line}:${d.column} ${d.code}`),
        ['error 29:69 EG_CONFIG_REF', 'warning 18:9 EG_CONFIG_FEEDBACK_LOOP', 'warning 22:9 EG_CONFIG_FEEDBACK_LOOP'],
      );
    });

    it('does not warn when a route of the loop has a filter', async () => {
      const filtered = loops.map((l) => (l === '    from: { broker: local, topic: t }' ? `${l}\n    through: [{ filter: "$headers.retry != '3'" }]` : l));
      const withPongFiltered = filtered.map((l) => (l === '    from: { broker: local, topic: t2 }' ? `${l}\n    through: [{ filter: 'size > 1' }]` : l));
      const r = await validate({ 'gateway.yaml': yaml(...withPongFiltered) });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, 'ok\n');
      assert.equal(r.stderr, '');
    });

    // A webhook sends only the headers it computes: a tagged message reached it untold (asyncapi.md).
    it('warns at a webhook of a route that tags invalid messages when the webhook does not send the tag', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1', //                                                                                                        1
          'listeners: { api: { kind: http, port: 8080 } }', //                                                                    2
          'brokers: { local: { kind: memory } }', //                                                                               3
          'chains: { tagging: [{ validate: { schema: { type: object, required: [id] }, onInvalid: tag } }] }', //                   4
          'routes:', //                                                                                                            5
          '  - name: untold', //                                                                                                   6
          '    from: { listener: api, path: /a }', //                                                                              7
          '    through: tagging', //                                                                                               8
          '    to: [{ broker: local, topic: t }, { http: { url: "http://127.0.0.1:9/a" } }]', //                                   9
          '  - name: told', //                                                                                                     10
          '    from: { listener: api, path: /b }', //                                                                              11
          '    through: tagging', //                                                                                               12
          '    to: { http: { url: "http://127.0.0.1:9/b", headers: { x-invalid: $headers._asyncapi_eg_validation_error } } }', //  13
          '  - name: refused', //                                                                                                  14
          '    from: { listener: api, path: /c }', //                                                                              15
          '    through: [{ validate: { schema: { type: object, required: [id] } } }]', //                                        16: reject
          '    to: { http: { url: "http://127.0.0.1:9/c" } }', //                                                                  17
        ),
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stdout, 'ok\n');
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        "gateway.yaml:9:47: warning: route 'untold' tags invalid messages (onInvalid: tag), but this webhook sends only the headers it computes, so its endpoint cannot tell them from valid ones: add headers: {_asyncapi_eg_validation_error: $headers._asyncapi_eg_validation_error} [EG_CONFIG_TAG_NOT_SENT]",
      ]);
    });

    // Before, only a topic of the same name counted: a route copying MQTT `#` to `copies` of the
    // same server (mosquitto sends its own output back to it, for ever) was said to be fine.
    it('follows the wildcard filters routes read (MQTT, NATS, AMQP patterns), not a queue whose bindings it does not know', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1', //                                                                                  1
          'brokers:', //                                                                                    2
          '  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //                                           3
          '  nt: { kind: nats, servers: "nats://127.0.0.1:4222" }', //                                       4
          '  rb: { kind: amqp, url: "amqp://127.0.0.1:5672", queues: { q: { declare: false } } }', //         5
          'routes:', //                                                                                     6
          '  - { name: mirror, from: { broker: mq, topic: "#" }, to: { broker: mq, topic: copies } }', //      7
          '  - { name: up, from: { broker: mq, topic: "s/+/in" }, to: { broker: mq, topic: "x/out" } }', //    8
          '  - { name: down, from: { broker: mq, topic: "x/+" }, to: { broker: mq, topic: "s/1/in" } }', //    9
          '  - { name: sys, from: { broker: mq, topic: "$SYS/#" }, to: { broker: mq, topic: "sys/copy" } }', // 10: $SYS/# does not match it
          '  - { name: deeper, from: { broker: nt, topic: "a.>" }, to: { broker: nt, topic: "a.b.c" } }', //   11
          '  - { name: aside, from: { broker: nt, topic: "a.*" }, to: { broker: nt, topic: "b.a" } }', //      12
          '  - { name: keys, from: { broker: rb, topic: "orders.#" }, to: { broker: rb, topic: "orders.eu" } }', // 13
          '  - { name: queue, from: { broker: rb, topic: q }, to: { broker: rb, topic: "k" } }', //            14: q's bindings unknown
        ),
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        "gateway.yaml:7:59: warning: route 'mirror' writes topic 'copies' of broker 'mq', which the topic it reads ('#') matches, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic) [EG_CONFIG_FEEDBACK_LOOP]",
        "gateway.yaml:8:60: warning: routes 'up' ('s/+/in' of broker 'mq' to 'x/out' of broker 'mq'), 'down' ('x/+' of broker 'mq' to 's/1/in' of broker 'mq') feed each other with no filter: every message goes round for ever (add a filter step that ends the loop) [EG_CONFIG_FEEDBACK_LOOP]",
        "gateway.yaml:11:61: warning: route 'deeper' writes topic 'a.b.c' of broker 'nt', which the topic it reads ('a.>') matches, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic) [EG_CONFIG_FEEDBACK_LOOP]",
        "gateway.yaml:13:64: warning: route 'keys' writes topic 'orders.eu' of broker 'rb', which the topic it reads ('orders.#') matches, and has no filter: every message goes round for ever (add a filter step that ends the loop, or write another topic) [EG_CONFIG_FEEDBACK_LOOP]",
      ]);
    });

    // A newcomer writes the wildcards of the broker they know: `plant.*.temperature` on MQTT is one
    // topic of that name to the server, and the route read nothing, with nothing said.
    it("says a topic filter written in another broker kind's wildcard syntax, with the filter in the kind's own", async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1', //                                                                                      1
          'brokers:', //                                                                                        2
          '  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }', //                                               3
          '  nt: { kind: nats, servers: "nats://127.0.0.1:4222" }', //                                           4
          '  rb: { kind: amqp, url: "amqp://127.0.0.1:5672" }', //                                               5
          'listeners:', //                                                                                      6
          '  push: { kind: websocket, port: 0 }', //                                                            7
          'routes:', //                                                                                         8
          '  - { name: m1, from: { broker: mq, topic: "plant.*.temperature" }, to: { listener: push, path: /a } }', // 9
          '  - { name: m2, from: { broker: mq, topic: "plant/*/temperature" }, to: { listener: push, path: /b } }', // 10
          '  - { name: n1, from: { broker: nt, topic: "plant/+/temperature" }, to: { listener: push, path: /c } }', // 11
          '  - { name: n2, from: { broker: nt, topic: "plant.#" }, to: { listener: push, path: /d } }', //             12
          '  - { name: r1, from: { broker: rb, topic: "plant/+/temperature" }, to: { listener: push, path: /e } }', // 13
          '  - { name: r2, from: { broker: rb, topic: "plant.>" }, to: { listener: push, path: /f } }', //             14
          // Each kind's own wildcards, and names that only hold such characters, are left alone.
          '  - { name: ok1, from: { broker: mq, topic: "plant/+/temp.c" }, to: { listener: push, path: /g } }', //    15
          '  - { name: ok2, from: { broker: nt, topic: "plant.*.x/y" }, to: { listener: push, path: /h } }', //       16
          '  - { name: ok3, from: { broker: rb, topic: "plant.#" }, to: { listener: push, path: /i } }', //           17
          '  - { name: ok4, from: { broker: mq, topic: "a*b/c" }, to: { listener: push, path: /j } }', //             18
        ),
      });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const warning = (at: string, route: string, filter: string, kind: string, name: string, syntax: string, meant: string) =>
        `gateway.yaml:${at}: warning: route '${route}': '${filter}' is written in another broker's wildcard syntax: ${kind} reads it as the one ${name} of that name, and nothing else; its wildcards are ${syntax} (did you mean '${meant}'?) [EG_CONFIG_SUSPICIOUS_TOPIC]`;
      const mqtt = "'+' (one level) and '#' (every level below), between '/'";
      const nats = "'*' (one level) and '>' (every level below), between '.'";
      const amqp = "'*' (one level) and '#' (every level below), between '.'";
      assert.deepEqual(r.stderr.trimEnd().split('\n'), [
        warning('9:44', 'm1', 'plant.*.temperature', 'MQTT', 'topic', mqtt, 'plant/+/temperature'),
        warning('10:44', 'm2', 'plant/*/temperature', 'MQTT', 'topic', mqtt, 'plant/+/temperature'),
        warning('11:44', 'n1', 'plant/+/temperature', 'NATS', 'subject', nats, 'plant.*.temperature'),
        warning('12:44', 'n2', 'plant.#', 'NATS', 'subject', nats, 'plant.>'),
        warning('13:44', 'r1', 'plant/+/temperature', 'AMQP', 'routing key', amqp, 'plant.*.temperature'),
        warning('14:44', 'r2', 'plant.>', 'AMQP', 'routing key', amqp, 'plant.#'),
      ]);
      // Only a topic exchange has wildcards: a direct exchange takes `plant/+/temperature` as the key it is
      // (`plant.*.temperature` would be one key too), and a fanout exchange's route gets every message.
      const exchanges = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  di: { kind: amqp, url: "amqp://127.0.0.1:5672", exchange: { name: keyed, type: direct } }',
          '  fo: { kind: amqp, url: "amqp://127.0.0.1:5672", exchange: { name: all, type: fanout } }',
          'listeners:',
          '  push: { kind: websocket, port: 0 }',
          'routes:',
          '  - { name: d, from: { broker: di, topic: "plant/+/temperature" }, to: { listener: push, path: /d } }',
          '  - { name: f, from: { broker: fo, topic: "plant/+/temperature" }, to: { listener: push, path: /f } }',
        ),
      });
      assert.equal(exchanges.code, 0, exchanges.stdout + exchanges.stderr);
      assert.deepEqual(exchanges.stderr.trimEnd().split('\n'), [
        "gateway.yaml:9:43: warning: route 'f': gets every message published to exchange 'all', not only those with routing key 'plant/+/temperature': exchange 'all' is a fanout exchange, which routes every message to every queue bound to it whatever the routing key (filter on $topic, or use a topic or direct exchange) [EG_CONFIG_SUSPICIOUS_TOPIC]",
      ]);
      // MQTT refuses `plant.#` (its `#` is a whole level): the error names the filter meant.
      const refused = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  mq: { kind: mqtt, url: "mqtt://127.0.0.1:1883" }',
          '  nt: { kind: nats, servers: "nats://127.0.0.1:4222" }',
          'routes:',
          '  - { name: m, from: { broker: mq, topic: "plant.#" }, to: { broker: mq, topic: out } }',
          // So does NATS `plant/*/temperature` (its `*` is a whole token).
          '  - { name: n, from: { broker: nt, topic: "plant/*/temperature" }, to: { broker: nt, topic: out } }',
        ),
      });
      assertProblems(refused, [
        ['gateway.yaml:6:43', /^'plant\.#' cannot be a topic of mqtt broker 'mq': '#' must be a whole level, and the last one \(MQTT's levels are separated by '\/': did you mean 'plant\/#'\?\)$/],
        [
          'gateway.yaml:7:43',
          /^'plant\/\*\/temperature' cannot be a topic of nats broker 'nt': a NATS subject is .* \(NATS's levels are separated by '\.': did you mean 'plant\.\*\.temperature'\?\)$/,
        ],
      ]);
    });

    // `from` and `to` swapped (the broker as source, the publish path as target) left a newcomer
    // with "no route writes to topic" and no word of the likelier cause.
    it('says from and to look swapped when a route forwards a memory topic nothing writes to a path', async () => {
      const r = await validate({
        'gateway.yaml': yaml(...base, 'routes:', '  - name: light-in', '    from: { broker: local, topic: light }', '    to: { listener: api, path: /light }'),
      });
      assertProblems(r, [
        [
          'gateway.yaml:14:35',
          /^route 'light-in' can never receive a message: .*no route writes to topic 'light'; if clients are meant to send to \/light, from and to are swapped: write from: \{listener: api, path: \/light\} and to: \{broker: local, topic: light\}$/,
        ],
      ]);
    });

    // Routes that each write the others' topics hold n! loops: the search took 10 s for nine, the
    // compile of a validate or a reload with it, and warned of every one (hundreds).
    it('stops looking after 20 loops among routes that feed each other densely, and says so', async () => {
      const routes = Array.from({ length: 8 }, (_, i) => [
        `  - name: r${i}`,
        `    from: { broker: local, topic: t${i} }`,
        `    to: [${Array.from({ length: 8 }, (_, j) => j)
          .filter((j) => j !== i)
          .map((j) => `{ broker: local, topic: t${j} }`)
          .join(', ')}]`,
      ]).flat();
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'brokers:', '  local: { kind: memory }', 'routes:', ...routes) });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const warnings = r.stderr.trimEnd().split('\n');
      assert.equal(warnings.length, 20, r.stderr.slice(0, 2000));
      assert.ok(
        warnings.every((w) => w.includes('feed each other with no filter')),
        r.stderr.slice(0, 2000),
      );
      assert.match(warnings[19]!, /; the search for loops stopped here: the routes feed each other in too many ways to list them all, so look for more among them \[EG_CONFIG_FEEDBACK_LOOP\]$/);
    });
  });

  describe('environment variables', () => {
    it('points at an undefined ${VAR}, naming it, and reports nothing else about that value', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  local:',
          '    kind: memory',
          '    retain: ${RETAIN}',
          'listeners:',
          '  api:',
          '    kind: http',
          '    port: 0',
          '    host: "127.0.${SUBNET}.1"',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:5:13', /environment variable 'RETAIN' is not set and has no default/],
        ['gateway.yaml:10:18', /environment variable 'SUBNET' is not set and has no default/],
      ]);
    });

    it('uses the default of ${VAR:-default} when the variable is not set', async () => {
      const files = { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: ${PORT:-8080}', '    host: ${HOST:-127.0.0.1}') };
      const r = await validate(files);
      assert.equal(r.code, 0, r.stdout);
      assert.equal(r.stdout, 'ok\n');
    });

    it('reads nested defaults, and points at a reference it cannot read instead of keeping it as text', async () => {
      const nested = { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: ${PORT:-${FALLBACK_PORT:-8080}}', '    host: ${HOST:-${BIND:-127.0.0.1}}') };
      const ok = await validate(nested, { env: { FALLBACK_PORT: '9090' } });
      assert.equal(ok.code, 0, ok.stdout);
      assert.equal(ok.stdout, 'ok\n');
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: 8080', '    host: "${HOST"') });
      assertProblems(r, [['gateway.yaml:6:12', /'\$\{HOST' is not closed: a reference ends with \}/]]);
    });

    it('gives `port: ${PORT}` the type of the value: a number', async () => {
      const files = { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: ${PORT}') };
      assert.equal((await validate(files, { env: { PORT: '8080' } })).code, 0);
      assertProblems(await validate(files, { env: { PORT: 'http' } }), [['gateway.yaml:5:11', /listeners\.api\.port must be an integer, got string "http"/]]);
    });

    it('explains that an unquoted ${VAR} cannot sit inside a flow map', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api: { kind: http, port: ${PORT} }') }, { env: { PORT: '8080' } });
      assertProblems(r, [['gateway.yaml:3:29', /YAML syntax error: .*\(an unquoted \$\{VAR\} cannot appear inside \{ \} or \[ \]: quote it, or write that map in block style/]]);
    });

    it('reports that mistake once, not every line the parser could not read after it', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(
            'version: 1',
            'listeners:',
            '  api: { kind: http, port: ${PORT} }',
            'brokers:',
            '  local: { kind: memory }',
            'routes:',
            '  - { name: r, from: { listener: api, path: /p }, to: { broker: local, topic: t } }',
          ),
        },
        { env: { PORT: '8080' } },
      );
      assertProblems(r, [['gateway.yaml:3:29', /YAML syntax error: .*\(an unquoted \$\{VAR\} cannot appear inside \{ \} or \[ \]/]]);
    });

    it('keeps a quoted "${PORT}" a string', async () => {
      const files = { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: "${PORT}"') };
      assertProblems(await validate(files, { env: { PORT: '8080' } }), [['gateway.yaml:5:11', /listeners\.api\.port must be an integer, got string "8080"/]]);
    });

    it('says why a quoted "${VAR}" is a string, and how to write it, also in a flow map and with a default', async () => {
      const files = { 'gateway.yaml': yaml('version: 1', 'brokers: { local: { kind: memory, retain: "${RETAIN:-10}" } }', 'listeners:', '  api:', '    kind: http', "    port: '${PORT}'") };
      const hint = "quoted, a \\$\\{VAR\\} stays a string whatever its value: write it unquoted, in block style, to take the value's type\\)$";
      assertProblems(await validate(files, { env: { PORT: '8080' } }), [
        // RETAIN is not set: the value is the file's own default, and no variable is named.
        ['gateway.yaml:2:43', new RegExp(`got string "10" \\(${hint}`)],
        ['gateway.yaml:6:11', new RegExp(`got string "8080" \\(from \\$\\{PORT\\}; ${hint}`)],
      ]);
      // A string that merely contains a variable gets no such hint.
      const partial = { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: "80${PORT}"') };
      const r = await validate(partial, { env: { PORT: '80' } });
      assert.equal(r.code, 1);
      assert.doesNotMatch(r.stdout, /quoted/);
    });
    it('names the variable a number, port, boolean or enum value that is wrong came from, at its reference (4713)', async () => {
      const files = {
        'gateway.yaml': yaml(
          'version: 1', //                                      1
          'brokers:', //                                        2
          '  m:', //                                            3
          '    kind: mqtt', //                                  4
          '    url: mqtt://127.0.0.1:1883', //                  5
          '    qos: ${QOS}', //                                 6
          'listeners:', //                                      7
          '  api:', //                                          8
          '    kind: http', //                                  9
          '    port: ${HTTP_PORT:-8080}', //                   10
          '    http2: ${H2}', //                               11
          '    maxBodyBytes: ${BODY_KB}${BODY_UNIT}', //       12: two variables in one value
          '  ws:', //                                          13
          '    kind: websocket', //                            14
          '    port: ${WS_PORT:-${PORT_FALLBACK}}', //         15: the default's variable gave it
          '  other:', //                                       16
          '    kind: http', //                                 17
          '    port: ${OTHER_PORT:-80y}', //                   18: the file's own default: no variable to name
          '  empty:', //                                       19
          '    kind: http', //                                 20
          '    port: ${EMPTY_PORT}', //                        21: set empty (5016: was not named)
        ),
      };
      const r = await validate(files, { env: { QOS: '3', HTTP_PORT: '80x', H2: 'yes', BODY_KB: '64', BODY_UNIT: 'k', PORT_FALLBACK: '99999', EMPTY_PORT: '' } });
      assertProblems(r, [
        ['gateway.yaml:6:10', /^brokers\.m\.qos must be one of 0, 1, 2, got number 3 \(from \$\{QOS\}\)$/],
        ['gateway.yaml:10:11', /^listeners\.api\.port must be an integer, got string "80x" \(from \$\{HTTP_PORT\}\)$/],
        ['gateway.yaml:11:12', /^listeners\.api\.http2 must be true or false, got string "yes" \(from \$\{H2\}\)$/],
        ['gateway.yaml:12:19', /^listeners\.api\.maxBodyBytes must be an integer, got string "64k" \(from \$\{BODY_KB\} and \$\{BODY_UNIT\}\)$/],
        ['gateway.yaml:15:11', /^listeners\.ws\.port must be <= 65535 \(from \$\{PORT_FALLBACK\}\)$/],
        ['gateway.yaml:18:11', /^listeners\.other\.port must be an integer, got string "80y"$/],
        ['gateway.yaml:21:11', /^listeners\.empty\.port must be an integer, got string "" \(from \$\{EMPTY_PORT\}\)$/],
      ]);
    });
    it('says how to keep an unquoted ${VAR} of digits a string, and never prints a password it typed as a number', async () => {
      const files = {
        'gateway.yaml': yaml(
          'version: 1', //                                   1
          'brokers:', //                                     2
          '  k:', //                                         3
          '    kind: kafka', //                              4
          '    brokers: [ "127.0.0.1:9092" ]', //            5
          '    clientId: ${CLIENT_ID}', //                   6
          '    sasl:', //                                    7
          '      mechanism: plain', //                       8
          '      username: app', //                          9
          '      password: ${KAFKA_PASSWORD}', //           10
          'listeners:', //                                  11
          '  api:', //                                      12
          '    kind: http', //                              13
          '    port: 0', //                                 14
          'routes:', //                                     15
          '  - name: r', //                                 16
          '    from: { listener: api, path: /p }', //       17
          '    to:', //                                     18
          '      broker: k', //                             19
          '      topic: ${TOPIC:-2024}', //                 20
        ),
      };
      const r = await validate(files, { env: { CLIENT_ID: '1', KAFKA_PASSWORD: '918273645' } });
      assertProblems(r, [
        [
          'gateway.yaml:6:15',
          /^brokers\.k\.clientId must be a string, got number 1 \(an unquoted \$\{CLIENT_ID\} takes the type of its value: write it quoted, "\$\{CLIENT_ID\}", to keep it a string\)$/,
        ],
        [
          'gateway.yaml:10:17',
          /^brokers\.k\.sasl\.password must be a string, got a number \(an unquoted \$\{KAFKA_PASSWORD\} takes the type of its value: write it quoted, "\$\{KAFKA_PASSWORD\}", to keep it a string\)$/,
        ],
        [
          'gateway.yaml:20:14',
          /^routes\[0\]\.to\.topic has the wrong shape \(number 2024\).*\(an unquoted \$\{TOPIC:-2024\} takes the type of its value: write it quoted, "\$\{TOPIC:-2024\}", to keep it a string\)$/,
        ],
      ]);
      assert.doesNotMatch(r.stdout, /918273645/);
    });
    it('points at an admin token that no Authorization header could carry (a line break from a secret file), without quoting it, and warns of a short one', async () => {
      const files = { 'gateway.yaml': yaml('version: 1', 'admin:', '  port: 0', '  token: ${ADMIN_TOKEN}') };
      const rule = /^admin\.token: a token must not start or end with whitespace or hold a control character \(a line break from a secret file\?\): it could never be sent in an Authorization header$/;
      for (const token of ['s3cret-admin-token\n', ' s3cret-admin-token', 's3cret\u0007admin-token']) {
        const r = await validate(files, { env: { ADMIN_TOKEN: token } });
        assertProblems(r, [['gateway.yaml:4:10', rule]]);
        assert.doesNotMatch(r.stdout, /s3cret/);
      }
      // Written in the file, too; a space inside the token is sendable and allowed.
      assertProblems(await validate({ 'gateway.yaml': yaml('version: 1', 'admin:', '  port: 0', '  token: "tab\\tinside-token"') }), [['gateway.yaml:4:10', rule]]);
      assert.equal((await validate(files, { env: { ADMIN_TOKEN: 's3cret admin-token' } })).code, 0);
      // A token of digits, unquoted, is a number: told so (it was told of whitespace it does not have), not quoted.
      const digits = await validate(files, { env: { ADMIN_TOKEN: '918273645918273645' } });
      assertProblems(digits, [
        ['gateway.yaml:4:10', /^admin\.token must be a string, got a number \(an unquoted \$\{ADMIN_TOKEN\} takes the type of its value: write it quoted, "\$\{ADMIN_TOKEN\}", to keep it a string\)$/],
      ]);
      assert.doesNotMatch(digits.stdout + digits.stderr, /918273645/);
      // Shorter than 16 characters: valid (the contract sets no length), with a warning naming the length, never the token.
      const short = await validate(files, { env: { ADMIN_TOKEN: 'Zq7' } });
      assert.equal(short.code, 0, short.stdout + short.stderr);
      assert.equal(short.stdout, 'ok\n');
      assert.equal(
        short.stderr,
        'gateway.yaml:4:10: warning: admin.token is 3 characters long; a token shorter than 16 characters can be guessed by whoever reaches the admin port from enough addresses (each may try 10 a minute): use a random one of 32 or more, e.g. from `openssl rand -hex 32` [EG_CONFIG_WEAK_TOKEN]\n',
      );
    });
  });

  describe('files, names and paths', () => {
    // Every file is read whole on the gateway's thread: a device never ends, a named pipe nobody
    // writes never answers (an include of one held validate for good), and a huge file took tens of seconds and gigabytes.
    it('refuses a referenced file that is a device, a named pipe or larger than 16 MiB, at the line naming it, without reading it', async () => {
      const dir = tempFiles({
        'schemas/huge.json': `{"type": "object", "description": "${'x'.repeat(16 * 1024 * 1024)}"}`,
        'gateway.yaml': yaml(...base, 'include: [teams/pipe.yaml]', 'chains:', '  main:', '    - validate: { schema: schemas/huge.json }', '    - auth: { jwt: { jwksFile: /dev/zero } }'),
      });
      mkdirSync(join(dir, 'teams'));
      execFileSync('mkfifo', [join(dir, 'teams/pipe.yaml')]);
      const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
      assertProblems({ ...r, lines: r.stdout.split('\n').filter((l) => l !== '') }, [
        ['gateway.yaml:12:11', /^cannot read included file '.*teams\/pipe\.yaml': 'pipe\.yaml' is not a regular file \(a named pipe: reading it could block or never end\)$/],
        ['gateway.yaml:15:27', /^cannot read 'schemas\/huge\.json' \(.*\): 'huge\.json' has 16777253 bytes; at most 16777216 are accepted$/],
        ['gateway.yaml:16:32', /^cannot read '\/dev\/zero' \(\/dev\/zero\): 'zero' is not a regular file \(a device: reading it could block or never end\)$/],
      ]);
      // A named pipe is let through for -c and --vars-file (`-c <(envsubst < gateway.yaml)`), held to the
      // same bound: read to one byte past it and refused (before: read whole, however long).
      const big = join(dir, 'big.yaml');
      for (const args of [
        ['-c', 'big.yaml'],
        ['-c', 'gateway.yaml', '--vars-file', 'big.yaml'],
      ]) {
        execFileSync('mkfifo', [big]);
        const writer = spawn('sh', ['-c', `yes '# a comment line' | head -c ${17 * 1024 * 1024} > big.yaml`], { cwd: dir, stdio: 'ignore' });
        const piped = await runCliInProcess(['validate', ...args], { cwd: dir });
        await once(writer, 'close');
        rmSync(big);
        assert.equal(piped.code, 1, piped.stdout + piped.stderr);
        assert.match(piped.stdout + piped.stderr, /'big\.yaml' has more than 16777216 bytes; at most 16777216 are accepted/);
      }
    });

    it('points at a referenced file that does not exist', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:',
          '  main:',
          '    - validate:',
          '        schema: schemas/missing.json',
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    through: main',
          '    to: { broker: local, topic: t }',
        ),
      });
      assertProblems(r, [['gateway.yaml:15:17', /cannot read 'schemas\/missing\.json' .*no such file \(ENOENT\)$/]]);
      // A typo of a file that is there is told its name.
      const typo = await validate({
        'schemas/light.json': '{"type": "object"}',
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate:', '        schema: schemas/ligth.json'),
      });
      assertProblems(typo, [['gateway.yaml:15:17', /cannot read 'schemas\/ligth\.json' .*no such file \(ENOENT\) \(did you mean 'schemas\/light\.json'\?\)$/]]);
      // A directory of a near name is not one (before: "did you mean 'schemas/orders'?", which cannot be read).
      const nearDirectory = await validate({
        'schemas/orders/line.json': '{"type": "object"}',
        'gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate:', '        schema: schemas/order'),
      });
      assertProblems(nearDirectory, [['gateway.yaml:15:17', /cannot read 'schemas\/order' .*no such file \(ENOENT\)$/]]);
      // A path written from the directory eventgate runs in, not from the config's: told the path from there.
      const dir = tempFiles({
        'conf/schemas/light.json': '{"type": "object"}',
        'conf/gateway.yaml': yaml(...base, 'chains:', '  main:', '    - validate:', '        schema: conf/schemas/light.json'),
      });
      const fromCwd = await runCliInProcess(['validate', '-c', 'conf/gateway.yaml'], { cwd: dir });
      assert.equal(fromCwd.code, 1, fromCwd.stdout + fromCwd.stderr);
      assert.match(
        fromCwd.stdout,
        /^conf\/gateway\.yaml:15:17: cannot read 'conf\/schemas\/light\.json' .*no such file \(ENOENT\) \(paths are relative to the config file's directory, not to the working directory: did you mean 'schemas\/light\.json'\?\)\n$/,
      );
    });

    it('says a route path must start with "/", in words rather than as a pattern', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: in }',
          '    to: { broker: local, topic: t }',
          '  - name: out',
          '    from: { broker: local, topic: t }',
          '    to: { listener: push, path: ws/out }',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:14:34', /routes\[0\]\.from\.path must be a path starting with "\/", got string "in"$/],
        ['gateway.yaml:18:33', /routes\[1\]\.to\.path must be a path starting with "\/", got string "ws\/out"$/],
      ]);
    });

    it('points at the second use of a route name and at the first', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /a }',
          '    to: { broker: local, topic: t }',
          '  - name: in',
          '    from: { listener: api, path: /b }',
          '    to: { broker: local, topic: t }',
          '  - name: in',
          '    from: { listener: api, path: /a }',
          '    to: { broker: nope, topic: t }',
        ),
      });
      // A repeat's own problems are said in the same pass (1913), but not the path it shares with
      // the first: a copy renamed is often given its own path too.
      assertProblems(r, [
        ['gateway.yaml:16:11', /route name 'in' is already used by the route at line 13; route names must be unique/],
        ['gateway.yaml:19:11', /route name 'in' is already used by the route at line 13; route names must be unique/],
        ['gateway.yaml:21:19', /broker 'nope' is not defined; defined brokers: local/],
      ]);
    });

    // A route left out for a schema error of its own still holds its name: the later route of that
    // name is said in the same pass, not once the first is fixed (spec-checklist 2124).
    it('points at the second use of a route name whose first use has a schema error', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /a }',
          '    to: { broker: local, topic: t }',
          '    retries: many',
          '  - name: in',
          '    from: { listener: api, path: /b }',
          '    to: { broker: local, topic: t }',
          '  - name: in',
          '    from: { listener: api, path: /c }',
          '    to: { broker: local, topic: t }',
          '    retries: 3',
        ),
      });
      // The third, left out too, is said as a repeat as well.
      assertProblems(r, [
        ['gateway.yaml:16:5', /unknown key 'retries' in routes\[0\]/],
        ['gateway.yaml:17:11', /route name 'in' is already used by the route at line 13; route names must be unique/],
        ['gateway.yaml:20:11', /route name 'in' is already used by the route at line 13; route names must be unique/],
        ['gateway.yaml:23:5', /unknown key 'retries' in routes\[2\]/],
      ]);
    });

    it('points at a second route on the same listener path', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: a',
          '    from: { listener: api, path: /in }',
          '    to: { broker: local, topic: t }',
          '  - name: b',
          '    from: { listener: api, path: /in }',
          '    to: { broker: local, topic: u }',
        ),
      });
      assertProblems(r, [['gateway.yaml:17:34', /listener 'api' path '\/in' is already the source of route 'a'/]]);
    });

    // Regression: the compiler compared paths as strings, so two parameter paths passed validation
    // and the HTTP router then refused the second at start-up ("Method 'POST' already declared").
    it('points at a route whose path matches the same requests as another (/rooms/:room and /rooms/:id)', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: a',
          '    from: { listener: api, path: /rooms/:room }',
          '    to: { broker: local, topic: t }',
          '  - name: b',
          '    from: { listener: api, path: /rooms/:id }',
          '    to: { broker: local, topic: u }',
        ),
      });
      assertProblems(r, [['gateway.yaml:17:34', /listener 'api' path '\/rooms\/:id' is already the source of route 'a' \('\/rooms\/:room' matches the same requests\)/]]);
    });

    // The paths of a listener are checked against all earlier ones at once (one router for the
    // listener, not one per pair): the route named is still the one whose path claims the requests.
    it('names the earlier route whose path matches, among many paths of the listener', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: users',
          '    from: { listener: api, path: /users/:user }',
          '    to: { broker: local, topic: t }',
          '  - name: rooms',
          '    from: { listener: api, path: /rooms }',
          '    to: { broker: local, topic: t }',
          '  - name: room',
          '    from: { listener: api, path: /rooms/:room }',
          '    to: { broker: local, topic: t }',
          '  - name: messages',
          '    from: { listener: api, path: /rooms/:room/messages }',
          '    to: { broker: local, topic: t }',
          '  - name: members',
          '    from: { listener: api, path: /rooms/:id/members }',
          '    to: { broker: local, topic: t }',
          '  - name: again',
          '    from: { listener: api, path: /rooms/:id }',
          '    to: { broker: local, topic: u }',
        ),
      });
      assertProblems(r, [['gateway.yaml:29:34', /listener 'api' path '\/rooms\/:id' is already the source of route 'room' \('\/rooms\/:room' matches the same requests\)/]]);
    });

    // The websocket listener routes parameter paths as the http listener does: the same check, or
    // `eventgate run` failed at start-up with the router's "Method 'GET' already declared".
    it('points at a websocket route whose path matches the same requests as another', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:',
          '  - name: a',
          '    from: { listener: push, path: /rooms/:room }',
          '    to: { broker: local, topic: t }',
          '  - name: b',
          '    from: { listener: push, path: /rooms/:id }',
          '    to: { broker: local, topic: u }',
        ),
      });
      assertProblems(r, [['gateway.yaml:17:35', /listener 'push' path '\/rooms\/:id' is already the source of route 'a' \('\/rooms\/:room' matches the same requests\)/]]);
    });

    // `/in/{id}` (as AsyncAPI, OpenAPI and KrakenD write parameters) was a literal path: validate
    // said ok and every POST /in/42 was a 404; the same in a forward target's path.
    it('points at a path parameter written {id} in a route source and a forward target, and says how to write it', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'routes:', //                                             12
          '  - name: a', //                                         13
          '    from: { listener: api, path: "/in/{id}" }', //      14
          '    to: { broker: local, topic: t }', //                15
          '  - name: b', //                                         16
          '    from: { broker: local, topic: t }', //              17
          '    to: { listener: push, path: "/rooms/{room}/x" }', // 18
          // Braces in a parameter's regular expression are no parameter.
          '  - name: c',
          '    from: { listener: api, path: "/n/:id(^\\\\d{3}$)" }',
          '    to: { broker: local, topic: t }',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:14:34', /^route 'a': path '\/in\/\{id\}' cannot be routed: a path parameter is written ':id' here, not '\{id\}' \('\/in\/:id'\)$/],
        ['gateway.yaml:18:33', /^path '\/rooms\/\{room\}\/x' cannot be routed: a path parameter is written ':room' here, not '\{room\}' \('\/rooms\/:room\/x'\)$/],
      ]);
    });

    // Kafka's `ssl` and the other brokers' `tls` are read by one function: both report alike, each under its own key.
    it('points at a TLS file that cannot be read and at a client certificate without its key, for kafka ssl and mqtt tls', async () => {
      const r = await validate({
        'cert.pem': 'not really a certificate\n',
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  k:',
          '    kind: kafka',
          '    brokers: [ "127.0.0.1:9092" ]',
          '    ssl: { ca: missing-ca.pem, cert: cert.pem }', // 6
          '  m:',
          '    kind: mqtt',
          '    url: mqtts://127.0.0.1:8883',
          '    tls: { cert: cert.pem }', // 10
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:6:16', /cannot read 'missing-ca\.pem' .*no such file/],
        ['gateway.yaml:10:10', /a client certificate needs both 'cert' and 'key'/],
      ]);
    });
  });

  describe('kinds', () => {
    it('points at an unknown step kind in a chain and inline, with a did-you-mean', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:',
          '  main:',
          '    - filtre: a > 1',
          'routes:',
          '  - name: in',
          '    from: { listener: api, path: /in }',
          '    through: [main, { tranform: a }]',
          '    to: { broker: local, topic: t }',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:14:7', /unknown step 'filtre' \(did you mean 'filter'\?\); expected one of: validate, filter, transform, headers/],
        ['gateway.yaml:18:23', /unknown step 'tranform' \(did you mean 'transform'\?\)/],
      ]);
    });

    it('explains a step with no key and a step with two', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'chains:', '  main:', '    - {}', '    - filter: a', '      transform: b') });
      assertProblems(r, [
        ['gateway.yaml:4:7', /chains\.main\[0\] is an empty step; a step is a map with one key, the step kind/],
        ['gateway.yaml:5:7', /chains\.main\[1\] has 2 keys \(filter, transform\); a step has exactly one/],
      ]);
    });

    it('points at an unknown broker kind, a misspelt kind key and an unknown listener kind', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          'version: 1',
          'brokers:',
          '  local:',
          '    kind: memroy',
          '  other:',
          '    knd: memory',
          'listeners:',
          '  push:',
          '    kind: websockets',
          '    port: 0',
          '  api:',
          '    port: 0',
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:4:11', /unknown broker kind "memroy" \(did you mean 'memory'\?\); known kinds: memory/],
        // A misspelt `kind` is named where it is written, not reported as a missing key at its map.
        ['gateway.yaml:6:5', /unknown key 'knd' in brokers\.other \(did you mean 'kind'\?\); a broker needs 'kind' \(one of: memory/],
        ['gateway.yaml:9:11', /unknown listener kind "websockets" \(did you mean 'websocket'\?\); known kinds: http, websocket, kafka/],
        ['gateway.yaml:11:3', /listeners\.api is missing required key 'kind' \(one of: http, websocket, kafka\)/],
      ]);
    });
  });

  describe('output', () => {
    it('reports every problem of the file at once, in file order', async () => {
      const r = await validate(
        { 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    port: -1', 'rotues: []', 'chains: { main: [ { filter: "a >" } ] }') },
        { process: true },
      );
      assert.equal(r.code, 1);
      assert.deepEqual(
        r.lines.map((l) => l.split(': ')[0]),
        ['gateway.yaml:5:11', 'gateway.yaml:6:1', 'gateway.yaml:7:32'],
      );
    });

    it('reports the other steps of a chain or a route beside an unknown step, and no route as unreachable because of them', async () => {
      const r = await validate({
        'gateway.yaml': yaml(
          ...base,
          'chains:', //                                                      12
          '  main:', //                                                      13
          '    - filtr: a > 1', //                                          14: unknown step
          '    - transform: "{"', //                                        15: col 19
          'routes:', //                                                      16
          '  - name: in', //                                                 17
          '    from: { listener: api, path: /in }', //                       18
          '    through: [main, { bogus: 1 }, { filter: "]" }]', //           19: cols 23 and 46
          '    to: { broker: local, topic: t, key: "(" }', //                20: col 42
          '  - name: out', //                                                21
          '    from: { broker: local, topic: t }', //                        22: route 'in' writes t
          '    to: { listener: push, path: /ws }', //                        23
        ),
      });
      assertProblems(r, [
        ['gateway.yaml:14:7', /unknown step 'filtr' \(did you mean 'filter'\?\)/],
        ['gateway.yaml:15:19', /JSONata expression does not compile/],
        ['gateway.yaml:19:23', /unknown step 'bogus'/],
        ['gateway.yaml:19:46', /JSONata expression does not compile/],
        ['gateway.yaml:20:42', /JSONata expression does not compile/],
      ]);
    });

    it('prints one line per problem when what it quotes holds a line break, escaped (spec §1)', async () => {
      const r = await validate(
        {
          'gateway.yaml': yaml(
            'version: 1', //                                               1
            'include: ["frag\\nment.yaml"]', //                            2
            '"bro\\u2028kers": {}', //                                     3
            'brokers:', //                                                 4
            '  "me\\nm": { kind: memory }', //                             5
            'listeners:', //                                               6
            '  api: { kind: http, port: 0 }', //                           7
            'routes:', //                                                  8
            '  - name: r', //                                              9
            '    from: { listener: api, path: /r }', //                    10
            '    through: "c\\rd"', //                                     11
            '    to: { broker: mem, topic: t }', //                        12
          ),
        },
        { process: true },
      );
      // Before: the broker's and the chain's names, the include and the key broke their lines in
      // two, nine lines for four problems.
      assertProblems(r, [
        ['gateway.yaml:2:11', /^cannot read included file 'frag\\u000ament\.yaml': no such file \(ENOENT\)$/],
        ['gateway.yaml:3:1', /^unknown key 'bro\\u2028kers' in the config \(did you mean 'brokers'\?\)/],
        ['gateway.yaml:11:14', /^chain 'c\\u000dd' is not defined/],
        ['gateway.yaml:12:19', /^broker 'mem' is not defined \(did you mean 'me\\u000am'\?\); defined brokers: me\\u000am$/],
      ]);
      // The JSON format keeps the message as it is: JSON escapes it itself.
      const json = await validate({ 'gateway.yaml': yaml('version: 1', '"a\\nb": 1') }, { format: 'json' });
      assert.match(JSON.parse(json.stdout)[0].message, /^unknown key 'a\nb' in the config/);
    });

    it('prints a JSON array of {file,line,column,message,path} with --format json and exits 1', async () => {
      const r = await validate({ 'gateway.yaml': yaml('version: 1', 'listeners:', '  api:', '    kind: http', '    prot: 8080') }, { format: 'json', process: true });
      assert.equal(r.code, 1);
      const problems = JSON.parse(r.stdout) as Record<string, unknown>[];
      assert.equal(problems.length, 1);
      const { file, line, column, message, path } = problems[0]!;
      assert.deepEqual({ file, line, column, path }, { file: 'gateway.yaml', line: 5, column: 5, path: 'listeners.api.prot' });
      assert.match(String(message), /unknown key 'prot'/);
      assert.equal(problems[0]!.code, 'EG_CONFIG_UNKNOWN_KEY');
    });

    it('reports a config file that does not exist as a problem, without a stack trace', async () => {
      const dir = tempFiles({});
      const r = await runCli(['validate', '-c', 'nope.yaml'], { cwd: dir });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, 'nope.yaml:1:1: cannot read config file: no such file (ENOENT)\n');
      const json = await runCli(['validate', '-c', 'nope.yaml', '--format', 'json'], { cwd: dir });
      assert.equal(json.code, 1);
      assert.equal(JSON.parse(json.stdout)[0].message, 'cannot read config file: no such file (ENOENT)');
    });

    it('reports a directory given as the config file, without a stack trace', async () => {
      const dir = tempFiles({ 'conf/x': '' });
      const r = await runCli(['validate', '-c', 'conf'], { cwd: dir });
      assert.equal(r.code, 1);
      assert.equal(r.stdout, 'conf:1:1: cannot read config file: it is a directory (EISDIR)\n');
      assert.equal(r.stderr, '');
    });
  });
});
