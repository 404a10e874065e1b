/**
 * `npm run bench [-- --only a,b] [--duration s] [--json file]`: runs each scenario against its
 * baseline in the same run, prints a markdown table and optionally writes the JSON report.
 * The gateway and the baselines each run in their own process; this process generates the load.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { describeMachine, markdownTable, rounded } from './report.js';
import { stopLeftoverBaselines } from './processes.js';
import { isFailure, type Scenario, type ScenarioFailure, type ScenarioResult } from './scenario.js';
import { amqpWsLatency, mqttWsLatency, natsWsLatency } from './scenarios/broker-ws-latency.js';
import { fanout } from './scenarios/fanout.js';
import { httpAmqp, httpMqtt, httpNats } from './scenarios/http-brokers.js';
import { httpKafka } from './scenarios/http-kafka.js';
import { httpMemory } from './scenarios/http-memory.js';
import { kafkaProxy, kafkaProxyConsume, kafkaProxyValidate } from './scenarios/kafka-proxy.js';
import { kafkaWsLatency } from './scenarios/kafka-ws-latency.js';
import { memory } from './scenarios/memory.js';
import { pipeline } from './scenarios/pipeline.js';
import { reload, reloadAsyncapi } from './scenarios/reload.js';
import { sseFanout } from './scenarios/sse-fanout.js';
import { startup } from './scenarios/startup.js';
import { webhook } from './scenarios/webhook.js';

const SCENARIOS: Scenario[] = [
  pipeline,
  httpMemory,
  reload,
  reloadAsyncapi,
  fanout,
  memory,
  startup,
  httpKafka,
  kafkaWsLatency,
  sseFanout,
  webhook,
  httpMqtt,
  httpAmqp,
  httpNats,
  mqttWsLatency,
  amqpWsLatency,
  natsWsLatency,
  kafkaProxy,
  kafkaProxyValidate,
  kafkaProxyConsume,
];

const USAGE = `usage: npm run bench -- [--only NAME,...] [--duration SECONDS] [--json FILE]
scenarios:
${SCENARIOS.map((s) => `  ${s.name.padEnd(18)}${s.describe}`).join('\n')}`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      options: { only: { type: 'string' }, duration: { type: 'string', default: '10' }, json: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const duration = Number(values.duration);
  if (!(duration > 0)) {
    process.stderr.write(`bench: --duration must be a positive number of seconds, got '${values.duration}'\n`);
    return 2;
  }
  let selected = SCENARIOS;
  if (values.only !== undefined) {
    const names = values.only
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
    if (unknown.length > 0) {
      process.stderr.write(`bench: unknown scenario ${unknown.join(', ')}\n${USAGE}\n`);
      return 2;
    }
    selected = SCENARIOS.filter((s) => names.includes(s.name));
  }

  const machine = describeMachine();
  const scenarios: Record<string, ScenarioResult | ScenarioFailure> = {};
  for (const s of selected) {
    process.stderr.write(`bench: ${s.name} (${duration} s per side)...\n`);
    try {
      scenarios[s.name] = rounded(await s.run({ duration }));
    } catch (err) {
      scenarios[s.name] = { error: (err as Error).message };
    } finally {
      await stopLeftoverBaselines();
    }
  }
  process.stdout.write(markdownTable(machine, scenarios));
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ machine, scenarios }, null, 2)}\n`);
  return Object.values(scenarios).some(isFailure) ? 1 : 0;
}

process.exitCode = await main();
