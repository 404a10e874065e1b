/** The client library, loaded when the first nats broker starts (commands that start none, such as validate, never load it). */
type NatsLib = typeof import('nats');

/** Set by loadNats(); everything that reads it runs on a connection a broker opened after that. */
export let lib!: NatsLib;

export async function loadNats(): Promise<void> {
  lib ??= await import('nats');
}
