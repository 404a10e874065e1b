import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { judge, type Scenario } from '../scenario.js';

/** In-process cost of validate + filter + transform per message, vs the same three steps hand-written. */
export const pipeline: Scenario = {
  name: 'pipeline',
  describe: 'in-process validate + filter + transform, µs per message vs hand-written JavaScript',
  async run({ duration }) {
    const script = fileURLToPath(new URL('../inprocess/pipeline.js', import.meta.url));
    const child = spawn(process.execPath, [script, String(duration)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    const [code] = (await once(child, 'close')) as [number | null];
    if (code !== 0) throw new Error(`pipeline child exited with ${code}`);
    const r = JSON.parse(out) as { gateway_us: number; hand_us: number };
    return judge({
      metric: 'µs/message',
      value: r.gateway_us,
      baseline: { name: 'hand-written', value: r.hand_us },
      ratio: r.gateway_us / r.hand_us,
      p50_ms: null,
      p99_ms: null,
      target: { field: 'value', op: '<=', limit: 15 },
    });
  },
};
