import { lstatSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import { hash } from '../core/canonical.js';
import { globFingerprint, globMatches, isGlob } from '../config/include.js';

export interface WatchTiming {
  /** Quiet time that ends a burst of editor events. */
  debounceMs: number;
  /** A stream of events never postpones a reload longer than this. */
  maxWaitMs: number;
}

const DEFAULT_TIMING: WatchTiming = { debounceMs: 100, maxWaitMs: 1000 };

/**
 * Watches the directories that hold the config and the files it references, and calls `onChange`
 * when any of those files' content differs from what was last seen. Watching directories rather
 * than files follows every way a file can be replaced: written in place, renamed over (editors,
 * `git checkout`), or a Kubernetes ConfigMap `..data` symlink swap.
 */
export class ConfigWatcher {
  private watcher: FSWatcher | undefined;
  private dirs = new Set<string>();
  private hashes = new Map<string, string>();
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
    const dirs = new Set([...this.hashes.keys()].map((f) => dirname(f)));
    const added = [...dirs].filter((d) => !this.dirs.has(d));
    const removed = [...this.dirs].filter((d) => !dirs.has(d));
    this.dirs = dirs;
    if (!this.watcher) {
      this.watcher = watch([...dirs], { depth: 0, ignoreInitial: true, followSymlinks: false });
      const w = this.watcher;
      this.isReady = new Promise((resolve) =>
        w.once('ready', () => {
          resolve();
          // An edit made between the load and now sent no event we could see: compare once.
          this.poke();
        }),
      );
      this.watcher.on('all', (_event, path) => {
        if (this.concerns(path)) this.poke();
      });
      this.watcher.on('error', () => this.poke());
      return;
    }
    if (added.length) this.watcher.add(added);
    if (removed.length) this.watcher.unwatch(removed);
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
  private concerns(path: string): boolean {
    if (this.hashes.has(path)) return true;
    for (const f of this.hashes.keys()) if (isGlob(f) && globMatches(f, path)) return true;
    try {
      return !lstatSync(path).isFile();
    } catch {
      return true;
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
  }

  async close(): Promise<void> {
    this.closed = true;
    this.debounce.cancel();
    await this.watcher?.close();
  }
}

/**
 * Calls `fire` once a burst of pokes has been quiet for `debounceMs` (an editor's save is
 * several events), but never later than `maxWaitMs` after the burst's first poke, so a steady
 * stream of edits still reloads at least that often.
 */
export class Debounce {
  private timer: NodeJS.Timeout | undefined;
  private firstPokeAt = 0;

  constructor(
    private readonly fire: () => void,
    private readonly timing: WatchTiming,
  ) {}

  poke(): void {
    const now = Date.now();
    if (!this.timer) this.firstPokeAt = now;
    clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.timing.debounceMs, this.firstPokeAt + this.timing.maxWaitMs - now));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.fire();
    }, wait);
  }

  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

function contentHash(file: string): string {
  // An `include:` glob: its value is the list of files it matches, so a new match is a change.
  if (isGlob(file)) return globFingerprint(file);
  try {
    return hash(readFileSync(file));
  } catch {
    return 'missing';
  }
}
