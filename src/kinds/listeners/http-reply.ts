import type { ServerResponse } from 'node:http';
import { problemBody, type Problem } from '../../core/errors.js';

/** JSON responses for the listeners and the admin API, with an exact content-length. */
export function sendJson(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  sendJsonText(res, status, JSON.stringify(body), type);
}

/** sendJson for a body already written as JSON text (of `bytes` bytes when the caller knows), with `extra` headers (names, values). */
export function sendJsonText(res: ServerResponse, status: number, text: string, type = 'application/json', bytes = Buffer.byteLength(text), extra?: readonly string[]): void {
  // A flat array of names and values: node stores it as it is, where an object's keys are walked with a hasOwn check each.
  res.writeHead(status, extra === undefined ? ['content-type', type, 'content-length', bytes] : ['content-type', type, 'content-length', bytes, ...extra]);
  res.end(text);
}

/** RFC 9457 problem+json, with any headers the problem carries (Retry-After, ...). */
export function sendProblem(res: ServerResponse, p: Problem): void {
  for (const [k, v] of Object.entries(p.headers ?? {})) res.setHeader(k, v);
  sendJson(res, p.status, problemBody(p), 'application/problem+json');
}
