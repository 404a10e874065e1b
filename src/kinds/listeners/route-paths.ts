import type FindMyWayModule from 'find-my-way';
import { bundled } from '../../core/bundled.js';
import type { PathClaims } from '../contracts.js';

/**
 * Route paths with parameters (`/rooms/:room`), as the http and websocket listeners route them:
 * one router decides which paths are valid and which claim the same requests, for the config
 * check and for the listeners alike.
 */
const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');
const noop = () => undefined;

/**
 * The route paths of one listener, claimed one by one: `claim` answers which path claimed before
 * matches the same requests as a new one (`/rooms/:id` and `/rooms/:room` do), as a pair of them
 * would make the router refuse the second. One router takes every path, so a config with n routes
 * on a listener builds one router, not one for each pair of paths (300 routes: 45,000 routers,
 * most of a reload's time); the pairs are tried only when it refuses a path.
 */
export class RoutePathClaims implements PathClaims {
  private readonly router = FindMyWay();
  private readonly paths: string[] = [];
  /** The router refused a path that no single earlier path conflicts with: from then on, pairs only. */
  private pairsOnly = false;

  claim(path: string): string | undefined {
    if (!this.pairsOnly) {
      try {
        this.router.on('GET', path, noop);
        this.paths.push(path);
        return undefined;
      } catch {
        /* a conflict with an earlier path, found below */
      }
    }
    const same = this.paths.find((p) => sameRoutePath(p, path));
    if (same !== undefined) return same;
    this.pairsOnly = true;
    this.paths.push(path);
    return undefined;
  }
}

/** Whether two route paths match the same requests (`/rooms/:id` and `/rooms/:room` do): the router refuses the second. */
export function sameRoutePath(a: string, b: string): boolean {
  const router = FindMyWay();
  router.on('GET', a, noop);
  try {
    router.on('GET', b, noop);
    return false;
  } catch {
    return true;
  }
}

/** Why the router cannot take `path`, or undefined. */
export function routePathProblem(path: string): string | undefined {
  // `/in/{id}` (AsyncAPI, OpenAPI, KrakenD) would be a literal path no request reaches; braces
  // inside a parameter's regular expression (`/:id(^\\d{3}$)`) are its own.
  const parts = path.split(/(\([^)]*\))/); // odd indices: regular expressions
  const braces = parts.flatMap((p, i) => (i % 2 === 0 ? [/\{([^{}/]*)\}/.exec(p)] : [])).find((m) => m !== null);
  if (braces) {
    const fixed = parts.map((p, i) => (i % 2 === 0 ? p.replace(/\{([^{}/]*)\}/g, (_, n: string) => `:${n || 'name'}`) : p)).join('');
    return `a path parameter is written ':${braces[1] || 'name'}' here, not '${braces[0]}' ('${fixed}')`;
  }
  try {
    FindMyWay().on('GET', path, noop);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Route path → its parameter names: a path's names never change (the path spells them), and forwards ask per client and per target. */
const parameterNames = new Map<string, readonly string[]>();

/** The names of a route path's parameters, in order (`/rooms/:room/:seat` → room, seat; a wildcard is `*`), as the router reads them. */
export function pathParameters(path: string): readonly string[] {
  if (!/[:*]/.test(path)) return [];
  let names = parameterNames.get(path);
  if (names !== undefined) return names;
  const router = FindMyWay();
  try {
    router.on('GET', path, noop);
    names = router.findRoute('GET', path)?.params ?? [];
  } catch {
    names = [];
  }
  parameterNames.set(path, names);
  return names;
}

/**
 * Where a forward target's message goes, as a client's request path spells it: `path` with the
 * values the message carries of its parameters (`$path`, its own path parameters of the same
 * names) in their places, percent-encoded (`/rooms/:r` with `r` = `a/b` → `/rooms/a%2Fb`, the
 * room of the clients of that path, ws-rooms.ts); a parameter the message does not carry stays
 * as written (every room with any value of it). A wildcard's value keeps its slashes.
 */
export function filledPath(path: string, params: Readonly<Record<string, unknown>> | undefined): string {
  if (params === undefined || pathParameters(path).length === 0) return path;
  const value = (name: string) => (Object.hasOwn(params, name) && typeof params[name] === 'string' ? (params[name] as string) : undefined);
  return path.replace(/::|:([^/:\-.(]+)(\((?:\\.|[^)])*\))?|\*$/g, (match, name: string | undefined) => {
    if (match === '::') return match;
    const v = value(name ?? '*');
    if (v === undefined) return match;
    return name === undefined ? v.split('/').map(encodeURIComponent).join('/') : encodeURIComponent(v);
  });
}
