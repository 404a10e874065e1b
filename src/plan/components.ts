import { isHidden } from '../config/prune.js';
import type { PathPart } from '../config/source.js';
import { canonical } from '../core/canonical.js';
import { withoutKeys } from '../kinds/brokers/in-place.js';
import type { BrokerCompileContext, ListenerCompileContext } from '../kinds/contracts.js';
import type { CompileContext } from './context.js';
import type { AdminPlan, ComponentPlan, ListenerPlan } from './types.js';

/** The brokers, each compiled by its kind (checks the schema cannot state, files it names). */
export function compileBrokers(ctx: CompileContext): Map<string, ComponentPlan> {
  const brokers = new Map<string, ComponentPlan>();
  for (const [name, options] of Object.entries(ctx.config.brokers ?? {})) {
    const kind = ctx.registry.brokers.get(options.kind)!;
    const at: PathPart[] = ['brokers', name];
    const files: string[] = [];
    const kindCtx: BrokerCompileContext = {
      report: (rel, code, message) => ctx.report([...at, ...rel], code, message),
      warn: (rel, code, message) => ctx.warn([...at, ...rel], code, message),
      readFile: ctx.fileReader(at, files),
    };
    const compiled = kind.compile ? kind.compile(options, kindCtx) : options;
    if (compiled === undefined) ctx.uncompiledBrokers.add(name);
    // A referenced file (a CA, a client certificate) that changed replaces the broker like an option would.
    const key = files.length === 0 ? canonical(options) : canonical({ options, files: ctx.fileKeys(files) });
    // The options as written (not compiled: a default such as mqtt's hostname-based clientId would differ between machines).
    const inPlace = kind.inPlaceOptions;
    const kept = inPlace === 'all' ? {} : withoutKeys(options, inPlace ?? []);
    const replaceKey = inPlace === undefined ? undefined : canonical({ options: kept, files: inPlace === 'all' ? [] : ctx.fileKeys(files) });
    brokers.set(name, { name, kind: options.kind, options: (compiled ?? options) as Record<string, unknown>, key, ...(replaceKey !== undefined && { replaceKey }) });
  }
  return brokers;
}

/** The listeners, each compiled by its kind; a listener may read a broker's settings (a kafka listener's upstream). */
export function compileListeners(ctx: CompileContext, brokers: Map<string, ComponentPlan>): Map<string, ListenerPlan> {
  const listeners = new Map<string, ListenerPlan>();
  for (const [name, options] of Object.entries(ctx.config.listeners ?? {})) {
    const kind = ctx.registry.listeners.get(options.kind)!;
    // A listener that changes kind needs a new socket even on the same port: another kind's runtime cannot take its options.
    const socket = { kind: options.kind, ...Object.fromEntries(kind.socketOptions.map((k) => [k, options[k]])) };
    const at: PathPart[] = ['listeners', name];
    const files: string[] = [];
    const upstreams: string[] = [];
    const readFile = ctx.fileReader(at, files);
    // The client CA bundle (`tls.ca`, read by every kind's TLS): `plan` says a change cuts off clients.
    let clientCa: string | undefined;
    const kindCtx: ListenerCompileContext = {
      report: (rel, code, message) => ctx.report([...at, ...rel], code, message),
      readFile: (file, rel) => {
        const text = readFile(file, [...rel]);
        if (rel.length === 2 && rel[0] === 'tls' && rel[1] === 'ca') clientCa = text;
        return text;
      },
      broker: (brokerName, rel) => {
        const b = brokers.get(brokerName);
        if (b === undefined) {
          // A broker set aside for its own problem (one-pass validate) is not reported again here.
          if (!isHidden(ctx.hidden.brokers, brokerName)) ctx.reportUndefined([...at, ...rel], 'broker', brokerName, brokers.keys());
          return undefined;
        }
        upstreams.push(b.key);
        return { kind: b.kind, options: b.options };
      },
    };
    // On failure the problems are reported (the plan is rejected); the listener stays in the map
    // so routes on it are still checked.
    const compiled = (kind.compile ? kind.compile(options, kindCtx) : options) ?? options;
    // A changed referenced file (a rotated certificate) changes the key but not the socket key:
    // the listener takes it in place.
    // So does a change to a broker the listener reads its settings from (a kafka listener's upstream).
    const key = files.length === 0 && upstreams.length === 0 ? canonical(options) : canonical({ options, files: ctx.fileKeys(files), upstreams });
    listeners.set(name, { name, kind: options.kind, options: compiled as Record<string, unknown>, key, socketKey: canonical(socket), ...(clientCa !== undefined && { clientCa }) });
  }
  return listeners;
}

/** The admin server with its defaults filled in; undefined without `admin:`. */
export function compileAdmin(ctx: CompileContext): AdminPlan | undefined {
  const c = ctx.config.admin;
  if (!c) return undefined;
  const a = {
    port: c.port,
    host: c.host ?? '127.0.0.1',
    token: c.token,
    drainTimeoutMs: c.drainTimeoutMs ?? 10000,
    shutdownDelayMs: c.shutdownDelayMs ?? 0,
    maxConnections: c.maxConnections ?? 10000,
    tap: { maxPerSecond: c.tap?.maxPerSecond ?? 100 },
    allowedHosts: c.allowedHosts ?? [],
  };
  return { ...a, key: canonical({ port: a.port, host: a.host }) };
}
