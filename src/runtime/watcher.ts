import { lstatSync, realpathSync, statSync, watch as watchDir, type FSWatcher as DirWatcher } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type * as Chokidar from 'chokidar';
import type { FSWatcher } from 'chokidar';
import { bundled } from '../core/bundled.js';
import { hash } from '../core/canonical.js';
import { readConfigFile } from '../config/read-file.js';
import { globFingerprint, globMatches, isGlob } from '../config/include.js';

export interface WatchTiming {
  /** Quiet time that ends a burst of editor events. */
  debounceMs: number;
  /** A stream of events never postpones a reload longer than this. */
  maxWaitMs: number;
}

// From its bundle, with V8's code cache (src/core/bundled.ts): chokidar and readdirp's files took ~8 ms of CPU, the bundle ~4.5.
const { watch } = bundled<typeof Chokidar>('chokidar');

const DEFAULT_TIMING: WatchTiming = { debounceMs: 100, maxWaitMs: 1000 };

/**
 * Watches the directories that hold the config and the files it references, and calls `onChange`
 * when any of those files' content differs from what was last seen. Watching directories rather
 * than files follows every way a file can be replaced: written in place, renamed over (editors,
 * `git checkout`), or a Kubernetes ConfigMap `..data` symlink swap. A directory can be replaced
 * too (removed and made again, renamed over, a symlink pointed elsewhere): the watch of the old
 * one would then see nothing more, so each directory's parent is watched as well, and a
 * directory that is no longer the one watched is watched again (`follow`).
 */
export class ConfigWatcher {
  private watcher: FSWatcher | undefined;
  /** Each directory of watched files → what is watched for it: its real path and identity, as last seen. */
  private dirs = new Map<string, { real: string; id: string }>();
  /** Real path of a watched directory → its name in the config (events come under the real one). */
  private byReal = new Map<string, string>();
  /** Parents of watched directories → a watch of their entries' names. */
  private parents = new Map<string, DirWatcher>();
  /** Parent → the names of the watched directories in it. */
  private parentEntries = new Map<string, Set<string>>();
  private hashes = new Map<string, string>();
  /** Real paths of the watched files that are symlinks: their targets' edits come under those. */
  private targets = new Set<string>();
  /** The paths chokidar watches. */
  private watched = new Set<string>();
  /**
   * A watch of our own on each watched directory (its real path), made again whenever the
   * directory is replaced. chokidar shares one native watch per path across the process, and a
   * directory removed and made again at once could leave it attached to the removed one: later
   * edits then sent no event (2 in 260 replacements under load). Either watch's event is enough.
   */
  private own = new Map<string, DirWatcher>();
  private readonly debounce: Debounce;
  private closed = false;
  private isReady: Promise<void> = Promise.resolve();

  constructor(
    private readonly onChange: (files: string[]) => void,
    timing: WatchTiming = DEFAULT_TIMING,
  ) {
    this.debounce = new Debounce(() => this.check(), timing);
  }

  /**
   * Replace the set of watched files. `seen` holds the content hash of each as the config load
   * read it: a file that differs from that by now (edited while the load ran) counts as changed.
   */
  setFiles(files: Iterable<string>, seen: ReadonlyMap<string, string> = new Map()): void {
    if (this.closed) return;
    this.hashes = new Map([...files].map((f) => [f, seen.get(f) ?? contentHash(f)]));
    this.placeDirs();
    this.follow();
  }

  /**
   * The directories to watch: each file's own and, for a file that is a symlink, its target's
   * (a schema shared from elsewhere, a config kept in another directory): an edit of the target
   * sends no event in the link's directory. Targets are resolved again on every check, as a link
   * may be pointed elsewhere. Returns whether the set changed.
   */
  private placeDirs(): boolean {
    this.targets = new Set();
    const dirs = new Set<string>();
    for (const f of this.hashes.keys()) {
      dirs.add(dirname(f));
      const target = isGlob(f) ? undefined : symlinkTarget(f);
      if (target === undefined) continue;
      this.targets.add(target);
      dirs.add(dirname(target));
    }
    let changed = false;
    for (const d of [...this.dirs.keys()]) {
      if (dirs.has(d)) continue;
      this.dirs.delete(d);
      changed = true;
    }
    for (const d of dirs) {
      if (this.dirs.has(d)) continue;
      this.dirs.set(d, identity(d));
      changed = true;
    }
    return changed;
  }

  /**
   * Watches what the directories are now: a directory replaced since it was last seen is watched
   * afresh, and what nothing needs any more is unwatched. Returns whether any was replaced.
   */
  private follow(): boolean {
    const replaced = new Set<string>();
    for (const [d, seen] of this.dirs) {
      const now = identity(d);
      if (now.id !== seen.id || now.real !== seen.real) {
        this.dirs.set(d, now);
        replaced.add(seen.real).add(now.real);
      }
    }
    const wanted = new Set<string>();
    this.byReal = new Map();
    for (const [d, { real }] of this.dirs) {
      wanted.add(real);
      this.byReal.set(real, d);
    }
    this.watchParents();
    this.watchOwn(wanted, replaced);
    if (!this.watcher) {
      this.watched = wanted;
      // atomic: false: chokidar held each removal back 100 ms (to report a file removed and made
      // again as one change), and that late event of a neighbour gone (a ConfigMap's `..data_tmp`
      // renamed over `..data`, its old directory, a file `mv`ed over the config, a glob's file
      // removed) restarted the debounce: such reloads were live ~220 ms after the write, not ~120.
      // Which event it was does not matter here: every event only makes check() compare contents.
      this.watcher = watch([...wanted], { depth: 0, ignoreInitial: true, followSymlinks: false, atomic: false });
      const w = this.watcher;
      this.isReady = new Promise((resolve) =>
        w.once('ready', () => {
          resolve();
          // An edit made between the load and now sent no event we could see: compare once.
          this.poke();
        }),
      );
      this.watcher.on('all', (_event, path) => this.event(path));
      this.watcher.on('error', () => this.poke());
      return replaced.size > 0;
    }
    // A replaced directory is a new one behind the same name: watch it from scratch.
    const stale = [...this.watched].filter((p) => !wanted.has(p) || replaced.has(p));
    if (stale.length) this.watcher.unwatch(stale);
    const fresh = [...wanted].filter((p) => !this.watched.has(p) || replaced.has(p));
    if (fresh.length) this.watcher.add(fresh);
    this.watched = wanted;
    return replaced.size > 0;
  }

  /** An entry of a watched directory changed (`path` under the directory's real path). */
  private event(path: string): void {
    if (this.dirs.has(path)) this.replaced(path);
    else if (this.concerns(path)) this.poke();
  }

  /** Our own watch of each wanted directory: a new one for a directory replaced, none for one no longer wanted. */
  private watchOwn(wanted: Set<string>, replaced: Set<string>): void {
    for (const [real, w] of this.own) {
      if (wanted.has(real) && !replaced.has(real)) continue;
      w.close();
      this.own.delete(real);
    }
    for (const real of wanted) {
      if (this.own.has(real)) continue;
      try {
        const w = watchDir(real, { persistent: false }, (_event, name) => {
          if (typeof name === 'string') this.event(join(real, name));
        });
        w.on('error', () => {
          w.close();
          if (this.own.get(real) === w) this.own.delete(real);
          this.poke();
        });
        this.own.set(real, w);
      } catch {
        /* gone: watched again once a change makes follow() run */
      }
    }
  }

  /**
   * A reload begins reading the files now: an edit reported before the result is called was made
   * after this moment at the earliest (see Debounce). Call the result when the reload has ended,
   * saying whether it was rejected.
   */
  reloading(): (rejected: boolean) => void {
    return this.debounce.reloading();
  }

  /** Resolves when the underlying watcher is ready to report events. */
  ready(): Promise<void> {
    return this.isReady;
  }

  /**
   * Whether an event on `path` may change a watched file. The directories watched also hold other
   * files (a log the gateway's output is redirected to, an editor's swap file): events on those
   * must not keep restarting the debounce, or a busy neighbour would hold every reload back to
   * `maxWaitMs` instead of `debounceMs`. A regular file that is neither watched nor matched by a
   * watched glob is such a neighbour; anything else (a watched file, a symlink or directory such
   * as a ConfigMap's `..data` swap, a path already gone) counts.
   */
  private concerns(eventPath: string): boolean {
    const real = this.byReal.get(dirname(eventPath));
    const path = real === undefined ? eventPath : join(real, basename(eventPath));
    if (this.hashes.has(path) || this.targets.has(path) || this.targets.has(eventPath)) return true;
    for (const f of this.hashes.keys()) if (isGlob(f) && globMatches(f, path)) return true;
    try {
      return !lstatSync(eventPath).isFile();
    } catch {
      return true;
    }
  }

  /** A watched directory's entry changed in its parent: whatever is there now is watched afresh. */
  private replaced(dir: string): void {
    const seen = this.dirs.get(dir);
    if (seen) seen.id = 'replaced';
    this.poke();
  }

  /**
   * The parents' own watches: one each, for the names of their entries only (chokidar would watch
   * every file beside them). A parent that cannot be watched (it is gone) is tried again on the
   * next change.
   */
  private watchParents(): void {
    // Every parent, even one chokidar watches too: a directory removed and made again at once is
    // the same directory to chokidar's scan of the parent, and it says nothing.
    const wanted = new Map<string, Set<string>>();
    for (const d of this.dirs.keys()) {
      const names = wanted.get(dirname(d)) ?? new Set();
      wanted.set(dirname(d), names.add(basename(d)));
    }
    this.parentEntries = wanted;
    for (const [p, w] of this.parents) {
      if (wanted.has(p)) continue;
      w.close();
      this.parents.delete(p);
    }
    for (const p of wanted.keys()) {
      if (this.parents.has(p)) continue;
      try {
        const w = watchDir(p, { persistent: false }, (_event, name) => {
          // A busy parent (/tmp) reports every change beside the watched directories: those are
          // passed over by name alone, without building a path for each (docs/performance.md, "ninth session").
          if (typeof name !== 'string' || !this.parentEntries.get(p)?.has(name)) return;
          this.replaced(join(p, name));
        });
        w.on('error', () => {
          w.close();
          if (this.parents.get(p) === w) this.parents.delete(p);
        });
        this.parents.set(p, w);
      } catch {
        /* gone: watched again once a change makes follow() run */
      }
    }
  }

  private poke(): void {
    if (!this.closed) this.debounce.poke();
  }

  private check(): void {
    const changed: string[] = [];
    for (const [file, before] of this.hashes) {
      const now = contentHash(file);
      if (now !== before) {
        changed.push(file);
        this.hashes.set(file, now);
      }
    }
    if (changed.length > 0) this.onChange(changed);
    // A file edited in a replaced directory, or in a symlink's new target directory, before its
    // new watch began sent no event: look again.
    const moved = this.placeDirs();
    if (this.follow() || moved) this.poke();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.debounce.cancel();
    for (const w of [...this.parents.values(), ...this.own.values()]) w.close();
    this.parents.clear();
    this.own.clear();
    await this.watcher?.close();
  }
}

/**
 * Calls `fire` once a burst of pokes has been quiet for `debounceMs` (an editor's save is
 * several events), but never later than `maxWaitMs` after the first poke that no reload has
 * covered yet, so a steady stream of edits still reloads at least that often.
 *
 * A reload covers what was written before it began reading the files. A poke handled while a
 * reload runs may be late (the reload's compile holds the event loop, and the events wait behind
 * it): the edit it reports may have been made at any time since that reload began reading, so
 * its max-wait counts from then, not from when the poke was handled. Counting from the handling
 * put a whole reload's duration between one reload and the next in a stream of edits.
 *
 * A reload rejected in a stream of edits most often read a file while it was being written (a
 * write in place empties the file first): the edits after it then fire debounceMs after the first
 * of them instead of maxWaitMs, once; a config that stays invalid is read again only every
 * maxWaitMs, as before.
 */
export class Debounce {
  private timer: NodeJS.Timeout | undefined;
  /** When the pending pokes fire at the latest. */
  private deadline = 0;
  /** The reload running now, and when it began reading the files. */
  private reload: { since: number } | undefined;
  /** Reloads rejected since the last one that was not. */
  private rejectedInARow = 0;
  /** The next pokes fire debounceMs after the first of them: the last reload was rejected. */
  private soon = false;

  constructor(
    private readonly fire: () => void,
    private readonly timing: WatchTiming,
  ) {}

  poke(): void {
    const now = Date.now();
    if (!this.timer) this.deadline = this.soon ? now + this.timing.debounceMs : (this.reload?.since ?? now) + this.timing.maxWaitMs;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.timing.debounceMs, this.deadline - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.soon = false;
      this.fire();
    }, wait);
  }

  /** A reload begins reading the files now; call the result when it has ended, saying whether it was rejected. */
  reloading(): (rejected: boolean) => void {
    const reload = { since: Date.now() };
    this.reload = reload;
    return (rejected) => {
      if (!rejected) this.rejectedInARow = 0;
      else if (++this.rejectedInARow === 1) {
        this.soon = true;
        if (this.timer) this.deadline = Math.min(this.deadline, Date.now() + this.timing.debounceMs);
      }
      // The events that waited behind the reload are handled in the event loop's next poll phase:
      // after that turn (its check phase, where the second immediate runs) pokes are on time again.
      setImmediate(() =>
        setImmediate(() => {
          if (this.reload === reload) this.reload = undefined;
        }),
      );
    };
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** A directory's real path and inode: either changes when the directory is replaced. */
function identity(dir: string): { real: string; id: string } {
  try {
    const real = realpathSync(dir);
    const st = statSync(real);
    return { real, id: `${st.dev}:${st.ino}` };
  } catch {
    return { real: dir, id: 'missing' };
  }
}

/** The real path of `file` when it is a symlink itself, else undefined. */
function symlinkTarget(file: string): string | undefined {
  try {
    return lstatSync(file).isSymbolicLink() ? realpathSync(file) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a watched file holds, to tell a change: read as the reload reads it (readConfigFile: a
 * regular file, up to its bound, through one descriptor, so a path swapped for a named pipe or a
 * file grown past the bound after its check is refused, not read). One refused is told apart by its
 * stat, and the reload's own read says why it refuses it.
 */
function contentHash(file: string): string {
  // An `include:` glob: its value is the list of files it matches, so a new match is a change.
  if (isGlob(file)) return globFingerprint(file);
  try {
    return hash(readConfigFile(file));
  } catch {
    try {
      const st = statSync(file);
      return `unread: ${st.mode} ${st.size} ${st.mtimeMs}`;
    } catch {
      return 'missing';
    }
  }
}
