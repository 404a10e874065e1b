/**
 * The config schema's validator, compiled at build time. Compiling the whole config schema with
 * ajv takes most of a second — the largest part of `eventgate run`'s start-up — so `npm run build`
 * writes ajv's standalone code for it next to this module, with a hash of the schema it was made
 * from. At run time that code is used only when the hash matches the schema built from the
 * running registry; a stale or missing file (a test's own registry, a kind changed without a
 * build) falls back to compiling, which is slower and otherwise the same.
 *
 * That code is one function of ~700 KB. V8 compiling it took ~10 MB of malloc'd memory for a
 * moment, which stayed in an idle gateway's RSS as free heap, so the build also writes V8's code
 * cache of it (bytecode included, made after one call) and `run` loads the function from there.
 * The cache is V8's: it holds only for the same Node version and V8 flags (the build sets the
 * ones the commands that load a config hold while starting, src/cli/startup-hold.ts); when V8
 * rejects it (a user's own V8 flags, another Node) the source is compiled as before. Characters beyond Latin-1 are escaped in
 * the source so V8 keeps it as a one-byte string (half the memory).
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Script } from 'node:vm';
import type { ValidateFunction } from 'ajv';

/** How the config validator is built (errors must read the same either way). */
export const CONFIG_AJV_OPTIONS = { allErrors: true, verbose: true, discriminator: true, strict: false } as const;

/** CommonJS: ajv's standalone code requires its runtime helpers. */
const FILE = fileURLToPath(new URL('./config-validator.generated.cjs', import.meta.url));
const CACHE = `${FILE}.v8-cache`;

function schemaHash(schema: unknown): string {
  return createHash('sha256').update(JSON.stringify(schema)).update(JSON.stringify(CONFIG_AJV_OPTIONS)).digest('hex');
}

/** The generated module, run as CommonJS would, from the code cache when V8 accepts it. */
function load(cachedData?: Uint8Array): { validate: ValidateFunction & { hash?: string }; script: Script } {
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${readFileSync(FILE, 'utf8')}\n})`, { filename: FILE, cachedData });
  const module = { exports: {} as ValidateFunction & { hash?: string } };
  script.runInThisContext()(module.exports, createRequire(FILE), module, FILE, dirname(FILE));
  return { validate: module.exports, script };
}

/** The build-time validator for `schema`, when there is one made from exactly this schema. */
export function precompiledValidator(schema: unknown): ValidateFunction | undefined {
  if (!existsSync(FILE)) return undefined;
  const cache = readCodeCache();
  // ajv's standalone module exports the validating function itself (the hash is a property of it).
  const { validate } = load(cache);
  // V8 has compiled from the cache and keeps nothing of it: its ~1 MB goes back now, not whenever a
  // GC collects a Buffer (in an idle gateway maybe never).
  (cache?.buffer as ResizableArrayBuffer | undefined)?.resize(0);
  return validate.hash === schemaHash(schema) ? validate : undefined;
}

// ES2024's resizable ArrayBuffer (in Node 20), not in the ES2023 lib the project compiles against.
type ResizableArrayBuffer = ArrayBuffer & { resize(byteLength: number): void };
type ResizableArrayBufferConstructor = new (byteLength: number, options: { maxByteLength: number }) => ResizableArrayBuffer;

/** The code cache, in a resizable ArrayBuffer: shrinking one gives its pages back to the system at once. */
function readCodeCache(): Uint8Array | undefined {
  let fd: number;
  try {
    fd = openSync(CACHE, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fstatSync(fd).size;
    const bytes = new Uint8Array(new (ArrayBuffer as unknown as ResizableArrayBufferConstructor)(size, { maxByteLength: size }), 0, size);
    let read = 0;
    while (read < size) {
      const n = readSync(fd, bytes, read, size - read, read);
      if (n === 0) break;
      read += n;
    }
    return bytes.subarray(0, read);
  } finally {
    closeSync(fd);
  }
}

/** Writes the validator for `schema` (scripts/precompile-config-validator.js, run by `npm run build`). */
export async function writePrecompiledValidator(schema: unknown): Promise<string> {
  const hash = schemaHash(schema);
  const { Ajv2020 } = await import('ajv/dist/2020.js');
  const { default: standalone } = await import('ajv/dist/standalone/index.js');
  const ajv = new Ajv2020({ ...CONFIG_AJV_OPTIONS, code: { source: true } });
  const source = standalone.default(ajv, ajv.compile(schema as object)).replace(/[^\0-\xff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  writeFileSync(FILE, `// Generated by \`npm run build\` from the config schema; see precompiled-validator.ts.\n${source}\nmodule.exports.hash = ${JSON.stringify(hash)};\n`);
  return FILE;
}

/** Writes V8's code cache of the generated validator, under the V8 flags in force (call it with `run`'s start-up flags set). */
export function writeValidatorCodeCache(): string {
  const { validate, script } = load();
  validate({ version: 1 }); // compiles the function, so the cache holds its bytecode
  writeFileSync(CACHE, script.createCachedData());
  return CACHE;
}
