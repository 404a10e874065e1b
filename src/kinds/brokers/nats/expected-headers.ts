import { problem } from '../../../core/errors.js';
import { Refused } from '../acknowledgement.js';

/**
 * The headers by which a JetStream publish states what it expects of the stream (optimistic
 * concurrency: `Nats-Expected-Last-Sequence: 41` is stored only if the stream's last message is
 * 41). nats-server 2.9 reads these exact spellings only, and an HTTP client's header names arrive
 * in lower case: sent so, the server ignored them and stored the message (a 2xx for a publish its
 * client meant to be refused). By their lower-case name, the spelling the server reads.
 */
const EXPECTED = new Map(['Nats-Expected-Stream', 'Nats-Expected-Last-Msg-Id', 'Nats-Expected-Last-Sequence', 'Nats-Expected-Last-Subject-Sequence'].map((n) => [n.toLowerCase(), n]));

/** The name nats-server reads for header `name`, when it is one of the expectation headers in another case; else undefined. */
export function expectationHeaderName(name: string): string | undefined {
  const canonical = name.length >= 20 && name.length <= 35 ? EXPECTED.get(name.toLowerCase()) : undefined;
  return canonical === name ? undefined : canonical;
}

/** JetStream's `err_code`s for a publish whose expectation headers do not hold (nats-server's errors.json). */
const UNMET: Record<number, string> = {
  10060: 'Nats-Expected-Stream',
  10070: 'Nats-Expected-Last-Msg-Id',
  10071: 'Nats-Expected-Last-Sequence or Nats-Expected-Last-Subject-Sequence',
};

/**
 * A PubAck error saying the message's expectation headers do not hold: the message's problem
 * (400), which sending it again unchanged cannot help, so a consume route dead-letters it; else
 * undefined.
 */
export function unmetExpectation(error: { err_code?: number; description?: string }): Refused | undefined {
  const header = error.err_code === undefined ? undefined : UNMET[error.err_code];
  if (header === undefined) return undefined;
  return new Refused(problem('EG_INVALID_MESSAGE', `JetStream refused the message: its ${header} header does not hold (${error.description ?? `err_code ${error.err_code}`})`));
}
