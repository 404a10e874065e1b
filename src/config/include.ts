import { readdirSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { createHash } from 'node:crypto';
import { formatPath, type Diagnostic } from './diagnostics.js';
import { describeFsError, readSource, type Env, type PathPart, type SourceDocument } from './source.js';

const hash = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');

/** Sections a fragment may hold. Maps are merged by name, `routes` lists concatenated. */
export const FRAGMENT_SECTIONS = ['brokers', 'listeners', 'chains', 'routes'] as const;
const MAPS = ['brokers', 'listeners', 'chains'] as const;

/** `*`, `?` and `[...]` in the file name (not in directories: the watcher follows one directory per pattern). */
export function isGlob(path: string): boolean {
  return /[*?[]/.test(basename(path));
}

/**
 * Why a glob's directory could not be listed. Only a missing one "does not exist": a file where the
 * directory should be (a checkout that replaced it) or one the gateway may not read (chmod) were
 * said to be missing too, which sent users looking for a directory that was there.
 */
function globDirectoryProblem(pattern: string, absDir: string, shownDir: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `include '${pattern}': the directory ${shownDir} does not exist`;
  if (code === 'ENOTDIR' && isNonDirectory(absDir)) return `include '${pattern}': ${shownDir} is a file, not a directory`;
  return `include '${pattern}': cannot list the directory ${shownDir}: ${describeFsError(err)}`;
}

function isNonDirectory(path: string): boolean {
  try {
    return !statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const EMPTY_FRAGMENT = `the included file is empty; a fragment holds any of ${FRAGMENT_SECTIONS.join(', ')} (\`routes: []\` for one that has nothing yet)`;

const wildcardInDirectory = (pattern: string) => `include '${pattern}': a pattern may only use *, ? and [...] in the file name, not in directories`;

function globRegex(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end === -1) re += '\\[';
      else {
        re += `[${pattern
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/**
 * Whether a glob leaves `name` out: hidden files, and config test files (`gateway.tests.yaml`,
 * which sit beside the config, so `include: "*.yaml"` there would take them for fragments)
 * unless the pattern itself names test files.
 */
function globSkips(name: string, pattern: string): boolean {
  return name.startsWith('.') || (/\.tests\.ya?ml$/i.test(name) && !/\.tests\./i.test(pattern));
}

/** The files a pattern matches now, sorted (so fragments merge in a stable order); hidden files and config test files never match. */
export function expandGlob(absPattern: string): string[] {
  const re = globRegex(basename(absPattern));
  const dir = dirname(absPattern);
  return readdirSync(dir)
    .filter((name) => !globSkips(name, basename(absPattern)) && re.test(name))
    .sort()
    .map((name) => join(dir, name));
}

/** Whether `absFile` is one `absPattern` matches (what expandGlob would list). */
export function globMatches(absPattern: string, absFile: string): boolean {
  const name = basename(absFile);
  return dirname(absFile) === dirname(absPattern) && !globSkips(name, basename(absPattern)) && globRegex(basename(absPattern)).test(name);
}

/** What the watcher compares for a glob: the list of matching files (a new file matching it is a change). */
export function globFingerprint(absPattern: string): string {
  try {
    return `glob:${hash(expandGlob(absPattern).join('\n'))}`;
  } catch {
    return 'missing';
  }
}

export interface Included {
  /** The merged document, with positions leading into the file each part came from. */
  source: SourceDocument;
  /** Fragment files and glob patterns → hash, for the watcher. */
  files: Map<string, string>;
  /** Fragments that loaded, for their own schema check. */
  fragments: { source: SourceDocument; routeOffset: number }[];
}

interface Origin {
  doc: SourceDocument;
  /** Path prefix in `doc` that stands for the merged path prefix. */
  at: PathPart[];
}

/**
 * Resolves `include:` (files or globs relative to the config) and merges the fragments into the
 * config: maps by name, route lists concatenated in include order after the config's own. A
 * name defined twice is reported at the second definition, naming the first. Diagnostics about a
 * merged part point into the file it came from (SourceDocument.fileOf).
 */
export function resolveIncludes(root: SourceDocument, configFile: string, env: Env, diagnostics: Diagnostic[], read = readSource): Included | undefined {
  if (!isMap(root.value)) return undefined;
  const value = root.value;
  const raw = value.include;
  if (raw === undefined || (typeof raw !== 'string' && !Array.isArray(raw))) return undefined;
  const patterns = (typeof raw === 'string' ? [raw] : raw).map((p, i) => ({ p, at: (typeof raw === 'string' ? ['include'] : ['include', i]) as PathPart[] }));
  const dir = dirname(resolve(configFile));
  const shown = (abs: string) => join(dirname(root.file), relative(dir, abs));
  const files = new Map<string, string>();
  const fragments: Included['fragments'] = [];
  const rootReport = (at: PathPart[], message: string, code = 'EG_CONFIG_FILE') => {
    const { line, column } = root.locate(at, 'value');
    diagnostics.push({ file: root.file, line, column, code, path: formatPath(at), message });
  };

  const merged: Record<string, unknown> = { ...value };
  delete merged.include;
  for (const s of MAPS) if (merged[s] !== undefined && isMap(merged[s])) merged[s] = { ...(merged[s] as object) };
  if (Array.isArray(merged.routes)) merged.routes = [...merged.routes];
  const origins = new Map<string, Origin>();
  const routeOrigins: { from: number; to: number; doc: SourceDocument }[] = [];
  const ownRoutes = Array.isArray(value.routes) ? value.routes.length : 0;
  for (const s of MAPS) for (const name of Object.keys(isMap(value[s]) ? (value[s] as object) : {})) origins.set(`${s}\0${name}`, { doc: root, at: [s, name] });

  const seen = new Set<string>([resolve(configFile)]);
  for (const { p, at } of patterns) {
    if (typeof p !== 'string' || p === '') continue; // the schema check reports it
    const abs = resolve(dir, p);
    let matches: string[];
    if (isGlob(p)) {
      if (/[*?[]/.test(dirname(p))) {
        rootReport(at, wildcardInDirectory(p), 'EG_CONFIG_SCHEMA');
        continue;
      }
      files.set(abs, globFingerprint(abs));
      try {
        matches = expandGlob(abs);
      } catch (err) {
        rootReport(at, globDirectoryProblem(p, dirname(abs), shown(dirname(abs)), err));
        continue;
      }
    } else matches = [abs];
    for (const file of matches) {
      if (seen.has(file)) continue;
      seen.add(file);
      const before = diagnostics.length;
      const { source, bytes } = read(shown(file), env, diagnostics, { fragment: true });
      files.set(file, bytes ? hash(bytes) : 'missing');
      if (!source) {
        // Unreadable: say so at the include line (the fragment's own file has no line to point at).
        if (!bytes) {
          const why = diagnostics[before]?.message.replace(/^cannot read config file: /, '') ?? 'cannot read';
          diagnostics.splice(before);
          // teams/*/routes.yaml is no glob (its file name has no wildcard), but meant as one: say what is wrong with it, not only that no such file exists.
          if (!isGlob(p) && /[*?[]/.test(dirname(p))) rootReport(at, wildcardInDirectory(p), 'EG_CONFIG_SCHEMA');
          else rootReport(at, `cannot read included file '${shown(file)}': ${why}`);
        }
        continue;
      }
      const frag = source.value;
      if (frag === null || frag === undefined) {
        // Refused, as an empty config file is: a reload that read a fragment an editor or a copy had
        // just truncated removed every route in it (their clients disconnected, groups left, MQTT
        // sessions ended on the server), and the rewrite brought them back as new.
        diagnostics.push({ file: source.file, line: 1, column: 1, code: 'EG_CONFIG_SCHEMA', path: '', message: EMPTY_FRAGMENT });
        continue;
      }
      const routeOffset = Array.isArray(merged.routes) ? merged.routes.length : 0;
      fragments.push({ source, routeOffset });
      // Its problems so far (unset variables) keep their place in the file but name the merged path.
      for (const d of diagnostics.slice(before)) d.path = mergedPath(d.path, routeOffset);
      if (!isMap(frag)) continue; // its schema check reports it
      for (const s of MAPS) {
        if (!isMap(frag[s])) continue;
        const into = (isMap(merged[s]) ? merged[s] : (merged[s] = {})) as Record<string, unknown>;
        for (const [name, v] of Object.entries(frag[s] as object)) {
          const first = origins.get(`${s}\0${name}`);
          if (first) {
            const { line } = first.doc.locate(first.at, 'key');
            const { line: l2, column } = source.locate([s, name], 'key');
            diagnostics.push({
              file: source.file,
              line: l2,
              column,
              code: 'EG_CONFIG_CONFLICT',
              path: formatPath([s, name]),
              message: `${s.slice(0, -1)} '${name}' is defined twice: here and in ${first.doc.file}:${line}`,
            });
            continue;
          }
          origins.set(`${s}\0${name}`, { doc: source, at: [s, name] });
          into[name] = v;
        }
      }
      if (Array.isArray(frag.routes)) {
        const list = (Array.isArray(merged.routes) ? merged.routes : (merged.routes = [])) as unknown[];
        routeOrigins.push({ from: list.length, to: list.length + frag.routes.length, doc: source });
        list.push(...frag.routes);
      }
    }
  }

  /** The document and path inside it that a merged path stands for. */
  const resolvePath = (path: readonly PathPart[]): { doc: SourceDocument; path: PathPart[] } => {
    const [section, key, ...rest] = path;
    if (section === 'routes' && typeof key === 'number' && key >= ownRoutes) {
      const o = routeOrigins.find((r) => key >= r.from && key < r.to);
      if (o) return { doc: o.doc, path: ['routes', key - o.from, ...rest] };
    }
    if (typeof section === 'string' && (MAPS as readonly string[]).includes(section) && key !== undefined) {
      const o = origins.get(`${section}\0${key}`);
      if (o) return { doc: o.doc, path: [...o.at, ...rest] };
    }
    return { doc: root, path: [...path] };
  };
  const fromEnv = new Set(root.fromEnv);
  const envValues = new Set(root.envValues);
  const defaultsOnly = new Set(root.defaultsOnly);
  // A problem with a fragment's value from the environment names its variables, as the config's does.
  const variableNames = new Map(root.variableNames);
  for (const { source, routeOffset } of fragments) {
    for (const p of source.fromEnv) fromEnv.add(mergedPath(p, routeOffset));
    for (const p of source.defaultsOnly ?? []) defaultsOnly.add(mergedPath(p, routeOffset));
    for (const [p, names] of source.variableNames ?? []) variableNames.set(mergedPath(p, routeOffset), names);
    for (const v of source.envValues ?? []) envValues.add(v);
  }
  const composite: SourceDocument = {
    ...root,
    value: merged,
    fromEnv,
    envValues,
    defaultsOnly,
    variableNames,
    locate: (path, which) => {
      const r = resolvePath(path);
      return r.doc.locate(r.path, which);
    },
    locateInValue: (path, index) => {
      const r = resolvePath(path);
      return r.doc.locateInValue(r.path, index);
    },
    fileOf: (path) => resolvePath(path).doc.file,
  };
  return { source: composite, files, fragments };
}

/** A fragment's `routes[i]...` is `routes[offset + i]...` of the merged config; other paths are the same. */
export function mergedPath(path: string, routeOffset: number): string {
  return path.replace(/^routes\[(\d+)\]/, (_, n: string) => `routes[${Number(n) + routeOffset}]`);
}

/**
 * The inverse of mergedPath for the diagnostics of a load: a problem in a fragment names its path
 * in that file (`routes[0]` of teams/a.yaml), as its position and message do.
 */
export function pathsInOwnFiles(diagnostics: Diagnostic[], included: Included | undefined): Diagnostic[] {
  if (!included?.fragments.length) return diagnostics;
  const offsets = new Map(included.fragments.map((f) => [f.source.file, f.routeOffset]));
  return diagnostics.map((d) => {
    const offset = offsets.get(d.file);
    return offset ? { ...d, path: d.path.replace(/^routes\[(\d+)\]/, (_, n: string) => `routes[${Number(n) - offset}]`) } : d;
  });
}

function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
