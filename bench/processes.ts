/**
 * The processes a scenario measures: the gateway (through the same helper the e2e tests use, so it
 * runs exactly as `eventgate run`) and the baseline servers, each in its own process; and what the
 * kernel says they cost (CPU time, resident memory), which is steadier than wall-clock throughput
 * on a shared machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export { startGateway, type RunningGateway } from '../test/helpers/gateway.js';

export interface Baseline {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

/** Baselines started and not yet stopped. */
const running = new Set<Baseline>();

/**
 * Stops the baselines a scenario left running (one that failed before its own `finally` could):
 * they would load the machine under the next scenario, and keep the run from exiting.
 */
export async function stopLeftoverBaselines(): Promise<void> {
  await Promise.all([...running].map((b) => b.stop()));
}

/** Starts dist/bench/baselines/<name>.js and waits for its "baseline ready" line. */
export async function startBaseline(name: string, env: Record<string, string> = {}): Promise<Baseline> {
  const script = fileURLToPath(new URL(`./baselines/${name}.js`, import.meta.url));
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  const exited = once(child, 'exit');
  const lines = createInterface({ input: child.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    lines.on('line', (line) => {
      try {
        const parsed = JSON.parse(line) as { msg?: string; port?: number };
        if (parsed.msg === 'baseline ready') resolve(parsed.port!);
      } catch {
        // not a status line
      }
    });
    void exited.then(() => reject(new Error(`baseline ${name} exited before it was ready`)));
  });
  const baseline: Baseline = {
    port,
    pid: child.pid!,
    stop: () => {
      running.delete(baseline);
      return stopChild(child, exited);
    },
  };
  running.add(baseline);
  return baseline;
}

async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  await exited;
}

/** CPU time (user + system) a process has used so far, in milliseconds; Linux /proc. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / CLOCK_TICKS;
}

/**
 * CPU time of every live process in process group `pgid` (a server started detached, with what it
 * started: RabbitMQ's beam.smp under its start script), in milliseconds.
 */
export function groupCpuMs(pgid: number): number {
  let ms = 0;
  for (const entry of readdirSync('/proc')) {
    if (entry.charCodeAt(0) > 57) continue; // not a pid
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid) ms += ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  }
  return ms;
}

/** Resident set size of a process in bytes; Linux /proc. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

/** USER_HZ is 100 on every Linux architecture Node supports. */
const CLOCK_TICKS = 100;

/** Measures the CPU a process spends while `work` runs. */
export async function withCpu<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; cpuMs: number }> {
  const before = cpuMs(pid);
  const result = await work();
  return { result, cpuMs: cpuMs(pid) - before };
}

export { startKafka, type KafkaCluster } from '../test/helpers/kafka.js';
