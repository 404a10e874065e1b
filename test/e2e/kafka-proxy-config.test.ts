import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runCli, tempFiles } from '../helpers/gateway.js';

describe('kafka listener: what its routes cannot do is a config error at its line', () => {
  it('refuses filter, deadletter, onInvalid: deadletter, a target, a path, a bad topic and an upstream that is no kafka broker', async () => {
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
      '    to: { broker: cluster, topic: elsewhere }', //                        15
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
    at('15:', /takes no 'to'/);
    at('17:', /names a 'topic'/);
    at('19:', /not a Kafka topic name/);
    at('22:', /no dead-letter target/);
    assert.equal(lines.length, 8, r.stdout);
  });

  it('an upstream broker set aside for its own problem is reported once, not again as undefined', async () => {
    const config = [
      'version: 1', //                                                           1
      'brokers:', //                                                             2
      '  cluster: { kind: kafka, brokers: "${UPSTREAM_BROKERS}" }', //           3
      'listeners:', //                                                           4
      '  kin: { kind: kafka, upstream: cluster, port: 0 }', //                   5
    ].join('\n');
    const env = { ...process.env } as Record<string, string>;
    delete env.UPSTREAM_BROKERS;
    const dir = tempFiles({ 'gateway.yaml': `${config}\n` });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir, env });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /^gateway\.yaml:3:\d+: environment variable 'UPSTREAM_BROKERS' is not set/);
    assert.equal(r.stdout.trim().split('\n').length, 1, r.stdout);
  });
});
