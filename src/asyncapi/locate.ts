/**
 * Where a place inside a message's payload is written: the parser hands the gateway the payload
 * with every `$ref` resolved, so a problem ajv finds in it (a `pattern` that is no regular
 * expression) has a path in that value, not a line. This walks the same path through the
 * documents as written, following each `$ref` on the way into its file, and says where it ends.
 */
import { dirname, resolve } from 'node:path';
import type { Diagnostic } from '../config/diagnostics.js';
import { parseDataFile, type PathPart, type SourceDocument } from '../config/source.js';
import { pointerKeys } from '../core/json-pointer.js';

/** A `$ref` chain longer than this is a cycle (the parser refuses cycles; this stays bounded anyway). */
const MAX_REFS = 256;

/**
 * The file, line and column of `path` below the payload at `payloadAt` of `document` (whose text
 * is `text`: an upload's, not the disk's), or undefined when the walk leaves what is written
 * locally (a remote `$ref`, a file that cannot be read, a key the parser added).
 */
export function locateInDocuments(
  document: string,
  text: string,
  payloadAt: readonly PathPart[],
  path: readonly PathPart[],
  read: (absPath: string) => string | undefined,
): { file: string; line: number; column: number } | undefined {
  const parsed = new Map<string, SourceDocument | undefined>();
  const open = (file: string): SourceDocument | undefined => {
    if (!parsed.has(file)) {
      const t = file === document ? text : read(file);
      const ignored: Diagnostic[] = [];
      parsed.set(file, t === undefined ? undefined : parseDataFile(file, t, ignored));
    }
    return parsed.get(file);
  };
  let file = document;
  let at: PathPart[] = [];
  let node: unknown = open(document)?.value;
  let refs = 0;
  /** Goes where the `$ref`s at `node` lead; false when it cannot. */
  const follow = (): boolean => {
    while (isMap(node) && typeof node.$ref === 'string') {
      if (++refs > MAX_REFS) return false;
      const [target = '', fragment = ''] = node.$ref.split('#', 2);
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) return false;
      file = target === '' ? file : resolve(dirname(file), decodeURIComponent(target));
      node = open(file)?.value;
      at = [];
      // Its keys URI-decoded (`my%20schema`), as the parser follows the pointer.
      const keys = pointerKeys(fragment);
      if (keys === undefined) return false;
      for (const key of keys) if (!step(/^\d+$/.test(key) ? Number(key) : key)) return false;
    }
    return node !== undefined;
  };
  const step = (key: PathPart): boolean => {
    if (!follow() || typeof node !== 'object' || node === null) return false;
    node = (node as Record<string, unknown>)[key];
    at.push(key);
    return node !== undefined;
  };
  for (const key of [...payloadAt, ...path]) if (!step(key)) return undefined;
  const doc = open(file);
  return doc && { file, ...doc.locate(at, 'value') };
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
