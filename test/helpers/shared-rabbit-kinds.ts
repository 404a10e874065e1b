/**
 * The run's shared RabbitMQ nodes (shared-rabbit.ts), one per kind: scripts/run-tests.js boots a
 * node of a kind when a selected test file calls the kind's function, and names in the kind's
 * variable the file where that node's address appears. A kind is a node-wide setting some files
 * need and the others must not have (RabbitMQ 3.10 has `max_message_size` only per node), so a
 * node of each kind serves all the files that need it. Kept free of imports: the runner loads it.
 */
export interface SharedRabbitKind {
  /** The function a test file calls for a vhost on this node; the runner looks for `call(` in the compiled file. */
  call: string;
  /** The variable that names the file with the node's address (shared-rabbit-main.ts writes it). */
  env: string;
  /** The node's `advanced.config`: its node-wide settings. */
  advancedConfig?: string;
}

/** The size-limited node's `max_message_size`: small, so a test message goes over it without megabytes. */
export const SIZE_LIMITED_RABBIT_MAX_MESSAGE_SIZE = 4096;

export type SharedRabbitKindName = 'plain' | 'size-limited';

export const sharedRabbitKinds: Record<SharedRabbitKindName, SharedRabbitKind> = {
  plain: { call: 'sharedRabbit', env: 'EVENTGATE_TEST_RABBIT' },
  'size-limited': {
    call: 'sharedSizeLimitedRabbit',
    env: 'EVENTGATE_TEST_RABBIT_SIZE_LIMITED',
    advancedConfig: `[{rabbit, [{max_message_size, ${SIZE_LIMITED_RABBIT_MAX_MESSAGE_SIZE}}]}].\n`,
  },
};
