import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/**
 * A dependency loaded from the one file `npm run build` bundles it into (scripts/bundle-vendor.js, esbuild):
 * as the package's many module files it cost every gateway more resident memory
 * (docs/performance.md). The package itself when the file is missing (a build that only ran tsc).
 */
export function bundled<T>(pkg: string): T {
  const file = fileURLToPath(new URL(`../vendor/${pkg.replace(/^@/, '').replace(/\//g, '-')}.cjs`, import.meta.url));
  return createRequire(import.meta.url)(existsSync(file) ? file : pkg) as T;
}
