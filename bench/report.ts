/** The run's report: the machine it ran on, and a markdown table of every scenario against its baseline. */
import { execFileSync } from 'node:child_process';
import { cpus, loadavg, release, totalmem, type as osType } from 'node:os';
import { isFailure, type ScenarioFailure, type ScenarioResult } from './scenario.js';
import { round } from './stats.js';

export interface Machine {
  cpu: string;
  cores: number;
  memory_gb: number;
  os: string;
  node: string;
  /** 1-minute load average when the run started: how busy the shared machine already was. */
  loadavg_at_start: number;
  commit: string | null;
  date: string;
}

export function describeMachine(): Machine {
  let commit: string | null = null;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // not a git checkout
  }
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memory_gb: round(totalmem() / 1024 ** 3),
    os: `${osType()} ${release()}`,
    node: process.version,
    loadavg_at_start: round(loadavg()[0]!),
    commit,
    date: new Date().toISOString(),
  };
}

/** Every number in the JSON rounded the same way as in the table. */
export function rounded(result: ScenarioResult): ScenarioResult {
  return roundDeep(result) as ScenarioResult;
}

function roundDeep(v: unknown): unknown {
  if (typeof v === 'number') return round(v);
  if (Array.isArray(v)) return v.map(roundDeep);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, roundDeep(x)]));
  return v;
}

export function markdownTable(machine: Machine, results: Record<string, ScenarioResult | ScenarioFailure>): string {
  const rows = ['| scenario | metric | value | baseline | baseline value | ratio | p50 ms | p99 ms | target | ok |', '|---|---|---:|---|---:|---:|---:|---:|---|---|'];
  for (const [name, r] of Object.entries(results)) {
    if (isFailure(r)) {
      rows.push(`| ${name} | | | | | | | | | failed: ${r.error.replace(/\|/g, '\\|')} |`);
      continue;
    }
    const baselineP99 = typeof r.baseline.p99_ms === 'number' ? ` (p99 ${fmt(r.baseline.p99_ms)})` : '';
    const extra = r.target.field === 'errors' ? ` (errors ${r.errors})` : '';
    rows.push(
      `| ${name} | ${r.metric} | ${fmt(r.value)}${extra} | ${r.baseline.name} | ${fmt(r.baseline.value)}${baselineP99} | ${fmt(r.ratio)} | ${fmt(r.p50_ms)} | ${fmt(r.p99_ms)} | ${r.target.field} ${r.target.op} ${r.target.limit} | ${r.pass ? 'yes' : '**no**'} |`,
    );
  }
  return `${rows.join('\n')}\n\n${machine.cpu}, ${machine.cores} cores, ${machine.memory_gb} GB, ${machine.os}, Node ${machine.node}, load average ${machine.loadavg_at_start} at start, commit ${machine.commit ?? '?'}, ${machine.date}\n`;
}

function fmt(n: number | null | undefined): string {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  return String(round(n));
}
