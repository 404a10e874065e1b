import Module from 'node:module';

/**
 * Preloaded with `node --import` (NODE_OPTIONS) in a gateway's process: its first load of undici,
 * the webhook targets' HTTP client, blocks the main thread for EVENTGATE_TEST_UNDICI_LOAD_MS, as
 * loading it on a loaded machine does for a shorter while (0.3-0.5 s measured at load 15).
 */
const ms = Number(process.env.EVENTGATE_TEST_UNDICI_LOAD_MS ?? 0);
const loader = Module as unknown as { _load(request: string, ...rest: unknown[]): unknown };
const load = loader._load;
let held = false;
loader._load = function (request: string, ...rest: unknown[]) {
  if (request === 'undici' && !held && ms > 0) {
    held = true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
  }
  return load.call(this, request, ...rest);
};
