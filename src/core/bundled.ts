import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * A dependency loaded from the one file `npm run build` bundles it into (scripts/bundle-vendor.js, esbuild):
 * as the package's many module files it cost every gateway more resident memory and start-up time
 * (docs/performance.md, docs/testing.md). Without that file (a build that only ran tsc), `fallback`
 * loads the same thing from the packages: by default the package named `name`.
 */
export function bundled<T>(name: string, fallback: (require: NodeJS.Require) => T = (require) => require(name) as T): T {
  const file = fileURLToPath(new URL(`../vendor/${name.replace(/^@/, '').replace(/\//g, '-')}.cjs`, import.meta.url));
  const require = createRequire(import.meta.url);
  return existsSync(file) ? (require(file) as T) : fallback(require);
}
