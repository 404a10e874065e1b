import { createRequire } from 'node:module';
import type * as KafkaJS from 'kafkajs';

const require = createRequire(import.meta.url);
const { AssignerProtocol } = require('kafkajs') as typeof KafkaJS;

/**
 * kafkajs' round-robin assigner, giving each topic's partitions only to the members that subscribe
 * to it. kafkajs' own assigns the group leader's topics to every member: in a group whose members
 * read different topics (a rolling update that changed a route's topic but not its group, old and
 * new instances side by side) the members on the new topic were given the old one's partitions,
 * which kafkajs ignores (`Consumer group received unsubscribed topics`), so those partitions of the
 * old topic and the whole new topic were read by nobody until every instance had moved. Each
 * member's own topics are in its JoinGroup metadata. Same name and version as kafkajs', so members
 * of older versions agree on the protocol; a group whose members all read the same topics is
 * assigned exactly as kafkajs would.
 */
export const subscriptionRoundRobin: KafkaJS.PartitionAssigner = ({ cluster }) => ({
  name: 'RoundRobinAssigner',
  version: 0,

  async assign({ members, topics }) {
    const sorted = [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : a.memberId > b.memberId ? 1 : 0));
    const readers = new Map<string, string[]>(topics.map((topic) => [topic, []]));
    for (const member of sorted) {
      const own = AssignerProtocol.MemberMetadata.decode(member.memberMetadata)?.topics ?? topics;
      for (const topic of own) {
        const list = readers.get(topic) ?? [];
        list.push(member.memberId);
        readers.set(topic, list);
      }
    }
    // The leader's client knows the partitions of its own topics only.
    const others = [...readers.keys()].filter((topic) => !topics.includes(topic));
    if (others.length > 0) await cluster.addMultipleTargetTopics(others);

    // Only members given partitions, as kafkajs' own: the coordinator gives the others an empty assignment.
    const assignment: Record<string, Record<string, number[]>> = {};
    let i = 0;
    for (const [topic, who] of readers) {
      if (who.length === 0) continue;
      for (const { partitionId } of cluster.findTopicPartitionMetadata(topic)) {
        const memberId = who[i++ % who.length]!;
        ((assignment[memberId] ??= Object.create(null) as Record<string, number[]>)[topic] ??= []).push(partitionId);
      }
    }
    return Object.entries(assignment).map(([memberId, mine]) => ({
      memberId,
      memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: mine, userData: Buffer.alloc(0) }),
    }));
  },

  protocol({ topics }) {
    return { name: 'RoundRobinAssigner', metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
  },
});
