import { problem } from '../../../core/errors.js';
import { Refused } from '../acknowledgement.js';

/**
 * RabbitMQ's refusal of a message over its `max_message_size` (128 MiB by default in 3.x, set
 * lower on some servers): it closes the publish channel with PRECONDITION_FAILED, in these words.
 * The limit is told nowhere before (AMQP 0-9-1 negotiates only the frame size).
 */
export const SIZE_REFUSAL = /PRECONDITION_FAILED - message size (\d+) is larger than configured max size (\d+)/;

/** A message over the server's max_message_size: the client's problem (413), which no retry can change. */
export function tooLarge(bytes: number, max: number): Refused {
  return new Refused(problem('EG_PAYLOAD_TOO_LARGE', `the message (${bytes} bytes) is larger than the RabbitMQ server takes (max_message_size ${max} bytes)`));
}
