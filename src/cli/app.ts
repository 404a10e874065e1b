/**
 * What the CLI's bundle (src/cli/app-bundle.ts, scripts/bundle-app.js) exports: the commands, and
 * for scripts/write-bundle-code-caches.js what it runs to warm the bundle's code cache.
 */
export { main } from './commands.js';
export { loadPlan } from '../plan/compile.js';
export { defaultRegistry } from '../kinds/index.js';
export { writeBundleCodeCaches } from '../core/bundled.js';

/**
 * Loads the modules only `run` loads (the runtime, the admin server, the logger, the metrics
 * registry), which the commands import when used: the code cache is written after this, so that
 * `run` finds theirs compiled too.
 */
export async function loadRunModules(): Promise<void> {
  await Promise.all([import('../runtime/gateway.js'), import('../admin/index.js'), import('../log.js'), import('../telemetry/prometheus.js')]);
}
