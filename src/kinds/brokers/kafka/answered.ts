import { errorChain } from './leaders.js';

/**
 * Thrown by the partitioner (which kafkajs calls for every record of every attempt) when kafkajs
 * is about to send a produce request again after every publish in it was answered: each one's
 * `ackTimeoutMs` passed, so its caller got a 503 and may publish it again (a consume route does).
 * The request that timed out may well have been written — Kafka takes a request as it arrives and
 * answers when it can — so a resend then only adds a copy nobody waits for, one per attempt.
 * Not retriable: kafkajs gives the attempt up before any request leaves. An idempotent producer
 * keeps its resends, which the cluster recognises by their sequence numbers.
 */
export class AllAnswered extends Error {
  readonly retriable = false;
  constructor(topic: string, partition: number) {
    super(`every publish of the produce request to ${topic}/${partition} was answered (ackTimeoutMs passed): it is not sent again`);
    this.name = 'AllAnswered';
  }
}

/** Whether `err` (or what it wraps) says a resend was given up because every publish in it was answered. */
export function allAnswered(err: unknown): boolean {
  return errorChain(err).some((e) => e instanceof AllAnswered);
}
