/**
 * What a Kafka topic name may be (Kafka's `Topic.validate`), checked where the config names one
 * (validate: routes, dead-letter targets, a kafka listener's topics) and where a route computes one
 * per message. A cluster refuses any other name (INVALID_TOPIC_EXCEPTION) on every produce and
 * fetch, so a route naming one could never work.
 */

const LEGAL_TOPIC = /^[A-Za-z0-9._-]{1,249}$/;

/** Why `topic` is not a Kafka topic name, or undefined. */
export function kafkaTopicProblem(topic: string): string | undefined {
  if (!LEGAL_TOPIC.test(topic) || topic === '.' || topic === '..') return 'a Kafka topic name is 1 to 249 characters among A-Z a-z 0-9 . _ - (and not "." or "..")';
  return undefined;
}
