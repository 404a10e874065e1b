import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli, tempFiles } from '../helpers/gateway.js';

describe('kafka listener: what its routes cannot do is a config error at its line', () => {
  it('refuses filter, deadletter and onInvalid: deadletter without a target, a path, a bad topic and an upstream that is no kafka broker', async () => {
    const config = [
      'version: 1', //                                                           1
      'brokers:', //                                                             2
      '  cluster: { kind: kafka, brokers: "127.0.0.1:9092" }', //                3
      '  mem: { kind: memory }', //                                              4
      'listeners:', //                                                           5
      '  kin: { kind: kafka, upstream: cluster, port: 0 }', //                   6
      '  other: { kind: kafka, upstream: mem, port: 0 }', //                     7
      '  nowhere: { kind: kafka, upstream: clustr, port: 0 }', //                8
      'routes:', //                                                              9
      '  - name: a', //                                                          10
      '    from: { listener: kin, topic: orders }', //                           11
      '    through:', //                                                         12
      '      - filter: total > 0', //                                            13
      '      - validate: { schema: { type: object }, onInvalid: deadletter, deadletter: { broker: cluster, topic: dlq } }', // 14
      '    ack: false', //                                                      15
      '  - name: b', //                                                          16
      '    from: { listener: kin, path: /orders }', //                           17
      '  - name: c', //                                                          18
      '    from: { listener: kin, topic: "no spaces" }', //                      19
      '  - name: d', //                                                          20
      '    from: { listener: kin, topic: payments }', //                         21
      '    deadletter: { broker: cluster, topic: dlq }', //                      22
    ].join('\n');
    const dir = tempFiles({ 'gateway.yaml': `${config}\n` });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    const at = (prefix: string, pattern: RegExp) =>
      assert.ok(
        lines.some((l) => l.startsWith(`gateway.yaml:${prefix}`) && pattern.test(l)),
        `a problem at ${prefix} matching ${pattern}; got:\n${r.stdout}`,
      );
    at('7:', /broker 'mem' is a memory broker/);
    at('8:', /broker 'clustr' is not defined.*did you mean 'cluster'/);
    at('13:', /filter step would drop records/);
    at('14:', /onInvalid: deadletter/);
    at('17:', /names a 'topic'/);
    at('19:', /a Kafka topic name is 1 to 249 characters/);
    at('22:', /no dead-letter target/);
    assert.equal(lines.length, 7, r.stdout);
  });

  it('accepts filter and dead-lettering on a route with `to`, and points at a target that is wrong', async () => {
    const config = [
      'version: 1', //                                                           1
      'brokers:', //                                                             2
      '  cluster: { kind: kafka, brokers: "127.0.0.1:9092" }', //                3
      'listeners:', //                                                           4
      '  kin: { kind: kafka, upstream: cluster, port: 0 }', //                   5
      '  ws: { kind: websocket, port: 0 }', //                                   6
      'routes:', //                                                              7
      '  - name: a', //                                                          8
      '    from: { listener: kin, topic: orders }', //                           9
      '    through:', //                                                         10
      '      - filter: total > 0', //                                            11
      '      - validate: { schema: { type: object }, onInvalid: deadletter }', // 12
      '    deadletter: { broker: cluster, topic: dlq }', //                      13
      '    to: [ { broker: cluster, topic: elsewhere }, { listener: ws, path: /orders } ]', // 14
      '  - name: b', //                                                          15
      '    from: { listener: kin, topic: payments }', //                         16
      '    to: [ { broker: clustr, topic: elsewhere }, { listener: kin, path: /x } ]', // 17
    ].join('\n');
    const dir = tempFiles({ 'gateway.yaml': `${config}\n` });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.match(lines[0]!, /^gateway\.yaml:17:\d+: .*broker 'clustr' is not defined.*did you mean 'cluster'/);
    assert.match(lines[1]!, /^gateway\.yaml:17:\d+: .*listener 'kin' is a kafka listener; only websocket and http listeners can be targets/);
    assert.equal(lines.length, 2, r.stdout);
  });

  it('an upstream broker set aside for its own problem is reported once, not again as undefined, and still listed as defined; a bad brokerPorts key is named once', async () => {
    const config = [
      'version: 1', //                                                           1
      'brokers:', //                                                             2
      '  cluster: { kind: kafka, brokers: "${UPSTREAM_BROKERS}" }', //           3
      'listeners:', //                                                           4
      '  kin: { kind: kafka, upstream: cluster, port: 0 }', //                   5
      '  kin2: { kind: kafka, upstream: clustr, port: 0 }', //                   6
      '  kin3: { kind: kafka, upstream: cluster, port: 0, brokerPorts: { x: 19101 } }', // 7
    ].join('\n');
    const env = { ...process.env } as Record<string, string>;
    delete env.UPSTREAM_BROKERS;
    const dir = tempFiles({ 'gateway.yaml': `${config}\n` });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^gateway\.yaml:3:\d+: environment variable 'UPSTREAM_BROKERS' is not set/);
    // A name that is not defined lists the broker set aside too: it is defined, and the likely meant one.
    assert.match(r.stdout, /\ngateway\.yaml:6:\d+: broker 'clustr' is not defined \(did you mean 'cluster'\?\); defined brokers: cluster\n/);
    // A brokerPorts key that is no node id: once, naming the key, at the key (not ajv's pattern and "property name must be valid" twice).
    assert.match(r.stdout, /\ngateway\.yaml:7:67: listeners\.kin3\.brokerPorts: key 'x' must be a broker node id \(digits\)\n?$/);
    assert.equal(r.stdout.trim().split('\n').length, 3, r.stdout);
  });
});
