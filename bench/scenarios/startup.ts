import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { repoRoot } from '../../test/helpers/gateway.js';
import { cpuMs, startGateway } from '../processes.js';
import { judge, type Scenario } from '../scenario.js';
import { median } from '../stats.js';

const RUNS = 5;
const TARGET_MS = 1000;

/**
 * Time from `eventgate run -c examples/gateway.yaml` to its "gateway ready" line (the process's
 * CPU time until then too, which contention from elsewhere inflates less), median of 5 starts,
 * against the floor: starting node itself and printing one line.
 */
export const startup: Scenario = {
  name: 'startup',
  describe: `ms from \`eventgate run\` to ready for examples/gateway.yaml (median of ${RUNS}) vs starting bare node`,
  async run() {
    const yaml = readFileSync(`${repoRoot}examples/gateway.yaml`, 'utf8');
    const schema = readFileSync(`${repoRoot}examples/schemas/light-measured.json`, 'utf8');
    const wall: number[] = [];
    const cpu: number[] = [];
    const floor: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t0 = performance.now();
      const gw = await startGateway(yaml, { files: { 'schemas/light-measured.json': schema }, env: { ADMIN_PORT: '0', HTTP_PORT: '0', WS_PORT: '0' } });
      wall.push(performance.now() - t0);
      cpu.push(cpuMs(gw.process.pid!));
      await gw.stop();
      floor.push(await bareNode());
    }
    const value = median(wall);
    const baseline = median(floor);
    return judge({
      metric: 'ms to ready',
      value,
      baseline: { name: 'bare node', value: baseline },
      ratio: value / baseline,
      p50_ms: null,
      p99_ms: null,
      cpu_ms_to_ready: median(cpu),
      runs: wall,
      target: { field: 'value', op: '<=', limit: TARGET_MS },
    });
  },
};

/** Milliseconds for node to start and print a line, as the gateway's ready line is read. */
async function bareNode(): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, ['-e', 'console.log("ready")'], { stdio: ['ignore', 'pipe', 'ignore'] });
  await once(child.stdout!, 'data');
  const t = performance.now() - t0;
  await once(child, 'exit');
  return t;
}
