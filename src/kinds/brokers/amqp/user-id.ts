import { problem } from '../../../core/errors.js';
import { Refused } from '../acknowledgement.js';

/**
 * RabbitMQ's refusal of a publish whose user_id property is not the connection's user (and the
 * user lacks the `impersonator` tag): it closes the publish channel with PRECONDITION_FAILED, in
 * these words (the user named, then the connection's).
 */
export const USER_ID_REFUSAL = /PRECONDITION_FAILED - user_id property set to '(.*)' but authenticated user was '(.*)'/s;

/**
 * A message whose `amqp_userId` the server refuses: the message's problem (400), which no retry
 * can change, so a consume route dead-letters it. `words` are the server's, when it said them for
 * this message; a later one is refused before it is sent, named after the connection's user.
 */
export function userIdRefused(userId: string, user: string, words?: string): Refused {
  const said = words ?? `406 PRECONDITION_FAILED - user_id property set to '${userId}' but authenticated user was '${user}'`;
  return new Refused(
    problem(
      'EG_INVALID_MESSAGE',
      `the RabbitMQ server refuses the message's user_id '${userId}' (its amqp_userId header): it takes only the user the gateway logs in as, '${user}', unless that user has the impersonator tag (${said})`,
    ),
  );
}
