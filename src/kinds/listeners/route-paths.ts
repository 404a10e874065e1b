import type FindMyWayModule from 'find-my-way';
import { bundled } from '../../core/bundled.js';

/**
 * Route paths with parameters (`/rooms/:room`), as the http and websocket listeners route them:
 * one router decides which paths are valid and which claim the same requests, for the config
 * check and for the listeners alike.
 */
const FindMyWay = bundled<typeof FindMyWayModule>('find-my-way');
const noop = () => undefined;

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
  try {
    FindMyWay().on('GET', path, noop);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
