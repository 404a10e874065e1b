import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runBundle } from '../core/bundled.js';

/**
 * The CLI's commands as one CommonJS file (`dist/src/cli/app.cjs`, written by scripts/bundle-app.js
 * with esbuild from src/cli/app.ts and every module it reaches), loaded instead of their ~130
 * module files. Node 20's ES module loader resolves, reads and compiles each file on its own:
 * loading the commands' modules cost ~260 ms of CPU, the same code as one script ~110-130 ms
 * (from V8's code cache when it takes it, src/core/bundled.ts). Every `run`, `validate`, `plan`,
 * `test` and `export` pays that, as do the suite's hundreds of CLI calls (docs/testing.md).
 *
 * The bundle is used only while it is current: the build lists its input files with their sizes
 * and modification times (`app.cjs.inputs.json`), and in a checkout a file that changed since (a
 * `tsc` without `npm run build` or `npm test`) makes the CLI load the modules themselves, which
 * run the same code; an installed package is checked by the files' sizes.
 * `EVENTGATE_APP_BUNDLE=0` does so too (module file names in a debugger; the test of which
 * modules each command loads).
 */

const DIR = dirname(fileURLToPath(import.meta.url));
export const APP_BUNDLE = join(DIR, 'app.cjs');
export const APP_BUNDLE_INPUTS = `${APP_BUNDLE}.inputs.json`;

/** An input of the bundle, relative to its directory, as the build saw it. */
export type BundleInput = [file: string, size: number, mtimeMs: number];

/** What src/cli/app.ts exports. */
export type App = typeof import('./app.js');

/** The commands from the bundle when it is current (and not turned off), else undefined. */
export function appBundle(): App | undefined {
  if (process.env.EVENTGATE_APP_BUNDLE === '0' || !appBundleCurrent()) return undefined;
  return runBundle(APP_BUNDLE) as App;
}

/**
 * Where tsc keeps its incremental state (tsconfig.json): present in a checkout, where a `tsc` may
 * have rewritten modules since the bundle was made, and not in an installed package (npm pack,
 * the container image), whose files npm writes at install time, each at a time of its own.
 */
const TS_BUILD_INFO = join(DIR, '..', '..', '.tsbuildinfo');

/**
 * Whether the bundle exists and none of its inputs changed since it was written: each input has
 * the size it had, and in a checkout also the modification time.
 */
export function appBundleCurrent(): boolean {
  let inputs: BundleInput[];
  try {
    inputs = JSON.parse(readFileSync(APP_BUNDLE_INPUTS, 'utf8')) as BundleInput[];
    statSync(APP_BUNDLE);
  } catch {
    return false;
  }
  // A list the build did not write (cut short, edited): the modules, rather than a TypeError at start.
  if (!Array.isArray(inputs)) return false;
  const built = existsSync(TS_BUILD_INFO);
  return inputs.every(([file, size, mtimeMs]) => {
    const now = statSync(join(DIR, file), { throwIfNoEntry: false });
    return now !== undefined && now.size === size && (!built || now.mtimeMs === mtimeMs);
  });
}
