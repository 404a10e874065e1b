/**
 * What a Kafka topic name may be (Kafka's `Topic.validate`), checked where the config names one
 * (validate: routes, dead-letter targets, a kafka listener's topics) and where a route computes one
 * per message. A cluster refuses any other name (INVALID_TOPIC_EXCEPTION) on every produce and
 * fetch, so a route naming one could never work.
 */

const LEGAL_TOPIC = /^[A-Za-z0-9._-]{1,249}$/;
const RULE = 'a Kafka topic name is 1 to 249 characters among A-Z a-z 0-9 . _ - (and not "." or "..")';
/** What the patterns of other tools are written with: globs (`orders.*`), kafkajs' `/regex/`, MQTT's `+` and `#`. */
const PATTERN = /[*?+#^$|()[\]{}\\/]/;

/**
 * Why `topic` is not a Kafka topic name, or undefined. A topic read by name (a consume route's, a
 * kafka listener route's: `use` 'consume') that looks like a pattern is told that patterns are not
 * read as such, since `orders.*` is how Zilla, Kafka Connect and kafkajs' subscriptions say "every
 * matching topic".
 */
export function kafkaTopicProblem(topic: string, use: 'publish' | 'consume' = 'publish'): string | undefined {
  if (LEGAL_TOPIC.test(topic) && topic !== '.' && topic !== '..') return undefined;
  if (use === 'consume' && PATTERN.test(topic)) return `${RULE}; a route names one topic as it is: patterns and wildcards are not supported (write a route per topic)`;
  return RULE;
}
