/**
 * State that stateful steps (rate-limit buckets) keep across reloads. Owned by the gateway, not
 * by a plan: a plan is rebuilt on every reload, but a route that keeps a step with the same
 * config should keep that step's state. Entries are keyed by route, the step's canonical config
 * and its occurrence among identical steps of the route; after each reload, entries no running
 * route claims are dropped.
 */
export class StepStateStore {
  private readonly entries = new Map<string, unknown>();

  claim<T>(id: string, create: () => T): T {
    if (this.entries.has(id)) return this.entries.get(id) as T;
    const value = create();
    this.entries.set(id, value);
    return value;
  }

  /** Drops every entry not in `ids` (the identities of the steps of the running routes). */
  retain(ids: ReadonlySet<string>): void {
    for (const id of this.entries.keys()) if (!ids.has(id)) this.entries.delete(id);
  }

  get size(): number {
    return this.entries.size;
  }
}
