/**
 * What a NATS subject may be, checked where the config names one (validate) and where a route
 * computes one per message. nats-server takes a publish to `a.>` (not pedantic) and delivers it
 * only to subscribers of that very text, and refuses a subscription to `a.>.b` (`-ERR 'Invalid Subject'`):
 * the route would log that it is ready and receive nothing.
 */

import { hash } from '../../../core/canonical.js';
import type { NatsSettings, NatsStream } from '../nats.js';

/**
 * The longest subject the gateway sends. A subject travels in the protocol line of a PUB, HPUB or
 * SUB (with a reply inbox, sizes, a queue group), which nats-server bounds by `max_control_line`
 * (4 KiB by default) and answers past it with `-ERR 'Maximum Control Line Exceeded'`, closing the
 * connection: every publish in flight on it failed and every route's subscription went with it,
 * again at each retry of the message that held such a subject.
 */
export const MAX_SUBJECT_BYTES = 3840;
export const TOO_LONG = `a NATS subject is at most ${MAX_SUBJECT_BYTES} bytes here: nats-server closes the connection for a longer protocol line (max_control_line, 4 KiB by default)`;

/**
 * A control character other than whitespace (which the checks below name as such): nats-server
 * takes `PUB in\0.x` and a subscription to it, so a message published to a subject a typo or an
 * expression put a NUL into reached no subscriber of the subject meant.
 */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Why `subject` holds a control character (`a NATS subject cannot hold the control character U+0000`), or undefined. */
function controlCharacterProblem(subject: string): string | undefined {
  const found = CONTROL.exec(subject)?.[0];
  return found === undefined ? undefined : `a NATS subject cannot hold the control character U+${found.charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Why `subject` cannot be published to, or undefined. */
export function publishSubjectProblem(subject: string): string | undefined {
  if (subject === '' || /[\s*>]/.test(subject) || subject.split('.').some((t) => t === ''))
    return 'a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)';
  if (subjectTooLong(subject)) return TOO_LONG;
  return controlCharacterProblem(subject);
}

/** subjectFilterProblem's answer for a filter that is not made of tokens as NATS takes them. */
export const NOT_A_FILTER = "a NATS subject is dot-separated tokens with no whitespace, '*' a whole token, '>' only the last";

/** Why `filter` is not a subject filter (a stream's subjects, a route's `from.topic`), or undefined. */
export function subjectFilterProblem(filter: string): string | undefined {
  if (/\s/.test(filter) || filter === '' || filter.split('.').some((t, j, all) => t === '' || (t === '>' && j !== all.length - 1) || (t.length > 1 && /[*>]/.test(t)))) return NOT_A_FILTER;
  if (subjectTooLong(filter)) return TOO_LONG;
  return controlCharacterProblem(filter);
}

/** Whether a subject is longer than MAX_SUBJECT_BYTES (counted in bytes only when it may be). */
export function subjectTooLong(subject: string): boolean {
  return subject.length > MAX_SUBJECT_BYTES / 3 && Buffer.byteLength(subject) > MAX_SUBJECT_BYTES;
}

/**
 * A subject both filters match (`*` one token, `>` one or more), or undefined when none does.
 * nats-server refuses a stream whose subjects overlap one another or another stream's (`subjects
 * overlap with an existing stream`), so two such filters in one broker's `streams` cannot both be.
 */
export function subjectsOverlap(a: string, b: string): string | undefined {
  const x = a.split('.');
  const y = b.split('.');
  const out: string[] = [];
  // A wildcard token stands for any token: show one of the other filter's, or a placeholder.
  const concrete = (t: string) => (t === '*' || t === '>' ? 'x' : t);
  for (let i = 0; ; i++) {
    const s = x[i];
    const t = y[i];
    if (s === undefined || t === undefined) return s === t ? out.join('.') : undefined;
    if (s === '>') return [...out, ...y.slice(i).map(concrete)].join('.');
    if (t === '>') return [...out, ...x.slice(i).map(concrete)].join('.');
    if (s !== '*' && t !== '*' && s !== t) return undefined;
    out.push(s === '*' ? concrete(t) : s);
  }
}

/**
 * Whether every subject `filter` matches is also matched by `pattern` (NATS wildcards: `*` one
 * token, `>` the rest): a concrete subject is covered when it matches, a filter when it is narrower.
 */
export function subjectCovers(pattern: string, filter: string): boolean {
  const p = pattern.split('.');
  const f = filter.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i < f.length;
    if (i >= f.length) return false;
    if (p[i] === '*') {
      if (f[i] === '>') return false;
      continue;
    }
    if (p[i] !== f[i]) return false;
  }
  return p.length === f.length;
}

/**
 * A group's JetStream consumer name: no `.`, `*`, `>`, whitespace or path separators, so any
 * character but letters, digits, `_` and `-` becomes `_`. `instanceId`: the id a per-instance group
 * holds (SubscribeSpec.instanceId). As `.` and `_` both became `_`, instances `web.0` and `web_0`
 * named one consumer, which they then shared, each getting part of the messages: an id holding a
 * character other than letters, digits and `-` adds 10 hex digits of its hash, told apart from
 * every other id's name (an id without such a character gives no `_` where it stands). An id of
 * only those keeps the name it always had, so its consumer is not left behind by an upgrade.
 */
export function consumerName(group: string, instanceId?: string): string {
  const name = group.replace(/[^A-Za-z0-9_-]/g, '_');
  return instanceId === undefined || /^[A-Za-z0-9-]*$/.test(instanceId) ? name : `${name}-${hash(instanceId).slice(0, 10)}`;
}

/** The stream whose subjects hold every subject of `filter`, if any: messages there are JetStream's. */
export function streamFor(settings: NatsSettings, filter: string): [string, NatsStream] | undefined {
  return Object.entries(settings.streams).find(([, s]) => s.subjects.some((p) => subjectCovers(p, filter)));
}
