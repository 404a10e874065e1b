import type { BrokerKind, ListenerKind, StepKind } from './contracts.js';

/**
 * The kinds a gateway knows. An instance, not a global, so a test can build one with only the
 * kinds it needs; `defaultRegistry()` (src/kinds/index.ts) has all of them.
 */
export class KindRegistry {
  readonly brokers = new Map<string, BrokerKind<any, any>>();
  readonly listeners = new Map<string, ListenerKind<any, any>>();
  readonly steps = new Map<string, StepKind<any>>();

  broker(kind: BrokerKind<any, any>): this {
    this.brokers.set(kind.kind, kind);
    return this;
  }

  listener(kind: ListenerKind<any, any>): this {
    this.listeners.set(kind.kind, kind);
    return this;
  }

  step(kind: StepKind<any>): this {
    this.steps.set(kind.kind, kind);
    return this;
  }
}
