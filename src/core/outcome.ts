import type { Problem } from './errors.js';
import type { Delivery, Message } from './message.js';

/**
 * What happened to one message, as a value (never an exception). Every outcome is counted and
 * mapped to the client's answer in one place per listener.
 */
export type Outcome =
  /** `message` is what the targets received (after the chain's transforms), for the tap. */
  /** `tagged`: a step let the message through marked invalid; `tags` are its validation errors. */
  | { outcome: 'delivered'; deliveries: Delivery[]; tagged: boolean; tags?: readonly string[]; message?: Message }
  | { outcome: 'filtered' }
  | { outcome: 'invalid'; problem: Problem }
  /** `cause`: why a consumed message went to the dead-letter topic after its tries (the tap shows it). */
  | { outcome: 'deadlettered'; deliveries: Delivery[]; errors: string[]; cause?: Problem }
  | { outcome: 'rejected'; problem: Problem }
  /** `sent`: with writes still out past their ack deadline (`problem.late`), what the targets were sent, for the tap should the late answers deliver it. */
  | { outcome: 'failed'; problem: Problem; sent?: Message };

/**
 * What a step returns to end a message's way through the chain. A step that lets the message
 * continue returns the (possibly new) Message instead.
 */
export type StepStop =
  | { stop: 'filtered' }
  | { stop: 'invalid'; problem: Problem }
  /** `to`: the step's own dead-letter topic (with its publish options, a `qos`), or undefined for the route's `deadletter`; `detail`: why, when not that the message does not match its schema. */
  | { stop: 'deadletter'; message: Message; errors: string[]; to: { broker: string; topic: string; options?: { readonly qos?: 0 | 1 | 2 } } | undefined; detail?: string }
  | { stop: 'rejected'; problem: Problem }
  | { stop: 'failed'; problem: Problem };

/** The label of an outcome as the metrics, the tap and `eventgate test` show it (`tagged` is a delivery with the validation-error header). */
export function outcomeLabel(outcome: Outcome): string {
  return outcome.outcome === 'delivered' && outcome.tagged ? 'tagged' : outcome.outcome;
}

export function isStop(r: Message | StepStop): r is StepStop {
  return (r as StepStop).stop !== undefined;
}
