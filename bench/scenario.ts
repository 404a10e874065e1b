/** What every scenario reports: one figure against its baseline measured in the same run. */

export interface Target {
  /** The field of the result the target is about. */
  field: 'ratio' | 'value' | 'p99_ms' | 'errors';
  op: '>=' | '<=';
  limit: number;
}

export interface Measured {
  metric: string;
  value: number;
  baseline: { name: string; value: number; [extra: string]: unknown };
  /** value / baseline.value (so for costs such as µs or MB, lower is better). */
  ratio: number;
  p50_ms: number | null;
  p99_ms: number | null;
  target: Target;
  [extra: string]: unknown;
}

export interface ScenarioResult extends Measured {
  pass: boolean;
}

/** A scenario that could not run (its error is reported in the table and JSON, and the run exits 1). */
export interface ScenarioFailure {
  error: string;
}

export function isFailure(r: ScenarioResult | ScenarioFailure): r is ScenarioFailure {
  return typeof (r as ScenarioFailure).error === 'string' && (r as ScenarioResult).metric === undefined;
}

export interface RunOptions {
  /** Seconds of measurement per run (scenario and baseline each get this much). */
  duration: number;
}

export interface Scenario {
  name: string;
  /** One line for the table and --help. */
  describe: string;
  run(opts: RunOptions): Promise<ScenarioResult>;
}

export function judge(result: Measured): ScenarioResult {
  const actual = result[result.target.field] as number | null;
  const pass = actual !== null && Number.isFinite(actual) && (result.target.op === '>=' ? actual >= result.target.limit : actual <= result.target.limit);
  return { ...result, pass };
}

/** Warm-up before each measured run: enough for the JIT, short in smoke runs. */
export function warmupSeconds(duration: number): number {
  return Math.min(2, Math.max(0.5, duration / 4));
}
