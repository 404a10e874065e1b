import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { PathPart } from '../config/source.js';
import type { SchemaFile, SchemaProblem } from './json-schema.js';

/** Where a `$ref` to another file is written: the file holding it (as the config would name it), its place there, and the reference as written. */
export interface RefSite {
  file: string;
  path: PathPart[];
  ref: string;
}

/**
 * Reads a schema file a `$ref` names (`name` as the config would write it), watched like the
 * schema's own; undefined when it cannot (already reported, at `site`: the `$ref` itself).
 */
export type SchemaFileReader = (name: string, abs: string, site: RefSite) => { value: unknown } | undefined;

/**
 * The files a JSON Schema file's `$ref`s reach (`$ref: node.yaml#/node`, a path relative to the
 * file that holds it, as JSON Schema resolves it against the file's URL), each read once however
 * many `$ref`s name it, also when one refers back (a recursive schema across files); `unread`
 * when one could not be read (reported by `read`). `files` is undefined when the schema names no
 * other file (it is compiled alone, on a shared ajv), and for a schema with an `$id`, whose
 * `$ref`s resolve against that id rather than the file. Remote and absolute `$ref`s are not
 * followed (ajv resolves those it knows, such as a draft's meta-schema).
 */
export function schemaFiles(name: string, abs: string, value: unknown, read: SchemaFileReader): { files: { url: string; others: SchemaFile[] } | undefined; problems: SchemaProblem[]; unread?: true } {
  if (hasId(value)) return { files: undefined, problems: [] };
  const others = new Map<string, SchemaFile>();
  const problems: SchemaProblem[] = [];
  const rootUrl = pathToFileURL(abs).href;
  const queue: { name: string; abs: string; value: unknown }[] = [{ name, abs, value }];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const { location, path } of fileRefs(file.value)) {
      let decoded: string;
      try {
        decoded = decodeURIComponent(location);
      } catch {
        problems.push({ path, message: `$ref '${location}' is not a valid path`, file: file.name === name ? undefined : file.name });
        continue;
      }
      const targetAbs = resolve(dirname(file.abs), decoded);
      const url = pathToFileURL(targetAbs).href;
      if (url === rootUrl || others.has(url)) continue;
      const targetName = join(dirname(file.name), decoded);
      const doc = read(targetName, targetAbs, { file: file.name, path, ref: location });
      if (!doc) return { files: undefined, problems: [], unread: true };
      others.set(url, { url, name: targetName, value: doc.value });
      queue.push({ name: targetName, abs: targetAbs, value: doc.value });
    }
  }
  if (problems.length > 0) return { files: undefined, problems };
  return { files: others.size > 0 ? { url: rootUrl, others: [...others.values()] } : undefined, problems };
}

/** The `$ref`s of a schema that name another file by a relative path, with where each is written. */
function fileRefs(value: unknown): { location: string; path: PathPart[] }[] {
  const out: { location: string; path: PathPart[] }[] = [];
  const stack: [unknown, PathPart[]][] = [[value, []]];
  while (stack.length > 0) {
    const [v, path] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    const ref = (v as { $ref?: unknown }).$ref;
    if (typeof ref === 'string') {
      const location = ref.split('#')[0]!;
      // A scheme (https:, urn:) or an absolute path: not a file beside this one.
      if (location !== '' && !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith('/') && !location.startsWith('\\')) {
        out.push({ location, path: [...path, '$ref'] });
      }
    }
    if (Array.isArray(v)) v.forEach((x, i) => stack.push([x, [...path, i]]));
    else for (const [k, x] of Object.entries(v)) stack.push([x, [...path, k]]);
  }
  return out.reverse();
}

function hasId(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (typeof (v as { $id?: unknown }).$id === 'string') return true;
    for (const x of Object.values(v)) stack.push(x);
  }
  return false;
}
