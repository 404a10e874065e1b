import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { runCliInProcess } from '../helpers/cli.js';
import { runCli, tempFiles, useGateway } from '../helpers/gateway.js';

const yaml = (...lines: string[]) => `${lines.join('\n')}\n`;

const root = yaml(
  'version: 1',
  'admin: { port: 0 }',
  'include:',
  '  - shared.yaml',
  '  - teams/*.yaml',
  'listeners: { api: { kind: http, port: 0 } }',
  'routes:',
  '  - name: root-route',
  '    from: { listener: api, path: /root }',
  '    to: { broker: local, topic: t }',
);
const shared = yaml('brokers:', '  local: { kind: memory }');
const teamA = (filter: string) =>
  yaml(
    'chains:', //                        1
    '  a-chain:', //                     2
    `    - filter: '${filter}'`, //      3
    'routes:', //                        4
    '  - name: a-in', //                 5
    '    from: { listener: api, path: /a }',
    '    through: a-chain',
    '    to: { broker: local, topic: t }',
  );

describe('include: config fragments', () => {
  const gw = useGateway();

  it('merges fragments, and points each problem into the file it is in, naming both places of a name defined twice', async () => {
    const teamB = yaml(
      'brokers:', //                                   1
      '  local: { kind: memory }', //                  2  defined in shared.yaml too
      'routes:', //                                    3
      '  - name: b-in', //                             4
      '    from: { listener: api, path: /b }', //      5
      "    through: [ { filter: 'y >' } ]", //         6
      '    to: { broker: nope, topic: t }', //         7
      '  - name: a-in', //                             8  defined in teams/a.yaml too
      '    from: { listener: api, path: /a2 }',
      '    to: { broker: local, topic: t }',
    );
    const dir = tempFiles({ 'gateway.yaml': root, 'shared.yaml': shared, 'teams/a.yaml': teamA('x > 1'), 'teams/b.yaml': teamB });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "teams/b.yaml:2:3: broker 'local' is defined twice: here and in shared.yaml:2",
      'teams/b.yaml:6:29: JSONata expression does not compile: Unexpected end of expression',
      "teams/b.yaml:7:19: broker 'nope' is not defined; defined brokers: local",
      "teams/b.yaml:8:11: route name 'a-in' is already used by the route at teams/a.yaml:5; route names must be unique",
    ]);
    // As JSON, each problem's path is the one in its own file (teams/b.yaml's routes[1], not the merged list's routes[3]).
    const json = await runCli(['validate', '-c', 'gateway.yaml', '--format', 'json'], { cwd: dir });
    assert.deepEqual(
      (JSON.parse(json.stdout) as { file: string; path: string }[]).map((d) => `${d.file} ${d.path}`),
      ['teams/b.yaml brokers.local', 'teams/b.yaml routes[0].through[0].filter', 'teams/b.yaml routes[0].to.broker', 'teams/b.yaml routes[1].name'],
    );
    // A schema problem in a fragment's route names the route as written there, with its index in that file.
    const misspelt = tempFiles({ 'gateway.yaml': root, 'shared.yaml': shared, 'teams/a.yaml': teamA('x > 1').replace('    through: a-chain', '    thru: a-chain') });
    const s = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: misspelt });
    assert.match(s.stdout, /^teams\/a\.yaml:7:5: unknown key 'thru' in routes\[0\] \(route 'a-in'\) \(did you mean 'through'\?\); expected one of/m, s.stdout);
    const good = tempFiles({ 'gateway.yaml': root, 'shared.yaml': shared, 'teams/a.yaml': teamA('x > 1') });
    assert.equal((await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: good })).stdout, 'ok\n');
  });

  it("names the variable of a fragment's value from the environment, as the config's own: an expression that does not compile, one that reads as text", async () => {
    // The merged config kept the config's variable names only: a fragment's said "a variable".
    const team = yaml(
      'routes:', //                                           1
      '  - name: hook', //                                    2
      '    from: { listener: api, path: /hook }', //          3
      '    to:', //                                           4
      '      - http:', //                                     5
      '          url: https://crm.example.com/in', //         6
      '          headers:', //                                7
      '            x-api-key: ${API_KEY}', //                 8
      '            x-tenant: ${TENANT}', //                   9
    );
    const dir = tempFiles({ 'gateway.yaml': root, 'shared.yaml': shared, 'teams/a.yaml': team });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml', '--format', 'json', '--warnings'], { cwd: dir, env: { API_KEY: '12secretvalue', TENANT: 'acme-corp' } });
    const said = (JSON.parse(r.stdout) as { file: string; line: number; message: string }[]).map((d) => `${d.file}:${d.line} ${d.message}`);
    assert.equal(said.length, 2, r.stdout);
    assert.match(said[0]!, /^teams\/a\.yaml:8 JSONata expression does not compile: Syntax error: "\[redacted\]" \(the expression is the value of \$\{API_KEY\}: /);
    assert.match(said[1]!, /^teams\/a\.yaml:9 the value from \$\{TENANT\} is read as a JSONata expression: .* `x-tenant: '"\$\{TENANT\}"'`$/);
    assert.doesNotMatch(r.stdout + r.stderr, /secret|acme/);
  });

  it('reports an included file that does not exist at its include line; a fragment may hold only brokers, listeners, chains and routes', async () => {
    const dir = tempFiles({ 'gateway.yaml': root.replace('shared.yaml', 'sahred.yaml'), 'teams/a.yaml': yaml('admin: { port: 1 }') });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1);
    const lines = r.stdout.trim().split('\n');
    assert.ok(lines.includes("gateway.yaml:4:5: cannot read included file 'sahred.yaml': no such file (ENOENT)"), r.stdout);
    assert.ok(lines.includes("teams/a.yaml:1:1: unknown key 'admin' in an included fragment; expected one of: brokers, listeners, chains, routes"), r.stdout);
  });

  it('points at a pattern with a wildcard in a directory and at a glob whose directory does not exist; [...] picks files by a character class', async () => {
    const config = (...includes: string[]) =>
      yaml(
        'version: 1', //                           1
        'brokers: { local: { kind: memory } }', // 2
        'listeners: { api: { kind: http, port: 0 } }', // 3
        'include:', //                             4
        ...includes.map((i) => `  - ${i}`), //     5...
      );
    const route = (name: string) => yaml('routes:', `  - name: ${name}`, `    from: { listener: api, path: /${name} }`, '    to: { broker: local, topic: t }');
    // A file where the glob's directory should be (a checkout that replaced it) is no missing directory.
    const bad = tempFiles({ 'gateway.yaml': config('teams/*/routes.yaml', 'nowhere/*.yaml', 'teams/a.yaml', 'afile/*.yaml'), 'teams/a.yaml': route('a'), afile: 'x' });
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: bad });
    assert.equal(r.code, 1);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      "gateway.yaml:5:5: include 'teams/*/routes.yaml': a pattern may only use *, ? and [...] in the file name, not in directories",
      "gateway.yaml:6:5: include 'nowhere/*.yaml': the directory nowhere does not exist",
      "gateway.yaml:8:5: include 'afile/*.yaml': afile is a file, not a directory",
    ]);
    assert.equal(r.stderr.includes('    at '), false, 'no stack trace');

    // [ab] and [!a] are character classes; a [ with no ] is a plain character.
    // A config's tests beside its fragments are no fragment (they were: "unknown key 'tests' in an included fragment").
    const files = { 'teams/a.yaml': route('a'), 'teams/b.yaml': route('b'), 'teams/c.yaml': route('c'), 'teams/[d.yaml': route('d'), 'teams/a.tests.yaml': yaml('tests: []') };
    const picked = async (pattern: string) => {
      const dir = tempFiles({ 'gateway.yaml': config(`"${pattern}"`), ...files });
      const json = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--format', 'json'], { cwd: dir });
      const plan = JSON.parse(json.stdout) as { valid: boolean; routes: { add: string[] } };
      assert.equal(plan.valid, true, json.stdout);
      return plan.routes.add.sort();
    };
    assert.deepEqual(await picked('teams/[ab].yaml'), ['a', 'b']);
    assert.deepEqual(await picked('teams/[!a].yaml'), ['b', 'c']);
    assert.deepEqual(await picked('teams/[d.yaml'), ['d']);
    assert.deepEqual(await picked('teams/*.yaml'), ['a', 'b', 'c', 'd']);
  });

  // Fragments used to be checked by a schema of their own, compiled with ajv when first needed:
  // seconds on a busy machine, at the start of every config with `include:` and at the first
  // reload that found a fragment (a glob matching its first file) — far past the 500 ms a change
  // has to be live in (spec §6). They are checked by the build-time validator now, so loading such
  // a config compiles no schema (NODE_DEBUG=module lists every CommonJS module loaded). The
  // problems found stay the same (the tests above).
  it("says a path a fragment wrote from its own directory, which is read from the config's, with the path meant", async () => {
    // Before: "no such file (ENOENT)" alone, though the file was there, beside the fragment.
    const fragment = yaml('routes:', '  - name: b', '    from: { listener: api, path: /b }', '    through: [ { validate: { schema: schemas/b.json } } ]', '    to: { broker: local, topic: t }');
    const dir = tempFiles({ 'config/gateway.yaml': root, 'config/shared.yaml': shared, 'config/teams/b.yaml': fragment, 'config/teams/schemas/b.json': '{"type": "object"}' });
    const r = await runCliInProcess(['validate', '-c', 'config/gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      /^config\/teams\/b\.yaml:4:38: cannot read 'schemas\/b\.json' \(.*\): no such file \(ENOENT\) \(paths in an included file are relative to the config file's directory, not to the included file's: did you mean 'teams\/schemas\/b\.json'\?\)\n$/,
    );
  });

  it('checks fragments without compiling a schema at run time', async () => {
    const dir = tempFiles({ 'gateway.yaml': root, 'shared.yaml': shared, 'teams/a.yaml': teamA('x > 1') });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir, env: { NODE_DEBUG: 'module' } });
    assert.equal(r.stdout, 'ok\n', r.stdout);
    assert.match(r.stderr, /ajv\/dist\/runtime/, 'NODE_DEBUG=module lists the modules the build-time validator loads');
    assert.doesNotMatch(r.stderr, /ajv\/dist\/2020/, 'ajv (its compiler) was loaded');
  });

  it('hot reload follows included files, and files that newly match a glob; a fragment emptied (truncated before its write) is rejected, not read as one without routes', async () => {
    await gw.start(root, { files: { 'shared.yaml': shared, 'teams/a.yaml': teamA('x > 1') } });
    assert.equal((await post(gw.url('api', '/a'), { x: 1 })).body.filtered, true);
    // An edit to a fragment is a reload.
    const edited = await gw.reconfigure(teamA('x > 0'), 'teams/a.yaml');
    assert.equal(edited.msg, 'config reloaded');
    assert.equal((await post(gw.url('api', '/a'), { x: 1 })).status, 200);
    assert.equal((await post(gw.url('api', '/a'), { x: 1 })).body.filtered, undefined);
    // A new file matching teams/*.yaml is picked up.
    assert.equal((await post(gw.url('api', '/c'), { x: 1 })).status, 404);
    const added = await gw.reconfigure(yaml('routes:', '  - name: c-in', '    from: { listener: api, path: /c }', '    to: { broker: local, topic: t }'), 'teams/c.yaml');
    assert.equal(added.msg, 'config reloaded');
    assert.equal((await post(gw.url('api', '/c'), { x: 1 })).status, 200);
    // Truncated (an editor or `cp` writing in place) or cut after a comment: it used to be a valid
    // fragment with no routes, and the reload removed /c until the rest of the file came.
    for (const emptied of ['', '# team c\n']) {
      const line = await gw.reconfigure(emptied, 'teams/c.yaml');
      assert.match(line.msg, /^reload rejected/);
      assert.match(String(line.diagnostic), /teams\/c\.yaml:1:1: the included file is empty; a fragment holds any of brokers, listeners, chains, routes/);
      assert.equal((await post(gw.url('api', '/c'), { x: 1 })).status, 200);
    }
    // A broken fragment is rejected, pointing into it; the running config keeps serving.
    const broken = await gw.reconfigure(teamA('x >'), 'teams/a.yaml');
    assert.match(broken.msg, /^reload rejected/);
    assert.match(String(broken.diagnostic), /teams\/a\.yaml:3:\d+: JSONata expression does not compile/);
    assert.equal((await post(gw.url('api', '/a'), { x: 1 })).status, 200);
  });
});
