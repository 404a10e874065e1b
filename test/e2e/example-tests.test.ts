import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot, runCli } from '../helpers/gateway.js';

// A file of its own: eight runs of `test`, two parsing AsyncAPI documents. One is a CLI process (the
// command as CI runs it), the others the CLI's main() in this process (test/helpers/cli.ts).
const noStackTrace = (r: { stdout: string; stderr: string }) => assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, 'never a stack trace');

describe('eventgate test: the examples ship tests beside their configs', () => {
  // The README says each example has them: a CI job running `eventgate test` on one without exits 2.
  it('every example config has a tests file beside it', () => {
    const configs = [
      ...readdirSync(join(repoRoot, 'examples')).filter((f) => f.endsWith('.yaml') && !f.endsWith('.tests.yaml')),
      ...readdirSync(join(repoRoot, 'examples'))
        .filter((d) => d.startsWith('asyncapi-'))
        .map((d) => `${d}/gateway.yaml`),
    ];
    assert.ok(configs.length >= 8, configs.join(', '));
    assert.deepEqual(
      configs.filter((c) => !existsSync(join(repoRoot, 'examples', c.replace(/\.yaml$/, '.tests.yaml')))),
      [],
    );
  });

  for (const [config, extra] of [
    ['examples/gateway.yaml', []],
    ['examples/asyncapi-3.0/gateway.yaml', []],
    ['examples/asyncapi-2.6/gateway.yaml', []],
    ['examples/kafka.yaml', ['--vars-file', 'examples/ci.env']],
    ['examples/http-edge.yaml', []],
    ['examples/kafka-proxy.yaml', []],
    ['examples/nats-websocket.yaml', []],
    ['examples/bridge-mqtt-kafka-amqp.yaml', []],
  ] as const) {
    it(`eventgate test -c ${config} runs the tests beside it and they pass`, async () => {
      const r = await (config === 'examples/gateway.yaml' ? runCli : runCliInProcess)(['test', '-c', config, ...extra]);
      noStackTrace(r);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /^\d+ tests passed$/m);
      assert.doesNotMatch(r.stdout, /FAIL/);
    });
  }
});
