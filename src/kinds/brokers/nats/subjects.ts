/**
 * What a NATS subject may be, checked where the config names one (validate) and where a route
 * computes one per message. nats-server takes a publish to `a.>` (not pedantic) and delivers it
 * only to subscribers of that very text, and refuses a subscription to `a.>.b` (`-ERR 'Invalid Subject'`):
 * the route would log that it is ready and receive nothing.
 */

/** Why `subject` cannot be published to, or undefined. */
export function publishSubjectProblem(subject: string): string | undefined {
  if (subject === '' || /[\s*>]/.test(subject) || subject.split('.').some((t) => t === ''))
    return 'a NATS subject to publish to has non-empty dot-separated tokens, no whitespace and no wildcards (* >)';
  return undefined;
}

/** Why `filter` is not a subject filter (a stream's subjects, a route's `from.topic`), or undefined. */
export function subjectFilterProblem(filter: string): string | undefined {
  if (/\s/.test(filter) || filter === '' || filter.split('.').some((t, j, all) => t === '' || (t === '>' && j !== all.length - 1) || (t.length > 1 && /[*>]/.test(t))))
    return "a NATS subject is dot-separated tokens with no whitespace, '*' a whole token, '>' only the last";
  return undefined;
}
