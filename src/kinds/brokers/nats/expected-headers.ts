import { problem } from '../../../core/errors.js';
import { Refused } from '../acknowledgement.js';

/**
 * The headers by which a JetStream publish asks something of the stream: what it expects of it
 * (optimistic concurrency: `Nats-Expected-Last-Sequence: 41` is stored only if the stream's last
 * message is 41), and `Nats-Rollup` (`sub`: the message replaces its subject's earlier ones).
 * nats-server 2.9 reads these exact spellings only, and an HTTP client's header names arrive in
 * lower case: sent so, the server ignored them and stored the message as a plain one (a 2xx for a
 * publish its client meant to be refused, or a rollup that never happened). By their lower-case
 * name, the spelling the server reads. (`Nats-Msg-Id` is msg-id.ts's.)
 */
const SPELLED = new Map(['Nats-Expected-Stream', 'Nats-Expected-Last-Msg-Id', 'Nats-Expected-Last-Sequence', 'Nats-Expected-Last-Subject-Sequence', 'Nats-Rollup'].map((n) => [n.toLowerCase(), n]));
const SHORTEST = Math.min(...[...SPELLED.values()].map((n) => n.length));
const LONGEST = Math.max(...[...SPELLED.values()].map((n) => n.length));

/**
 * Whether header `name` is one of the JetStream headers above, in any case (the broker's
 * publishInstruction): a consume route's copy leaves out those it consumed, which asked something
 * of the source's stream (a Go publisher's `Nats-Expected-Last-Subject-Sequence` held there, and
 * was refused by the copy's stream). `Nats-Msg-Id` is not one: a copy with the same id is the
 * duplicate a stream should drop.
 */
export function isPublishInstruction(name: string): boolean {
  return spelledAs(name) !== undefined;
}

/** The name nats-server reads for header `name`, when it is one of the JetStream headers above in another case; else undefined. */
export function expectationHeaderName(name: string): string | undefined {
  const canonical = spelledAs(name);
  return canonical === name ? undefined : canonical;
}

/**
 * The spelling nats-server reads of header `name` (any case), when it is one of SPELLED. Asked of
 * every header of every publish (and of a consume route's copies): a name of another length, or
 * not starting `nats-` (every one of SPELLED does), is none without being lower-cased, which was
 * most of what the check cost (half, for a message of six headers).
 */
function spelledAs(name: string): string | undefined {
  if (name.length < SHORTEST || name.length > LONGEST || (name.charCodeAt(0) | 0x20) !== 0x6e || name.charCodeAt(4) !== 0x2d) return undefined;
  return SPELLED.get(name.toLowerCase());
}

const ROLLUP = 'nats-rollup';

/**
 * Why a `Nats-Rollup` header (any case) cannot go to nats-server, or undefined. The server takes
 * `sub` and `all` in any case (and an empty value as none); any other value on a stream that
 * allows rollups gets no answer at all from nats-server 2.9 (the publish would wait out
 * `ackTimeoutMs`, a 503 retried for ever), and on one that does not it is refused anyway.
 */
export function rollupProblem(name: string, value: string): string | undefined {
  if (name.length !== ROLLUP.length || name.toLowerCase() !== ROLLUP) return undefined;
  const v = value.toLowerCase();
  if (v === '' || v === 'sub' || v === 'all') return undefined;
  return `nats-server takes a Nats-Rollup of \`sub\` or \`all\` only, not ${JSON.stringify(value.length > 64 ? `${value.slice(0, 61)}...` : value)} (it answers no other value)`;
}

/**
 * On a dead-letter write, the name under which nats-server ignores header `name`, when it is one of
 * the JetStream headers above in the spelling the server reads; else undefined. The message is
 * dead-lettered because the stream it was meant for refused what they ask: asked of the
 * dead-letter topic's stream too, the copy was refused again, and the message dropped.
 */
export function inertExpectationName(name: string): string | undefined {
  return SPELLED.get(name.toLowerCase()) === name ? name.toLowerCase() : undefined;
}

/** JetStream's `err_code`s for a publish whose headers ask what the stream refuses (nats-server's errors.json). */
const UNMET: Record<number, string> = {
  10060: 'its Nats-Expected-Stream header does not hold',
  10070: 'its Nats-Expected-Last-Msg-Id header does not hold',
  10071: 'its Nats-Expected-Last-Sequence or Nats-Expected-Last-Subject-Sequence header does not hold',
  10111: 'its Nats-Rollup header asks a rollup the stream does not allow (allow_rollup_hdrs)',
};

/**
 * A PubAck error saying the message's headers ask what the stream refuses: the message's problem
 * (400), which sending it again unchanged cannot help, so a consume route dead-letters it; else
 * undefined.
 */
export function unmetExpectation(error: { err_code?: number; description?: string }): Refused | undefined {
  const what = error.err_code === undefined ? undefined : UNMET[error.err_code];
  if (what === undefined) return undefined;
  return new Refused(problem('EG_INVALID_MESSAGE', `JetStream refused the message: ${what} (${error.description ?? `err_code ${error.err_code}`})`));
}
