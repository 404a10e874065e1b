import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { redact, REDACTED, secretValues } from '../../src/config/secrets.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { tempDir } from '../helpers/reaper.js';
import { bindingsFor, compileExpression } from '../../src/expr/expression.js';
import { bucketKey, TokenBuckets } from '../../src/kinds/steps/ratelimit.js';
import secureJson from 'secure-json-parse';
import { nestingDepth, parseClientJson } from '../../src/kinds/listeners/client-json.js';
import { clientPayloadOriginal, hugeNumberAt, ORIGINAL, payloadOriginal, type Message, type MessageContext } from '../../src/core/message.js';
import { Ajv } from 'ajv';
import { validator } from '../../src/kinds/steps/validate.js';
import type { SchemaCheck } from '../../src/kinds/contracts.js';
import { StepStateStore } from '../../src/runtime/step-state.js';
import { clientKey, TokenFailures } from '../../src/admin/token-failures.js';
import { flushPendingWarnings, RateLimitedWarning } from '../../src/core/rate-limited-warning.js';
import { allowsOrigin, CorsPolicy } from '../../src/kinds/listeners/cors.js';

describe('parseClientJson', () => {
  const parse = (text: string | Buffer, depth = 64) => parseClientJson(Buffer.isBuffer(text) ? text : Buffer.from(text), 'body', depth);

  it('counts nesting outside strings only, escapes included', () => {
    assert.equal(nestingDepth(Buffer.from('[{"a":[1]}]'), 100), 3);
    assert.equal(nestingDepth(Buffer.from('["[[[[", "\\"[[["]'), 100), 1);
    assert.equal(nestingDepth(Buffer.from('"\\\\"[['), 100), 2);
    assert.equal(nestingDepth(Buffer.from('{"é[":"ü{"}'), 100), 1);
  });

  it('refuses depth over the limit and accepts it at the limit', () => {
    assert.equal(parse('[[[1]]]', 3).ok, true);
    const r = parse('[[[[1]]]]', 3);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.problem.code, 'EG_JSON_TOO_DEEP');
  });

  it('refuses a body whose estimated parsed size is over maxParsedBytes (arrays/objects outside strings counted), before parsing', () => {
    const body = Buffer.from(`[${'{},'.repeat(999)}{}]`); // 1 001 containers: 2 * 3 001 + 72 * 1 001 = 78 074
    assert.equal(parseClientJson(body, 'body', 64, 80_000).ok, true);
    const r = parseClientJson(body, 'body', 64, 78_000);
    assert.equal(!r.ok && r.problem.code, 'EG_PAYLOAD_TOO_LARGE');
    assert.equal(!r.ok && r.problem.status, 413);
    // Brackets inside strings cost nothing extra.
    assert.equal(parseClientJson(Buffer.from(JSON.stringify(['{}'.repeat(1000)])), 'body', 64, 10_000).ok, true);
  });

  it('takes JSON after one byte order mark, and refuses a second', () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    assert.deepEqual(parse(Buffer.concat([bom, Buffer.from('{"a":1}')])), { ok: true, value: { a: 1 } });
    const r = parse(Buffer.concat([bom, bom, Buffer.from('{"a":1}')]));
    assert.equal(!r.ok && r.problem.code, 'EG_BAD_JSON');
    // A mark inside a string is a character of it.
    assert.deepEqual(parse(Buffer.concat([Buffer.from('"'), bom, Buffer.from('x"')])), { ok: true, value: '\ufeffx' });
  });

  it('refuses __proto__ keys and constructor.prototype, but not a plain constructor key', () => {
    for (const text of ['{"__proto__":{}}', '{"a":{"\\u005f\\u005fproto__":1}}', '[{"constructor":{"prototype":{}}}]']) {
      const r = parse(text);
      assert.equal(!r.ok && r.problem.code, 'EG_JSON_FORBIDDEN_KEY', text);
    }
    assert.deepEqual(parse('{"constructor":"Ford"}'), { ok: true, value: { constructor: 'Ford' } });
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('answers as secure-json-parse after a strict UTF-8 decode would, on plain ASCII bodies and on others alike', () => {
    const reference = (text: string) => {
      try {
        return { ok: true, value: secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }) };
      } catch (err) {
        return { ok: false, message: (err as Error).message };
      }
    };
    const bodies = [
      '{"id":7,"lumens":640,"sentAt":"2026-11-23T10:00:00Z"}',
      '{"__proto__":{"polluted":1}}',
      '{"a":1,"constructor":{"prototype":{"polluted":1}}}',
      '{"constructor":{"x":1}}',
      '{"note":"__proto__ in a string","constructor":"Ford"}',
      '{"\\u005f_proto__":{}}',
      '{"\\u0063onstructor":{"prototype":{}}}',
      '{"é":1,"__proto__":{}}',
      '{"ü":"constructor"}',
      '{"a":}',
      '[1,2',
      '',
      'null',
      '"text"',
      '{"s":"tab\\there"}',
    ];
    for (const text of bodies) {
      const r = parse(text);
      const ref = reference(text);
      assert.equal(r.ok, ref.ok, text);
      if (r.ok) assert.deepEqual(r.value, ref.value, text);
      else if (r.problem.code === 'EG_BAD_JSON') assert.equal(r.problem.detail, `the body is not valid JSON: ${ref.message}`, text);
      else assert.equal(r.problem.code, 'EG_JSON_FORBIDDEN_KEY', text);
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('refuses invalid UTF-8 and numbers beyond a double, and keeps large finite ones', () => {
    assert.equal(parse(Buffer.from([0x22, 0xff, 0x22])).ok, false);
    assert.equal(parse('[1e308]').ok, true);
    assert.equal(parse('[1e309]').ok, false);
    assert.equal(parse(`[${'9'.repeat(309)}]`).ok, false);
    assert.equal(parse(`[${'9'.repeat(300)}]`).ok, true);
    assert.equal(parse('["1e999"]').ok, true, 'a string that looks like a huge number is a string');
    assert.equal(parse('{"s":"12e","n":-1E+400}').ok, false, 'an exponent after digits in a string before it');
    assert.equal(parse('[true,false,1.5e3]').ok, true);
  });

  it('refuses an object that gives a name twice, saying which and where, however the name is spelt', () => {
    const detail = (text: string) => {
      const r = parse(text);
      return r.ok ? undefined : `${r.problem.code}: ${r.problem.detail}`;
    };
    assert.equal(detail('{"id":"x","id":1}'), 'EG_BAD_JSON: the body gives the name "id" twice in one object: readers differ on which value they take, so names must be unique (RFC 7493)');
    assert.equal(
      detail('{"a":[{"b":1},{"c/~":{"d":1,"e":[],"d":2}}]}'),
      'EG_BAD_JSON: the body gives the name "d" twice in one object (in the object at /a/1/c~1~0): readers differ on which value they take, so names must be unique (RFC 7493)',
    );
    // The same name written with an escape, and names holding quotes, colons and brackets.
    assert.match(detail('{"id":1,"\\u0069d":2}') ?? '', /the name "id" twice/);
    assert.match(detail('{"a\\"b:{[":1, "x":{"a\\"b:{[":2}, "a\\"b:{[" : 3}') ?? '', /the name "a\\"b:\{\[" twice in one object: /);
    // Colons inside strings are no members; the same name in two objects is no repeat.
    assert.equal(parse('{"t":"10:30","u":"a:b:c","n":{"t":1},"l":[{"t":2},{"t":3}]}').ok, true);
    assert.equal(parse('[{"a":1},{"a":1}]').ok, true);
    assert.equal(parse('{"é":1,"e":2}').ok, true);
    assert.match(detail('{"é":1,"é":2}') ?? '', /the name "é" twice/);
    // Deeper than a recursive walk would go.
    assert.equal(parse(`${'{"a":'.repeat(3000)}{"k":1,"k":2}${'}'.repeat(3000)}`, 4000).ok, false);
    assert.equal(parse(`${'{"a":'.repeat(3000)}{"k":1,"l":2}${'}'.repeat(3000)}`, 4000).ok, true);
  });

  it("a validate step fails a broker's payload naming a member twice, and does not scan again a client's body its listener read", () => {
    const check = new Ajv().compile({ type: 'object', properties: { id: { type: 'integer' } } }) as SchemaCheck;
    const step = validator([{ check, message: null, channel: null }], 'reject');
    const bytes = Buffer.from('{"id":"x","id":1}');
    const value = JSON.parse(bytes.toString()) as unknown;
    const message = (original: Message[typeof ORIGINAL]): Message => ({ value, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0, [ORIGINAL]: original });
    const ctx = (): MessageContext => ({ route: 'r' });
    const consumed = step.run(message(payloadOriginal(bytes, value, {})), ctx());
    assert.equal('stop' in consumed && consumed.stop, 'invalid');
    // A listener's body reaches a step only once parseClientJson found each name once: these bytes
    // could not come from one, so passing them shows the step trusted the mark, as it should.
    const client = message(clientPayloadOriginal(bytes, value, {}));
    assert.equal(step.run(client, ctx()), client);
  });

  it('says where a number beyond a double is (hugeNumberAt, shared with consumed messages), at any depth', () => {
    const r = parse('{"s":"x","a":[1,{"b/c~":-1e400}]}');
    assert.equal(r.ok ? undefined : r.problem.detail, 'the body has a number too large to represent (over ±1.8e308) at /a/1/b~1c~0');
    const whole = parse('1e400');
    assert.equal(whole.ok ? undefined : whole.problem.detail, 'the body has a number too large to represent (over ±1.8e308)');
    // Past the recursive walk's levels: the iterative one, first number in document order.
    const deep = JSON.parse(`${'['.repeat(5000)}1e400${']'.repeat(5000)}`) as unknown;
    const at = hugeNumberAt(deep);
    assert.ok(at === '/0'.repeat(5000), `the pointer is ${at?.length} characters long, not 10000`);
    assert.equal(hugeNumberAt(JSON.parse('{"a":{"b":[1,2e400]},"c":3e400}')), '/a/b/1');
    assert.equal(hugeNumberAt({ a: [1, { b: 2 }], c: 'x' }), undefined);
    assert.equal(hugeNumberAt(JSON.parse(`${'['.repeat(5000)}1${']'.repeat(5000)}`)), undefined);
    assert.equal(hugeNumberAt(Buffer.from('1e400')), undefined);
  });
});

describe('TokenBuckets', () => {
  it('grants the burst, then refuses with the wait until the next token, then refills', () => {
    const b = new TokenBuckets(1 / 1000, 2, 10); // one token per second, bucket of two
    assert.equal(b.take('c', 0), 0);
    assert.equal(b.take('c', 0), 0);
    assert.equal(b.take('c', 0), 1000);
    assert.equal(b.take('c', 400), 600);
    assert.equal(b.take('c', 1000), 0);
    assert.equal(b.take('other', 1000), 0, 'each key has its own bucket');
  });

  it('forgets full buckets first, then the least recently used, when over maxKeys', () => {
    const b = new TokenBuckets(1 / 1000, 1, 3);
    b.take('idle', 0);
    b.take('busy', 0);
    b.take('recent', 5000);
    // 'idle' and 'busy' are full again at t=5000; adding a fourth key drops them.
    b.take('new', 5000);
    assert.equal(b.size, 2);
    assert.ok(b.take('recent', 5001) > 0, 'the bucket in use is kept');
  });
});

describe('admin TokenFailures', () => {
  it('refuses an address from its limit-th failure until its window ends, then counts afresh', () => {
    let now = 0;
    const f = new TokenFailures(3, 60_000, 100, () => now);
    assert.equal(f.refusedFor('10.0.0.1'), 0, 'nothing failed yet');
    assert.equal(f.failed('10.0.0.1'), 0);
    now = 10_000;
    assert.equal(f.failed('10.0.0.1'), 0);
    assert.equal(f.refusedFor('10.0.0.1'), 0, 'under the limit');
    assert.equal(f.failed('10.0.0.1'), 50_000, 'the third failure locks it until the window that began at 0 ends');
    assert.equal(f.refusedFor('10.0.0.1'), 50_000);
    assert.equal(f.refusedFor('10.0.0.2'), 0, 'another address is not');
    assert.equal(f.refusedFor('::ffff:10.0.0.1'), 50_000, 'an IPv4-mapped address is its IPv4 address');
    now = 59_999;
    assert.equal(f.refusedFor('10.0.0.1'), 1);
    now = 60_000;
    assert.equal(f.refusedFor('10.0.0.1'), 0, 'the window passed');
    assert.equal(f.failed('10.0.0.1'), 0, 'a new window, counted from one');
    assert.equal(f.size, 1, 'the ended window is gone');
  });

  it('holds at most maxAddresses windows: a flood of addresses shares one, refused together', () => {
    let now = 0;
    const f = new TokenFailures(2, 1000, 50, () => now);
    for (let round = 0; round < 2; round++) for (let i = 0; i < 1000; i++) f.failed(`10.0.${i >> 8}.${i & 255}`);
    assert.equal(f.size, 51, 'fifty addresses and the shared window');
    assert.ok(f.refusedFor('10.0.0.0') > 0, 'a tracked address that failed twice');
    assert.ok(f.refusedFor('192.0.2.1') > 0, 'an untracked address, while the shared window is full');
    now = 1000;
    assert.equal(f.refusedFor('10.0.0.0'), 0);
    assert.equal(f.refusedFor('192.0.2.1'), 0);
    f.failed('192.0.2.1');
    assert.equal(f.size, 1, 'ended windows are dropped before a new one is made');
  });

  it('keys IPv6 clients by their /64, IPv4 by the address', () => {
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('2001:db8:0:1:aaaa:bbbb:cccc:dddd'), '2001:db8:0:1::/64');
    assert.equal(clientKey('2001:db8:0:1::5'), '2001:db8:0:1::/64');
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
    assert.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64');
  });
});

describe('ratelimit bucketKey', () => {
  it('keeps a short key as it is and a long one (a header a client fills) as a digest of fixed size', () => {
    assert.equal(bucketKey('device-7'), 'key:device-7');
    const long = (c: string) => bucketKey(c.repeat(15_000));
    assert.equal(long('a').length, 'sha256:'.length + 43);
    assert.notEqual(long('a'), long('b'), 'different clients, different buckets');
    assert.equal(long('a'), long('a'));
  });
});

describe('StepStateStore', () => {
  it('hands out the same state for the same identity and drops what no route claims', () => {
    const store = new StepStateStore();
    const a = store.claim('r\0k\0' + 0, () => ({ n: 1 }));
    assert.equal(
      store.claim('r\0k\0' + 0, () => ({ n: 2 })),
      a,
    );
    store.claim('gone', () => 1);
    store.retain(new Set(['r\0k\0' + 0]));
    assert.equal(store.size, 1);
  });
});

describe('secret redaction', () => {
  it('collects values from the environment and under secret keys', () => {
    const config = { admin: { token: 'literal-token' }, routes: [{ to: { topic: 'from-env-topic' } }], auth: { keys: { alice: 'k1k1k1k1', bob: ['k2k2k2k2'] } }, name: 'public' };
    const secrets = secretValues(config, new Set(['routes[0].to.topic']));
    assert.deepEqual([...secrets].sort(), ['from-env-topic', 'k1k1k1k1', 'k2k2k2k2', 'literal-token']);
  });

  it('replaces secrets in strings and keys, and short ones only as whole values', () => {
    const out = redact({ a: 'x literal-token y', b: ['ab', 'abc'], 'literal-token': 1, n: 5 }, new Set(['literal-token', 'ab']));
    assert.deepEqual(out, { a: `x ${REDACTED} y`, b: [REDACTED, 'abc'], [REDACTED]: 1, n: 5 });
  });
});

describe('expression time box', () => {
  it('lets timers run while a runaway expression is evaluated, then fails it', async () => {
    // A time box long enough that the evaluation reaches its first 10 ms slice even on a busy machine.
    const expr = compileExpression('($f := function($n){ $f($n + 1) }; $f(1))', { timeoutMs: 1500, maxDepth: 500 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      await assert.rejects(expr.evaluate({}, {}), /longer than 1500 ms/);
    } finally {
      clearInterval(timer);
    }
    assert.ok(ticks > 0, 'the event loop never got a turn during the evaluation');
  });

  it('counts only the time the evaluation runs, not the time it waits for its turn while the event loop is busy elsewhere', async () => {
    // Some tens of milliseconds of work in 10 ms slices (a range walked step by step: [1..2000] took 8-9
    // slices under node:test at load ~18, 0.13-0.16 s, but only 22 ms, one slice and a bit, on a
    // quiet fast machine, where the loop was held once; [1..10000] ran past a 1000 ms box at load
    // ~19, when test files running beside it stretched its slices; [1..8000] is 40-50 ms when quiet);
    // between two of them the event loop held 2.5 s by other work, twice (a blocked wait, no CPU):
    // 5 s in all, past the 4 s time box, which jsonata's wall-clock timeout failed it for. The box
    // leaves the evaluation's own slices 80 times their quiet time: a CI run beside seven other
    // test runs stretched them past a 1.5 s box.
    const expr = compileExpression('$count([1..8000].($ + 1))', { timeoutMs: 4000, maxDepth: 500 });
    const blocked = new Int32Array(new SharedArrayBuffer(4));
    let stalls = 0;
    const stall = () => {
      Atomics.wait(blocked, 0, 0, 2500);
      if (++stalls < 2) setImmediate(stall);
    };
    setImmediate(stall);
    assert.equal(await expr.evaluate({}, {}), 8000);
    assert.equal(stalls, 2, 'the evaluation yielded while the loop was held');
  });

  it('binds $principal and $claims from the identity an auth step set', async () => {
    const msg = { value: {}, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 };
    const b = bindingsFor(msg, { route: 'r', identity: { principal: 'alice', claims: { tenant: 'acme' } } });
    const expr = compileExpression('$principal & "@" & $claims.tenant');
    assert.equal(await expr.evaluate({}, b), 'alice@acme');
  });
});

describe('secretValues: environment values', () => {
  it('counts each variable value, each address of a list and its host as secrets, but not numbers, booleans or loopback names', () => {
    const secrets = secretValues({ brokers: ['kafka-0.internal:9092,kafka-1.internal:9092'], port: 8080 }, new Set(['brokers.0']), [
      'kafka-0.internal:9092,kafka-1.internal:9092',
      '8080',
      'true',
      'localhost:9092',
      'upstream-token-123',
    ]);
    for (const s of ['kafka-0.internal:9092,kafka-1.internal:9092', 'kafka-0.internal:9092', 'kafka-0.internal', 'kafka-1.internal', 'upstream-token-123']) assert.ok(secrets.has(s), s);
    for (const s of ['8080', 'true', 'localhost', '9092']) assert.ok(!secrets.has(s), s);
    assert.ok(secrets.has('localhost:9092'), 'a loopback address with its port is still the value of a variable');
    assert.equal(redact('getaddrinfo ENOTFOUND kafka-1.internal', secrets), `getaddrinfo ENOTFOUND ${REDACTED}`);
  });

  it('takes no broker clientId for a secret, nor a variable only a clientId uses: the names that contain it are not shredded', async () => {
    // A fleet's instances each get their own MQTT client id from the environment (`fleet-${INST}`):
    // as a secret, `fleet-a` was cut out of every string holding it, and /admin/status and `plan`
    // called the group `fleet-alerts` `[redacted]lerts`.
    const file = join(tempDir('eventgate-client-id-secret'), 'gateway.yaml');
    writeFileSync(
      file,
      [
        'version: 1',
        'brokers:',
        '  devices: { kind: mqtt, url: "mqtt://127.0.0.1:1", clientId: "fleet-${INST}", password: "${MQTT_PASSWORD}" }',
        '  kafka: { kind: kafka, brokers: "127.0.0.1:1", clientId: "${KAFKA_CLIENT}" }',
        'routes:',
        '  - name: alerts',
        '    from: { broker: devices, topic: "devices/+/alert", group: fleet-alerts }',
        '    to: { broker: kafka, topic: "${ALERTS_TOPIC}" }',
        '',
      ].join('\n'),
    );
    const env = { INST: 'a', MQTT_PASSWORD: 'pass-from-a-secret', KAFKA_CLIENT: 'gateway-eu-west-1', ALERTS_TOPIC: 'alerts-of-a-tenant' };
    const { plan, diagnostics, secrets } = await loadPlan(file, { registry: defaultRegistry(), env });
    assert.deepEqual(diagnostics, []);
    assert.ok(plan);
    for (const s of ['fleet-a', 'gateway-eu-west-1']) assert.ok(!secrets!.has(s), s);
    assert.equal(redact('group fleet-alerts of fleet-a-alerts, kafka client gateway-eu-west-1', secrets!), 'group fleet-alerts of fleet-a-alerts, kafka client gateway-eu-west-1');
    // The other values from the environment stay secrets.
    for (const s of ['pass-from-a-secret', 'alerts-of-a-tenant']) assert.ok(secrets!.has(s), s);
  });

  it('keeps a variable secret that a clientId and another key both use, in whichever order they come', async () => {
    // The username holds more than the variable, so only the variable's own value redacts it inside the clientId.
    for (const clientIdFirst of [true, false]) {
      const file = join(tempDir('eventgate-client-id-shared'), 'gateway.yaml');
      const clientId = 'clientId: "gw-${SHARED_TOKEN}"';
      const username = 'username: "u-${SHARED_TOKEN}"';
      const fields = clientIdFirst ? `${clientId}, ${username}` : `${username}, ${clientId}`;
      writeFileSync(file, ['version: 1', 'brokers:', `  devices: { kind: mqtt, url: "mqtt://127.0.0.1:1", ${fields} }`, 'routes: []', ''].join('\n'));
      const { diagnostics, secrets } = await loadPlan(file, { registry: defaultRegistry(), env: { SHARED_TOKEN: 'tok-7f3a9c' } });
      assert.deepEqual(diagnostics, []);
      assert.ok(secrets!.has('tok-7f3a9c'), `clientId first: ${clientIdFirst}`);
      assert.equal(redact('client gw-tok-7f3a9c connected', secrets!), `client gw-${REDACTED} connected`);
    }
  });
});

describe('RateLimitedWarning: keys a client chooses', () => {
  it('writes an open window at close() and at the process shutdown, and after close() each occurrence at once (1049)', () => {
    const lines: [string, number][] = [];
    const warning = new RateLimitedWarning<string>(60_000, (last, count) => lines.push([last, count]));
    warning.occurred('one');
    warning.occurred('two');
    warning.occurred('three');
    // The shutdown writes what a window counted, whoever owns it.
    flushPendingWarnings();
    assert.deepEqual(lines, [
      ['one', 1],
      ['three', 2],
    ]);
    warning.occurred('four');
    warning.occurred('five');
    warning.close();
    // Its owner gone, what still comes (records answered after a route's drain timeout) is not held for an interval the process may not live to see.
    warning.occurred('six');
    warning.occurred('seven');
    assert.deepEqual(lines.slice(2), [
      ['four', 1],
      ['five', 1],
      ['six', 1],
      ['seven', 1],
    ]);
  });

  it('gives at most maxWindows keys a line at once; past them new keys count in one shared window, every occurrence in some line', () => {
    // A kafka client's close reasons carry its frame's size: garbage of ever-changing sizes logged a line per connection.
    const lines: [string, number][] = [];
    const warning = new RateLimitedWarning<string>(60_000, (last, count) => lines.push([last, count]), 3);
    for (let i = 0; i < 20; i++) warning.occurred(`frame of ${i} bytes`, `frame of ${i} bytes`);
    // Three keys, then the first past the bound opens the shared window, logged at once as any first occurrence is.
    assert.deepEqual(lines, [
      ['frame of 0 bytes', 1],
      ['frame of 1 bytes', 1],
      ['frame of 2 bytes', 1],
      ['frame of 3 bytes', 1],
    ]);
    warning.flush();
    // The other sixteen, in the shared window's line, with the last of them.
    assert.deepEqual(lines.slice(4), [['frame of 19 bytes', 16]]);
  });

  it("bounds one group's keys below maxWindows, so one client's garbage cannot keep another client's first occurrence from its line (644)", () => {
    const lines: [string, number][] = [];
    const warning = new RateLimitedWarning<string>(60_000, (last, count) => lines.push([last, count]), 6, 2);
    const flood = (n: number) => {
      for (let i = 0; i < n; i++) warning.occurred(`a: frame of ${i} bytes`, `a:${i}`, 'a');
    };
    flood(20);
    // Two of a's keys, then its own shared window, opened with a line: three lines, three windows of six.
    assert.deepEqual(lines, [
      ['a: frame of 0 bytes', 1],
      ['a: frame of 1 bytes', 1],
      ['a: frame of 2 bytes', 1],
    ]);
    // b's first reason, amid a's flood, gets its line at once (it counted unnamed in a shared window before).
    warning.occurred('b: API key 997', 'b:997', 'b');
    flood(20);
    assert.deepEqual(lines.slice(3), [['b: API key 997', 1]]);
    warning.flush();
    // Every one of a's occurrences is in some line: 2 keys seen twice, and 36 in its shared window.
    assert.deepEqual(lines.slice(4), [
      ['a: frame of 0 bytes', 1],
      ['a: frame of 1 bytes', 1],
      ['a: frame of 19 bytes', 35],
    ]);
  });
});

describe('origins compared as browsers write them', () => {
  // What Chromium sends as `Origin` for pages at https://app.example.com:443/, http://localhost:80/
  // and https://café.example/: no default port, the name in punycode, lower case.
  const sent = ['https://app.example.com', 'http://localhost', 'https://xn--caf-dma.example'];
  const configured = ['https://app.example.com:443', 'http://LocalHost:80', 'https://café.example'];

  it("a websocket listener's origins match with a default port, another case or a Unicode name", () => {
    for (const origin of sent) assert.equal(allowsOrigin(configured, origin), true, origin);
  });

  it("an http listener's cors.origins too", () => {
    const cors = new CorsPolicy({ origins: configured });
    for (const origin of sent) assert.equal(cors.allows(origin), true, origin);
  });

  it('another port, scheme or host, and `null`, are still refused', () => {
    const cors = new CorsPolicy({ origins: configured });
    for (const origin of ['https://app.example.com:8443', 'http://app.example.com', 'https://evil.example', 'https://app.example.com.evil.example', 'null']) {
      assert.equal(allowsOrigin(configured, origin), false, origin);
      assert.equal(cors.allows(origin), false, origin);
    }
  });

  it("an app's web view or an extension by its own scheme: the scheme and host in any case, the port exactly as written", () => {
    // WHATWG URL gives these origins as `null`; each is compared as browsers and web views send it:
    // WebKit lower-cases the host (an app at `ionic://LocalHost:8100/` sends `ionic://localhost:8100`),
    // which an entry holding the host as written refused.
    const apps = ['Capacitor://localhost', 'ionic://LocalHost:8100', 'chrome-extension://abcdefghijklmnopabcdefghijklmnop'];
    const cors = new CorsPolicy({ origins: apps });
    const allowed = ['capacitor://localhost', 'CAPACITOR://localhost', 'capacitor://LOCALHOST', 'ionic://localhost:8100', 'ionic://LocalHost:8100'];
    for (const origin of [...allowed, 'chrome-extension://abcdefghijklmnopabcdefghijklmnop']) {
      assert.equal(allowsOrigin(apps, origin), true, origin);
      assert.equal(cors.allows(origin), true, origin);
    }
    // No default port for such a scheme; and what has more than a host is no origin.
    const refused = ['capacitor://localhost:80', 'ionic://localhost', 'capacitor://localhost/', 'capacitor://u@localhost', 'null'];
    for (const origin of refused) {
      assert.equal(allowsOrigin(apps, origin), false, origin);
      assert.equal(cors.allows(origin), false, origin);
    }
  });
});
