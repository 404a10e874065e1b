import { configUnreadable, type Diagnostic, formatDiagnostic, formatWarning, reported, type ReportedDiagnostic } from '../config/diagnostics.js';
import { redact, redactDiagnostics } from '../config/secrets.js';
import type { Env } from '../config/source.js';
import { defaultRegistry } from '../kinds/index.js';
import type { KindRegistry } from '../kinds/registry.js';
import { loadPlan } from '../plan/compile.js';
import { byCodePoint, diffPlans, summarize, type ChangeSummary as ComponentDiff } from '../plan/diff.js';
import { consumerGroup, listenerPaths, listenerTrust, planFingerprint, planFromFingerprint, renamedForwardDigest, subscriptionKey, type PlanFingerprint } from '../plan/fingerprint.js';
import { askedSubscription, handOverTakes } from '../plan/subscription.js';
import { consumerGroupName } from '../plan/consumer-group.js';
import type { Plan } from '../plan/types.js';
import { sameRoutePath } from '../kinds/listeners/route-paths.js';
import type { CliIo } from './io.js';
import { headerValue, type HttpAnswer, httpGet } from '../core/http-get.js';

export interface PlanOptions {
  config: string;
  from: string | undefined;
  admin: string | undefined;
  token: string | undefined;
  format: string;
  env: Env;
  /** The `--vars-file` files by absolute path with the hash of what they held: part of the version, as for `run`. */
  varsFiles?: ReadonlyMap<string, string>;
  io: CliIo;
}

interface Disconnect {
  listener: string;
  path?: string;
  clients?: number;
  reason: string;
}

interface Rejoin {
  route: string;
  broker: string;
  topic: string;
  group: string;
  change: 'join' | 'rejoin' | 'leave';
  /** On a leave: what the group leaves on the server (BrokerKind.leftGroup), for the operator. */
  left?: string;
  /**
   * On the join of a renamed route whose new group reads what the server kept (BrokerKind.newGroupStart):
   * where it starts, and that it does not go on from the group it replaces.
   */
  starts?: string;
}

/**
 * A binding a changed broker makes or drops on its server, or one a broker that goes or moves to
 * another server leaves on the old one (BrokerKind.declaredBindings); `server` names the server a
 * moved broker binds on, or the one a binding is left on.
 */
interface BindingChange {
  broker: string;
  change: 'bind' | 'unbind' | 'leave';
  binding: string;
  server?: string;
}

/** What `eventgate plan --format json` prints (a bot comments it on a pull request). */
export interface PlanReport {
  valid: boolean;
  changes: boolean;
  config: string;
  against: { type: 'file'; file: string } | { type: 'admin'; url: string } | { type: 'nothing' };
  version: { from: string | null; to: string | null };
  brokers?: ComponentDiff & { reconfigure: string[] };
  listeners?: ComponentDiff & { rebind: string[] };
  routes?: ComponentDiff;
  admin?: 'keep' | 'start' | 'restart' | 'reconfigure' | 'stop';
  /** The `log` section (level, payloads), which a reload applies in place. */
  log?: 'keep' | 'change';
  disconnected?: Disconnect[];
  groups?: Rejoin[];
  bindings?: BindingChange[];
  errors: ReportedDiagnostic[];
  /** NEW's warnings (also on stderr): a config that runs but most likely does not do what it says. */
  warnings: ReportedDiagnostic[];
}

/** A loaded config's problems and warnings with its secrets redacted (redactDiagnostics: its files named whole). */
function redactLoaded(loaded: { diagnostics: Diagnostic[]; warnings?: Diagnostic[]; secrets?: ReadonlySet<string> }): void {
  const secrets = loaded.secrets ?? new Set<string>();
  loaded.diagnostics = redactDiagnostics(loaded.diagnostics, secrets);
  if (loaded.warnings) loaded.warnings = redactDiagnostics(loaded.warnings, secrets);
}

/**
 * `eventgate plan -c NEW [--from OLD | --admin URL [--token T]] [--format text|json]` (the token also
 * from EVENTGATE_ADMIN_TOKEN): what a
 * reload to NEW would do, from the same diff a reload uses. Exit 0 when nothing changes, 2 when
 * something does, 1 when NEW is invalid or the plan cannot be made (OLD unreadable, admin API
 * unreachable, a usage error): as `terraform plan -detailed-exitcode`, 2 only ever means changes.
 */
export async function planCommand(o: PlanOptions): Promise<number> {
  if (o.format !== 'text' && o.format !== 'json') return usage(o.io, `--format must be text or json, got '${o.format}'`);
  const notMade = (message: string, errors?: PlanReport['errors'], warnings?: PlanReport['warnings']) => planNotMade(o, message, errors, warnings);
  if (o.from !== undefined && o.admin !== undefined) return notMade('give --from OLD or --admin URL, not both');
  if (o.token !== undefined && o.admin === undefined) return notMade('--token goes with --admin URL');
  const registry = defaultRegistry();
  const against = againstOf(o);

  // NEW is loaded first: when it is invalid, its problems are the answer (exit 1), whether or not
  // OLD could be read or the admin API reached — they are what the author of the change must fix.
  const next = await loadPlan(o.config, { registry, env: o.env, extraFiles: o.varsFiles });
  // Redacted as validate's and run's are: `plan --admin` runs in CI with the deployment's values,
  // and a problem may quote one (`broker '<a ${VAR}'s value>' is not defined`).
  redactLoaded(next);
  // Warnings of NEW (a feedback loop, a suspicious topic; an invalid one's too) on stderr, as validate prints them: a reviewer of the plan sees them too.
  for (const w of next.warnings ?? []) o.io.stderr(`${formatWarning(w)}\n`);
  const warnings = (next.warnings ?? []).map((w) => reported(w, 'warning'));
  const invalidNew = (from: string | null) => {
    const report: PlanReport = { valid: false, changes: false, config: o.config, against, version: { from, to: null }, errors: next.diagnostics.map((d) => reported(d, 'error')), warnings };
    // A file that cannot be read is said alone, as `validate`, `test` and `run` say it: nothing in it is invalid.
    if (o.format === 'text' && configUnreadable(next.diagnostics)) o.io.stdout(`${formatDiagnostic(next.diagnostics[0]!)}\n`);
    else write(o.io, o.format, report);
    return 1;
  };

  let before: Plan | undefined;
  let clients: Record<string, number> = {};
  let logBefore: string | undefined;
  let running: PlanFingerprint | undefined;
  if (o.from !== undefined) {
    const old = await loadPlan(o.from, { registry, env: o.env, extraFiles: o.varsFiles });
    redactLoaded(old);
    if (!old.plan) {
      if (!next.plan) return invalidNew(null);
      for (const d of old.diagnostics) o.io.stderr(`${formatDiagnostic(d)}\n`);
      return notMade(
        `the old config ${o.from} ${configUnreadable(old.diagnostics) ? 'cannot be read' : 'is invalid'}, so there is nothing to compare with`,
        old.diagnostics.map((d) => reported(d, 'error')),
        warnings,
      );
    }
    before = old.plan;
    logBefore = planFingerprint(before, registry).log;
  } else if (o.admin !== undefined) {
    // From the environment, the token stays off the command line, which any local user's `ps` shows.
    const fetched = await fetchRunning(o.admin, o.token ?? (o.io.env.EVENTGATE_ADMIN_TOKEN || undefined), o.token !== undefined ? '--token' : 'EVENTGATE_ADMIN_TOKEN');
    if ('error' in fetched || fetched.fingerprint === null) {
      if (!next.plan) return invalidNew(null);
      return notMade('error' in fetched ? fetched.error : `the gateway at ${o.admin} has no config loaded`, undefined, warnings);
    }
    before = planFromFingerprint(fetched.fingerprint);
    clients = fetched.fingerprint.clients ?? {};
    logBefore = fetched.fingerprint.log;
    running = fetched.fingerprint;
  }

  if (!next.plan) return invalidNew(before?.version ?? null);
  // The names the plan reports are shown without the configs' secrets (a `path: /in/${TENANT}`), as
  // the running gateway serves its own (redactFingerprint): NEW's are compared with those redacted.
  const secrets = new Set([...(next.secrets ?? []), ...(before?.secretValues ?? [])]);
  const asServed = (name: string) => (running ? redact(name, next.secrets ?? new Set()) : name);
  // Against a running gateway only hashes are known: compare hashes with hashes (a changed broker
  // is reconfigured when the hashes of the options it cannot take in place agree).
  const after = running ? planFromFingerprint(comparableWith(running, planFingerprint(next.plan, registry))) : next.plan;
  const diff = summarize(diffPlans(before, after, registry, { reconfigureBrokers: o.admin === undefined }));

  // Clients lose their connection when their listener gets a new socket or goes, or their path is no longer served.
  const keepsClients = (kind: string) => registry.listeners.get(kind)?.acceptsForward === true;
  const disconnected: Disconnect[] = [];
  if (before) {
    // A running gateway's routes come without their targets (planFromFingerprint): its paths are the fingerprint's.
    const oldPaths = running ? runningPaths(running, registry) : listenerPaths(before, registry);
    const newPaths = new Map([...listenerPaths(next.plan, registry)].map(([listener, paths]) => [listener, new Set([...paths].map(asServed))]));
    for (const [name, l] of before.listeners) {
      // A new tls.ca applied in place cuts off the connections of the clients it no longer trusts
      // (any kind: publishers and kafka producers too); which ones, only their certificates say.
      const trustBefore = running ? running.listeners.find((x) => x.name === name)?.trust : listenerTrust(l);
      const after = next.plan.listeners.get(name);
      const trustAfter = after && listenerTrust(after);
      if (trustBefore !== undefined && trustAfter && trustAfter !== trustBefore && diff.listeners.change.includes(name) && !diff.listeners.rebind.includes(name)) {
        disconnected.push({ listener: name, reason: 'clients whose certificate the new tls.ca does not trust (mutual TLS) are cut off; the others stay' });
      }
      if (!keepsClients(l.kind)) continue;
      const count = clients[name];
      if (diff.listeners.remove.includes(name)) disconnected.push({ listener: name, clients: count, reason: 'the listener is removed' });
      else if (diff.listeners.rebind.includes(name)) disconnected.push({ listener: name, clients: count, reason: 'the listener needs a new socket (port, host or TLS changed)' });
      else for (const p of oldPaths.get(name) ?? []) if (!stillServed(p, newPaths.get(name))) disconnected.push({ listener: name, path: p, reason: 'no route serves this path any more' });
    }
  }
  // By listener and path, as the component lists are by name (diff.ts summarize), not in the config's order.
  disconnected.sort((a, b) => byCodePoint(a.listener, b.listener) || byCodePoint(a.path ?? '', b.path ?? ''));
  const groups: Rejoin[] = [];
  const groupOf = (p: Plan, route: string) => {
    const r = p.routes.get(route)!;
    const group = consumerGroup(r);
    if (r.from.type !== 'broker' || group === undefined) return undefined;
    return { route, broker: r.from.broker, topic: r.from.topic, group };
  };
  // Groups running routes hold in place of their own (a renamed forward route's predecessor's):
  // an added route whose own group is one of them starts in another (RouteRuntime.avoidGroups).
  const ownGroup = (route: string) => consumerGroupName(route, {}, [{ type: 'listener' }], '<instance>');
  const held = new Set(
    running?.routes.flatMap((r) => (r.renamedForward !== undefined && r.group !== undefined && r.group !== ownGroup(r.name) && !diff.routes.remove.includes(r.name) ? [r.group] : [])) ?? [],
  );
  for (const name of diff.routes.add) {
    const g = groupOf(next.plan, name);
    if (!g) continue;
    let group = g.group;
    for (let n = 2; askedSubscription(next.plan.routes.get(name)!, '')?.perInstance && held.has(asServed(group)); n++) group = `${g.group}-${n}`;
    groups.push({ ...g, group, change: 'join' });
  }
  // A rebuilt route that asks the same of the same broker instance (not replaced) takes the
  // running subscription over (RouteRuntime.takeOver): its group neither leaves nor joins.
  const subscriptionBefore = (name: string) =>
    running ? running.routes.find((r) => r.name === name)?.subscription : subscriptionKey(before!.routes.get(name)!, handOverTakes(before!, before!.routes.get(name)!, registry));
  const replaced = new Set(diff.brokers.change.filter((b) => !diff.brokers.reconfigure.includes(b)));
  const takenOver = (name: string) => {
    const r = next.plan!.routes.get(name)!;
    const key = subscriptionKey(r, handOverTakes(next.plan!, r, registry));
    return r.from.type === 'broker' && !replaced.has(r.from.broker) && key !== undefined && key === subscriptionBefore(name);
  };
  // A forward route that took a renamed route's group over rejoins that one while it stays a
  // per-instance forward (RouteRuntime.takenOverGroup): the running gateway names it.
  const runningGroup = (name: string) => {
    const r = running?.routes.find((x) => x.name === name);
    return r?.renamedForward !== undefined && askedSubscription(next.plan!.routes.get(name)!, '')?.perInstance ? r.group : undefined;
  };
  // A changed route reading the same topic in another group (`group:` written, changed or removed)
  // leaves its group and joins one that does not go on from it: said below as for a renamed route.
  const groupBefore = (name: string) => {
    const r = running?.routes.find((x) => x.name === name);
    if (r) return r.from.type === 'broker' && r.group !== undefined ? { route: name, broker: r.from.broker, topic: r.from.topic, group: r.group } : undefined;
    return before?.routes.has(name) ? groupOf(before, name) : undefined;
  };
  for (const name of diff.routes.change) {
    const g = groupOf(next.plan, name);
    if (!g || takenOver(name)) continue;
    const group = runningGroup(name) ?? g.group;
    const was = groupBefore(name);
    if (was && was.broker === g.broker && was.topic === asServed(g.topic) && was.group !== asServed(group)) {
      const left = registry.brokers.get(next.plan.brokers.get(g.broker)?.kind ?? '')?.leftGroup;
      groups.push({ ...g, group, change: 'join' }, { ...was, change: 'leave', ...(left ? { left } : {}) });
    } else groups.push({ ...g, group, change: 'rejoin' });
  }
  // A renamed route is a removal beside an addition: its old group is left as well.
  for (const name of diff.routes.remove) {
    const g = groupOf(before!, name);
    const left = g && registry.brokers.get(before!.brokers.get(g.broker)?.kind ?? '')?.leftGroup;
    if (g) groups.push({ ...g, change: 'leave', ...(left ? { left } : {}) });
  }

  // A renamed route that keeps its group (`group:` written out) leaves and joins the same group: one
  // rejoin, under its new name. What a leave keeps on the server (`left`) is the new route's again.
  for (const join of groups.filter((g) => g.change === 'join')) {
    const leave = groups.findIndex((g) => g.change === 'leave' && g.broker === join.broker && g.topic === join.topic && g.group === join.group);
    if (leave === -1) continue;
    groups.splice(leave, 1);
    Object.assign(join, { change: 'rejoin' });
  }

  // A forward route renamed without a group takes the running subscription over in its old group
  // (renamedForward, RouteRuntime.takeOver): it neither joins nor leaves one.
  // Defined only for a route in a per-instance group (renamedForwardKey), on either side of the plan.
  const keyBefore = (name: string) => (running ? running.routes.find((r) => r.name === name)?.renamedForward : renamedForwardDigest(before!, before!.routes.get(name)!, registry));
  for (const join of groups.filter((g) => g.change === 'join')) {
    const after = next.plan.routes.get(join.route)!;
    const key = renamedForwardDigest(next.plan!, after, registry);
    const leave = groups.findIndex((g) => g.change === 'leave' && g.broker === join.broker && !replaced.has(g.broker) && key !== undefined && keyBefore(g.route) === key);
    if (leave === -1) continue;
    groups.splice(leave, 1);
    groups.splice(groups.indexOf(join), 1);
  }

  // What is left is a renamed route reading the same topic in a new group: on Kafka or a JetStream
  // stream that group starts where `startFrom` says, not where the old one was (a route with broker
  // or webhook targets reads everything kept again), which the operator must know before the reload.
  const newGroupStarts = (join: Rejoin, asked: NonNullable<ReturnType<typeof askedSubscription>>, left: string, named: boolean) => {
    const broker = next.plan!.brokers.get(join.broker);
    const start = broker && registry.brokers.get(broker.kind)?.newGroupStart?.(join.topic, asked, broker.options as never);
    if (!start) return;
    const carry = named ? `; to go on from where ${left} is, give the route group: ${left}` : '';
    join.starts =
      start === 'earliest'
        ? `a new group: it starts at the oldest record kept, so what ${left} handled is delivered again${carry}`
        : `a new group: it starts after the newest record, so what is published before it joins is not delivered to it${carry}`;
  };
  // Each join is told of one leave: its own route's (another group given), else a renamed route's
  // not told already; two routes of one topic changing groups each name their own old one.
  const told = new Set<Rejoin>();
  const leaves = groups.filter((g) => g.change === 'leave');
  const joins = groups.filter((g) => g.change === 'join');
  const leaveOf = (join: Rejoin) => {
    const sameTopic = leaves.filter((g) => g.broker === join.broker && g.topic === join.topic && !told.has(g));
    const leave = sameTopic.find((g) => g.route === join.route) ?? sameTopic.find((g) => !joins.some((j) => j.route === g.route));
    if (leave) told.add(leave);
    return leave;
  };
  for (const join of joins) {
    const asked = askedSubscription(next.plan.routes.get(join.route)!, '');
    // A forward route's new per-instance group is what its every start makes: nothing to say.
    if (!asked || asked.perInstance) continue;
    const leave = leaveOf(join);
    if (!leave) continue;
    // A per-instance group left behind (`eventgate-r-<instance>`) has no name to write as `group:`.
    newGroupStarts(join, asked, leave.group, keyBefore(leave.route) === undefined);
  }

  // What brokers bind, unbind and leave on their servers (amqp queue bindings), from OLD's options or the running fingerprint.
  const bindings = before ? bindingChanges(running ?? planFingerprint(before, registry), planFingerprint(next.plan, registry), diff.brokers) : [];
  // A first start has no log settings to change; otherwise a new log level is a change a reload makes.
  const log = before !== undefined && logBefore !== undefined && logBefore !== planFingerprint(next.plan, registry).log ? 'change' : 'keep';
  const changes = [diff.brokers, diff.listeners, diff.routes].some((d) => d.add.length + d.change.length + d.remove.length > 0) || diff.admin !== 'keep' || log !== 'keep';
  const report: PlanReport = {
    valid: true,
    changes,
    config: o.config,
    against,
    version: { from: before?.version ?? null, to: next.plan.version },
    brokers: diff.brokers,
    listeners: diff.listeners,
    routes: diff.routes,
    admin: diff.admin,
    log,
    disconnected: redact(disconnected, secrets),
    groups: redact(groups, secrets),
    ...(bindings.length > 0 ? { bindings: redact(bindings, secrets) } : {}),
    errors: [],
    warnings,
  };
  write(o.io, o.format, report);
  return changes ? 2 : 0;
}

/**
 * The bindings of the brokers a reload changes or removes, compared by hash (the running gateway's
 * words have its secrets redacted): a changed broker binds the new ones first, then drops those it
 * no longer has, as it does it. A broker that goes, changes kind or moves to another server leaves
 * its bindings where they were, where no process of the gateway unbinds them (docs/scaling.md),
 * unless a broker of NEW declares them there too; one that moves binds all of NEW's on the new one.
 */
function bindingChanges(before: PlanFingerprint, after: PlanFingerprint, brokers: ComponentDiff): BindingChange[] {
  const out: BindingChange[] = [];
  const declared = new Set(after.brokers.flatMap((b) => (b.bindings ?? []).map((x) => `${b.server?.key}\n${x.key}`)));
  for (const name of [...brokers.change, ...brokers.remove].sort(byCodePoint)) {
    const was = before.brokers.find((b) => b.name === name);
    // A gateway older than this CLI serves no bindings: nothing is known of them.
    if (was?.bindings === undefined) continue;
    const now = after.brokers.find((b) => b.name === name && b.kind === was.kind);
    const moved = now?.server !== undefined && was.server !== undefined && now.server.key !== was.server.key;
    if (now && !moved) {
      const had = new Set(was.bindings.map((x) => x.key));
      const has = new Set(now.bindings?.map((x) => x.key));
      for (const x of now.bindings ?? []) if (!had.has(x.key)) out.push({ broker: name, change: 'bind', binding: x.binding });
      for (const x of was.bindings) if (!has.has(x.key)) out.push({ broker: name, change: 'unbind', binding: x.binding });
      continue;
    }
    if (moved) for (const x of now.bindings ?? []) out.push({ broker: name, change: 'bind', binding: x.binding, server: now.server!.name });
    for (const x of was.bindings) {
      if (!declared.has(`${was.server?.key}\n${x.key}`)) out.push({ broker: name, change: 'leave', binding: x.binding, ...(was.server && { server: was.server.name }) });
    }
  }
  return out;
}

/**
 * NEW's fingerprint without the hashes the running gateway did not send (a gateway older than this
 * CLI has no admin options or log hash): what cannot be compared is not reported as a change.
 */
function comparableWith(running: PlanFingerprint, next: PlanFingerprint): PlanFingerprint {
  const admin = next.admin && running.admin?.config === undefined ? { key: next.admin.key } : next.admin;
  return { ...next, admin };
}

/**
 * The paths clients stay connected on in a running gateway, as its fingerprint names them. One
 * older than this CLI (no `heldPaths`) named its HTTP publish paths too, which hold no client
 * (publishersStay): each was said to lose its clients though the new config served it as before.
 * A path it both streamed (a forward target) and took publishes on is taken for a publish path.
 */
function runningPaths(running: PlanFingerprint, registry: KindRegistry): Map<string, Set<string>> {
  const publishPath = (listener: { name: string; kind: string }, path: string) =>
    running.heldPaths !== true &&
    registry.listeners.get(listener.kind)?.publishersStay !== true &&
    running.routes.some((r) => r.from.type === 'listener' && r.from.listener === listener.name && r.from.path === path);
  return new Map(running.listeners.map((l) => [l.name, new Set(l.paths.filter((p) => !publishPath(l, p)))]));
}

/** How long `plan --admin` waits for the admin API's whole answer. */
const ADMIN_ANSWER_MS = 10_000;

async function fetchRunning(url: string, token: string | undefined, tokenFrom: string): Promise<{ fingerprint: PlanFingerprint | null } | { error: string }> {
  let res: HttpAnswer;
  // `--admin localhost:9000` parses as a URL of scheme "localhost:": say what is wanted, not "unknown scheme".
  const base = URL.canParse(url) ? new URL(url) : undefined;
  if (!base || !/^https?:$/.test(base.protocol) || !base.host) return { error: `--admin wants the admin API's URL, http://HOST:PORT of admin.port (https:// through a TLS proxy), got '${url}'` };
  const endpoint = `${url.replace(/\/+$/, '')}/admin/plan`;
  // A header cannot carry it: fetch would fail before connecting, which read as "cannot reach".
  const unsendable = token === undefined ? -1 : token.search(/[\u0000-\u0008\u000a-\u001f\u007f]|[^\u0000-\u00ff]/u);
  if (unsendable >= 0) {
    const code = token!.codePointAt(unsendable)!;
    return {
      error: `the token from ${tokenFrom} holds ${code < 0x20 || code === 0x7f ? 'a control character' : 'a character beyond Latin-1'} (U+${code.toString(16).toUpperCase().padStart(4, '0')} at position ${unsendable + 1}), which an HTTP header cannot carry: it is not admin.token`,
    };
  }
  try {
    // Not fetch, which refuses the ports the Fetch standard blocks for browsers (10080, 6000, ...: src/core/http-get.ts).
    // The whole answer within the bound, as with fetch: an API that sends a byte now and then
    // (a proxy in front of a stopped gateway) would otherwise keep a CI job waiting for good.
    res = await httpGet(endpoint, { headers: token ? { authorization: `Bearer ${token}` } : {}, idleTimeoutMs: ADMIN_ANSWER_MS, signal: AbortSignal.timeout(ADMIN_ANSWER_MS) });
  } catch (err) {
    const e = err as { name?: string; code?: string; message?: string };
    const why = e.name === 'TimeoutError' ? `no whole answer within ${ADMIN_ANSWER_MS / 1000} s` : (e.code ?? e.message);
    return { error: `cannot reach the admin API at ${endpoint}: ${why}` };
  }
  if (res.status === 401) {
    // With a token given, asking for one would send the user looking for a missing flag.
    if (token) return { error: `the admin API at ${endpoint} refused the token given with ${tokenFrom}: it is not admin.token (401)` };
    return { error: `the admin API at ${endpoint} wants a token: set EVENTGATE_ADMIN_TOKEN (or pass --token) (401)` };
  }
  if (res.status === 403) return { error: `the admin API at ${endpoint} refused the request (403)` };
  // Wrong tokens from this address (docs/security.md): the right one is refused too until the minute ends.
  if (res.status === 429)
    return { error: `the admin API at ${endpoint} refuses this address for now, after too many wrong tokens from it: try again in ${headerValue(res.headers, 'retry-after') ?? 'a minute'} s (429)` };
  if (res.status === 404 && /\/admin\/?$/.test(base.pathname))
    return { error: `the admin API at ${endpoint} answered 404: --admin is the URL the admin API listens on, without '/admin' (${url.replace(/\/admin\/?$/, '')})` };
  if (res.status < 200 || res.status > 299) return { error: `the admin API at ${endpoint} answered ${res.status}` };
  try {
    return { fingerprint: JSON.parse(res.body.toString('utf8')) as PlanFingerprint | null };
  } catch {
    return { error: `the admin API at ${endpoint} did not answer JSON` };
  }
}

/** The plan could not be made: exit 1, never 2, which says "the reload changes something" (and CI jobs accept). */
function usage(io: CliIo, message: string): number {
  io.stderr(`eventgate: ${message}\n`);
  return 1;
}

function againstOf(o: Pick<PlanOptions, 'from' | 'admin'>): PlanReport['against'] {
  return o.from !== undefined ? { type: 'file', file: o.from } : o.admin !== undefined ? { type: 'admin', url: o.admin } : { type: 'nothing' };
}

/**
 * No plan could be made (OLD invalid, the admin API unreachable, a usage error): said on stderr
 * and, with `--format json`, as an invalid report on stdout too, so a job piping it into jq reads
 * a document rather than nothing. `errors` are OLD's problems, or one that is in no file (line 0).
 */
function planNotMade(o: NotMadeOptions, message: string, errors?: PlanReport['errors'], warnings?: PlanReport['warnings']): number {
  writeNotMade(o, message, errors, warnings);
  return usage(o.io, message);
}

type NotMadeOptions = Pick<PlanOptions, 'config' | 'from' | 'admin' | 'format' | 'io'>;

/** The report of a plan not made, on stdout when `--format json` asked for one (main.ts's usage errors too). */
export function writeNotMade(o: NotMadeOptions, message: string, errors?: PlanReport['errors'], warnings: PlanReport['warnings'] = []): void {
  if (o.format === 'json') {
    const report: PlanReport = {
      valid: false,
      changes: false,
      config: o.config,
      against: againstOf(o),
      version: { from: null, to: null },
      errors: errors ?? [{ file: '', line: 0, column: 0, message, path: '', code: 'EG_PLAN_NOT_MADE', severity: 'error' }],
      warnings,
    };
    write(o.io, 'json', report);
  }
}

function write(io: CliIo, format: string, report: PlanReport): void {
  io.stdout(format === 'json' ? `${JSON.stringify(report, null, 2)}\n` : text(report));
}

function text(r: PlanReport): string {
  const against = r.against.type === 'file' ? r.against.file : r.against.type === 'admin' ? `the gateway at ${r.against.url}` : 'nothing (a first start)';
  const lines = [`plan: ${r.config} against ${against}`];
  if (!r.valid) {
    lines.push(`${r.config} is invalid; a reload would be rejected and the running config kept:`);
    for (const e of r.errors) lines.push(`  ${e.file}:${e.line}:${e.column}: ${e.message}`);
    return `${lines.join('\n')}\n`;
  }
  const section = (what: string, d: ComponentDiff, note: (name: string) => string = () => '') => {
    for (const n of d.add) lines.push(`  + ${what} ${n}`);
    for (const n of d.change) lines.push(`  ~ ${what} ${n}${note(n)}`);
    for (const n of d.remove) lines.push(`  - ${what} ${n}`);
  };
  section('broker', r.brokers!, (n) => (r.brokers!.reconfigure.includes(n) ? ' (reconfigured in place)' : ' (replaced)'));
  section('listener', r.listeners!, (n) => (r.listeners!.rebind.includes(n) ? ' (new socket)' : ' (same socket)'));
  section('route', r.routes!);
  if (r.admin === 'reconfigure') lines.push('  ~ admin server: reconfigured in place (same socket)');
  else if (r.admin !== 'keep') lines.push(`  ~ admin server: ${r.admin}`);
  if (r.log === 'change') lines.push('  ~ log settings (applied in place)');
  const kept = r.brokers!.keep.length + r.listeners!.keep.length + r.routes!.keep.length;
  if (!r.changes) lines.push(`no changes: a reload would keep all ${kept} components as they are`);
  else lines.push(`  = ${kept} kept (${[...r.brokers!.keep, ...r.listeners!.keep, ...r.routes!.keep].join(', ') || 'none'})`);
  for (const d of r.disconnected ?? []) lines.push(`clients disconnected: listener ${d.listener}${d.path ?? ''}${d.clients !== undefined ? ` (${d.clients} connected now)` : ''}: ${d.reason}`);
  for (const g of r.groups ?? [])
    lines.push(
      `consumer group ${g.change === 'join' ? 'joins' : g.change === 'rejoin' ? 'rejoins' : 'leaves'}: ${g.group} (route ${g.route}, ${g.broker}/${g.topic})${g.left ? `: ${g.left}` : ''}${g.starts ? `: ${g.starts}` : ''}`,
    );
  for (const b of r.bindings ?? []) lines.push(bindingLine(b));
  return `${lines.join('\n')}\n`;
}

function bindingLine(b: BindingChange): string {
  if (b.change === 'bind') return `binding made: broker ${b.broker}: ${b.binding}${b.server ? ` (on ${b.server}, the server the broker moves to)` : ''}`;
  if (b.change === 'unbind') return `binding dropped: broker ${b.broker}: ${b.binding} (unbound once the new bindings are in place)`;
  return `binding left: broker ${b.broker}: ${b.binding} (stays on ${b.server ?? 'its server'}, which the broker no longer uses: nothing unbinds it there; remove it on the server once no instance needs it)`;
}

/**
 * Whether `path`'s clients stay connected with `paths` served: the path itself, or one that only
 * renames its parameters (`/rooms/:room` → `/rooms/:r`), where a reload moves its websocket
 * clients and event streams.
 */
function stillServed(path: string, paths: ReadonlySet<string> | undefined): boolean {
  if (!paths) return false;
  if (paths.has(path)) return true;
  return /[:*]/.test(path) && [...paths].some((p) => /[:*]/.test(p) && sameRoutePath(p, path));
}
