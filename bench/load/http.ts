/** HTTP load with autocannon, from the harness process (never the process being measured). */
import autocannon, { type Instance, type Result } from 'autocannon';

export interface HttpLoad {
  url: string;
  body: string;
  connections: number;
}

export interface HttpLoadResult {
  requests: number;
  seconds: number;
  /** Completed 2xx requests per second. */
  rps: number;
  p50_ms: number;
  p99_ms: number;
  /** Non-2xx answers plus connection errors and timeouts. */
  errors: number;
}

export interface RunningLoad {
  /** Stops the load and resolves with what it measured. */
  stop(): Promise<HttpLoadResult>;
  done: Promise<HttpLoadResult>;
}

/** Starts POSTing `body` to `url` for `seconds` (or until stop()). */
export function startHttpLoad(load: HttpLoad, seconds: number): RunningLoad {
  let instance: Instance;
  const done = new Promise<HttpLoadResult>((resolve, reject) => {
    instance = autocannon(
      { url: load.url, method: 'POST', body: load.body, headers: { 'content-type': 'application/json' }, connections: load.connections, duration: seconds, timeout: 5 },
      (err, result) => (err ? reject(err) : resolve(summarise(result))),
    );
  });
  return {
    done,
    stop() {
      instance.stop();
      return done;
    },
  };
}

export function runHttpLoad(load: HttpLoad, seconds: number): Promise<HttpLoadResult> {
  return startHttpLoad(load, seconds).done;
}

function summarise(r: Result): HttpLoadResult {
  const ok = r['2xx'];
  return {
    requests: ok,
    seconds: r.duration,
    rps: ok / r.duration,
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    errors: r.non2xx + r.errors,
  };
}
