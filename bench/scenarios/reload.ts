import { httpMemoryConfig, LIGHT_BODY, LIGHT_SCHEMA } from '../configs.js';
import { runHttpLoad, startHttpLoad } from '../load/http.js';
import { startGateway } from '../processes.js';
import { judge, warmupSeconds, type Measured, type Scenario } from '../scenario.js';
import { CONNECTIONS } from './http-memory.js';

const REWRITES = 20;

interface Reloading {
  name: string;
  describe: string;
  config: string;
  files?: Record<string, string>;
  target?: Measured['target'];
  /** The file a rewrite changes, and its text at `revision`: each one a real change. */
  rewrite(revision: number): [file: string, text: string];
}

/**
 * http-memory load while a file of the config is rewritten 20 times, each rewrite a change the
 * gateway must apply (a route rebuilt and swapped under load). Baseline: the same gateway process
 * under the same load with no reloads, just before.
 */
function reloading(r: Reloading): Scenario {
  return {
    name: r.name,
    describe: r.describe,
    async run({ duration }) {
      const gw = await startGateway(r.config, { files: r.files });
      try {
        const load = { url: gw.url('api', '/light'), body: LIGHT_BODY, connections: CONNECTIONS };
        await runHttpLoad(load, warmupSeconds(duration));
        const steady = await runHttpLoad(load, duration);

        const running = startHttpLoad(load, 3600);
        const started = performance.now();
        const spacingMs = (duration * 1000) / REWRITES;
        for (let revision = 1; revision <= REWRITES; revision++) {
          const due = started + revision * spacingMs;
          const wait = due - performance.now();
          if (wait > 0) await new Promise((res) => setTimeout(res, wait));
          const [file, text] = r.rewrite(revision);
          const line = await gw.reconfigure(text, file);
          if (line.msg !== 'config reloaded') throw new Error(`reload ${revision} was not applied: ${JSON.stringify(line)}`);
        }
        const during = await running.stop();
        return judge({
          metric: 'requests/s',
          value: during.rps,
          baseline: { name: 'http-memory (same process, no reloads)', value: steady.rps, p50_ms: steady.p50_ms, p99_ms: steady.p99_ms, errors: steady.errors },
          ratio: during.rps / steady.rps,
          p50_ms: during.p50_ms,
          p99_ms: during.p99_ms,
          errors: during.errors,
          reloads: REWRITES,
          seconds: during.seconds,
          target: r.target ?? { field: 'errors', op: '<=', limit: 0 },
        });
      } finally {
        await gw.stop();
      }
    },
  };
}

export const reload = reloading({
  name: 'reload',
  describe: `http-memory load while the config is rewritten ${REWRITES} times; errors must be 0`,
  config: httpMemoryConfig(),
  rewrite: (revision) => ['gateway.yaml', httpMemoryConfig(revision)],
});

/** An AsyncAPI 3 document whose message is the README's light event; `revision` changes its payload. */
function lightDocument(revision: number): string {
  const payload = { ...LIGHT_SCHEMA, properties: { ...LIGHT_SCHEMA.properties, revision: { type: 'integer', maximum: revision } } };
  return `asyncapi: 3.0.0
info: { title: Streetlights, version: 1.0.${revision} }
channels:
  light:
    address: light/measured
    messages:
      lightMeasured: { $ref: '#/components/messages/lightMeasured' }
components:
  messages:
    lightMeasured:
      payload: ${JSON.stringify(payload)}
`;
}

/**
 * The same load while the route's AsyncAPI document is rewritten: each reload parses it again,
 * hundreds of milliseconds of CPU. On the event loop that held every request for as long (p99
 * 1–2 s); in the parser's own thread the answers go on (target: p99 within 250 ms).
 */
export const reloadAsyncapi = reloading({
  name: 'reload-asyncapi',
  describe: `http-memory load with an AsyncAPI validate step while its document is rewritten ${REWRITES} times; p99 within 250 ms`,
  target: { field: 'p99_ms', op: '<=', limit: 250 },
  config: `version: 1
asyncapi: light.yaml
brokers:
  local: { kind: memory, retain: 1000 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: light-in
    from: { listener: api, path: /light }
    through: [ { validate: { message: lightMeasured } } ]
    to: { broker: local, topic: light-measured }
`,
  files: { 'light.yaml': lightDocument(0) },
  rewrite: (revision) => ['light.yaml', lightDocument(revision)],
});
